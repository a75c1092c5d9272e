"""Chemical plausibility of a refined model: short contacts and ADPs (its cell contents
against the formula are the kernel's `simulation.composition.formula_mismatch`).

Used by the `composite` ranker. Contacts are searched over all symmetry images (a cKDTree
over the images of the non-H atoms in the 27 cells around the origin cell); atoms of
different non-zero PARTs (disorder alternatives) and atoms sharing one site on purpose
(mixed sites) never count as a contact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refractor_core.crystal.cell import is_positive_definite, orthogonalization_matrix
from refractor_core.crystal.formula import normalize_element
from refractor_core.crystal.symmetry import SymmetryOps
from refractor_core.types import Structure

#: atoms closer than this (Å) are one site shared on purpose (mixed occupancy)
SHARED_SITE = 0.05


@dataclass
class Contact:
    a: str
    b: str
    distance: float
    limit: float


def _radius(element: str) -> float:
    import gemmi

    return float(gemmi.Element(element).covalent_r)


def short_contacts(structure: Structure, factor: float = 0.7) -> list[Contact]:
    """Pairs of non-H atoms closer than `factor` × the sum of their covalent radii."""
    from scipy.spatial import cKDTree

    sites = [s for s in structure.sites if normalize_element(s.element) not in ("H", "D")]
    if not sites:
        return []
    sym = SymmetryOps.from_space_group(structure.space_group)
    m = orthogonalization_matrix(structure.cell)
    xyz = np.array([s.xyz for s in sites], dtype=np.float64)
    radii = np.array([_radius(normalize_element(s.element)) for s in sites])
    parts = np.array([s.part for s in sites])
    img = np.einsum("sij,nj->sni", sym.rotations.astype(np.float64), xyz) + sym.translations[:, None, :]
    img -= np.floor(img)
    shifts = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=np.float64)
    pts = (img[None] + shifts[:, None, None, :]).reshape(-1, 3) @ m.T
    owner = np.tile(np.arange(len(sites)), 27 * sym.n)
    tree = cKDTree(pts)
    reach = 2.0 * factor * radii.max()
    found: dict[tuple[int, int], Contact] = {}
    for i, s in enumerate(sites):
        c = (xyz[i] - np.floor(xyz[i])) @ m.T
        for h in tree.query_ball_point(c, reach):
            j = int(owner[h])
            d = float(np.linalg.norm(pts[h] - c))
            if d < SHARED_SITE:
                continue  # itself (or a mixed-site partner)
            if parts[i] != 0 and parts[j] != 0 and parts[i] != parts[j]:
                continue
            if i == j and (parts[i] < 0 or s.occupancy <= 0.5 + 1e-6):
                continue  # disorder across a symmetry element
            limit = factor * (radii[i] + radii[j])
            if d >= limit:
                continue
            key = (min(i, j), max(i, j))
            if key not in found or found[key].distance > d:
                found[key] = Contact(sites[key[0]].label, sites[key[1]].label, d, limit)
    return sorted(found.values(), key=lambda c: c.distance)


def non_positive_adps(structure: Structure, floored: list[str] | None = None) -> list[str]:
    """Labels of atoms with a non-positive-definite (or floored) ADP."""
    bad = set(floored or [])
    for s in structure.sites:
        if s.u_aniso is not None:
            if not bool(is_positive_definite(structure.cell, np.asarray(s.u_aniso))):
                bad.add(s.label)
        elif s.u_iso is not None and s.u_iso <= 0:
            bad.add(s.label)
    return sorted(bad)
