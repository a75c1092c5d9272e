"""Missed symmetry: does a model refined in a subgroup obey a higher space group?

The check behind PLATON's ADDSYM and Marsh's corrections, in its simplest form: expand the
model's non-H atoms to the whole cell, then look for an origin shift p under which every
operation (R, t) of the higher group, moved to that origin (x -> R x + t + (I - R) p), maps
each atom onto an atom of a like element within a tolerance. The shifts tried are those
that map one atom of the rarest element onto each of its images under one operation the
subgroup lacks (the one that fixes most of the shift), so the search is small.

Like PLATON's ADDSYM, the check sees through misassigned atom types and allows a few
misfits: elements at most TYPE_Z_GAP electrons apart count as one type (PLATON treats all
types as equal; X-ray data tell apart least the neighbouring elements, C/N/O or P/S/Cl, which
is what a generated model gets wrong), and a fifth of the atoms may lack a partner (PLATON's
default). A P1 model of pd_complex_malbac (P-1) has two molecules related by the centre
except for C/N/O and P/Cl swaps between them and atoms in a solvent void: 0.85 of its atoms
match, 0.74 with exact elements.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .cell import orthogonalization_matrix
from .formula import atomic_number
from .symmetry import SymmetryOps

#: largest distance (Å) between an atom's image and an atom of a like element that counts
#: as a match
DEFAULT_TOLERANCE = 0.35
#: fraction of the non-H atoms that must match (PLATON's default: up to 20 % misfits)
DEFAULT_FRACTION = 0.8
#: elements at most this many electrons apart are alike (the element swaps' reach)
TYPE_Z_GAP = 3
#: atoms tried in turn as the anchor of the origin search
ANCHORS = 3
#: smallest su (Å) a deviation from the higher symmetry is measured in
MIN_SU_A = 0.001


@dataclass(frozen=True)
class MissedSymmetry:
    """The origin shift (fractional) under which the model obeys the higher group, the
    fraction of non-H atoms that match, and the largest matched distance (Å)."""

    shift: np.ndarray
    fraction: float
    max_distance: float


def _cell_partners(xyz: np.ndarray, elements: list[str], ops: SymmetryOps) -> tuple[np.ndarray, list[np.ndarray]]:
    """All images in the unit cell (duplicates on special positions kept; atom j's image
    under operation m is row j * ops.n + m), and for each atom the rows of the images of a
    like element (at most TYPE_Z_GAP electrons apart): the partners it may match."""
    images = np.mod(ops.images(xyz), 1.0).reshape(-1, 3)
    z = _atomic_numbers(list(elements))
    cell_z = np.repeat(z, ops.n)
    return images, [np.flatnonzero(np.abs(cell_z - zi) <= TYPE_Z_GAP) for zi in z]


def _atomic_numbers(elements: list[str]) -> np.ndarray:
    """Atomic numbers; a symbol that names no element (a dummy type) gets a number of its
    own, alike to no element."""
    names = sorted(set(elements))
    out = []
    for e in elements:
        try:
            out.append(atomic_number(e))
        except InputError:
            out.append(1000 + 10 * TYPE_Z_GAP * names.index(e))
    return np.asarray(out, dtype=np.int64)


def find_missed_symmetry(
    xyz: np.ndarray,
    elements: list[str],
    cell,
    lower: SymmetryOps,
    higher: SymmetryOps,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    min_fraction: float = DEFAULT_FRACTION,
) -> MissedSymmetry | None:
    """The origin shift that makes the model (non-H `xyz`, `elements` in `lower`'s
    asymmetric unit) obey `higher`, or None when there is none."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    if len(xyz) == 0:
        return None
    orth = orthogonalization_matrix(cell)
    cell_xyz, alike = _cell_partners(xyz, elements, lower)
    mine = {r.tobytes() for r in lower.point_group_rotations()}
    extra = [i for i in range(higher.n) if higher.rotations[i].astype(np.int64).tobytes() not in mine]
    if not extra:
        return None
    # the operation that fixes most of the shift (an inversion fixes all of it); along the
    # directions it leaves free, shifts that are multiples of 1/8 (those between the
    # conventional origins of a group and its subgroups) are tried
    k = max(extra, key=lambda i: (np.linalg.matrix_rank(np.eye(3) - higher.rotations[i]), -i))
    r_k, t_k = higher.rotations[k].astype(np.float64), higher.translations[k]
    pinv = np.linalg.pinv(np.eye(3) - r_k)
    _, sv, vt = np.linalg.svd(np.eye(3) - r_k)
    free = vt[sv < 1e-9]
    offsets = [sum((c / 8.0) * v for c, v in zip(cs, free)) for cs in itertools.product(range(8), repeat=len(free))]
    # anchors: atoms of the rarest types first; more than one, since an anchor may be
    # one of the misfits
    anchors = sorted(range(len(xyz)), key=lambda i: (len(alike[i]), i))[:ANCHORS]
    best: MissedSymmetry | None = None
    tried: list[np.ndarray] = []
    for anchor in anchors:
        for b in cell_xyz[alike[anchor]]:
            d = b - r_k @ xyz[anchor] - t_k
            for n, off in itertools.product(itertools.product((0.0, 1.0), repeat=3), offsets):
                p = np.mod(pinv @ (d + np.array(n)) + off, 1.0)
                if any(np.allclose(_wrap(p - q), 0.0, atol=1e-6) for q in tried):
                    continue
                tried.append(p)
                fraction, worst = _agreement(xyz, cell_xyz, alike, higher, p, orth, tolerance)
                if fraction >= min_fraction and (best is None or fraction > best.fraction):
                    best = MissedSymmetry(shift=p, fraction=fraction, max_distance=worst)
                    if fraction >= 1.0:
                        return best
        if best is not None:
            return best
    return best


def major_sites(structure) -> list:
    """The non-H sites the check compares: minor disorder components (a PART other than 0
    with occupancy ≤ 0.5) are left out."""
    return [s for s in structure.non_hydrogen() if s.part == 0 or s.occupancy > 0.5]


def missed_symmetry(structure, space_group, **kwargs) -> MissedSymmetry | None:
    """`find_missed_symmetry` for a Structure (its major non-H sites) and a higher group."""
    sites = major_sites(structure)
    if not sites:
        return None
    return find_missed_symmetry(
        np.array([s.xyz for s in sites], dtype=np.float64), [s.element for s in sites], structure.cell,
        SymmetryOps.from_space_group(structure.space_group), SymmetryOps.from_space_group(space_group), **kwargs,
    )


def _wrap(d: np.ndarray) -> np.ndarray:
    return d - np.round(d)


def _agreement(xyz, cell_xyz, alike: list[np.ndarray], higher: SymmetryOps, p: np.ndarray, orth: np.ndarray,
               tolerance: float) -> tuple[float, float]:
    """(fraction of atoms all of whose images under `higher` at origin p land on an atom of
    a like element (`alike[i]`: rows of the cell's atoms) within `tolerance`, largest such
    distance among the matched atoms)."""
    matched, worst = 0, 0.0
    for x, rows in zip(xyz, alike):
        dist = _nearest_partners(x, cell_xyz[rows], higher, p, orth)[0]
        if dist.max() <= tolerance:
            matched += 1
            worst = max(worst, float(dist.max()))
    return matched / len(xyz), worst


def _nearest_partners(x, pool, higher: SymmetryOps, p: np.ndarray, orth: np.ndarray):
    """For each operation of `higher` at origin p: the distance (Å) from the image of `x` to
    the nearest atom of `pool`, that atom's row in `pool`, and the fractional difference
    (partner - image, wrapped)."""
    imgs = higher.images(x - p) + p  # R x + t + (I - R) p: the operations at origin p
    diff = _wrap(pool[None, :, :] - imgs[:, None, :])
    dist = np.linalg.norm(diff @ orth.T, axis=-1)
    nearest = dist.argmin(axis=1)
    rows = np.arange(len(imgs))
    return dist[rows, nearest], nearest, diff[rows, nearest]


def deviation_in_su(structure, space_group, missed: MissedSymmetry, *, tolerance: float = DEFAULT_TOLERANCE) -> float | None:
    """The largest deviation of a matched atom from the higher group, in units of its
    standard uncertainty: over the major non-H sites and the operations of `space_group` at
    the found origin (refined by least squares over the matched pairs), the distance from
    an atom's image to its like-element partner divided by the su of that distance along
    it (both atoms' coordinate su; covariances ignored). Misfits (no partner within
    `tolerance`) do not count. None when the model carries no coordinate su.

    A model that truly has the symmetry deviates from it by noise, and by what its extra
    freedom fits of the data's systematic errors: on measured data, centrosymmetric
    structures refined in P1 deviate by up to ~18 su (ethylene_oxide, thpp, pd_complex_malbac,
    cod1550236; pd's P1 model from the pipeline 17.2). A fragment of a pseudo-symmetric
    structure moved by 0.2 Å or more deviates by 26 su and more
    (benchmarks/pseudo_symmetry.py).
    """
    sites = major_sites(structure)
    if not sites or any(s.xyz_su is None for s in sites):
        return None
    orth = orthogonalization_matrix(structure.cell)
    lower = SymmetryOps.from_space_group(structure.space_group)
    higher = SymmetryOps.from_space_group(space_group)
    xyz = np.array([s.xyz for s in sites], dtype=np.float64)
    var = np.array([s.xyz_su for s in sites], dtype=np.float64) ** 2  # fractional variances
    cell_xyz, alike = _cell_partners(xyz, [s.element for s in sites], lower)

    def pairs(p):
        """(atom, operation, partner's row in the cell, fractional partner - image) of the
        matched atoms."""
        out = []
        for i, x in enumerate(xyz):
            dist, nearest, diff = _nearest_partners(x, cell_xyz[alike[i]], higher, p, orth)
            if dist.max() <= tolerance:
                out += [(i, k, int(alike[i][nearest[k]]), diff[k]) for k in range(higher.n)]
        return out

    # the origin from the search is set by an anchor atom; refine it over all matched
    # pairs: moving the origin by dp moves an image under (R, t) by (I - R) dp
    p = np.asarray(missed.shift, dtype=np.float64)
    found = pairs(p)
    if not found:
        return None
    design = np.concatenate([orth @ (np.eye(3) - higher.rotations[k]) for _, k, _, _ in found])
    target = np.concatenate([orth @ d for _, _, _, d in found])
    p = p + np.linalg.lstsq(design, target, rcond=1e-9)[0]
    worst = 0.0
    for i, k, row, d in pairs(p):
        vec = orth @ d
        length = float(np.linalg.norm(vec))
        if length < 1e-9:
            continue
        u = vec / length
        # the partner is the image of atom j under the lower group's operation m
        j, m = divmod(row, lower.n)
        r, q = higher.rotations[k].astype(np.float64), lower.rotations[m].astype(np.float64)
        cov = r @ np.diag(var[i]) @ r.T + q @ np.diag(var[j]) @ q.T
        # a coordinate fixed by a special position has su 0: never divide by less than
        # MIN_SU_A (the best su measured data give a light atom)
        su = max(float(np.sqrt(max(u @ orth @ cov @ orth.T @ u, 0.0))), MIN_SU_A)
        worst = max(worst, length / su)
    return worst


def structure_in_higher_group(structure, space_group, missed: MissedSymmetry, *, tolerance: float = DEFAULT_TOLERANCE):
    """The non-H sites of a subgroup model written in `space_group` (a Structure): origin
    moved by the found shift, one site per orbit of the higher group, isotropic U (Ueq)."""
    from ..types import Site, Structure

    higher = SymmetryOps.from_space_group(space_group)
    orth = orthogonalization_matrix(structure.cell)
    kept: list = []
    kept_xyz: list[np.ndarray] = []
    for s in major_sites(structure):
        y = np.mod(np.asarray(s.xyz, dtype=np.float64) - missed.shift, 1.0)
        images = higher.images(y)
        duplicate = False
        for x in kept_xyz:
            d = _wrap(images - x) @ orth.T
            if np.linalg.norm(d, axis=1).min() <= tolerance:
                duplicate = True
                break
        if duplicate:
            continue
        kept_xyz.append(y)
        u = s.u_iso if s.u_iso is not None else 0.03
        if s.u_aniso is not None:
            from .cell import u_equiv

            u = float(u_equiv(structure.cell, np.asarray(s.u_aniso)))
        kept.append(Site(label=s.label, element=s.element, xyz=tuple(float(v) for v in y),
                         occupancy=s.occupancy if s.part == 0 else 1.0, u_iso=max(float(u), 0.005)))
    return Structure(cell=structure.cell, space_group=space_group, sites=kept,
                     name=structure.name, wavelength=structure.wavelength)
