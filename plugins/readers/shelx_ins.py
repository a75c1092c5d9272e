"""SHELX instruction files (.ins, .res): crystal data, refinement instructions and the model.

What is read: TITL, CELL, ZERR, LATT, SYMM, SFAC (short and long form), UNIT, DISP, FVAR,
the atom list (isotropic and anisotropic U, negative riding Uiso, free-variable coding;
coordinates and U fixed as value + 10 are kept fixed (`Site.fixed_xyz`, `Site.fixed_u`);
U_iso of several atoms on one free variable with one p are one shared U (an EADP; riding
H share theirs through `Site.u_variable`, which keeps every U_iso code); other
coordinates and U on free variables (10m + p) are decoded and refined freely, with a note;
AFIX/HFIX, PART, RESI, FRAG/FEND blocks skipped; AFIX m >= 17, fitting a FRAG fragment, is
refused), OMIT, SHEL, TWIN, BASF, EXTI, WGHT, MERG, ACTA, BIND, FREE, ANIS, NEUT and HKLF (with its scale and index matrix), and the restraints and ADP/position
constraints the refiner honours (DFIX, DANG, SADI, SAME, FLAT, DELU, RIGU, SIMU, ISOR,
EADP, EXYZ with EQIV; resolved in `shelx_restraints.py`; SUMP on free variables; CHIV,
BUMP, NCSY, DEFS, CONN, ABIN, SWAT, MOVE and LAUE are noted as not honoured; rigid groups,
AFIX n = 6 (continued by n = 5 after an H group), are refined as rigid bodies in the
geometry given (`Site.rigid_group`; SHELXL's idealisation by m is not redone), and
variable-metric ones, n = 9, as free atoms, with a note). Continuation lines (`=`), REM and
comment lines (starting with a blank) are handled as SHELXL does; reading stops at HKLF or
END, so Q peaks and the WGHT suggestion after END in a .res are ignored.

Conventions converted here: SHELX U order (U11 U22 U33 U23 U13 U12) to the CIF order of
`Site.u_aniso`; SHELX site occupation factors (which include the site-symmetry
multiplicity) to chemical occupancies using the kernel's site-symmetry order.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import ValidationError

from refractor_core.errors import InputError
from refractor_core.interfaces import BuildContext, ComponentConfig, DataBundle, HKLReader
from refractor_core.types import (
    MIN_RIGID_GROUP_ATOMS,
    AtomRef,
    RefinementInstructions,
    RestraintInstruction,
    Site,
    SpaceGroupRef,
    Structure,
    UnitCell,
    per_site_unrounded,
)

from .register import ShelxInsConfig
from .shelx_restraints import ResidueAtom, RestraintReader
from ._common import (
    SOLVENT_MASK_NOTE,
    element_or_error,
    guarded,
    head_text,
    read_text,
    to_float,
    to_int,
    validation_message,
)

#: SHELXL instruction keywords (an atom name may not be one of these)
KEYWORDS = frozenset(
    """
    ABIN ACTA AFIX ANIS ANSC ANSR BASF BEDE BIND BLOC BOND BUMP CELL CGLS CHIV CONF CONN
    DAMP DANG DEFS DELU DFIX DISP EADP END EQIV EXTI EXYZ FEND FLAT FMAP FRAG FREE FVAR
    GRID HFIX HKLF HTAB ISOR LATT LAUE LIST L.S. LONE MERG MORE MOVE MPLA NCSY NEUT OMIT
    PART PLAN PRIG REM RESI RIGU RTAB SADI SAME SFAC SHEL SIMU SIZE SPEC STIR SUMP SWAT
    SYMM TEMP TITL TWIN TWST UNIT WGHT WIGL WPDB XNPD ZERR MOLE HOPE SPIN EGEN
    """.split()
)

#: instructions that change a SHELXL refinement but not this one (noted when present):
#: restraints and connectivity, the solvent contribution of a .fab (ABIN), the diffuse
#: solvent model (SWAT), shifted coordinates (MOVE), wavelength-dependent scattering (LAUE)
NOT_HONOURED = frozenset({"CHIV", "BUMP", "NCSY", "DEFS", "CONN", "ABIN", "SWAT", "MOVE", "LAUE"})

#: LATT |N| -> centring vectors (besides 0,0,0)
CENTRING = {
    1: [],
    2: [(0.5, 0.5, 0.5)],
    3: [(2 / 3, 1 / 3, 1 / 3), (1 / 3, 2 / 3, 2 / 3)],
    4: [(0.0, 0.5, 0.5), (0.5, 0.0, 0.5), (0.5, 0.5, 0.0)],
    5: [(0.0, 0.5, 0.5)],
    6: [(0.5, 0.0, 0.5)],
    7: [(0.5, 0.5, 0.0)],
}

_Q_PEAK = re.compile(r"^Q\d+$", re.IGNORECASE)


@dataclass
class InsAtom:
    """One atom line as written (free-variable coded numbers not yet decoded)."""

    label: str
    sfac: int
    xyz: tuple[float, float, float]
    sof: float
    u: tuple[float, ...]  # 1 (Uiso) or 6 (SHELX order) numbers
    line: int
    part: int
    afix: int
    pivot: str | None  # the atom an AFIX group hangs on (for riding H)
    u_parent: str | None  # the previous atom whose U is not riding (for negative Uiso)
    explicit_sof: bool = True
    sof_decimals: int = 5  # decimals written for the sof (its rounding error)
    name: str = ""  # the name as written (label without the residue suffix added here)
    residue: int = 0  # RESI number
    residue_class: str | None = None
    #: the rigid group (AFIX n = 6, continued by n = 5) the atom is a member of, numbered
    #: from 1 in the order of the file; None for other atoms
    rigid_group: int | None = None

    @property
    def refined_u(self) -> bool:
        """A single U refined: as written (positive and below 5) or through a free variable
        (10k + p, k >= 2); not -f riding on the previous atom, not fixed as 10 + U."""
        return len(self.u) == 1 and (0.0 < self.u[0] < 5.0 or abs(self.u[0]) >= 15.0)


@dataclass
class InsFile:
    """Everything read from a .ins/.res (or a CIF's embedded `_shelx_res_file`)."""

    path: str | None
    title: str = ""
    wavelength: float | None = None
    cell: UnitCell | None = None
    cell_line: int | None = None
    z: float | None = None
    zerr_ignored: bool = False  # a malformed ZERR was ignored
    latt: int = 1
    latt_line: int | None = None
    symm: list[tuple[str, int]] = field(default_factory=list)
    sfac: list[str] = field(default_factory=list)
    sfac_line: int | None = None
    unit: list[float] = field(default_factory=list)
    unit_line: int | None = None
    fvar: list[float] = field(default_factory=list)
    instructions: RefinementInstructions = field(default_factory=RefinementInstructions)
    hklf_seen: bool = False
    hklf_scale: float = 1.0
    hklf_matrix: tuple[float, ...] | None = None
    hklf_weight: float = 1.0
    atoms: list[InsAtom] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: instructions read whose effect this refiner does not reproduce (NOT_HONOURED)
    not_honoured: set[str] = field(default_factory=set)
    _space_group: SpaceGroupRef | None = None

    def element_of(self, atom: InsAtom) -> str:
        """The SFAC element of an atom ("" for an SFAC number out of range)."""
        return self.sfac[atom.sfac - 1] if 1 <= atom.sfac <= len(self.sfac) else ""

    # -- symmetry ---------------------------------------------------------------------
    def operator_triplets(self) -> list[str]:
        """All operators of the group: SYMM (and identity) x centring x inversion (LATT > 0)."""
        import gemmi

        ops = [gemmi.Op("x,y,z")]
        for text, line in self.symm:
            try:
                ops.append(gemmi.Op(text))
            except (ValueError, RuntimeError) as exc:
                raise InputError(f"cannot read SYMM operator {text!r}: {exc}", path=self.path, line=line) from None
        inversion = gemmi.Op("-x,-y,-z")
        centring = CENTRING[abs(self.latt)]
        out: list[str] = []
        for op in ops:
            variants = [op.wrap()]
            for vec in centring:
                variants.append(op.translated([int(round(v * 24)) for v in vec]).wrap())
            for v in variants:
                out.append(v.triplet())
                if self.latt > 0:
                    out.append((inversion * v).wrap().triplet())
        return list(dict.fromkeys(out))  # a repeated operator is harmless

    def space_group(self) -> SpaceGroupRef:
        """The space group generated by LATT and SYMM (InputError if it is not one)."""
        if self._space_group is None:
            triplets = self.operator_triplets()
            try:
                sg = SpaceGroupRef.from_operations(triplets)
            except (ValueError, RuntimeError) as exc:
                line = self.symm[0][1] if self.symm else self.latt_line
                raise InputError(
                    f"LATT {self.latt} and the SYMM operators do not form a space group ({exc})",
                    path=self.path,
                    line=line,
                ) from None
            self._space_group = sg
        return self._space_group

    # -- composition ------------------------------------------------------------------
    def cell_contents(self) -> dict[str, float]:
        """Atoms per cell from SFAC and UNIT."""
        counts: dict[str, float] = {}
        for el, n in zip(self.sfac, self.unit):
            if n > 0:
                counts[el] = counts.get(el, 0.0) + n
        return counts

    def formula_and_z(self) -> tuple[str | None, float | None]:
        """Sum formula (SFAC x UNIT / Z) and Z.

        Z comes from ZERR; without ZERR it is the number of symmetry operations (Z' = 1).
        A Z under which no element reaches one atom per formula unit is not credible
        (e.g. ZERR 192 with UNIT 4 4): then the formula is the smallest whole-number one.
        """
        from refractor_core.crystal.formula import format_formula

        contents = self.cell_contents()
        if not contents:
            return None, self.z
        z = self.z
        if z is None or z <= 0:
            try:
                z = float(len(self.space_group().gemmi().operations()))
                what = "ZERR ignored" if self.zerr_ignored else "no ZERR"
                self.notes.append(f"{what}: Z = {z:g} taken from the symmetry (Z' = 1)")
            except InputError:
                z = 1.0
        if max(contents.values()) / z < 0.999:
            ints = [int(round(n)) for n in contents.values()]
            if all(abs(n - i) < 1e-6 for n, i in zip(contents.values(), ints)) and min(ints) > 0:
                z_new = float(math.gcd(*ints))
                self.notes.append(
                    f"Z = {z:g} leaves less than one atom of every element per formula unit; "
                    f"using Z = {z_new:g}"
                )
                z = z_new
        return format_formula({e: n / z for e, n in contents.items()}), z

    def apply_to(self, refl):
        """These HKLF scale, weight and index matrix applied to reflections."""
        return apply_hklf_transform(refl, self)

    # -- model ------------------------------------------------------------------------
    def _value(self, coded: float, what: str, line: int) -> float:
        """Decode a SHELX free-variable coded number (10m + p)."""
        if abs(coded) < 5.0:
            return coded
        m = int(round(coded / 10.0))
        p = coded - 10.0 * m
        if abs(m) <= 1:
            return p
        k = abs(m)
        if k > len(self.fvar):
            raise InputError(
                f"{what} {coded:g} refers to free variable {k}, but FVAR defines only {len(self.fvar)}",
                path=self.path,
                line=line,
            )
        fv = self.fvar[k - 1]
        return p * fv if m > 0 else p * (fv - 1.0)

    @staticmethod
    def fixed(coded: float) -> bool:
        """Whether a number is coded as fixed (10 + p or -10 + p, SHELXL's 10m + p with |m| = 1)."""
        return abs(coded) >= 5.0 and abs(int(round(coded / 10.0))) == 1

    def shared_u_variables(self) -> dict[int, list[str]]:
        """{k: labels} of isotropic atoms whose U_iso is coded on free variable k with one
        and the same p, at least two of them: one U shared (SHELXL refines fv_k; here an
        EADP, which is the same constraint). Other U codes on free variables are refined
        independently."""
        by_k: dict[int, list[tuple[str, float]]] = {}
        for atom in self.atoms:
            code = self.free_variable(atom.u[0]) if len(atom.u) == 1 else None
            if code is not None:
                by_k.setdefault(code[0], []).append((atom.label, round(code[1], 6)))
        return {k: [label for label, _ in members] for k, members in by_k.items()
                if len(members) > 1 and len({p for _, p in members}) == 1}

    @staticmethod
    def free_variable(coded: float) -> tuple[int, float] | None:
        """(k, p) of a number coded 10k + p with free variable k >= 2 (None otherwise):
        the number is p·fv_k for k > 0 and p·(fv_k - 1) for a negative code."""
        if abs(coded) < 15.0:
            return None
        m = int(round(coded / 10.0))
        return abs(m), coded - 10.0 * m

    def structure(self, name: str | None = None) -> Structure | None:
        """The model (None when there are no atoms)."""
        if not self.atoms:
            return None
        if self.cell is None:
            raise InputError("atoms but no CELL instruction", path=self.path, line=self.atoms[0].line)
        if not self.sfac:
            raise InputError("atoms but no SFAC instruction", path=self.path, line=self.atoms[0].line)
        from refractor_core.crystal.cell import u_equiv
        from refractor_core.crystal.symmetry import SymmetryOps

        sg = self.space_group()
        cell = self.cell
        decoded = []
        ueq: dict[str, float] = {}
        coupled_xyz: list[str] = []  # coordinates on a free variable (refined independently)
        tied_u: list[str] = []  # non-H U_iso given as -k times the U_eq before (refined independently)
        held_u: list[str] = []  # U on a free variable (refined independently)
        shared_u = {label for labels in self.shared_u_variables().values() for label in labels}
        for atom in self.atoms:
            if not 1 <= atom.sfac <= len(self.sfac):
                raise InputError(
                    f"atom {atom.label}: scattering factor number {atom.sfac} is not in SFAC "
                    f"(1..{len(self.sfac)})",
                    path=self.path,
                    line=atom.line,
                )
            xyz = tuple(self._value(c, f"atom {atom.label}: coordinate", atom.line) for c in atom.xyz)
            if any(abs(c) >= 15.0 for c in atom.xyz):
                coupled_xyz.append(atom.label)
            if any(abs(u) >= 15.0 for u in atom.u) and atom.label not in shared_u:
                held_u.append(atom.label)
            sof = self._value(atom.sof, f"atom {atom.label}: site occupation factor", atom.line)
            u_iso = None
            u_aniso = None
            if len(atom.u) == 1:
                u = atom.u[0]
                if -5.0 <= u <= -0.5:
                    if atom.u_parent is None or atom.u_parent not in ueq:
                        raise InputError(
                            f"atom {atom.label}: Uiso {u:g} rides on the previous atom, but there is none",
                            path=self.path,
                            line=atom.line,
                        )
                    u_iso = -u * ueq[atom.u_parent]
                    if self.sfac[atom.sfac - 1] not in ("H", "D"):
                        tied_u.append(atom.label)
                else:
                    u_iso = self._value(u, f"atom {atom.label}: Uiso", atom.line)
                ueq[atom.label] = u_iso
            else:
                v = [self._value(x, f"atom {atom.label}: U", atom.line) for x in atom.u]
                u11, u22, u33, u23, u13, u12 = v
                u_aniso = (u11, u22, u33, u12, u13, u23)
                try:
                    ueq[atom.label] = float(u_equiv(cell, np.array(u_aniso)))
                except (ValueError, np.linalg.LinAlgError):
                    ueq[atom.label] = (u11 + u22 + u33) / 3.0
            if not all(math.isfinite(x) for x in (*xyz, sof)):
                raise InputError(f"atom {atom.label}: non-finite number", path=self.path, line=atom.line)
            decoded.append((atom, xyz, sof, u_iso, u_aniso))

        if coupled_xyz:
            self.notes.append("coordinates coded on free variables (10m + p) are refined independently: "
                              + ", ".join(coupled_xyz))
        if held_u:
            self.notes.append("U values coded on free variables (10m + U) are refined independently: "
                              + ", ".join(held_u))
        if tied_u:
            self.notes.append("U_iso of non-H atoms given as a multiple of the U_eq before them (negative "
                              "U_iso) start there and are refined independently: " + ", ".join(tied_u))
        ops = SymmetryOps.from_space_group(sg)
        xyz_all = np.array([d[1] for d in decoded], dtype=np.float64)
        orders = ops.site_orders(cell, xyz_all, [d[0].part for d in decoded])
        sites = []
        for (atom, xyz, sof, u_iso, u_aniso), order in zip(decoded, orders):
            element = self.sfac[atom.sfac - 1]
            is_h = element in ("H", "D")
            m, n = abs(atom.afix) // 10, abs(atom.afix) % 10
            # riding H: placed geometrically (m > 0, not a rigid group) or riding as is (AFIX 3/4)
            calc = bool(is_h and ((m > 0 and m not in (5, 6, 7, 10, 11)) or (m == 0 and n in (3, 4))))
            riding_u = len(atom.u) == 1 and -5.0 <= atom.u[0] <= -0.5
            occupancy = sof * int(order)
            if 5.0 <= abs(atom.sof) < 15.0 and order > 1:
                # a fixed sof written with a few decimals: undo its rounding (1/48 -> 0.02083)
                occupancy = per_site_unrounded(sof, int(order), atom.sof_decimals, 2)
            try:
                sites.append(
                    Site(
                        label=atom.label,
                        element=element,
                        xyz=xyz,
                        occupancy=occupancy,
                        u_iso=u_iso,
                        u_aniso=u_aniso,
                        calc=calc,
                        riding_on=atom.pivot if calc else (atom.u_parent if is_h and riding_u else None),
                        own_u=calc and atom.refined_u,
                        part=atom.part,
                        site_symmetry_order=int(order),
                        afix=atom.afix,
                        rigid_group=atom.rigid_group if not is_h else None,
                        occupancy_variable=self.free_variable(atom.sof),
                        u_variable=self.free_variable(atom.u[0]) if len(atom.u) == 1 else None,
                        fixed_xyz=tuple(self.fixed(c) for c in atom.xyz),
                        fixed_u=_fixed_u(atom.u, self.fixed),
                    )
                )
            except ValidationError as exc:
                raise InputError(
                    f"atom {atom.label}: {validation_message(exc)}", path=self.path, line=atom.line
                ) from None
        self._note_implausible_sites(sites)
        meta = {"shelx_title": self.title}
        if self.fvar:
            meta["fvar"] = list(self.fvar)
        return Structure(
            cell=cell,
            space_group=sg,
            sites=sites,
            name=name or (self.title.split()[0] if self.title.split() else "shelx"),
            wavelength=self.wavelength,
            meta=meta,
        )


    def _note_implausible_sites(self, sites: list[Site]) -> None:
        """Notes on what SHELXL refines without comment but is most likely a mistake of the
        file: an occupancy above 1 (a sof of 1, not 1/order, on a special position), and a
        label naming another element than its SFAC type (SFAC numbers out of step)."""
        from refractor_core.crystal.formula import normalize_element

        over = [f"{s.label} ({s.occupancy:g})" for s in sites if s.occupancy > 1.001]
        if over:
            self.notes.append("occupancies above 1 (SHELXL's sof on a special position is 1/order of the site, "
                              "e.g. 10.25 on a 4-fold axis): " + ", ".join(over[:10]) + (" ..." if len(over) > 10 else ""))
        other = []
        for s in sites:
            try:
                named = normalize_element(s.label)  # the element its letters name ('Cu1' Cu, 'OW1' O)
            except InputError:
                continue  # 'Q1': no element at all
            if named.upper() in (s.element.upper(), s.element[:1].upper()) or s.label[:1].upper() == s.element.upper():
                continue  # 'CA1' may well be a C
            other.append(f"{s.label} ({s.element})")
        if other:
            self.notes.append("atom labels naming another element than their SFAC type: " + ", ".join(other[:10])
                              + (" ..." if len(other) > 10 else ""))


def _fixed_u(coded_u: list[float], fixed) -> tuple[bool, ...]:
    """`Site.fixed_u` from an atom's coded U (SHELX order U11 U22 U33 U23 U13 U12): one
    flag for U_iso, six in u_aniso's order (U11 U22 U33 U12 U13 U23), () if none is fixed."""
    flags = [fixed(u) for u in coded_u]
    if not any(flags):
        return ()
    if len(flags) == 1:
        return (True,)
    u11, u22, u33, u23, u13, u12 = flags
    return (u11, u22, u33, u12, u13, u23)


def _logical_lines(text: str) -> list[tuple[int, str, bool]]:
    """(first line number, joined text, continued) for each instruction, continuations
    ('=') joined; `continued` is True when the instruction ran on to a second line.

    Comment lines (REM, lines starting with a blank, blank lines) are dropped; '!' starts
    a comment inside a line.
    """
    out: list[tuple[int, str, bool]] = []
    raw = text.split("\n")
    i = 0
    n = len(raw)
    while i < n:
        line = raw[i]
        lineno = i + 1
        i += 1
        if not line.strip() or line[0] in " \t":
            continue
        key = line.split(None, 1)[0].upper()
        if key == "REM" or key.startswith("REM"):
            continue
        if key == "TITL":
            out.append((lineno, line, False))
            continue
        body = line.split("!", 1)[0]
        parts = [body]
        while "=" in parts[-1]:
            parts[-1] = parts[-1].split("=", 1)[0]
            if i < n and raw[i][:1] in (" ", "\t"):
                parts.append(raw[i].split("!", 1)[0])
                i += 1
            else:
                break
        out.append((lineno, " ".join(parts), len(parts) > 1))
    return out


def _bare_atom_name(token: str) -> str:
    """An atom name (upper case) without its symmetry code (_$n) and disorder-part mark (^a)."""
    return re.sub(r"(_\$\d+|\^[A-Za-z])$", "", token).upper()


_GLUED_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _split_glued_keyword(token: str) -> tuple[str, str] | None:
    """(keyword, argument) for a four-letter keyword glued to a number (`CELL0.71073`) or to
    an element class (`BOND$H`, as Olex2 writes it), else None."""
    if len(token) > 4 and token[:4].upper() in KEYWORDS and (_GLUED_NUMBER.match(token[4:]) or token[4] == "$"):
        return token[:4], token[4:]
    return None


def _first_of(seen: list[tuple[int, str]]) -> str:
    """The first of some (line, text) quoted, and how many more there are."""
    return _quoted(*seen[0]) + (f" and {len(seen) - 1} more such line(s)" if len(seen) > 1 else "")


def _quoted(lineno: int, text: str, width: int = 60) -> str:
    """`line N 'text'`, the text shortened to `width` characters."""
    if len(text) > width:
        text = text[: width - 3] + "..."
    return f"line {lineno} '{text}'"


def _zerr_problem(args: list[str]) -> str | None:
    """Why a ZERR line cannot be used (None when it is fine)."""
    if len(args) < 7:
        return f"it needs Z and six standard uncertainties, got {len(args)} numbers"
    try:
        v = [float(a) for a in args[:7]]
    except ValueError:
        return "not a number in " + " ".join(args[:7])
    if not all(math.isfinite(x) for x in v):
        return "not a finite number"
    if v[0] <= 0 or v[0] > 1000:
        return f"Z = {v[0]:g} is not a plausible number of formula units"
    if any(x < 0 for x in v[1:]):
        return "negative standard uncertainties"
    return None


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def parse_ins(text: str, path: Path | str | None = None, *, first_line: int = 1) -> InsFile:
    """Parse SHELX .ins/.res text into an `InsFile` (InputError naming file and line)."""
    ins = InsFile(path=str(path) if path is not None else None)
    instr: dict = {"omit_hkl": [], "basf": [], "fvar": [], "bind": [], "free": []}
    sump: list[RestraintInstruction] = []
    part = 0
    part_sof: float | None = None
    afix = 0
    rigid_count, rigid_group = 0, None  # rigid groups (AFIX n = 6) so far, the one open
    pivot: str | None = None
    last_atom: str | None = None
    last_u_parent: str | None = None
    in_frag = False
    frag_line = 0
    residue, residue_class = 0, None
    restraint_reader = RestraintReader()
    labels_seen: set[str] = set()
    unknown: dict[str, list[tuple[int, str]]] = {}  # first four letters -> (line, text)
    unread: dict[str, list[tuple[int, str]]] = {}  # known SHELXL syntax not read: what -> (line, text)
    peak_heights = 0
    not_honoured = ins.not_honoured
    saw_cell = False

    def nums(tokens: list[str], what: str, line: int) -> list[float]:
        return [to_float(t, what, path, line) for t in tokens]

    for rel, line, continued in _logical_lines(text):
        lineno = first_line + rel - 1
        tokens = line.split()
        if not tokens:
            continue
        glued = _split_glued_keyword(tokens[0])
        if glued is not None:
            # SHELXL reads only the first four characters as the keyword: CELL0.71073 is CELL 0.71073
            ins.notes.append(f"line {lineno}: '{tokens[0]}' read as '{glued[0]} {glued[1]}'")
            tokens = [*glued, *tokens[1:]]
        key = tokens[0].upper()
        args = tokens[1:]
        if in_frag:
            if key == "FEND":
                in_frag = False
            continue
        if key == "TITL":
            ins.title = line[4:].strip()
        elif key == "CELL":
            if len(args) < 7:
                raise InputError(
                    f"CELL needs the wavelength and six cell parameters, got {len(args)} numbers",
                    path=path,
                    line=lineno,
                )
            v = nums(args[:7], "CELL", lineno)
            if not 0.05 < v[0] < 5.0:
                raise InputError(f"CELL: wavelength {v[0]:g} Å is outside 0.05-5 Å", path=path, line=lineno)
            try:
                ins.cell = UnitCell(a=v[1], b=v[2], c=v[3], alpha=v[4], beta=v[5], gamma=v[6])
            except ValidationError as exc:
                raise InputError(f"CELL: {validation_message(exc)}", path=path, line=lineno) from None
            ins.wavelength = v[0]
            ins.cell_line = lineno
            saw_cell = True
        elif key == "ZERR":
            # Z and the cell s.u.s only: a malformed ZERR is ignored with a note (Z then
            # comes from the symmetry, see formula_and_z)
            problem = _zerr_problem(args)
            if problem is not None:
                ins.notes.append(f"line {lineno}: ZERR ignored: {problem}")
                ins.zerr_ignored = True
                continue
            v = [float(a) for a in args[:7]]
            ins.z = v[0]
            if ins.cell is not None:
                ins.cell = ins.cell.model_copy(update={"su": tuple(v[1:7])})
            else:
                ins.notes.append("ZERR before CELL: standard uncertainties ignored")
        elif key == "LATT":
            if not args:
                raise InputError("LATT needs a number", path=path, line=lineno)
            n = to_int(args[0], "LATT", path, lineno)
            if abs(n) not in CENTRING:
                raise InputError(f"LATT {n}: the lattice type must be ±1..±7", path=path, line=lineno)
            ins.latt = n
            ins.latt_line = lineno
        elif key == "SYMM":
            triplet = line.split(None, 1)[1] if len(tokens) > 1 else ""
            if not triplet.strip():
                raise InputError("SYMM without an operator", path=path, line=lineno)
            ins.symm.append((triplet.strip(), lineno))
        elif key == "SFAC":
            if not args:
                raise InputError("SFAC without element names", path=path, line=lineno)
            if len(args) >= 2 and _is_number(args[1]):  # long form: label and coefficients
                if len(args) < 10:
                    raise InputError(
                        "SFAC with explicit scattering factors needs at least the label and nine coefficients",
                        path=path,
                        line=lineno,
                    )
                nums(args[1:], "SFAC coefficient", lineno)
                ins.sfac.append(element_or_error(args[0], path, lineno))
                ins.notes.append(f"SFAC {args[0]}: explicit scattering factors read, standard tables used")
            else:
                for t in args:
                    ins.sfac.append(element_or_error(t, path, lineno))
            ins.sfac_line = lineno
        elif key == "UNIT":
            v = nums(args, "UNIT", lineno)
            if any(x < 0 for x in v):
                raise InputError("UNIT: negative number of atoms", path=path, line=lineno)
            ins.unit = v
            ins.unit_line = lineno
        elif key == "DISP":
            if args:
                element_or_error(args[0].lstrip("$"), path, lineno)
                nums(args[1:], "DISP", lineno)
        elif key == "FVAR":
            v = nums(args, "FVAR", lineno)
            ins.fvar.extend(v)
        elif key == "OMIT":
            if len(args) == 3 and all(re.fullmatch(r"[+-]?\d+", a) for a in args):
                instr["omit_hkl"].append(tuple(int(a) for a in args))
            else:
                v = nums(args, "OMIT", lineno)
                if len(v) > 2:
                    raise InputError("OMIT takes h k l or s 2θ", path=path, line=lineno)
                if len(v) >= 1:
                    instr["omit_sigma"] = v[0]
                if len(v) == 2:
                    instr["omit_2theta_max"] = v[1]
        elif key == "SHEL":
            v = nums(args, "SHEL", lineno)
            if len(v) >= 2:
                instr["shel"] = (v[0], v[1])
            elif len(v) == 1:
                instr["shel"] = (v[0], 0.0)
        elif key == "TWIN":
            v = nums(args, "TWIN", lineno)
            if len(v) >= 9:
                instr["twin_matrix"] = tuple(v[:9])
                instr["twin_n"] = int(v[9]) if len(v) > 9 else 2
            else:
                instr["twin_matrix"] = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0)
                instr["twin_n"] = int(v[0]) if v else 2
        elif key == "BASF":
            instr["basf"].extend(nums(args, "BASF", lineno))
        elif key == "EXTI":
            v = nums(args, "EXTI", lineno)
            instr["exti"] = v[0] if v else 0.0
        elif key == "WGHT":
            v = nums(args, "WGHT", lineno)
            instr["wght"] = tuple(v) if v else (0.1,)
        elif key == "MERG":
            v = nums(args, "MERG", lineno)
            instr["merg"] = int(v[0]) if v else 2
        elif key == "ACTA":
            instr["acta"] = True
        elif key == "SUMP":
            # SUMP c σ c1 m1 c2 m2 ...: Σ ci·fv(mi) = c with esd σ
            v = nums(args, "SUMP", lineno)
            if len(v) < 4 or len(v) % 2:
                raise InputError("SUMP takes c, σ and pairs of a factor and a free variable number",
                                 path=path, line=lineno)
            sump.append(RestraintInstruction(kind="SUMP", values=v, text=line.strip(), line=lineno))
        elif key == "BIND":
            if len(args) != 2:
                raise InputError("BIND takes two atom names or two PART numbers", path=path, line=lineno)
            instr["bind"].append(tuple(_bare_atom_name(a) for a in args))
        elif key == "FREE":
            if len(args) != 2:
                raise InputError("FREE takes two atom names", path=path, line=lineno)
            instr["free"].append(tuple(_bare_atom_name(a) for a in args))
        elif key == "HKLF":
            v = nums(args, "HKLF", lineno)
            if not v:
                raise InputError("HKLF needs the format number", path=path, line=lineno)
            n = int(v[0])
            if abs(n) not in (1, 2, 3, 4, 5, 6, 40, 50):
                raise InputError(f"HKLF {n} is not a SHELXL reflection format", path=path, line=lineno)
            instr["hklf"] = abs(n)
            ins.hklf_seen = True
            if len(v) >= 2:
                ins.hklf_scale = v[1]
                if not v[1] > 0:
                    raise InputError("HKLF: the scale factor must be positive", path=path, line=lineno)
            if len(v) >= 11:
                mat = tuple(v[2:11])
                det = float(np.linalg.det(np.array(mat).reshape(3, 3)))
                if det <= 0:
                    raise InputError("HKLF: the index matrix must have a positive determinant", path=path, line=lineno)
                if mat != (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0):
                    ins.hklf_matrix = mat
            elif len(v) > 2:
                raise InputError("HKLF: the index matrix needs nine numbers", path=path, line=lineno)
            if len(v) >= 12:
                ins.hklf_weight = v[11]
            break  # SHELXL reads nothing after HKLF
        elif key == "END":
            break
        elif key == "NEUT":
            instr["radiation"] = "neutron"
        elif key == "ANIS":
            restraint_reader.add_anis(args, lineno, residue, len(ins.atoms))
        elif key.partition("_")[0] == "HFIX":
            # HFIX[_residues] mn [U d] atoms: riding H to generate on these atoms (merged into hfix)
            if args:
                restraint_reader.add_hfix(abs(to_int(args[0], "HFIX", path, lineno)), args[1:], lineno, residue,
                                          key.partition("_")[2] or None)
        elif key == "AFIX":
            n = to_int(args[0], "AFIX", path, lineno) if args else 0
            if abs(n) // 10 >= 17:
                raise InputError(
                    f"AFIX {n} asks SHELXL to fit these atoms to the FRAG {abs(n) // 10} fragment; "
                    "refractor does not fit fragments: run SHELXL (or DSR) once to place them first",
                    path=path,
                    line=lineno,
                )
            if n != 0 and (afix == 0 or abs(afix) % 10 in RIGID_CODES):
                pivot = last_atom  # (an H group inside a rigid group hangs on the atom before it)
            if abs(n) % 10 == 6:
                rigid_count += 1
                rigid_group = rigid_count
            elif n == 0:
                rigid_group = None
            afix = n
        elif key == "PART":
            part = to_int(args[0], "PART", path, lineno) if args else 0
            part_sof = to_float(args[1], "PART", path, lineno) if len(args) > 1 else None
        elif key == "RESI":
            # RESI class number or RESI number class (either order); RESI 0 ends residues
            numbers = [t for t in args if re.fullmatch(r"[+-]?\d+", t)]
            names = [t for t in args if not re.fullmatch(r"[+-]?\d+", t)]
            residue = int(numbers[0]) if numbers else 0
            residue_class = names[0].upper() if names else None
        elif key == "EQIV":
            restraint_reader.add_eqiv(args, lineno)
        elif RestraintReader.keyword_of(tokens[0]) is not None:
            word, suffix = RestraintReader.keyword_of(tokens[0])
            restraint_reader.add(word, suffix, args, lineno, line.strip(), residue, len(ins.atoms))
        elif key == "FRAG":
            # a fragment definition (for AFIX m >= 17): its atoms are not model atoms
            in_frag = True
            frag_line = lineno
        elif key.partition("_")[0] in NOT_HONOURED:
            not_honoured.add(key.partition("_")[0])
        elif key in KEYWORDS:
            continue
        else:
            # an atom: label sfac x y z [sof [U | U11 U22 U33 U23 U13 U12]]
            if len(tokens) >= 5 and re.fullmatch(r"[+-]?\d+", tokens[1]):
                label = tokens[0]
                if _Q_PEAK.match(label):
                    continue
                numbers = nums(tokens[2:], f"atom {label}", lineno)
                nn = len(numbers)
                if nn == 6 and not continued:
                    # a SHELXS/SHELXT solution: x y z sof Uiso and the peak height, ignored
                    numbers = numbers[:5]
                    nn = 5
                    peak_heights += 1
                if nn not in (3, 4, 5, 10):
                    raise InputError(
                        f"atom {label}: {nn} numbers after the scattering factor; expected "
                        "x y z [sof [Uiso | U11 U22 U33 U23 U13 U12]]",
                        path=path,
                        line=lineno,
                    )
                if not saw_cell:
                    raise InputError(f"atom {label} before the CELL instruction", path=path, line=lineno)
                sfac_no = int(tokens[1])
                explicit = nn >= 4
                sof = numbers[3] if explicit else (part_sof if part_sof is not None else 11.0)
                u = tuple(numbers[4:]) if nn >= 5 else (0.05,)
                name = label
                if label.upper() in labels_seen:
                    # one name in several residues (or, against SHELXL's rules, twice in
                    # one): the label carries the residue, so that every label is unique
                    label = f"{name}_{residue}"
                    k = 1
                    while label.upper() in labels_seen:
                        k += 1
                        label = f"{name}_{residue}_{k}"
                labels_seen.add(label.upper())
                riding_u = len(u) == 1 and -5.0 <= u[0] <= -0.5
                ins.atoms.append(
                    InsAtom(
                        label=label,
                        sfac=sfac_no,
                        xyz=(numbers[0], numbers[1], numbers[2]),
                        sof=sof,
                        u=u,
                        line=lineno,
                        part=part,
                        afix=afix,
                        pivot=pivot if afix != 0 else None,
                        u_parent=last_u_parent,
                        explicit_sof=explicit,
                        sof_decimals=len(tokens[5].partition(".")[2]) if explicit else 5,
                        name=name,
                        residue=residue,
                        residue_class=residue_class,
                        rigid_group=rigid_group if abs(afix) % 10 in RIGID_CODES else None,
                    )
                )
                if afix == 0 or abs(afix) % 10 in RIGID_CODES:
                    last_atom = label
                if not riding_u:
                    last_u_parent = label
            elif tokens[0].startswith("+"):
                unread.setdefault("include files (+name) are not read", []).append((lineno, line.strip()))
            elif key.partition("_")[1] and key.partition("_")[0] in KEYWORDS:
                unread.setdefault(f"{key.partition('_')[0]} with a suffix is not honoured", []).append(
                    (lineno, line.strip()))
            else:
                unknown.setdefault(tokens[0][:4].upper(), []).append((lineno, line.strip()))
    if in_frag:
        raise InputError("FRAG without FEND: the fragment runs to the end of the file", path=path, line=frag_line)
    if peak_heights:
        ins.notes.append(
            f"{peak_heights} atom line(s) carry a number after Uiso (a SHELXS/SHELXT peak height); ignored"
        )
    for what, seen in unread.items():
        ins.notes.append(f"{what}: {_first_of(seen)}")
    if unknown:
        ins.notes.append("unknown instructions ignored: " + "; ".join(_first_of(seen) for seen in unknown.values()))
    rigid = [a.label for a in ins.atoms if abs(a.afix) % 10 == 9 and ins.element_of(a) not in ("H", "D")]
    if rigid:
        ins.notes.append("variable-metric rigid groups (AFIX n = 9) are refined as free atoms: " + ", ".join(rigid))
    members: dict[int, list[str]] = {}
    for a in ins.atoms:
        if a.rigid_group is not None and ins.element_of(a) not in ("H", "D"):
            members.setdefault(a.rigid_group, []).append(a.label)
    small = [label for labels in members.values() if len(labels) < MIN_RIGID_GROUP_ATOMS for label in labels]
    for a in ins.atoms:  # (so that a .res written from the model does not declare them rigid)
        if a.rigid_group is not None and len(members.get(a.rigid_group, [])) < MIN_RIGID_GROUP_ATOMS:
            a.rigid_group = None
    if small:
        ins.notes.append(f"rigid groups (AFIX n = 6) of fewer than {MIN_RIGID_GROUP_ATOMS} atoms are refined "
                         "as free atoms: " + ", ".join(small))
    if ins.unit and ins.sfac and len(ins.unit) != len(ins.sfac):
        raise InputError(
            f"UNIT gives {len(ins.unit)} numbers for {len(ins.sfac)} SFAC elements",
            path=path,
            line=ins.unit_line,
        )
    instr["fvar"] = list(ins.fvar)
    resolvable = [
        ResidueAtom(label=a.label, name=a.name or a.label, residue=a.residue, residue_class=a.residue_class,
                    element=ins.element_of(a), index=k, isotropic=len(a.u) == 1)
        for k, a in enumerate(ins.atoms)
    ]
    instr["hfix"] = hydrogen_groups(ins)
    for label, code in restraint_reader.resolve_hfix(resolvable).items():
        instr["hfix"].setdefault(label, code)
    shared_u_variables = sorted(ins.shared_u_variables().items())
    shared_u = [RestraintInstruction(kind="EADP", atoms=[AtomRef(label=label) for label in labels],
                                     text=f"EADP {' '.join(labels)}")
                for _, labels in shared_u_variables]
    if shared_u:
        ins.notes.append("U on free variables shared as EADP: " + "; ".join(
            f"FVAR {k}: {', '.join(labels)}" for k, labels in shared_u_variables))
    instr["restraints"] = restraint_reader.resolve(resolvable) + sump + shared_u
    instr["anis"] = restraint_reader.resolve_anis(resolvable)
    ins.notes.extend(restraint_reader.notes)
    if not_honoured:
        ins.notes.append("instructions read but not honoured by the refiner: " + ", ".join(sorted(not_honoured)))
    if "ABIN" in not_honoured:
        ins.notes.append(SOLVENT_MASK_NOTE.format("ABIN"))
    try:
        ins.instructions = RefinementInstructions(**instr)
    except ValidationError as exc:
        raise InputError(validation_message(exc), path=path) from None
    return ins


#: AFIX n of the members of a rigid group: 6 opens one, 5 continues it after an H group
RIGID_CODES = (5, 6)

#: longest distance (Å) from a freely refined H to the atom taken as its parent
FREE_H_PARENT_DISTANCE = 1.3


def hydrogen_groups(ins: InsFile) -> dict[str, int]:
    """The H atoms of the atom list by parent (upper-case label): the AFIX code of a riding
    group (its pivot), 0 for H refined freely (on the nearest non-H atom of its disorder
    component, lattice translations only, within FREE_H_PARENT_DISTANCE)."""
    from refractor_core.crystal.cell import orthogonalization_matrix

    heavy = [a for a in ins.atoms if ins.element_of(a) not in ("H", "D")]
    m_cart = orthogonalization_matrix(ins.cell) if ins.cell is not None else None

    def xyz(a: InsAtom) -> np.ndarray:
        return np.array([ins._value(c, f"atom {a.label}: coordinate", a.line) for c in a.xyz])

    heavy_xyz = np.array([xyz(a) for a in heavy]) if heavy else np.zeros((0, 3))
    out: dict[str, int] = {}
    for a in ins.atoms:
        if ins.element_of(a) not in ("H", "D"):
            continue
        m, n = abs(a.afix) // 10, abs(a.afix) % 10
        if (m > 0 and m not in (5, 6, 7, 10, 11)) or (m == 0 and n in (3, 4)):
            if a.pivot:
                out.setdefault(a.pivot.upper(), abs(a.afix))
            continue
        if m_cart is None or not heavy:
            continue
        d = heavy_xyz - xyz(a)
        dist = np.linalg.norm((d - np.round(d)) @ m_cart.T, axis=1)
        # an H of one disorder component belongs to an atom of that component
        dist[[a.part != 0 and h.part != 0 and h.part != a.part for h in heavy]] = np.inf
        k = int(np.argmin(dist))
        if dist[k] <= FREE_H_PARENT_DISTANCE:
            out.setdefault(heavy[k].label.upper(), 0)
    return out


def apply_hklf_transform(refl, ins: InsFile):
    """Apply an HKLF line's scale, weight and index matrix to reflections (new object)."""
    if ins.hklf_matrix is None and ins.hklf_scale == 1.0 and ins.hklf_weight == 1.0:
        return refl
    hkl = refl.hkl
    notes = list(refl.notes)
    if ins.hklf_matrix is not None:
        r = np.array(ins.hklf_matrix, dtype=np.float64).reshape(3, 3)
        new = hkl.astype(np.float64) @ r.T  # h' = r11 h + r12 k + r13 l, ...
        rounded = np.rint(new)
        if np.any(np.abs(new - rounded) > 1e-3):
            raise InputError(
                "HKLF index matrix gives non-integral indices", path=ins.path
            )
        hkl = rounded.astype(np.int32)
        notes.append("indices transformed by the HKLF matrix")
    inten = refl.intensity * ins.hklf_scale
    sigma = refl.sigma * ins.hklf_scale
    if ins.hklf_weight != 1.0:
        if not ins.hklf_weight > 0:
            raise InputError("HKLF weight multiplier must be positive", path=ins.path)
        sigma = sigma / math.sqrt(ins.hklf_weight)
    if ins.hklf_scale != 1.0:
        notes.append(f"intensities multiplied by the HKLF scale {ins.hklf_scale:g}")
    return refl.model_copy(update={"hkl": hkl, "intensity": inten, "sigma": sigma, "notes": notes})


def ins_bundle(ins: InsFile, source: str | None) -> DataBundle:
    """A DataBundle from a parsed instruction file (no reflections)."""
    if ins.cell is None:
        raise InputError("no CELL instruction", path=ins.path)
    sg = ins.space_group()
    formula, z = ins.formula_and_z()
    structure = ins.structure(name=Path(source).stem if source else None)
    return DataBundle(
        cell=ins.cell,
        wavelength=ins.wavelength,
        space_group=sg,
        formula=formula,
        z=z,
        structure=structure,
        instructions=ins.instructions,
        source=source,
        notes=list(ins.notes),
    )


def sniff_ins_text(text: str) -> float:
    """Confidence that text is a SHELX instruction file (keywords at line starts)."""
    keys = set()
    for line in text.split("\n")[:400]:
        if line[:1] in (" ", "\t") or not line.strip():
            continue
        keys.add(line.split(None, 1)[0].upper())
    score = 0.0
    if "CELL" in keys:
        score += 0.4
    if "SFAC" in keys or "LATT" in keys or "SYMM" in keys:
        score += 0.3
    if "TITL" in keys or "ZERR" in keys or "UNIT" in keys or "FVAR" in keys:
        score += 0.2
    return min(score, 0.9)


class ShelxInsReader(HKLReader):
    """SHELX .ins/.res instruction files: cell, symmetry, formula, instructions and model."""

    name: ClassVar[str] = "shelx-ins"
    version: ClassVar[str] = "0.1.0"
    Config: ClassVar[type[ComponentConfig]] = ShelxInsConfig
    suffixes: ClassVar[tuple[str, ...]] = (".ins", ".res")

    def __init__(self, config: ShelxInsConfig | None = None, context: BuildContext | None = None):
        super().__init__(config, context)
        self._parsed: dict[str, InsFile] = {}

    def sniff(self, path: Path, head: bytes) -> float:
        text = head_text(head)
        if text is None:
            return 0.0
        score = sniff_ins_text(text)
        if score and Path(path).suffix.lower() in self.suffixes:
            score += 0.05
        return score

    def parse(self, path: Path) -> InsFile:
        """The parsed file (cached per path for this reader instance)."""
        key = str(Path(path).resolve())
        if key not in self._parsed:
            self._parsed[key] = parse_ins(read_text(Path(path)), Path(path))
        return self._parsed[key]

    @guarded
    def read(self, path: Path) -> DataBundle:
        path = Path(path)
        return ins_bundle(self.parse(path), str(path))

    @guarded
    def reflection_transform(self, path: Path) -> InsFile:
        """The HKLF scale/matrix/weight of this file, applied by `dataio` to its .hkl."""
        return self.parse(Path(path))
