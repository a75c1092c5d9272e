"""Which reflections a diffractometer measures: the limiting sphere, the unique set, equivalents.

`unique_reflections` lists one representative (the kernel's canonical index) of every
symmetry-independent reflection with d >= d_min, systematic absences removed (or kept, as a
diffractometer measures them, with `keep_absent`). Friedel mates
are kept apart (`friedel=False`) when anomalous differences matter. `expand_equivalents`
turns the unique set into unmerged observations: each reflection is measured a random
number of times, each time as a random symmetry equivalent.
"""

from __future__ import annotations

import math

import numpy as np

from ..crystal.cell import inv_d_squared
from ..crystal.symmetry import SymmetryOps, canonical_keys, hkl_keys
from ..types import UnitCell

#: largest scattering angle a diffractometer reaches (degrees); limits d_min for long λ
MAX_TWO_THETA = 155.0
_CHUNK = 200_000


def reachable_d_min(wavelength: float, max_two_theta: float = MAX_TWO_THETA) -> float:
    """The smallest d-spacing reachable at this wavelength (Bragg: d = λ / (2 sin θ))."""
    return wavelength / (2.0 * math.sin(math.radians(max_two_theta / 2.0)))


def index_bounds(cell: UnitCell, d_min: float) -> tuple[int, int, int]:
    """|h|, |k|, |l| limits of the limiting sphere: |h| <= a / d_min (h = a · r*)."""
    return (int(math.floor(cell.a / d_min)), int(math.floor(cell.b / d_min)), int(math.floor(cell.c / d_min)))


def unique_reflections(
    cell: UnitCell,
    symmetry: SymmetryOps,
    d_min: float,
    *,
    friedel: bool = True,
    d_max: float | None = None,
    keep_absent: bool = False,
) -> np.ndarray:
    """Symmetry-unique reflections with d_min <= d (<= d_max), (N, 3) int; systematic
    absences are removed unless `keep_absent`.

    The representative of each class is the kernel's canonical index (`canonical_keys`), so
    the set agrees with what `merge` produces. Sorted by resolution, then index.
    """
    hmax, kmax, lmax = index_bounds(cell, d_min)
    rots = symmetry.point_group_rotations()
    limit = 1.0 / d_min**2 + 1e-9
    low = 1.0 / d_max**2 if d_max else 0.0
    hs = np.arange(-hmax, hmax + 1)
    ks = np.arange(-kmax, kmax + 1)
    ls = np.arange(-lmax, lmax + 1)
    out = []
    # loop over h so that memory stays bounded for large cells
    per_h = len(ks) * len(ls)
    step = max(1, _CHUNK // max(per_h, 1))
    for start in range(0, len(hs), step):
        hh = hs[start : start + step]
        grid = np.stack(np.meshgrid(hh, ks, ls, indexing="ij"), axis=-1).reshape(-1, 3)
        q = inv_d_squared(cell, grid)
        sel = (q <= limit) & (q > low) & (q > 0)
        grid = grid[sel]
        if not len(grid):
            continue
        canon = canonical_keys(grid, rots, friedel) == hkl_keys(grid)
        out.append(grid[canon])
    hkl = np.concatenate(out) if out else np.zeros((0, 3), dtype=np.int64)
    if len(hkl):
        if not keep_absent:
            hkl = hkl[~symmetry.is_absent(hkl)]
        q = inv_d_squared(cell, hkl)
        order = np.lexsort((hkl[:, 2], hkl[:, 1], hkl[:, 0], np.round(q, 10)))
        hkl = hkl[order]
    return hkl.astype(np.int32)


def expand_equivalents(
    hkl: np.ndarray,
    symmetry: SymmetryOps,
    redundancy: float,
    rng: np.random.Generator,
    *,
    friedel: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Unmerged observations of a unique set: (observed indices (M, 3), parent row (M,)).

    Each unique reflection is measured 1 + Poisson(redundancy - 1) times, each time as a
    random equivalent under the point group (the Laue group when `friedel`). Equivalents
    under the point group have the same intensity, anomalous signal included.
    """
    h = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
    if redundancy <= 1.0 or not len(h):
        return h.astype(np.int32), np.arange(len(h))
    counts = 1 + rng.poisson(redundancy - 1.0, size=len(h))
    parent = np.repeat(np.arange(len(h)), counts)
    rots = symmetry.laue_rotations() if friedel else symmetry.point_group_rotations()
    pick = rng.integers(0, len(rots), size=len(parent))
    obs = np.einsum("ni,nij->nj", h[parent], rots[pick])
    order = rng.permutation(len(parent))  # measurement order, not sorted by index
    return obs[order].astype(np.int32), parent[order]
