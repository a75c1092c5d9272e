"""Where dataset structures come from. Each source yields small, picklable `StructureTask`s;
`realize(task)` turns one into a `StructureRecord` (a pure function of the task, so a
Dask worker builds exactly what the local executor builds).

Sources (see docs/datasets.md):

- ``aflow``: the 1092 AFLOW prototype CIFs in ../shared/data/structures/aflow-prototypes
  (experimentally reported inorganic structures). Group = the AFLOW prototype label.
- ``pyxtal-db``: pyxtal's bundled `database/test.db` (about 100 organic CSD crystals, with H).
- ``pyxtal-cifs``: pyxtal's bundled example CIFs (`database/cifs/`).
- ``cif-dir``: any folder of CIFs given by the user (e.g. a COD download).
- ``random-inorganic``: pyxtal random atomic crystals with charge-balanced compositions
  (one or two cations, one or two anions, common oxidation states).
- ``random-organic``: pyxtal random molecular crystals of the molecules bundled with pyxtal
  (`database/molecules.json`), in the space groups organic crystals favour, sometimes with
  water or a metal ion, sometimes with H substituted by F/Cl/Br/I at C-X bond lengths.
- ``substitution``: an AFLOW prototype with each element replaced by one of its chemical
  family, the cell scaled by the change in covalent volume. Group = the parent prototype,
  so a substituted structure always lands on its parent's side of a split.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..types import Structure

Kind = Literal["inorganic", "organic", "metal-organic"]

#: heaviest element with tabulated X-ray form factors used here (Cf)
MAX_Z = 98

#: metals (for the organic / metal-organic distinction)
NON_METALS = frozenset("H He B C N O F Ne Si P S Cl Ar Ge As Se Br Kr Sb Te I Xe At Rn D".split())


class SiteInfo(BaseModel):
    """Per-site annotations stored beside the structure."""

    model_config = ConfigDict(extra="forbid")

    wyckoff: str | None
    site_symmetry_order: int
    multiplicity: int
    site_symmetry: str | None = None


class StructureRecord(BaseModel):
    """One dataset structure with what splits and statistics need."""

    model_config = ConfigDict(extra="forbid")

    id: str
    source: str
    group: str  # prototype or chemical-family key: never on both sides of a split
    formula: str  # sum formula per formula unit (Hill order)
    z: float
    kind: Kind
    structure: Structure
    sites: list[SiteInfo]
    n_atoms_cell: float
    split: str | None = None
    origin: str = ""  # file, database code or generator recipe

    @property
    def elements(self) -> list[str]:
        return sorted({s.element for s in self.structure.sites})


@dataclass(frozen=True)
class StructureTask:
    """A recipe for one structure: source, key and seed (picklable)."""

    source: str
    key: str
    seed: int
    options: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)


def stable_seed(*parts: Any) -> int:
    """A 31-bit seed from any parts, stable across processes and Python versions."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def pyxtal_data_dir() -> Path:
    import pyxtal

    return Path(pyxtal.__file__).parent / "database"


def default_aflow_dir() -> Path | None:
    """../shared/data/structures/aflow-prototypes beside the project, if present."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        p = parent.parent / "shared" / "data" / "structures" / "aflow-prototypes"
        if p.is_dir():
            return p
    return None


# --------------------------------------------------------------------------------------
# task lists
# --------------------------------------------------------------------------------------


def aflow_tasks(folder: Path, seed: int, limit: int | None = None) -> list[StructureTask]:
    files = sorted(Path(folder).glob("*.cif"))[:limit]
    return [StructureTask("aflow", str(f), stable_seed(seed, "aflow", f.name)) for f in files]


def cif_dir_tasks(folder: Path, seed: int, limit: int | None = None) -> list[StructureTask]:
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() == ".cif")[:limit]
    return [StructureTask("cif-dir", str(f), stable_seed(seed, "cif-dir", f.name)) for f in files]


def pyxtal_db_tasks(seed: int, limit: int | None = None) -> list[StructureTask]:
    from pyxtal.db import database

    db = database(str(pyxtal_data_dir() / "test.db"))
    return [StructureTask("pyxtal-db", c, stable_seed(seed, "pyxtal-db", c)) for c in list(db.codes)[:limit]]


def pyxtal_cif_tasks(seed: int, limit: int | None = None) -> list[StructureTask]:
    files = sorted((pyxtal_data_dir() / "cifs").glob("*.cif"))[:limit]
    return [StructureTask("pyxtal-cifs", str(f), stable_seed(seed, "pyxtal-cifs", f.name)) for f in files]


def random_tasks(source: str, n: int, seed: int) -> list[StructureTask]:
    return [StructureTask(source, f"{source}-{i:05d}", stable_seed(seed, source, i)) for i in range(n)]


def substitution_tasks(folder: Path, n: int, seed: int) -> list[StructureTask]:
    files = sorted(Path(folder).glob("*.cif"))
    rng = np.random.default_rng(stable_seed(seed, "substitution-parents"))
    parents = rng.choice(len(files), size=min(n, len(files)), replace=False) if files else []
    return [
        StructureTask("substitution", str(files[int(p)]), stable_seed(seed, "substitution", files[int(p)].name, i))
        for i, p in enumerate(parents)
    ]


# --------------------------------------------------------------------------------------
# realising one task
# --------------------------------------------------------------------------------------


def classify_kind(elements: set[str]) -> Kind:
    """organic: C and H, no metal; metal-organic: C, H and a metal; otherwise inorganic."""
    if "C" in elements and ("H" in elements or "D" in elements):
        return "metal-organic" if any(e not in NON_METALS for e in elements) else "organic"
    return "inorganic"


def make_record(structure: Structure, task: StructureTask, group: str, origin: str) -> StructureRecord:
    """Annotate a structure and wrap it as a record."""
    from ..simulation.composition import formula_and_z
    from .convert import annotate

    from ..crystal.formula import atomic_number

    heavy = sorted({s.element for s in structure.sites if atomic_number(s.element) > MAX_Z})
    if heavy:
        raise ValueError(f"elements without X-ray form factors: {', '.join(heavy)}")
    formula, z, contents = formula_and_z(structure)
    info = [SiteInfo(**a.__dict__) for a in annotate(structure)]
    rid = f"{task.source}:{Path(task.key).stem if '/' in task.key else task.key}"
    if task.source == "substitution":
        rid = f"substitution:{Path(task.key).stem}:{task.seed:08x}"
    return StructureRecord(
        id=rid,
        source=task.source,
        group=group,
        formula=formula,
        z=z,
        kind=classify_kind({s.element for s in structure.sites}),
        structure=structure.model_copy(update={"name": rid}),
        sites=info,
        n_atoms_cell=float(sum(contents.values())),
        origin=origin,
    )


def realize(task: StructureTask) -> StructureRecord:
    """Build the structure a task describes (raises on failure; callers record it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if task.source in ("aflow", "cif-dir", "pyxtal-cifs"):
            from .convert import structure_from_cif

            st = structure_from_cif(task.key)
            group = Path(task.key).stem if task.source == "aflow" else "formula"
            return make_record(st, task, group, origin=Path(task.key).name)
        if task.source == "pyxtal-db":
            return _from_pyxtal_db(task)
        if task.source == "random-inorganic":
            return _random_inorganic(task)
        if task.source == "random-organic":
            return _random_organic(task)
        if task.source == "substitution":
            return _substituted(task)
    raise ValueError(f"unknown structure source {task.source!r}")


def _from_pyxtal_db(task: StructureTask) -> StructureRecord:
    from pyxtal.db import database

    from .convert import structure_from_ase

    db = _pyxtal_db()
    row = db.get_row(task.key)
    st = structure_from_ase(row.toatoms(), name=task.key, symprec=0.05)
    return make_record(st, task, group="formula", origin=f"pyxtal test.db {task.key}")


@lru_cache(maxsize=1)
def _pyxtal_db():
    from pyxtal.db import database

    return database(str(pyxtal_data_dir() / "test.db"))


# -- random inorganic ------------------------------------------------------------------

#: cations with their common oxidation states
CATIONS: dict[str, tuple[int, ...]] = {
    "Li": (1,), "Na": (1,), "K": (1,), "Rb": (1,), "Cs": (1,), "Ag": (1,), "Tl": (1,), "Cu": (1, 2),
    "Be": (2,), "Mg": (2,), "Ca": (2,), "Sr": (2,), "Ba": (2,), "Zn": (2,), "Cd": (2,), "Mn": (2, 3, 4),
    "Fe": (2, 3), "Co": (2, 3), "Ni": (2,), "Pb": (2,), "Sn": (2, 4), "Hg": (2,),
    "Al": (3,), "Ga": (3,), "In": (3,), "Sc": (3,), "Y": (3,), "La": (3,), "Ce": (3, 4), "Nd": (3,),
    "Gd": (3,), "Er": (3,), "Cr": (3,), "Bi": (3,), "Ti": (4,), "Zr": (4,), "Hf": (4,), "Si": (4,),
    "Ge": (4,), "Nb": (5,), "Ta": (5,), "V": (5,), "P": (5,), "Sb": (5,), "Mo": (6,), "W": (6,),
    "B": (3,), "As": (5,), "Te": (4,),
}
ANIONS: dict[str, int] = {"O": -2, "F": -1, "Cl": -1, "Br": -1, "I": -1, "S": -2, "Se": -2, "N": -3}
ANION_WEIGHTS = {"O": 0.45, "F": 0.1, "Cl": 0.1, "Br": 0.05, "I": 0.04, "S": 0.14, "Se": 0.05, "N": 0.07}
#: space groups common among inorganic structures (drawn half of the time)
COMMON_INORGANIC_SG = (225, 14, 62, 194, 15, 2, 166, 139, 227, 164, 12, 221, 63, 191, 129, 148, 11,
                       136, 123, 88, 71, 167, 205, 216, 186, 141, 65, 61, 33, 19, 176, 4, 1, 9, 60)


def charge_balanced(rng: np.random.Generator, max_atoms: int = 14) -> dict[str, int] | None:
    """A random charge-balanced composition {element: count} (counts without common factor)."""
    n_cat = 1 if rng.random() < 0.45 else 2
    n_an = 1 if rng.random() < 0.85 else 2
    cats = [str(c) for c in rng.choice(sorted(CATIONS), size=n_cat, replace=False)]
    names = sorted(ANION_WEIGHTS)
    w = np.array([ANION_WEIGHTS[a] for a in names])
    ans = [str(a) for a in rng.choice(names, size=n_an, replace=False, p=w / w.sum())]
    charges = [int(rng.choice(CATIONS[c])) for c in cats] + [ANIONS[a] for a in ans]
    species = cats + ans
    import itertools

    options = []
    for counts in itertools.product(range(1, 9), repeat=len(species)):
        if sum(counts) > max_atoms or math.gcd(*counts) != 1:
            continue
        if sum(q * n for q, n in zip(charges, counts)) == 0:
            options.append(counts)
    if not options:
        return None
    options.sort(key=sum)
    pick = options[int(rng.integers(0, min(len(options), 4)))]  # favour the simplest
    return dict(zip(species, pick))


def _random_inorganic(task: StructureTask) -> StructureRecord:
    from pyxtal import pyxtal

    from .convert import structure_from_pyxtal

    rng = np.random.default_rng(task.seed)
    max_cell = int(task.option("max_atoms_cell", 120))
    for _attempt in range(12):
        comp = charge_balanced(rng)
        if comp is None:
            continue
        sg = int(rng.choice(COMMON_INORGANIC_SG)) if rng.random() < 0.6 else int(rng.integers(1, 231))
        for mult in rng.permutation([1, 2, 3, 4, 6, 8])[:4]:
            num = [int(n * mult) for n in comp.values()]
            if sum(num) > max_cell:
                continue
            crystal = pyxtal()
            try:
                s = _seed_global(rng)
                crystal.from_random(3, sg, list(comp), num, factor=float(rng.uniform(1.0, 1.3)), random_state=s)
            except Exception:  # pyxtal: incompatible Wyckoff counts or no packing found
                continue
            if not crystal.valid:
                continue
            st = structure_from_pyxtal(crystal, name=task.key, symprec=0.01)
            formula = "".join(f"{e}{n}" for e, n in comp.items())
            return make_record(st, task, group="formula", origin=f"pyxtal random sg {sg} {formula} x{mult}")
    raise RuntimeError(f"{task.key}: no random inorganic crystal after 12 compositions")


def _seed_global(rng: np.random.Generator) -> int:
    """A seed drawn from `rng`; numpy's and Python's global generators are seeded with it.

    pyxtal draws from the global generators and from its own `random_state` (a fresh,
    unseeded generator unless one is passed): pass the returned seed as `random_state`.
    """
    import random

    s = int(rng.integers(0, 2**31 - 1))
    np.random.seed(s)
    random.seed(s)
    return s


# -- random organic ----------------------------------------------------------------------

#: space groups of organic crystals with rough CSD frequencies
ORGANIC_SG = {14: 0.36, 2: 0.24, 15: 0.08, 19: 0.08, 4: 0.05, 61: 0.04, 33: 0.02, 9: 0.01, 1: 0.01,
              29: 0.01, 18: 0.01, 5: 0.01, 60: 0.01, 56: 0.005, 43: 0.005, 62: 0.005, 88: 0.005, 148: 0.005}
ORGANIC_METALS = ("Na", "K", "Mg", "Ca", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Cd", "Ag", "Sn", "Pd", "Pt")
HALOGEN_BOND = {"F": 1.35, "Cl": 1.75, "Br": 1.90, "I": 2.10}
#: molecules of pyxtal's collection too large or too symmetric to be typical (skipped)
SKIP_MOLECULES = {"C60", "xxvi", "xxv", "DBPERY", "TBZPER", "TBZPYR", "ANULEN", "QUPHEN"}


@lru_cache(maxsize=1)
def _molecule_table() -> dict[str, dict]:
    data = json.loads((pyxtal_data_dir() / "molecules.json").read_text())
    return {m["name"]: m for m in data if m["name"] not in SKIP_MOLECULES}


def _halogenate(elements: list[str], xyz: np.ndarray, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """Replace 1-2 H bonded to C by a halogen, moved out to the C-X bond length."""
    els = list(elements)
    pos = np.array(xyz, dtype=np.float64)
    hs = [i for i, e in enumerate(els) if e == "H"]
    cs = [i for i, e in enumerate(els) if e == "C"]
    if not hs or not cs:
        return els, pos
    rng.shuffle(hs)
    for i in hs[: int(rng.integers(1, 3))]:
        d = np.linalg.norm(pos[cs] - pos[i], axis=1)
        j = cs[int(np.argmin(d))]
        if d.min() > 1.2:
            continue
        x = str(rng.choice(list(HALOGEN_BOND), p=[0.2, 0.45, 0.25, 0.1]))
        v = pos[i] - pos[j]
        pos[i] = pos[j] + v / np.linalg.norm(v) * HALOGEN_BOND[x]
        els[i] = x
    return els, pos


def _random_organic(task: StructureTask) -> StructureRecord:
    from pymatgen.core import Molecule
    from pyxtal import pyxtal
    from pyxtal.molecule import pyxtal_molecule
    from pyxtal.symmetry import Group

    from .convert import structure_from_pyxtal

    rng = np.random.default_rng(task.seed)
    table = _molecule_table()
    names = sorted(table)
    sgs = sorted(ORGANIC_SG)
    p = np.array([ORGANIC_SG[s] for s in sgs])
    for _attempt in range(10):
        name = str(rng.choice(names))
        mol = table[name]
        els, xyz = list(mol["elements"]), np.array(mol["xyz"], dtype=np.float64)
        if rng.random() < 0.35:
            els, xyz = _halogenate(els, xyz, rng)
        sg = int(rng.choice(sgs, p=p / p.sum()))
        mult = Group(sg)[0].multiplicity
        zprime = 2 if rng.random() < 0.1 else 1
        molecules = [Molecule(els, xyz)]
        numbers = [mult * zprime]
        extra = rng.random()
        if extra < 0.12:  # a hydrate
            w = table["H2O"]
            molecules.append(Molecule(w["elements"], w["xyz"]))
            numbers.append(mult)
        elif extra < 0.22:  # a metal ion beside the molecules (metal-organic-like)
            molecules.append(Molecule([str(rng.choice(ORGANIC_METALS))], [[0.0, 0.0, 0.0]]))
            numbers.append(max(mult // 2, 1))
        crystal = pyxtal(molecular=True)
        try:
            s = _seed_global(rng)
            crystal.from_random(3, sg, [pyxtal_molecule(m, random_state=s) for m in molecules], numbers,
                                factor=float(rng.uniform(1.0, 1.2)), random_state=s)
        except Exception:  # pyxtal could not pack these molecules in this group
            continue
        if not crystal.valid:
            continue
        st = structure_from_pyxtal(crystal, name=task.key, symprec=0.01)
        return make_record(st, task, group="formula", origin=f"pyxtal molecular {name} sg {sg} Z'={zprime}")
    raise RuntimeError(f"{task.key}: no molecular crystal after 10 attempts")


# -- element substitution ----------------------------------------------------------------

FAMILIES: tuple[tuple[str, ...], ...] = (
    ("Li", "Na", "K", "Rb", "Cs"),
    ("Be", "Mg", "Ca", "Sr", "Ba"),
    ("Sc", "Y", "La", "Ce", "Pr", "Nd", "Sm", "Gd", "Tb", "Dy", "Ho", "Er", "Yb", "Lu"),
    ("Ti", "Zr", "Hf"),
    ("V", "Nb", "Ta"),
    ("Cr", "Mo", "W"),
    ("Mn", "Tc", "Re"),
    ("Fe", "Ru", "Os", "Co", "Rh", "Ir", "Ni", "Pd", "Pt"),
    ("Cu", "Ag", "Au"),
    ("Zn", "Cd", "Hg"),
    ("B", "Al", "Ga", "In", "Tl"),
    ("C", "Si", "Ge", "Sn", "Pb"),
    ("N", "P", "As", "Sb", "Bi"),
    ("O", "S", "Se", "Te"),
    ("F", "Cl", "Br", "I"),
    ("U", "Th", "Np", "Pu"),
)


def _family(element: str) -> tuple[str, ...] | None:
    for fam in FAMILIES:
        if element in fam:
            return fam
    return None


def _substituted(task: StructureTask) -> StructureRecord:
    import gemmi

    from .convert import structure_from_cif

    rng = np.random.default_rng(task.seed)
    parent = structure_from_cif(task.key)
    elements = sorted({s.element for s in parent.sites})
    mapping: dict[str, str] = {}
    for el in elements:
        fam = _family(el)
        if fam is None or len(fam) == 1 or rng.random() < 0.3:
            mapping[el] = el
            continue
        choices = [e for e in fam if e != el and e not in mapping.values()]
        mapping[el] = str(rng.choice(choices)) if choices else el
    if all(k == v for k, v in mapping.items()):
        movable = [e for e in elements if _family(e) and len(_family(e)) > 1]
        if not movable:
            raise RuntimeError(f"{Path(task.key).name}: no element can be substituted")
        el = str(rng.choice(movable))
        mapping[el] = str(rng.choice([e for e in _family(el) if e != el]))
    r = lambda e: gemmi.Element(e).covalent_r  # noqa: E731
    old = sum(r(s.element) ** 3 * s.occupancy for s in parent.sites)
    new = sum(r(mapping[s.element]) ** 3 * s.occupancy for s in parent.sites)
    f = (new / old) ** (1.0 / 3.0) if old > 0 else 1.0
    c = parent.cell
    cell = c.model_copy(update={"a": c.a * f, "b": c.b * f, "c": c.c * f})
    sites = [s.model_copy(update={"element": mapping[s.element], "label": mapping[s.element] + s.label[len(s.element):]})
             for s in parent.sites]
    st = parent.model_copy(update={"cell": cell, "sites": sites})
    text = ", ".join(f"{k}->{v}" for k, v in mapping.items() if k != v)
    return make_record(st, task, group=Path(task.key).stem, origin=f"{Path(task.key).name} with {text}")
