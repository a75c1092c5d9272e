"""Cell contents, sum formula and Z of a Structure (what SFAC/UNIT and ZERR state).

Atoms per cell are Σ occupancy × (symmetry operations / site-symmetry order) over the
asymmetric unit, with the site-symmetry orders the structure factors use
(`SymmetryOps.structure_site_orders`: a site's stated `_atom_site_site_symmetry_order`, else
detected within 0.05 Å; `_atom_site_symmetry_multiplicity`, which SHELXL fills with the
order, is not read as one).

Z is the largest common divisor of the number of symmetry operations and of the counts of
the elements whose cell counts are whole numbers (elements on partially occupied sites
may then have fractional counts per formula unit). With Z' = 1 this is the usual Z.
"""

from __future__ import annotations

import math

import numpy as np

from ..crystal.formula import cell_contents, format_formula, normalize_element
from ..crystal.symmetry import SymmetryOps
from ..errors import InputError
from ..types import Structure


def site_multiplicities(structure: Structure, symmetry: SymmetryOps | None = None) -> np.ndarray:
    """Number of positions each asymmetric-unit site generates in the cell, (n,) int."""
    sym = symmetry or SymmetryOps.from_space_group(structure.space_group)
    if not structure.sites:
        return np.zeros(0, dtype=np.int64)
    return sym.n // np.maximum(sym.structure_site_orders(structure), 1)


def cell_contents_of(structure: Structure, symmetry: SymmetryOps | None = None) -> dict[str, float]:
    """Atoms of each element per unit cell (occupancy weighted)."""
    mult = site_multiplicities(structure, symmetry)
    counts: dict[str, float] = {}
    for site, m in zip(structure.sites, mult):
        el = normalize_element(site.element)
        counts[el] = counts.get(el, 0.0) + float(m) * float(site.occupancy)
    return counts


def formula_and_z(structure: Structure, symmetry: SymmetryOps | None = None) -> tuple[str, float, dict[str, float]]:
    """(sum formula in Hill order, Z, cell contents) of a structure."""
    sym = symmetry or SymmetryOps.from_space_group(structure.space_group)
    contents = cell_contents_of(structure, sym)
    whole = [int(round(v)) for v in contents.values() if abs(v - round(v)) < 1e-3 and round(v) > 0]
    z = float(math.gcd(sym.n, *whole)) if whole else 1.0
    formula = format_formula({e: round(n / z, 4) for e, n in contents.items()})
    return formula, z, contents


def formula_mismatch(structure: Structure, formula: str | None, z: float | None) -> float | None:
    """Σ|model - formula| / Σ formula over the non-H elements per cell (None if unknown):
    how far a model's contents are from the formula it should have."""
    if not formula or not z:
        return None
    try:
        want = cell_contents(formula, z)
    except InputError:
        return None
    have = cell_contents_of(structure)
    elements = {e for e in list(want) + list(have) if e not in ("H", "D")}
    total = sum(v for e, v in want.items() if e not in ("H", "D"))
    if total <= 0:
        return None
    return float(sum(abs(have.get(e, 0.0) - want.get(e, 0.0)) for e in elements) / total)
