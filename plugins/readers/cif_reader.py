"""CIF files: IUCr/SHELXL CIFs, fcf and COD hkl CIFs, mmCIF reflection and model data.

Syntax is gemmi.cif's; this module maps the tags. Every quantity is looked up under its
CIF 1.1 name and its DDLm/CIF2 dotted spelling (`_cell_length_a` / `_cell.length_a`).

Reflections, in order of preference: the embedded `_shelx_hkl_file` (read with the HKLF
reader, honouring the HKLF line of an embedded `_shelx_res_file`), else a `_refln` loop
(F² with σ, intensities, or F with σ converted to F² with σ(F²) = 2Fσ(F)), else a
`_diffrn_refln` loop. The model comes from the `_atom_site` loops (with s.u.s); riding
information (AFIX, parent atom) is added from an embedded `_shelx_res_file` when present.

Multi-block files: the block is chosen by name (`file.cif#block` or the `block` option),
else the first block holding what is asked for (reflections when loading data, atom sites
when loading a model).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import ValidationError

from refractor_core.errors import InputError
from refractor_core.interfaces import BuildContext, ComponentConfig, DataBundle, HKLReader
from refractor_core.dataio import split_block
from refractor_core.types import ReflectionData, RefinementInstructions, Site, SpaceGroupRef, Structure, UnitCell

from .register import CifConfig
from ._common import (
    SOLVENT_MASK_NOTE,
    element_or_error,
    formula_or_error,
    guarded,
    head_text,
    parse_su_number,
    read_text,
    validation_message,
)
from .shelx_hkl import f_to_f2, parse_hklf

_EIGHT_PI2 = 8.0 * math.pi * math.pi

#: quantity -> tag spellings (CIF 1.1 first, then DDLm/CIF2 and mmCIF)
TAGS: dict[str, tuple[str, ...]] = {
    "a": ("_cell_length_a", "_cell.length_a"),
    "b": ("_cell_length_b", "_cell.length_b"),
    "c": ("_cell_length_c", "_cell.length_c"),
    "alpha": ("_cell_angle_alpha", "_cell.angle_alpha"),
    "beta": ("_cell_angle_beta", "_cell.angle_beta"),
    "gamma": ("_cell_angle_gamma", "_cell.angle_gamma"),
    "z": ("_cell_formula_units_Z", "_cell.formula_units_Z", "_cell_formula_units_z"),
    "formula": ("_chemical_formula_sum", "_chemical_formula.sum"),
    "extinction_method": ("_refine_ls_extinction_method", "_refine_ls.extinction_method"),
    "extinction_expression": ("_refine_ls_extinction_expression", "_refine_ls.extinction_expression"),
    "wavelength": (
        "_diffrn_radiation_wavelength",
        "_diffrn_radiation_wavelength.value",
        "_diffrn_radiation_wavelength.wavelength",
        "_diffrn_radiation.wavelength",
    ),
    "hall": (
        "_space_group_name_Hall",
        "_space_group.name_Hall",
        "_symmetry_space_group_name_Hall",
        "_symmetry.space_group_name_Hall",
    ),
    "hm": (
        "_space_group_name_H-M_alt",
        "_space_group.name_H-M_alt",
        "_symmetry_space_group_name_H-M",
        "_symmetry.space_group_name_H-M",
        "_space_group.name_H-M_full",
    ),
    "it_number": (
        "_space_group_IT_number",
        "_space_group.IT_number",
        "_symmetry_Int_Tables_number",
        "_symmetry.Int_Tables_number",
    ),
    "probe": ("_diffrn_radiation_probe", "_diffrn_radiation.probe"),
    "hkl_file": ("_shelx_hkl_file", "_shelx.hkl_file", "_iucr_refine_reflections_details"),
    "res_file": ("_shelx_res_file", "_shelx.res_file", "_iucr_refine_instructions_details"),
    # a solvent mask's contribution to Fc: SHELXL's .fab (ABIN), Olex2/smtbx masks, PLATON SQUEEZE
    "solvent_mask": ("_shelx_fab_file", "_smtbx_masks_void_nr", "_smtbx_masks_special_details",
                     "_platon_squeeze_void_nr", "_platon_squeeze_details"),
}

SYMOP_TAGS = (
    "_space_group_symop_operation_xyz",
    "_space_group_symop.operation_xyz",
    "_symmetry_equiv_pos_as_xyz",
    "_symmetry_equiv.pos_as_xyz",
)


#: instructions any SHELXL .ins/.res has (an embedded file without them is another program's)
_SHELX_CORE = frozenset({"CELL", "SFAC"})


def holds_shelx_instructions(text: str) -> bool:
    """Whether embedded refinement-instruction text is a SHELXL .ins/.res (JANA2006 writes
    its m40 file into `_iucr_refine_instructions_details`)."""
    firsts = {line.split()[0].upper() for line in text.splitlines() if line.strip()}
    return _SHELX_CORE <= firsts


@dataclass
class CifValue:
    text: str
    line: int
    tag: str = ""


class CifFile:
    """A parsed CIF document with the file path (for messages)."""

    def __init__(self, text: str, path: Path | str | None):
        from gemmi import cif

        self.path = str(path) if path is not None else None
        try:
            self.doc = cif.read_string(text)
        except (ValueError, RuntimeError) as exc:
            raise _gemmi_error(exc, path) from None
        if len(self.doc) == 0:
            raise InputError("no data block (data_...) in this CIF", path=path)

    @property
    def block_names(self) -> list[str]:
        return [b.name for b in self.doc]

    def block(self, name: str | None, want: Literal["reflections", "model", "crystal"]):
        """The named block, or the first one holding what is wanted (else the first)."""
        if name:
            for b in self.doc:
                if b.name.lower() == name.lower():
                    return b
            raise InputError(
                f"no data block named {name!r}",
                path=self.path,
                hint=f"blocks in this file: {', '.join(self.block_names)}",
            )
        test = {
            "reflections": has_reflections,
            "model": has_atom_sites,
            "crystal": lambda b: value(b, "a") is not None,
        }[want]
        for b in self.doc:
            if test(b):
                return b
        return self.doc[0]


def _gemmi_error(exc: Exception, path) -> InputError:
    msg = str(exc)
    m = re.match(r"^(?:string|[^:]*):(\d+)(?::\d+)?(?:\(\d+\))?[: ]\s*(.*)$", msg, re.S)
    if m:
        return InputError(f"CIF syntax error: {m.group(2).strip()}", path=path, line=int(m.group(1)))
    return InputError(f"CIF syntax error: {msg}", path=path)


# --------------------------------------------------------------------------------------
# looking up values
# --------------------------------------------------------------------------------------


def _is_null(raw: str) -> bool:
    return raw in ("?", ".")


def value(block, key: str) -> CifValue | None:
    """The first non-null value among a quantity's tag spellings (pair or 1-row loop)."""
    from gemmi import cif

    for tag in TAGS[key]:
        item = block.find_pair_item(tag)
        if item is not None:
            raw = item.pair[1]
            if not _is_null(raw):
                return CifValue(cif.as_string(raw), item.line_number, tag)
            continue
        col = block.find_values(tag)
        if col is not None and len(col) > 0:
            raw = col[0]
            if not _is_null(raw):
                return CifValue(cif.as_string(raw), _tag_line(block, tag), tag)
    return None


def _tag_line(block, tag: str) -> int | None:
    for item in block:
        if item.loop is not None and tag.lower() in (t.lower() for t in item.loop.tags):
            return item.line_number
        if item.pair is not None and item.pair[0].lower() == tag.lower():
            return item.line_number
    return None


def number(block, key: str, path, *, required: bool = False) -> tuple[float, float | None] | None:
    """A numeric quantity with its s.u.; InputError when present but not a number."""
    v = value(block, key)
    if v is None:
        if required:
            raise InputError(f"missing {TAGS[key][0]}", path=path)
        return None
    parsed = parse_su_number(v.text)
    if parsed is None:
        raise InputError(f"{TAGS[key][0]}: {v.text!r} is not a number", path=path, line=v.line)
    return parsed


def has_reflections(block) -> bool:
    if value(block, "hkl_file") is not None:
        return True
    return any(
        block.find_values(p + "index_h") is not None and len(block.find_values(p + "index_h")) > 0
        for p in ("_refln_", "_refln.", "_diffrn_refln_", "_diffrn_refln.")
    )


def has_atom_sites(block) -> bool:
    for tag in ("_atom_site_fract_x", "_atom_site.fract_x", "_atom_site.Cartn_x"):
        col = block.find_values(tag)
        if col is not None and len(col) > 0:
            return True
    return False


# --------------------------------------------------------------------------------------
# crystal data
# --------------------------------------------------------------------------------------


def cell_from_block(block, path) -> UnitCell | None:
    """The unit cell with s.u.s, None when the block has no cell."""
    if value(block, "a") is None:
        return None
    vals, sus, lines = [], [], []
    for key in ("a", "b", "c", "alpha", "beta", "gamma"):
        v = value(block, key)
        if v is None:
            if key in ("alpha", "beta", "gamma"):
                vals.append(90.0)
                sus.append(0.0)
                continue
            raise InputError(f"the cell is incomplete: missing {TAGS[key][0]}", path=path)
        parsed = parse_su_number(v.text)
        if parsed is None:
            raise InputError(f"{TAGS[key][0]}: {v.text!r} is not a number", path=path, line=v.line)
        vals.append(parsed[0])
        sus.append(parsed[1] or 0.0)
        lines.append(v.line)
    try:
        return UnitCell(
            a=vals[0], b=vals[1], c=vals[2], alpha=vals[3], beta=vals[4], gamma=vals[5],
            su=tuple(sus) if any(sus) else None,
        )
    except ValidationError as exc:
        raise InputError(f"cell: {validation_message(exc)}", path=path, line=lines[0] if lines else None) from None


def symops_from_block(block) -> tuple[list[str], int | None]:
    from gemmi import cif

    for tag in SYMOP_TAGS:
        col = block.find_values(tag)
        if col is not None and len(col) > 0:
            return [cif.as_string(x) for x in col], _tag_line(block, tag)
    return [], None


def space_group_from_block(block, path, notes: list[str]) -> SpaceGroupRef | None:
    """The space group from the operator loop, else the Hall/H-M symbol, else the number."""
    ops, line = symops_from_block(block)
    if ops:
        try:
            return SpaceGroupRef.from_operations(ops)
        except (ValueError, RuntimeError) as exc:
            try:
                import gemmi

                go = gemmi.GroupOps([gemmi.Op(t) for t in ops])
                go.add_missing_elements()
                sg = gemmi.find_spacegroup_by_ops(go)
                if sg is not None:
                    notes.append("symmetry operator list completed to a group")
                    return SpaceGroupRef.from_gemmi(sg)
            except (ValueError, RuntimeError):
                pass
            raise InputError(f"the symmetry operators do not form a space group ({exc})", path=path, line=line) from None
    for key in ("hall", "hm"):
        v = value(block, key)
        if v is not None:
            text = v.text.strip()
            try:
                if key == "hall":
                    return SpaceGroupRef.from_operations(_hall_ops(text))
                return SpaceGroupRef.from_symbol(text)
            except (ValueError, RuntimeError):
                notes.append(f"space-group name {text!r} not recognised")
    v = value(block, "it_number")
    if v is not None:
        try:
            sg = SpaceGroupRef.from_symbol(str(int(float(v.text))))
            notes.append(f"space group taken from its number {v.text} (standard setting assumed)")
            return sg
        except (ValueError, RuntimeError):
            raise InputError(f"space-group number {v.text!r} is not 1-230", path=path, line=v.line) from None
    return None


def _hall_ops(hall: str) -> list[str]:
    import gemmi

    return [op.triplet() for op in gemmi.symops_from_hall(hall)]


def crystal_info(block, path) -> dict:
    """Cell, wavelength, space group, formula and Z of a block (missing ones None)."""
    notes: list[str] = []
    info: dict = {"notes": notes}
    info["cell"] = cell_from_block(block, path)
    wl = number(block, "wavelength", path)
    if wl is not None and not 0.05 < wl[0] < 5.0:
        v = value(block, "wavelength")
        raise InputError(f"wavelength {wl[0]:g} Å is outside 0.05-5 Å", path=path, line=v.line if v else None)
    info["wavelength"] = wl[0] if wl else None
    info["space_group"] = space_group_from_block(block, path, notes)
    f = value(block, "formula")
    if f is not None:
        from refractor_core.crystal.formula import format_formula

        info["formula"] = format_formula(formula_or_error(f.text, path, f.line))
    else:
        info["formula"] = None
    z = number(block, "z", path)
    if z is not None and not 0 < z[0] <= 1000:
        v = value(block, "z")
        raise InputError(f"Z = {z[0]:g} is not a plausible number of formula units", path=path, line=v.line if v else None)
    info["z"] = z[0] if z else None
    return info


# --------------------------------------------------------------------------------------
# reflections
# --------------------------------------------------------------------------------------

#: (prefix, intensity column, sigma column, kind) tried in order
_REFLN_COLUMNS = [
    ("F_squared_meas", "F_squared_sigma", "F2"),
    ("intensity_meas", "intensity_sigma", "F2"),
    ("F_meas", "F_sigma", "F"),
    ("F_meas_au", "F_meas_sigma_au", "F"),
    ("intensity_net", "intensity_sigma", "F2"),
    ("intensity_net", "intensity_u", "F2"),
]


def reflections_from_loop(block, path) -> tuple[ReflectionData, list[str]] | None:
    """Reflections from a `_refln` or `_diffrn_refln` loop, None when there is none."""
    for prefix in ("_refln_", "_refln.", "_diffrn_refln_", "_diffrn_refln."):
        hcol = block.find_values(prefix + "index_h")
        if hcol is None or len(hcol) == 0:
            continue
        for icol, scol, kind in _REFLN_COLUMNS:
            table = block.find(prefix, ["index_h", "index_k", "index_l", icol, scol])
            if len(table) == 0:
                continue
            line = _tag_line(block, prefix + "index_h")
            return _loop_to_reflections(table, kind, path, line, prefix + icol), []
        raise InputError(
            f"the {prefix.rstrip('_.')} loop has no intensity or amplitude column with sigmas",
            path=path,
            line=_tag_line(block, prefix + "index_h"),
        )
    return None


def _loop_to_reflections(table, kind: str, path, line: int | None, column: str) -> ReflectionData:
    n = len(table)
    hkl = np.zeros((n, 3), dtype=np.int64)
    vals = np.zeros(n)
    sig = np.zeros(n)
    keep = np.ones(n, dtype=bool)
    n_null = 0
    for i, row in enumerate(table):
        h, k, l_, iv, sv = row[0], row[1], row[2], row[3], row[4]
        if _is_null(iv) or _is_null(sv):
            keep[i] = False
            n_null += 1
            continue
        try:
            hkl[i] = (int(h), int(k), int(l_))
            pi = parse_su_number(iv)
            ps = parse_su_number(sv)
            if pi is None or ps is None:
                raise ValueError
            vals[i], sig[i] = pi[0], ps[0]
        except ValueError:
            raise InputError(
                f"reflection {i + 1} of the loop: {' '.join(row[j] for j in range(5))!r} is not h k l value sigma",
                path=path,
                line=line,
            ) from None
    if np.any(np.abs(hkl) > 999):
        raise InputError("Miller index out of range in the reflection loop", path=path, line=line)
    n_rows = n
    good = keep & (sig > 0)
    n_skipped = int(n_rows - np.count_nonzero(good))
    if not np.any(good):
        raise InputError("no reflection with a positive sigma in the reflection loop", path=path, line=line)
    hkl, vals, sig = hkl[good], vals[good], sig[good]
    notes = [f"reflections from the {column} loop"]
    if n_null:
        notes.append(f"{n_null} rows with unknown values skipped")
    if n_skipped - n_null > 0:
        notes.append(f"{n_skipped - n_null} rows with sigma <= 0 skipped")
    source_kind = "F2"
    if kind == "F":
        vals, sig = f_to_f2(vals, sig)
        source_kind = "F"
        notes.append("F and sigma(F) converted to F² with sigma(F²) = 2|F|sigma(F)")
    return ReflectionData(
        hkl=hkl.astype(np.int32),
        intensity=vals,
        sigma=sig,
        source_kind=source_kind,
        n_skipped=n_skipped,
        notes=notes,
    )


# --------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------

_ATOM_COLUMNS = [
    "label", "?type_symbol", "fract_x", "fract_y", "fract_z", "?U_iso_or_equiv",
    "?B_iso_or_equiv", "?adp_type", "?occupancy", "?site_symmetry_order",
    "?symmetry_multiplicity", "?calc_flag", "?disorder_group", "?refinement_flags_posn",
    "?refinement_flags",
]
_ANISO_U = ["U_11", "U_22", "U_33", "U_12", "U_13", "U_23"]
_ANISO_B = ["B_11", "B_22", "B_33", "B_12", "B_13", "B_23"]


def _num(raw: str, what: str, path, line) -> tuple[float, float | None] | None:
    if _is_null(raw):
        return None
    parsed = parse_su_number(raw)
    if parsed is None:
        raise InputError(f"{what}: {raw!r} is not a number", path=path, line=line)
    return parsed


def _aniso_table(block, path) -> dict[str, tuple[tuple, tuple | None]]:
    """label -> (U in CIF order, s.u.s or None) from the aniso loop."""
    out: dict[str, tuple[tuple, tuple | None]] = {}
    for prefix in ("_atom_site_aniso_", "_atom_site_aniso."):
        for names, scale in ((_ANISO_U, 1.0), (_ANISO_B, 1.0 / _EIGHT_PI2)):
            table = block.find(prefix, ["label"] + names)
            if len(table) == 0:
                continue
            line = _tag_line(block, prefix + "label")
            for row in table:
                label = row[0]
                vals, sus = [], []
                for j in range(6):
                    p = _num(row[j + 1], f"atom {label}: {prefix}{names[j]}", path, line)
                    if p is None:
                        break
                    vals.append(p[0] * scale)
                    sus.append(None if p[1] is None else p[1] * scale)
                if len(vals) == 6:
                    su = tuple(s or 0.0 for s in sus) if any(s is not None for s in sus) else None
                    out[label] = (tuple(vals), su)
            return out
    return out


def structure_from_block(block, path, info: dict, riding: dict | None = None,
                         free_variables: dict | None = None, u_variables: dict | None = None) -> Structure | None:
    """The model of a block's atom-site loops (None without atoms); `riding`,
    `free_variables` and `u_variables` (by upper-case label) come from an embedded .res."""
    from gemmi import cif

    table = None
    line = None
    for prefix in ("_atom_site_", "_atom_site."):
        t = block.find(prefix, _ATOM_COLUMNS)
        if len(t) > 0:
            table, line = t, _tag_line(block, prefix + "label")
            break
    if table is None:
        return _mmcif_structure(block, path, info)
    cell: UnitCell | None = info.get("cell")
    if cell is None:
        raise InputError("atom sites but no unit cell", path=path, line=line)
    sg = info.get("space_group")
    notes = info.setdefault("notes", [])
    if sg is None:
        sg = SpaceGroupRef.from_symbol("P 1")
        notes.append("no symmetry information: the model is taken in P 1")
    aniso = _aniso_table(block, path)
    sites: list[Site] = []
    n_missing_aniso = 0
    for row in table:
        label = cif.as_string(row[0])
        what = f"atom {label}"
        if row.has(11) and cif.as_string(row[11]).lower() == "dum":
            continue
        type_symbol = cif.as_string(row[1]) if row.has(1) and not _is_null(row[1]) else label
        element = element_or_error(type_symbol, path, line)
        xyz, xyz_su = [], []
        for j in (2, 3, 4):
            p = _num(row[j], f"{what}: fractional coordinate", path, line)
            if p is None:
                raise InputError(f"{what}: unknown coordinate", path=path, line=line)
            xyz.append(p[0])
            xyz_su.append(p[1])
        u_iso = u_iso_su = None
        if row.has(5) and not _is_null(row[5]):
            p = _num(row[5], f"{what}: _atom_site_U_iso_or_equiv", path, line)
            u_iso, u_iso_su = p
        elif row.has(6) and not _is_null(row[6]):
            p = _num(row[6], f"{what}: _atom_site_B_iso_or_equiv", path, line)
            u_iso = p[0] / _EIGHT_PI2
            u_iso_su = None if p[1] is None else p[1] / _EIGHT_PI2
        adp_type = cif.as_string(row[7]).lower() if row.has(7) and not _is_null(row[7]) else ""
        occ, occ_su = 1.0, None
        if row.has(8) and not _is_null(row[8]):
            occ, occ_su = _num(row[8], f"{what}: occupancy", path, line)
        order = None
        if row.has(9) and not _is_null(row[9]):
            order = int(_num(row[9], f"{what}: site symmetry order", path, line)[0])
        # _atom_site_symmetry_multiplicity (column 10) is not used: SHELXL-97 wrote 1 for
        # general positions where the dictionary means the Wyckoff multiplicity, so its
        # meaning depends on the writer; the site-symmetry order is detected instead.
        calc_flag = cif.as_string(row[11]).lower() if row.has(11) and not _is_null(row[11]) else ""
        # R (riding) in _atom_site_refinement_flags_posn, or in the older combined
        # _atom_site_refinement_flags
        posn = "".join(cif.as_string(row[k]).upper() for k in (13, 14) if row.has(k) and not _is_null(row[k]))
        calc = calc_flag in ("calc", "c") or ("R" in posn and element in ("H", "D"))
        part = 0
        if row.has(12) and not _is_null(row[12]):
            grp = cif.as_string(row[12])
            try:
                part = int(grp)
            except ValueError:
                part = 1 + (sum(map(ord, grp)) % 99)
        u_aniso = u_aniso_su = None
        if label in aniso:
            u_aniso, u_aniso_su = aniso[label]
            u_iso = None if adp_type in ("uani", "bani", "") else u_iso
            if adp_type in ("uani", "bani", ""):
                u_iso_su = None
        elif adp_type in ("uani", "bani"):
            n_missing_aniso += 1
        if u_iso is None and u_aniso is None:
            u_iso = 0.05
            notes.append(f"{what}: no displacement parameter given, Uiso = 0.05 assumed")
        riding_on = afix = None
        own_u = False
        if riding and label.upper() in riding:
            afix, riding_on, own_u = riding[label.upper()]
        has_xyz_su = any(s is not None for s in xyz_su)
        try:
            sites.append(
                Site(
                    label=label,
                    element=element,
                    xyz=tuple(xyz),
                    occupancy=occ,
                    u_iso=u_iso,
                    u_aniso=u_aniso,
                    calc=calc,
                    riding_on=riding_on,
                    own_u=bool(own_u and calc and element in ("H", "D")),
                    part=part,
                    site_symmetry_order=order,
                    afix=afix or 0,
                    occupancy_variable=(free_variables or {}).get(label.upper()),
                    u_variable=(u_variables or {}).get(label.upper()) if u_aniso is None else None,
                    xyz_su=tuple(s or 0.0 for s in xyz_su) if has_xyz_su else None,
                    occupancy_su=occ_su,
                    u_iso_su=u_iso_su,
                    u_aniso_su=u_aniso_su,
                )
            )
        except ValidationError as exc:
            raise InputError(f"{what}: {validation_message(exc)}", path=path, line=line) from None
    if n_missing_aniso:
        notes.append(f"{n_missing_aniso} sites marked Uani have no anisotropic U: Uiso used")
    if not sites:
        return None
    sites = _guess_riding_parents(sites, cell)
    return Structure(
        cell=cell,
        space_group=sg,
        sites=sites,
        name=block.name,
        wavelength=info.get("wavelength"),
        meta={"cif_block": block.name},
    )


def _mmcif_structure(block, path, info: dict) -> Structure | None:
    """A model from an mmCIF `_atom_site` loop (Cartesian coordinates), or None."""
    from gemmi import cif

    from refractor_core.crystal.cell import fractional

    t = block.find(
        "_atom_site.",
        ["type_symbol", "Cartn_x", "Cartn_y", "Cartn_z", "?id", "?label_atom_id", "?label_seq_id",
         "?occupancy", "?B_iso_or_equiv", "?U_iso_or_equiv"],
    )
    if len(t) == 0:
        return None
    line = _tag_line(block, "_atom_site.Cartn_x")
    cell: UnitCell | None = info.get("cell")
    if cell is None:
        raise InputError("atom sites but no unit cell", path=path, line=line)
    sg = info.get("space_group") or SpaceGroupRef.from_symbol("P 1")
    sites = []
    for n, row in enumerate(t):
        element = element_or_error(cif.as_string(row[0]), path, line)
        cart = []
        for j in (1, 2, 3):
            p = _num(row[j], "Cartesian coordinate", path, line)
            if p is None:
                raise InputError(f"atom {n + 1}: unknown coordinate", path=path, line=line)
            cart.append(p[0])
        name = cif.as_string(row[5]) if row.has(5) and not _is_null(row[5]) else element
        seq = cif.as_string(row[6]) if row.has(6) and not _is_null(row[6]) else ""
        ident = cif.as_string(row[4]) if row.has(4) and not _is_null(row[4]) else str(n + 1)
        label = f"{name}_{seq}" if seq else f"{name}_{ident}"
        occ = _num(row[7], "occupancy", path, line)[0] if row.has(7) and not _is_null(row[7]) else 1.0
        if row.has(9) and not _is_null(row[9]):
            u_iso = _num(row[9], "U_iso_or_equiv", path, line)[0]
        elif row.has(8) and not _is_null(row[8]):
            u_iso = _num(row[8], "B_iso_or_equiv", path, line)[0] / _EIGHT_PI2
        else:
            u_iso = 0.05
        xyz = tuple(float(v) for v in fractional(cell, np.array(cart)))
        try:
            sites.append(Site(label=label, element=element, xyz=xyz, occupancy=occ, u_iso=u_iso))
        except ValidationError as exc:
            raise InputError(f"atom {label}: {validation_message(exc)}", path=path, line=line) from None
    if not sites:
        return None
    return Structure(cell=cell, space_group=sg, sites=sites, name=block.name, wavelength=info.get("wavelength"),
                     meta={"cif_block": block.name, "mmcif": True})


#: longest X-H bond taken as the parent of a riding H atom when the file does not say (Å)
MAX_RIDING_BOND = 1.35


def _guess_riding_parents(sites: list[Site], cell: UnitCell) -> list[Site]:
    """Give calc H atoms without a known parent the nearest non-H atom as parent.

    Only the listed coordinates count (no symmetry images), as a SHELX AFIX group needs
    its H atoms next to the pivot as listed; the parent must be within MAX_RIDING_BOND and
    in the same disorder part (or part 0).
    """
    todo = [i for i, s in enumerate(sites) if s.calc and s.riding_on is None and s.element in ("H", "D")]
    heavy = [i for i, s in enumerate(sites) if s.element not in ("H", "D")]
    if not todo or not heavy:
        return sites
    from refractor_core.crystal.cell import cartesian

    with np.errstate(over="ignore", invalid="ignore"):
        xyz = cartesian(cell, np.array([s.xyz for s in sites], dtype=np.float64))
    out = list(sites)
    for i in todo:
        h = sites[i]
        with np.errstate(over="ignore", invalid="ignore"):
            d = np.nan_to_num(np.linalg.norm(xyz[heavy] - xyz[i], axis=1), nan=np.inf)
        for j in np.argsort(d):
            if d[j] > MAX_RIDING_BOND:
                break
            parent = sites[heavy[j]]
            if parent.part in (0, h.part) or h.part == 0:
                out[i] = h.model_copy(update={"riding_on": parent.label})
                break
    return out


# --------------------------------------------------------------------------------------
# the reader
# --------------------------------------------------------------------------------------


def read_cif_bundle(
    text: str,
    path: Path | str,
    *,
    block: str | None = None,
    want: Literal["reflections", "model"] = "reflections",
) -> DataBundle:
    """Read one block of a CIF into a DataBundle (reflections and/or model)."""
    from refractor_plugins.readers.shelx_ins import apply_hklf_transform, parse_ins

    cif_file = CifFile(text, path)
    b = cif_file.block(block, want)
    info = crystal_info(b, path)
    notes: list[str] = list(info["notes"])
    if len(cif_file.doc) > 1:
        notes.append(f"data block {b.name!r} used (of {len(cif_file.doc)})")

    # an embedded SHELXL .res: instructions, HKLF mode, riding H
    ins = None
    res = value(b, "res_file")
    if res is not None and res.text.strip():
        if holds_shelx_instructions(res.text):
            ins = parse_ins(res.text, path, first_line=res.line + 1)
            notes.extend(f"{res.tag}: {note}" for note in ins.notes)
        else:
            notes.append(f"{res.tag} holds no SHELXL instructions (no CELL or SFAC: another program's "
                         "file, such as JANA2006's m40): ignored; the model is read from the atom_site loops")
    instructions = ins.instructions if ins is not None else instructions_from_tags(b, notes)
    mask = value(b, "solvent_mask")
    if mask is not None and not (ins is not None and "ABIN" in ins.not_honoured):  # (noted once)
        notes.append(SOLVENT_MASK_NOTE.format(mask.tag))
    probe = value(b, "probe")
    if probe is not None and probe.text.strip().lower() not in ("x-ray", "xray", "x"):
        instructions = (instructions or RefinementInstructions()).model_copy(
            update={"radiation": probe.text.strip().lower()})

    refl = None
    hkl_text = value(b, "hkl_file")
    if hkl_text is not None and hkl_text.text.strip():
        hklf = None
        if ins is not None and ins.hklf_seen and ins.instructions.hklf in (3, 4, 5):
            hklf = ins.instructions.hklf
        table = parse_hklf(hkl_text.text, path, first_line=hkl_text.line + 1, hklf=hklf)
        refl = table.to_reflections(source=str(path))
        if ins is not None:
            refl = apply_hklf_transform(refl, ins)
        notes.extend(table.notes)
    else:
        found = reflections_from_loop(b, path)
        if found is not None:
            refl = found[0].model_copy(update={"source": str(path)})
            notes.extend(refl.notes)

    riding = free_variables = u_variables = None
    if ins is not None and ins.atoms:
        riding, free_variables, u_variables = {}, {}, {}
        for a in ins.atoms:
            if a.afix != 0 or (len(a.u) == 1 and -5.0 <= a.u[0] <= -0.5):
                riding[a.label.upper()] = (a.afix, a.pivot if a.afix else a.u_parent, bool(a.afix) and a.refined_u)
            if (fv := ins.free_variable(a.sof)) is not None:
                free_variables[a.label.upper()] = fv
            if len(a.u) == 1 and (fv := ins.free_variable(a.u[0])) is not None:
                u_variables[a.label.upper()] = fv
    model_block = b
    if want == "reflections" and not has_atom_sites(b) and block is None:
        model_block = cif_file.block(None, "model")
    model_info = info if model_block is b else crystal_info(model_block, path)
    structure = structure_from_block(model_block, path, model_info, riding, free_variables, u_variables)
    if structure is not None and ins is not None and ins.atoms and model_block is b:
        res_sites = _res_sites(ins)
        structure = _at_res_precision(structure, res_sites, notes)
        structure = _with_res_constraints(structure, res_sites, notes)
    cell = info["cell"]
    if cell is None and model_block is not b:
        cell = model_info["cell"]
    if cell is None:
        crystal_block = cif_file.block(None, "crystal")
        if crystal_block is not b:
            info2 = crystal_info(crystal_block, path)
            for key in ("cell", "wavelength", "space_group", "formula", "z"):
                if info.get(key) is None:
                    info[key] = info2.get(key)
            cell = info["cell"]
    if ins is not None:
        if info["wavelength"] is None:
            info["wavelength"] = ins.wavelength
        if cell is None:
            cell = ins.cell
        if info["space_group"] is None and ins.symm is not None and ins.cell is not None:
            info["space_group"] = ins.space_group()
        if info["formula"] is None or info["z"] is None:
            formula, z = ins.formula_and_z()
            info["formula"] = info["formula"] or formula
            info["z"] = info["z"] or z
    return DataBundle(
        reflections=refl,
        cell=cell,
        wavelength=info["wavelength"],
        space_group=info["space_group"],
        formula=info["formula"],
        z=info["z"],
        structure=structure,
        instructions=instructions,
        source=str(path),
        notes=notes,
    )


def _agrees(cif_values, cif_su, res_values) -> bool:
    """Every .res number equals the CIF's to within the CIF's rounding: 2 su, or half a
    unit of the 5th decimal where no su is given (riding atoms, fixed values)."""
    for k, (c, r) in enumerate(zip(cif_values, res_values)):
        su = cif_su[k] if cif_su is not None and cif_su[k] else 0.0
        if abs(c - r) > 2.0 * su + 5e-5:
            return False
    return True


def _res_sites(ins) -> dict[str, Site]:
    """The sites of an embedded .res by upper-case label ({} when its atoms cannot be read)."""
    try:
        res_structure = ins.structure()
    except InputError:
        return {}
    return {} if res_structure is None else {site.label.upper(): site for site in res_structure.sites}


def _updated_from_res(structure: Structure, by_label: dict[str, Site], changes) -> tuple[Structure, int]:
    """The structure with each site updated by `changes(site, res_site)` (a dict of field
    values, empty for none) where the .res has a site of its label; and how many changed."""
    sites, n_changed = [], 0
    for site in structure.sites:
        res = by_label.get(site.label.upper())
        update = changes(site, res) if res is not None else {}
        if update:
            n_changed += 1
            site = site.model_copy(update=update)
        sites.append(site)
    return structure.model_copy(update={"sites": sites}), n_changed


def _at_res_precision(structure: Structure, by_label: dict[str, Site], notes: list[str]) -> Structure:
    """The CIF's sites with the coordinates, occupancy and U of its embedded .res (written
    to five or six decimals, where the atom list is rounded to its su) wherever the .res has
    the same atom, unmoved.

    A CIF's numbers are rounded to their su; refining from them starts ~0.05 su off SHELXL's
    minimum. Only a site whose every .res number agrees with the CIF's within that rounding
    is upgraded, so an atom list edited after the .res was written keeps its own values.
    """

    def changes(site: Site, res: Site) -> dict:
        update: dict = {}
        if _agrees(site.xyz, site.xyz_su, res.xyz):
            update["xyz"] = res.xyz
            if _agrees((site.occupancy,), (site.occupancy_su,), (res.occupancy,)):
                update["occupancy"] = res.occupancy
            if site.u_aniso is not None and res.u_aniso is not None:
                if _agrees(site.u_aniso, site.u_aniso_su, res.u_aniso):
                    update["u_aniso"] = res.u_aniso
            elif site.u_iso is not None and res.u_iso is not None and site.u_aniso is None and res.u_aniso is None:
                if _agrees((site.u_iso,), (site.u_iso_su,), (res.u_iso,)):
                    update["u_iso"] = res.u_iso
        return update

    structure, n_upgraded = _updated_from_res(structure, by_label, changes)
    if n_upgraded:
        notes.append(f"{n_upgraded} of {len(structure.sites)} sites taken at full precision from the embedded .res")
    return structure


def _with_res_constraints(structure: Structure, by_label: dict[str, Site], notes: list[str]) -> Structure:
    """The CIF's sites with the constraints of its embedded .res that a CIF has no tags
    for: fixed coordinates and U (SHELXL's +10 coding) and rigid groups (AFIX n = 6),
    matched by label. A fixed U is taken only where the .res gives the site the same kind
    of U (isotropic or anisotropic) as the CIF."""

    def changes(site: Site, res: Site) -> dict:
        update: dict = {}
        if any(res.fixed_xyz):
            update["fixed_xyz"] = res.fixed_xyz
        if any(res.fixed_u) and len(res.fixed_u) == (6 if site.u_aniso is not None else 1):
            update["fixed_u"] = res.fixed_u
        if res.rigid_group is not None:
            update["rigid_group"] = res.rigid_group
        return update

    structure, n_constrained = _updated_from_res(structure, by_label, changes)
    if n_constrained:
        notes.append(f"fixed values and rigid groups of {n_constrained} sites taken from the embedded .res")
    return structure


_WEIGHT_AB = re.compile(r"\(\s*([0-9.]+)\s*P\s*\)\s*\^?2\^?\s*(?:\+\s*([0-9.]+)\s*P)?")


def instructions_from_tags(block, notes: list[str] | None = None) -> RefinementInstructions | None:
    """Refinement details a CIF states without an embedded .res: SHELXL weights, extinction.

    `_refine_ls_weighting_details` such as "w=1/[\\s^2^(Fo^2^)+(0.0348P)^2^+1.2539P]" gives
    WGHT a b; a refined `_refine_ls_extinction_coef` gives EXTI when it is SHELXL's (the
    method or expression names SHELXL's, or neither says): another program's extinction
    model (JANA's Becker-Coppens, CRYSTALS' Larson) has a coefficient on another scale, and
    is left out with a note.
    """
    found: dict = {}
    for tag in ("_refine_ls_weighting_details", "_refine_ls.weighting_details"):
        text = block.find_value(tag)
        if text:
            m = _WEIGHT_AB.search(text.replace("\n", " "))
            if m:
                found["wght"] = (float(m.group(1)), float(m.group(2) or 0.0))
            break
    for tag in ("_refine_ls_extinction_coef", "_refine_ls.extinction_coef"):
        text = block.find_value(tag)
        if text and text not in ("?", "."):
            try:
                coefficient = float(text.split("(")[0])
            except ValueError:
                break
            model = _extinction_model(block)
            if model is None:
                found["exti"] = coefficient
            elif notes is not None:
                notes.append(f"extinction coefficient {text} not used: its model ({model}) is not SHELXL's EXTI")
            break
    return RefinementInstructions(**found) if found else None


def _extinction_model(block) -> str | None:
    """The CIF's extinction method or expression where it is not SHELXL's (None: SHELXL's,
    or not stated)."""
    stated = [" ".join(v.text.split()) for v in (value(block, "extinction_method"), value(block, "extinction_expression"))
              if v is not None]
    stated = [t for t in stated if t and t.lower() != "none"]
    if not stated or any("shelx" in t.lower() or "0.001xfc" in t.lower().replace(" ", "") for t in stated):
        return None
    return stated[0]


def sniff_cif_text(text: str) -> float:
    """Confidence that text is a CIF: a data_ block header near the top."""
    for line in text.split("\n")[:200]:
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.lower().startswith("data_"):
            return 0.95
        if s.startswith("_") or s.lower() == "loop_":
            return 0.6
        return 0.0
    return 0.0


class CifReader(HKLReader):
    """CIF (coreCIF 1.1 and DDLm), SHELXL CIFs with embedded hkl/res, fcf, mmCIF."""

    name: ClassVar[str] = "cif"
    version: ClassVar[str] = "0.1.0"
    Config: ClassVar[type[ComponentConfig]] = CifConfig
    suffixes: ClassVar[tuple[str, ...]] = (".cif", ".fcf", ".mmcif", ".cif2")

    def __init__(self, config: CifConfig | None = None, context: BuildContext | None = None):
        super().__init__(config, context)

    def sniff(self, path: Path, head: bytes) -> float:
        text = head_text(head)
        if text is None:
            return 0.0
        score = sniff_cif_text(text)
        if score and split_block(Path(path))[0].suffix.lower() in self.suffixes:
            score += 0.04
        return score

    @guarded
    def read(self, path: Path) -> DataBundle:
        file_path, block = split_block(Path(path))
        block = self.config.block or block
        return read_cif_bundle(read_text(file_path), file_path, block=block, want=self.config.want)
