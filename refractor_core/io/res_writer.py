"""SHELX .res/.ins text for a structure, ready for SHELXL or Olex2.

TITL, CELL, ZERR, LATT, SYMM (the space group's operators: centring and a centre of
symmetry at the origin encoded in LATT, as SHELX does), SFAC, UNIT, refinement
instructions, the user's restraints and EADP/EXYZ constraints (resolved to the written
atom names, symmetry equivalents through EQIV; SAME just before the atoms it applies to),
WGHT, FVAR, the atoms (coordinates held fixed, `Site.fixed_xyz`, coded as x + 10; site
occupation factors including the site-symmetry multiplicity, fixed with +10, except that a
two-component disorder assembly -- PART 2k-1 at occupancy p against PART 2k at 1 - p --
shares a free variable, written 21/-21 as SHELXL users do; U in SHELX order U11 U22 U33
U23 U13 U12; a U_iso coded on a free variable, `Site.u_variable`, keeps its code when its
sites give that variable one value), riding hydrogen atoms after their parent inside AFIX
groups, HKLF 4 and END.
"""

from __future__ import annotations

import math
import re

import numpy as np

from ..types import RefinedCandidate, RefinementInstructions, Site, SpaceGroupRef, Structure, free_variable_from_share

#: centring vectors (in 24ths) of each SHELX LATT type
_LATT_CENTRING = {
    1: {(0, 0, 0)},
    2: {(0, 0, 0), (12, 12, 12)},
    3: {(0, 0, 0), (16, 8, 8), (8, 16, 16)},
    4: {(0, 0, 0), (0, 12, 12), (12, 0, 12), (12, 12, 0)},
    5: {(0, 0, 0), (0, 12, 12)},
    6: {(0, 0, 0), (12, 0, 12)},
    7: {(0, 0, 0), (12, 12, 0)},
}
_LABEL_OK = re.compile(r"^[A-Za-z][A-Za-z0-9']{0,3}$")  # '_' would mean a residue number
#: an H's U_iso = f·U_eq(its atom), f with one decimal in this range, is written as SHELXL's
#: riding U -f (-1.2, -1.5, -1.3 ...)
_RIDING_FACTOR_RANGE = (1.0, 2.0)


def shelx_symmetry(space_group: SpaceGroupRef) -> tuple[int, list[str]]:
    """(LATT number, SYMM triplets) encoding a space group the SHELX way.

    Centring becomes |LATT|; a centre of symmetry at the origin makes LATT positive and
    only proper operations are listed. Groups whose centring SHELX cannot name, or whose
    inversion centre is not at the origin, are written with all their operations.
    """
    import gemmi

    ops = space_group.gemmi().operations()
    cen = {tuple(int(x) % 24 for x in c) for c in ops.cen_ops}
    latt_type = next((n for n, vecs in _LATT_CENTRING.items() if vecs == cen), None)
    inversion = gemmi.Op("-x,-y,-z")
    all_ops = list(ops)
    centric_at_origin = any(op == inversion for op in all_ops)
    if latt_type is None:
        reps = all_ops
        latt_type = 1
    else:
        reps = list(ops.sym_ops)
    if centric_at_origin:
        reps = [op for op in reps if op.det_rot() > 0]
    identity = gemmi.Op("x,y,z")
    symm = [_shelx_triplet(op) for op in reps if op != identity]
    return (latt_type if centric_at_origin else -latt_type), symm


def _shelx_triplet(op) -> str:
    return ", ".join(part.strip().upper() for part in op.triplet().split(","))


def _fmt(x: float, dec: int) -> str:
    text = f"{x:.{dec}f}"
    return "0." + "0" * dec if text.startswith("-") and float(text) == 0.0 else text


def _coded(x: float, fixed: bool, decimals: int = 6) -> str:
    """A coordinate or U as SHELXL reads it: a fixed one coded as x + 10 (x - 10 if negative)."""
    if not fixed:
        return _fmt(x, decimals)
    return _fmt(x + 10.0 if x >= 0 else x - 10.0, decimals)


def _unique_labels(sites: list[Site]) -> list[str]:
    """SHELX atom names: at most 4 characters, unique; others renamed element+number."""
    used: set[str] = set()
    out = []
    for s in sites:
        lab = s.label
        if not _LABEL_OK.match(lab) or lab.upper() in used:
            n = 1
            while True:
                cand = f"{s.element}{n}"[:4]
                if cand.upper() not in used:
                    break
                n += 1
            lab = cand
        used.add(lab.upper())
        out.append(lab)
    return out


def _riding_order(sites: list[Site]) -> list[int]:
    """Site indices with each riding atom moved right after its parent (or riding sibling)."""
    index = {s.label: i for i, s in enumerate(sites)}
    children: dict[int, list[int]] = {}
    moved = set()
    for i, s in enumerate(sites):
        if s.riding_on and s.riding_on in index and index[s.riding_on] != i:
            parent = index[s.riding_on]
            if sites[parent].riding_on is None:
                children.setdefault(parent, []).append(i)
                moved.add(i)
    order = []
    for i in range(len(sites)):
        if i in moved:
            continue
        order.append(i)
        order.extend(children.get(i, []))
    return order


def _site_orders(structure: Structure) -> np.ndarray:
    from ..crystal.symmetry import SymmetryOps

    return SymmetryOps.from_space_group(structure.space_group).structure_site_orders(structure)


def _ueq(structure: Structure, site: Site) -> float:
    if site.u_aniso is not None:
        from ..crystal.cell import u_equiv

        return float(u_equiv(structure.cell, np.array(site.u_aniso)))
    return float(site.u_iso if site.u_iso is not None else 0.05)


def _sfac_order(elements: set[str]) -> list[str]:
    rest = sorted(e for e in elements if e not in ("C", "H"))
    head = [e for e in ("C", "H") if e in elements]
    return head + rest


def structure_res(
    structure: Structure,
    *,
    wavelength: float | None = None,
    z: float | None = None,
    formula: str | None = None,
    refined: RefinedCandidate | None = None,
    instructions: RefinementInstructions | None = None,
    title: str | None = None,
    hklf_scale: float = 1.0,
    hklf: int = 4,
) -> str:
    """The .res text of a structure (with a refinement's figures and weights if given)."""
    from ..crystal.formula import parse_formula

    wl = wavelength or structure.wavelength or 0.71073
    cell = structure.cell
    sg = structure.space_group
    lines: list[str] = []
    lines.append(f"TITL {title or structure.name} in {sg.symbol}")
    from .cif_writer import not_solved_warning

    warning = not_solved_warning(refined)
    if warning:
        lines.append(f"REM {warning}")
    lines.append(
        "CELL {:.5f} {} {} {} {} {} {}".format(
            wl, *(_fmt(v, 5) if i < 3 else _fmt(v, 4) for i, v in enumerate(cell.parameters))
        )
    )
    su = cell.su or (0.0,) * 6
    n_ops = len(sg.gemmi().operations())
    if z is None:
        z = float(n_ops)
    lines.append("ZERR {} {}".format(_fmt(z, 2), " ".join(_fmt(v, 5) for v in su)))
    latt, symm = shelx_symmetry(sg)
    lines.append(f"LATT {latt}")
    lines.extend(f"SYMM {t}" for t in symm)

    from ..simulation.composition import cell_contents_of

    site_counts = cell_contents_of(structure)
    elements = set(site_counts)
    unit_counts: dict[str, float]
    if formula:
        per_fu = parse_formula(formula)
        elements |= set(per_fu)
        unit_counts = {e: per_fu.get(e, 0.0) * z for e in elements}
    else:
        unit_counts = site_counts
    sfac = _sfac_order(elements)
    lines.append("SFAC " + " ".join(sfac))
    lines.append("UNIT " + " ".join(_unit(unit_counts.get(e, 0.0)) for e in sfac))

    instr = instructions
    if instr is not None:
        for h, k, l_ in instr.omit_hkl:
            lines.append(f"OMIT {h} {k} {l_}")
        if instr.omit_sigma is not None or instr.omit_2theta_max is not None:
            s = instr.omit_sigma if instr.omit_sigma is not None else -2.0
            t = instr.omit_2theta_max if instr.omit_2theta_max is not None else 180.0
            lines.append(f"OMIT {s:g} {t:g}")
        if instr.shel is not None:
            lines.append(f"SHEL {instr.shel[0]:g} {instr.shel[1]:g}")
        if instr.twin_matrix is not None:
            m = " ".join(f"{v:g}" for v in instr.twin_matrix)
            lines.append(f"TWIN {m} {instr.twin_n or 2}")
        if instr.merg is not None:
            lines.append(f"MERG {instr.merg}")
    lines.append("L.S. 10")
    lines.append("LIST 4")
    lines.append("FMAP 2")
    lines.append("PLAN 20")
    lines.append("ACTA")
    basf = list(instr.basf) if instr is not None else []
    if refined is not None and refined.meta.get("basf"):
        basf = list(refined.meta["basf"])
    if basf:
        lines.append("BASF " + " ".join(f"{b:.5f}" for b in basf))
    exti = refined.extinction if refined is not None else (instr.exti if instr is not None else None)
    if exti:
        lines.append(f"EXTI {exti:.6f}")
    if refined is not None:
        lines.append(f"WGHT {refined.weight_a:.6f} {refined.weight_b:.6f}")
        osf = math.sqrt(refined.scale) if refined.scale > 0 else 1.0
    else:
        if instr is not None and instr.wght:
            lines.append("WGHT " + " ".join(f"{w:.6f}" for w in instr.wght))
        osf = instr.fvar[0] if instr is not None and instr.fvar else 1.0
    orders = _site_orders(structure)
    given = list(instr.fvar) if instr is not None else []
    coded = _coded_free_variables(structure.sites, orders, given)
    occupancy_numbers = {s.occupancy_variable[0] for s in structure.sites if s.occupancy_variable is not None}
    u_fvar = _u_free_variables(structure.sites, occupancy_numbers if coded is not None else set())
    values: dict[int, float] = dict(u_fvar)
    if coded is not None:  # the model's own free variables, kept as it codes them
        free_variable = {}
        values.update({k: v for k, v in enumerate(coded, start=2) if k not in u_fvar})
    else:
        free_variable, disorder = _disorder_free_variables(structure.sites, set(u_fvar))
        values.update(disorder)
    fvar = [values.get(k, given[k - 1] if k - 1 < len(given) else 0.5) for k in range(2, max(values, default=1) + 1)]
    lines.append("FVAR " + " ".join(f"{v:.5f}" for v in (osf, *fvar)))

    labels = _unique_labels(structure.sites)
    label_of = {s.label: lab for s, lab in zip(structure.sites, labels)}
    sfac_index = {e: i + 1 for i, e in enumerate(sfac)}
    order = _riding_order(structure.sites)
    part = 0
    afix = 0
    last_u_parent: str | None = None  # the atom a negative Uiso refers to
    last_pivot: str | None = None  # the atom an AFIX group hangs on
    open_rigid: int | None = None  # the rigid group the last non-H atom belongs to
    written_rigid: int | None = None  # the rigid group of the last AFIX m6 written
    renamed = [(s.label, lab) for s, lab in zip(structure.sites, labels) if s.label != lab]
    for old, new in renamed:
        lines.append(f"REM atom {old} written as {new}")
    written_heavy = [label_of[structure.sites[i].label] for i in order if structure.sites[i].element not in ("H", "D")]
    # (an EADP of atoms whose U is coded on one free variable is that code: not written twice)
    on_u_variable = {label_of[s.label]: s.u_variable[0] for s in structure.sites
                     if s.u_variable is not None and s.u_aniso is None and s.u_variable[0] in u_fvar}
    restraint_text, before_atom = _restraint_lines(instr, label_of, written_heavy, on_u_variable)
    lines.extend(restraint_text)
    for i in order:
        site = structure.sites[i]
        lines.extend(before_atom.get(label_of[site.label], []))
        if site.part != part:
            lines.append(f"PART {site.part}")
            part = site.part
        code = 0
        if site.calc and site.riding_on is not None and site.riding_on == last_pivot:
            code = site.afix if site.afix else 3
        elif site.rigid_group is not None:  # AFIX m6 opens a rigid group, m5 continues it after H
            m = abs(site.afix) // 10
            code = 10 * m + (5 if site.rigid_group == open_rigid else 6)
            if code % 10 == 5 and afix == 10 * m + 6:
                code = afix
        if code == 0 or site.rigid_group is not None:
            last_pivot = site.label
        if not site.calc:
            open_rigid = site.rigid_group
        parent_ok = site.riding_on is not None and last_u_parent == site.riding_on
        if code != afix or (code % 10 == 6 and site.rigid_group != written_rigid):
            lines.append(f"AFIX {code}")
            afix = code
        if site.rigid_group is not None:
            written_rigid = site.rigid_group
        sof = site.occupancy / max(int(orders[i]), 1)
        sof_text = f"{10.0 + sof:.6f}" if sof >= 0 else f"{-10.0 + sof:.6f}"
        if coded is not None and site.occupancy_variable is not None:
            number, p = site.occupancy_variable
            sof_text = f"{math.copysign(10.0 * number + abs(p), p):.5f}"
        elif site.part in free_variable:
            number, sign = free_variable[site.part]
            sof_text = f"{sign * (10.0 * number + 1.0 / max(int(orders[i]), 1)):.5f}"
        head = f"{label_of[site.label]:<5} {sfac_index[site.element]:<3} " + " ".join(
            f"{_coded(x, fixed):>10}" for x, fixed in zip(site.xyz, site.fixed_xyz)
        ) + f" {sof_text}"
        if site.u_aniso is not None:
            fixed = dict(zip(("11", "22", "33", "12", "13", "23"), site.fixed_u_components))
            u = dict(zip(("11", "22", "33", "12", "13", "23"), site.u_aniso))
            first = " ".join(_coded(u[k], fixed[k], 5) for k in ("11", "22"))
            second = " ".join(_coded(u[k], fixed[k], 5) for k in ("33", "23", "13", "12"))
            lines.append(f"{head} {first} =")
            lines.append(f"    {second}")
            last_u_parent = site.label
        else:
            u = float(site.u_iso if site.u_iso is not None else 0.05)
            text = _coded(u, all(site.fixed_u_components), 5)
            if site.u_variable is not None and site.u_variable[0] in u_fvar:
                number, p = site.u_variable
                text = f"{math.copysign(10.0 * number + abs(p), p):.5f}"
            elif parent_ok and site.element in ("H", "D"):
                parent = structure.sites[[s.label for s in structure.sites].index(site.riding_on)]
                ueq = _ueq(structure, parent)
                f = round(u / ueq, 1) if ueq > 0 else 0.0
                if _RIDING_FACTOR_RANGE[0] <= f <= _RIDING_FACTOR_RANGE[1] and abs(u - f * ueq) <= 5e-7:
                    text = f"-{f:.1f}"  # exactly riding (not by rounding luck)
            lines.append(f"{head} {text}")
            if not text.startswith("-"):
                last_u_parent = site.label
    if afix != 0:
        lines.append("AFIX 0")
    if part != 0:
        lines.append("PART 0")
    lines.append(f"HKLF {hklf}" if hklf_scale == 1.0 else f"HKLF {hklf} {hklf_scale:g}")
    if refined is not None:
        lines.append("")
        lines.append(
            f"REM R1 = {refined.r1:.4f} for {refined.n_gt} Fo > 4sig(Fo); wR2 = {refined.wr2:.4f}, "
            f"GooF = S = {refined.goof:.3f} for all {refined.n_reflections} data"
        )
        lines.append(f"REM {refined.n_parameters} parameters refined")
    lines.append("END")
    return "\n".join(lines) + "\n"


#: occupancies of one disorder component closer than this count as one free variable's value
_OCCUPANCY_TOLERANCE = 5e-4
#: free-variable values implied by coded U closer than this count as one (the U's last decimal)
_U_TOLERANCE = 1e-5


def _implied_free_variables(coded) -> dict[int, list[float]]:
    """{k: [fv_k]} implied by each (k, p, value) coded on a free variable: value = p·fv_k
    for p > 0, p·(fv_k - 1) for p < 0 (p = 0 implies nothing)."""
    implied: dict[int, list[float]] = {}
    for k, p, value in coded:
        if p != 0:
            implied.setdefault(int(k), []).append(free_variable_from_share(value, p))
    return implied


def _coded_free_variables(sites: list[Site], orders, given: list[float]) -> list[float] | None:
    """Values of free variables 2.. of the sites coded on them (`Site.occupancy_variable`),
    from their occupancies: sof = p·fv for p > 0, p·(fv - 1) for p < 0. Variables no site
    refers to keep their `given` FVAR value (0.5 without one). None: no site is coded."""
    implied = _implied_free_variables((*site.occupancy_variable, site.occupancy / max(int(order), 1))
                                      for site, order in zip(sites, orders) if site.occupancy_variable is not None)
    if not implied:
        return None
    # (the mean: occupancies read from a CIF are rounded, each to its own su)
    values = {k: float(np.mean(v)) for k, v in implied.items()}
    return [values.get(k, given[k - 1] if k - 1 < len(given) else 0.5) for k in range(2, max(values) + 1)]


def _u_free_variables(sites: list[Site], taken: set[int]) -> dict[int, float]:
    """{k: fv_k} of the free variables isotropic U refer to (`Site.u_variable`: U = p·fv,
    p·(fv - 1) for p < 0) whose sites give one value, and that no occupancy refers to
    (`taken`); the U of other coded sites are written as values."""
    implied = _implied_free_variables((*s.u_variable, float(s.u_iso)) for s in sites
                                      if s.u_variable is not None and s.u_aniso is None and s.u_iso is not None)
    return {k: float(np.mean(v)) for k, v in implied.items() if k not in taken and np.ptp(v) <= _U_TOLERANCE}


def _disorder_free_variables(sites: list[Site], taken: set[int] = frozenset()) -> tuple[dict[int, tuple[int, int]], dict[int, float]]:
    """Free variables for two-component disorder: ({part: (variable number, ±1)}, {number: value}).

    PART 2k-1 and PART 2k become one free variable p when every atom of the first has
    occupancy p and every atom of the second 1 - p (variables numbered from 2, after the
    overall scale, skipping the numbers `taken`)."""
    by_part: dict[int, list[float]] = {}
    for s in sites:
        if s.part > 0:
            by_part.setdefault(s.part, []).append(s.occupancy)
    out: dict[int, tuple[int, int]] = {}
    values: dict[int, float] = {}
    number = 1
    for p in sorted(by_part):
        if p % 2 == 0 or p + 1 not in by_part:
            continue
        first, second = np.array(by_part[p]), np.array(by_part[p + 1])
        value = float(first.mean())
        if np.ptp(first) > _OCCUPANCY_TOLERANCE or np.abs(second - (1.0 - value)).max() > _OCCUPANCY_TOLERANCE:
            continue
        if not 0.0 < value < 1.0:
            continue
        number += 1
        while number in taken:
            number += 1
        values[number] = value
        out[p], out[p + 1] = (number, 1), (number, -1)
    return out, values


def _restraint_lines(
    instr: RefinementInstructions | None, label_of: dict[str, str], written_heavy: list[str],
    on_u_variable: dict[str, int] | None = None,
) -> tuple[list[str], dict[str, list[str]]]:
    """(EQIV and restraint lines, SAME lines keyed by the atom they must precede).

    `written_heavy`: the written names of the non-H atoms in the order they are written;
    `on_u_variable`: written name -> the free variable its U is written on (an EADP of
    atoms all on one is left out)."""
    if instr is None or not (instr.restraints or instr.bind or instr.free):
        return [], {}
    names = {k.upper(): v for k, v in label_of.items()}
    on_u = on_u_variable or {}
    eqiv: dict[str, int] = {}
    body: list[str] = []
    before: dict[str, list[str]] = {}
    dropped = 0

    def name(ref) -> str | None:
        written = names.get(ref.label.upper())
        if written is None:
            return None
        if ref.symop is None:
            return written
        code = eqiv.setdefault(ref.symop, len(eqiv) + 1)
        return f"{written}_${code}"

    for r in instr.restraints:
        if r.kind == "SUMP":  # on free variables, which keep their numbers: no atoms
            body.extend(_wrapped(" ".join([r.kind, *(f"{v:g}" for v in r.values)])))
            continue
        atoms = [name(a) for a in r.atoms]
        reference = [name(a) for a in r.reference]
        if any(a is None for a in atoms + reference) or not atoms:
            dropped += 1
            continue
        if r.kind == "EADP" and len(variables := {on_u.get(a) for a in atoms}) == 1 and None not in variables:
            continue
        # SAME names its reference atoms; the atoms it applies to are those written after it
        text = _wrapped(" ".join([r.kind, *(f"{v:g}" for v in r.values), *(reference if r.kind == "SAME" else atoms)]))
        if r.kind != "SAME":
            body.extend(text)
            continue
        # SAME applies to the non-H atoms that follow it: they must be written in that order
        start = written_heavy.index(atoms[0]) if atoms[0] in written_heavy else -1
        if start < 0 or written_heavy[start:start + len(atoms)] != atoms:
            dropped += 1
            continue
        before.setdefault(atoms[0], []).extend(text)
    for pair in instr.bind:  # two PART numbers, or two atoms
        written = list(pair) if all(p.lstrip("-").isdigit() for p in pair) else [names.get(p.upper()) for p in pair]
        if None in written:
            dropped += 1
            continue
        body.append("BIND " + " ".join(written))
    for pair in instr.free:
        written = [names.get(p.upper()) for p in pair]
        if None in written:
            dropped += 1
            continue
        body.append("FREE " + " ".join(written))
    head = [f"EQIV ${k} {op}" for op, k in sorted(eqiv.items(), key=lambda t: t[1])]
    if dropped:
        head.append(f"REM {dropped} restraints of the starting model name atoms not written here: dropped")
    return head + body, before


def _wrapped(text: str, width: int = 78) -> list[str]:
    """A SHELX instruction split into continuation lines ('=' at the end, blank-led next line)."""
    words = text.split()
    out, line = [], words[0]
    for w in words[1:]:
        if len(line) + 1 + len(w) > width - 2:
            out.append(line + " =")
            line = "   " + w
        else:
            line += " " + w
    out.append(line)
    return out


def _unit(n: float) -> str:
    if abs(n - round(n)) < 1e-4:
        return str(int(round(n)))
    return f"{n:.4f}".rstrip("0").rstrip(".")
