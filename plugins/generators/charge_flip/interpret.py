"""Peak interpretation: from a symmetric density map to a `Structure` of the asymmetric unit.

Steps: symmetry-unique peaks of the map (`refractor_core.crystal.fourier.find_peaks`);
drop peaks closer than a bond to a stronger one (or its images); expected contents of the
asymmetric unit from the formula and Z (Z estimated from the volume when missing); the
highest peaks up to that count (plus a few extra) become atoms; elements are assigned
heaviest first to the peaks with the most integrated density, each element limited to its
count (a peak on a special position uses up 1/site-order of an atom). Hydrogen is
never placed (it is the refiner's job). Sites are then moved to the symmetry image nearest
to the atoms already placed, so the asymmetric unit comes out as connected fragments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refractor_core.crystal.cell import orthogonalization_matrix
from refractor_core.crystal.formula import atomic_number, parse_formula
from refractor_core.crystal.fourier import Peak
from refractor_core.crystal.symmetry import SymmetryOps
from refractor_core.types import Site, SpaceGroupRef, Structure, UnitCell

#: volume per non-hydrogen atom (Å³) used to estimate Z or the contents
VOLUME_PER_ATOM = 18.0


@dataclass
class ExpectedContents:
    """Non-H atoms expected per asymmetric unit (general-position equivalents), by element."""

    counts: dict[str, float]
    z: float
    z_estimated: bool

    @property
    def total(self) -> float:
        return float(sum(self.counts.values()))

    def heaviest_first(self) -> list[str]:
        return sorted(self.counts, key=lambda e: (-atomic_number(e), e))


def estimate_z(formula_counts: dict[str, float], volume: float, n_ops: int) -> float:
    """Z from the volume (≈18 Å³ per non-H atom), rounded to a plausible multiple of the operations."""
    heavy = sum(n for e, n in formula_counts.items() if e not in ("H", "D"))
    if heavy <= 0:
        return float(n_ops)
    raw = volume / (VOLUME_PER_ATOM * heavy)
    choices = np.array([n_ops * f for f in (0.125, 0.25, 0.5, 1, 2, 3, 4, 6, 8)], dtype=np.float64)
    choices = choices[choices >= 0.999]
    if len(choices) == 0:
        return float(max(round(raw), 1))
    return float(choices[np.argmin(np.abs(np.log(choices / max(raw, 1e-6))))])


def expected_contents(
    formula: str | None, z: float | None, cell: UnitCell, symmetry: SymmetryOps
) -> ExpectedContents:
    """Expected non-H atoms per asymmetric unit; all carbon from the volume without a formula."""
    n_ops = symmetry.n
    if formula:
        counts = parse_formula(formula)
        estimated = z is None
        zz = float(z) if z is not None else estimate_z(counts, cell.volume, n_ops)
        per_asu = {e: n * zz / n_ops for e, n in counts.items() if e not in ("H", "D")}
        return ExpectedContents(counts=per_asu, z=zz, z_estimated=estimated)
    n = max(cell.volume / VOLUME_PER_ATOM / n_ops, 1.0)
    return ExpectedContents(counts={"C": n}, z=float(n_ops), z_estimated=True)


def _distance_to_images(cell_m: np.ndarray, images: np.ndarray, x: np.ndarray) -> np.ndarray:
    d = images - x
    d -= np.round(d)
    return np.linalg.norm(d @ cell_m.T, axis=-1)


def drop_close_peaks(peaks: list[Peak], cell: UnitCell, symmetry: SymmetryOps, min_distance: float) -> list[Peak]:
    """Peaks (strongest integrated density first) with none closer than `min_distance` Å to a kept one's images."""
    m = orthogonalization_matrix(cell)
    kept: list[Peak] = []
    images = np.zeros((0, 3))
    for p in sorted(peaks, key=lambda q: -q.integrated):
        if len(images) and _distance_to_images(m, images, p.xyz).min() < min_distance:
            continue
        kept.append(p)
        images = np.concatenate([images, symmetry.images(p.xyz)], axis=0)
    return kept


def assign_elements(
    peaks: list[Peak], contents: ExpectedContents, *, slack: float = 0.5, extra_fraction: float = 0.0
) -> list[tuple[Peak, str]]:
    """Choose the atoms by peak height, then give elements by integrated density.

    Peaks are taken highest first until the expected number of atoms is reached (a peak of
    site order m counts 1/m), plus up to `extra_fraction` of that number more (sites for
    the refiner to keep or reject: disorder, solvent, a wrong Z). Among the chosen, the
    heaviest element goes to the densest peaks, each element limited to its count (an
    element accepts a peak while its remaining count is at least `slack` of the peak's
    share); chosen peaks left once the formula is used up become the lightest element.
    """
    order = contents.heaviest_first()
    if not order:
        return []
    budget = contents.total * (1.0 + extra_fraction)
    chosen: list[Peak] = []
    used = 0.0
    for p in sorted(peaks, key=lambda q: -q.height):
        share = 1.0 / max(p.site_order, 1)
        if used + slack * share > budget + 1e-9:
            continue
        chosen.append(p)
        used += share
    remaining = dict(contents.counts)
    out: list[tuple[Peak, str]] = []
    for p in sorted(chosen, key=lambda q: -q.integrated):
        share = 1.0 / max(p.site_order, 1)
        for e in order:
            if remaining[e] >= slack * share - 1e-9:
                remaining[e] -= share
                out.append((p, e))
                break
        else:
            out.append((p, order[-1]))
    return out


def _gather(cell: UnitCell, symmetry: SymmetryOps, xyz: np.ndarray) -> np.ndarray:
    """Move each site (in order) to the image nearest to the sites placed before it."""
    m = orthogonalization_matrix(cell)
    placed: list[np.ndarray] = []
    lattice = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=np.float64)
    for x in xyz:
        if not placed:
            placed.append(np.mod(x, 1.0))
            continue
        imgs = np.mod(symmetry.images(x), 1.0)  # (n, 3)
        cand = (imgs[:, None, :] + lattice[None, :, :]).reshape(-1, 3)
        ref = np.array(placed)
        d = np.linalg.norm((cand[:, None, :] - ref[None, :, :]) @ m.T, axis=-1).min(axis=1)
        best = cand[int(np.argmin(d))]
        placed.append(best)
    out = np.array(placed).reshape(-1, 3)
    # bring the fragment's centre into the unit cell
    if len(out):
        out -= np.floor(out.mean(axis=0))
    return out


def peaks_to_structure(
    peaks: list[Peak],
    cell: UnitCell,
    space_group: SpaceGroupRef,
    symmetry: SymmetryOps,
    contents: ExpectedContents,
    *,
    bond_min: float = 1.05,
    u_iso: float = 0.04,
    extra_fraction: float = 0.0,
    name: str = "charge-flip",
    wavelength: float | None = None,
) -> Structure:
    """Interpret peaks as atoms: drop close peaks, assign elements, gather into fragments."""
    clean = drop_close_peaks(peaks, cell, symmetry, bond_min)
    assigned = assign_elements(clean, contents, extra_fraction=extra_fraction)
    # heaviest first, then by density, so labels read naturally
    assigned.sort(key=lambda pe: (-atomic_number(pe[1]), -pe[0].integrated))
    xyz = _gather(cell, symmetry, np.array([p.xyz for p, _ in assigned]).reshape(-1, 3))
    counters: dict[str, int] = {}
    sites = []
    for (p, e), x in zip(assigned, xyz):
        counters[e] = counters.get(e, 0) + 1
        sites.append(
            Site(
                label=f"{e}{counters[e]}",
                element=e,
                xyz=(float(x[0]), float(x[1]), float(x[2])),
                occupancy=1.0,
                u_iso=u_iso,
                site_symmetry_order=int(p.site_order) if p.site_order > 1 else None,
            )
        )
    return Structure(cell=cell, space_group=space_group, sites=sites, name=name, wavelength=wavelength)
