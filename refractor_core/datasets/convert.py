"""Structures from other libraries (pymatgen, ASE, pyxtal, CIF files) as refractor Structures.

Two routes:

- `structure_from_cell(lattice, positions, species)`: a full unit cell (as pymatgen, ASE or
  pyxtal hold it). spglib finds the space group and its operations *in the given setting*;
  gemmi names that setting (`SpaceGroupRef.from_operations`). When gemmi has no entry for
  it, the cell is first standardised by spglib. The asymmetric unit is one representative
  per orbit (spglib's `equivalent_atoms`).
- `structure_from_cif(path)`: a CIF through the project's own reader (keeps partial
  occupancies, which spglib cannot represent).

`annotate(structure)` adds what a dataset records per site: Wyckoff letter and oriented
site-symmetry symbol (in the standard setting of the space-group type, from spglib on the
expanded cell), site-symmetry order and multiplicity (kernel).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..crystal.formula import normalize_element
from ..crystal.symmetry import SymmetryOps
from ..errors import InputError
from ..types import Site, SpaceGroupRef, Structure, UnitCell

#: default isotropic U (Å²) given to sites of structures that carry no ADPs
DEFAULT_U_ISO = 0.02


def cell_from_matrix(lattice: np.ndarray) -> UnitCell:
    """Cell parameters of a 3x3 lattice matrix (rows are a, b, c in Å)."""
    m = np.asarray(lattice, dtype=np.float64).reshape(3, 3)
    a, b, c = (float(np.linalg.norm(v)) for v in m)

    def angle(u, v):
        return math.degrees(math.acos(float(np.clip(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)), -1, 1))))

    return UnitCell(a=a, b=b, c=c, alpha=angle(m[1], m[2]), beta=angle(m[0], m[2]), gamma=angle(m[0], m[1]))


def _spglib_dataset(lattice, positions, numbers, symprec: float):
    """spglib's symmetry dataset (None when it finds none), without its deprecation noise."""
    import spglib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return spglib.get_symmetry_dataset((lattice, positions, numbers), symprec=symprec)


def _triplets(rotations: np.ndarray, translations: np.ndarray) -> list[str]:
    import gemmi

    out = []
    for r, t in zip(rotations, translations):
        tr = [int(round(x * 24)) % 24 for x in t]
        op = gemmi.Op()
        op.rot = [[int(v) * 24 for v in row] for row in r]
        op.tran = tr
        out.append(op.triplet())
    return out


def structure_from_cell(
    lattice: np.ndarray,
    positions: np.ndarray,
    species: list[str],
    *,
    name: str = "structure",
    symprec: float = 0.01,
    u_iso: float = DEFAULT_U_ISO,
) -> Structure:
    """A Structure (asymmetric unit, space group in the cell's own setting) from a full cell."""
    import spglib

    elements = [normalize_element(s) for s in species]
    kinds = sorted(set(elements))
    numbers = [kinds.index(e) + 1 for e in elements]
    lat = np.asarray(lattice, dtype=np.float64)
    pos = np.mod(np.asarray(positions, dtype=np.float64), 1.0)
    ds = _spglib_dataset(lat, pos, numbers, symprec)
    if ds is None:
        raise InputError(f"{name}: spglib found no symmetry (bad cell?)")
    try:
        sg = SpaceGroupRef.from_operations(_triplets(ds.rotations, ds.translations))
    except ValueError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            lat, pos, nums = spglib.standardize_cell((lat, pos, numbers), to_primitive=False, no_idealize=False, symprec=symprec)
        elements = [kinds[n - 1] for n in nums]
        numbers = list(nums)
        ds = _spglib_dataset(lat, pos, numbers, symprec)
        sg = SpaceGroupRef.from_operations(_triplets(ds.rotations, ds.translations))
    cell = cell_from_matrix(lat)
    reps = sorted(set(int(i) for i in ds.equivalent_atoms))
    sites = []
    counter: dict[str, int] = {}
    for i in reps:
        el = elements[i]
        counter[el] = counter.get(el, 0) + 1
        sites.append(Site(label=f"{el}{counter[el]}", element=el, xyz=tuple(float(x) for x in pos[i]), u_iso=u_iso))
    return Structure(cell=cell, space_group=sg, sites=sites, name=name)


def structure_from_pymatgen(struct, *, name: str | None = None, symprec: float = 0.01) -> Structure:
    """From a pymatgen Structure (ordered; the first species of each site is used)."""
    species = [site.specie.symbol if hasattr(site.specie, "symbol") else str(site.specie) for site in struct]
    return structure_from_cell(
        struct.lattice.matrix, struct.frac_coords, species, name=name or struct.composition.reduced_formula, symprec=symprec
    )


def structure_from_ase(atoms, *, name: str | None = None, symprec: float = 0.01) -> Structure:
    """From an ase.Atoms (periodic)."""
    return structure_from_cell(
        atoms.cell[:], atoms.get_scaled_positions(wrap=True), atoms.get_chemical_symbols(),
        name=name or atoms.get_chemical_formula(), symprec=symprec,
    )


def structure_from_pyxtal(crystal, *, name: str | None = None, symprec: float = 0.01) -> Structure:
    """From a pyxtal crystal (atomic or molecular) through its full pymatgen cell."""
    return structure_from_pymatgen(crystal.to_pymatgen(), name=name, symprec=symprec)


def _structure_from_gemmi(path: Path) -> Structure:
    """A CIF read by gemmi directly: the fallback for files the project reader rejects
    (e.g. `_chemical_formula_sum '(H2O)2 ...'`, or a symop list without its centring)."""
    import gemmi

    try:
        ss = gemmi.read_small_structure(str(path))
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"cannot read CIF: {exc}", path=path) from None
    sg = None
    if ss.symops:
        try:
            sg = SpaceGroupRef.from_operations(list(ss.symops))
        except ValueError:
            sg = None
    for text in (ss.spacegroup_hall, ss.spacegroup_hm, str(ss.spacegroup_number or "")):
        if sg is None and text:
            try:
                sg = SpaceGroupRef.from_symbol(text)
            except ValueError:
                sg = None
    if sg is None:
        raise InputError("no usable space group", path=path)
    c = ss.cell
    sites = []
    for i, site in enumerate(ss.sites):
        el = _element_of_type(site.type_symbol or site.label)
        u = site.u_iso if site.u_iso > 0 else DEFAULT_U_ISO
        sites.append(
            Site(label=site.label or f"{el}{i + 1}", element=el, xyz=(site.fract.x, site.fract.y, site.fract.z),
                 occupancy=float(site.occ), u_iso=float(u))
        )
    cell = UnitCell(a=c.a, b=c.b, c=c.c, alpha=c.alpha, beta=c.beta, gamma=c.gamma)
    return Structure(cell=cell, space_group=sg, sites=sites, name=Path(path).stem)


def _element_of_type(type_symbol: str) -> str:
    """The element of a CIF type symbol; molecular pseudo-atoms ('NH4', 'H2O', 'OH-') give
    their heaviest non-H element (AFLOW prototypes use them for disordered groups)."""
    import re

    text = re.sub(r"[0-9.+-]+$", "", type_symbol.strip())
    if re.fullmatch(r"[A-Z][a-z]?", text):
        return normalize_element(text)
    from ..crystal.formula import atomic_number, parse_formula

    try:
        parts = [e for e in parse_formula(text.replace("(", " ").replace(")", " ")) if e not in ("H", "D")]
    except InputError:
        parts = []
    if not parts:
        return normalize_element(text)
    return max(parts, key=atomic_number)


def structure_from_cif(path: str | Path, *, u_iso: float | None = None) -> Structure:
    """A CIF through the project's reader (gemmi directly if the reader rejects it).

    With `u_iso`, every site gets that isotropic U (structures without ADPs).
    """
    from ..dataio import load_structure

    try:
        st = load_structure(Path(path))
    except InputError:
        st = _structure_from_gemmi(Path(path))
    if u_iso is not None:
        sites = [s.model_copy(update={"u_iso": u_iso, "u_aniso": None}) for s in st.sites]
        st = st.model_copy(update={"sites": sites})
    return st


@dataclass
class SiteAnnotation:
    """What a dataset records per asymmetric-unit site."""

    wyckoff: str | None
    site_symmetry_order: int
    multiplicity: int
    site_symmetry: str | None = None  # oriented site-symmetry symbol (spglib), e.g. "-1", "2/m.."


def expand_cell(structure: Structure, tol: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """All atoms of the cell: fractional positions (M, 3) in [0, 1) and the ASU site of each."""
    sym = SymmetryOps.from_space_group(structure.space_group)
    from ..crystal.cell import orthogonalization_matrix

    m = orthogonalization_matrix(structure.cell)
    pos, owner = [], []
    for i, s in enumerate(structure.sites):
        imgs = np.mod(sym.images(np.array(s.xyz)), 1.0)
        kept: list[np.ndarray] = []
        for x in imgs:
            if not any(np.linalg.norm(((x - k + 0.5) % 1.0 - 0.5) @ m.T) < tol for k in kept):
                kept.append(x)
        pos += kept
        owner += [i] * len(kept)
    return np.array(pos).reshape(-1, 3), np.array(owner, dtype=np.int64)


def annotate(structure: Structure, *, symprec: float = 0.05) -> list[SiteAnnotation]:
    """Wyckoff letter, site-symmetry order and multiplicity of every site.

    The letter comes from spglib on the expanded cell with one atom type per orbit (so the
    symmetry found is the structure's own); None when spglib finds another space-group
    type (e.g. a structure reported in a subgroup).
    """
    import spglib

    sym = SymmetryOps.from_space_group(structure.space_group)
    xyz = np.array([s.xyz for s in structure.sites], dtype=np.float64).reshape(-1, 3)
    order = np.atleast_1d(sym.site_symmetry_order(structure.cell, xyz)).astype(int) if len(xyz) else np.zeros(0, int)
    mult = sym.n // np.maximum(order, 1)
    letters: list[str | None] = [None] * len(structure.sites)
    symbols: list[str | None] = [None] * len(structure.sites)
    try:
        from ..crystal.cell import orthogonalization_matrix

        pos, owner = expand_cell(structure)
        lat = orthogonalization_matrix(structure.cell).T  # rows a, b, c
        ds = _spglib_dataset(lat, pos, (owner + 1).tolist(), symprec)
        if ds is not None and ds.number == structure.space_group.number:
            first = {}
            for j, o in enumerate(owner):
                first.setdefault(int(o), j)
            letters = [ds.wyckoffs[first[i]] if i in first else None for i in range(len(structure.sites))]
            symbols = [ds.site_symmetry_symbols[first[i]] if i in first else None for i in range(len(structure.sites))]
    except Exception:  # annotation is best effort; the structure itself is valid
        pass
    return [
        SiteAnnotation(wyckoff=w, site_symmetry_order=int(o), multiplicity=int(m), site_symmetry=y)
        for w, o, m, y in zip(letters, order, mult, symbols)
    ]
