"""CIF (core dictionary, CIF 1.1 names as SHELXL writes them) for a refined structure.

Cell with s.u.s, symmetry operators and the space-group names, atom sites with
`_atom_site_U_iso_or_equiv`, `_atom_site_adp_type`, `_atom_site_occupancy`,
`_atom_site_site_symmetry_order`, `_atom_site_calc_flag` (riding H: calc),
`_atom_site_refinement_flags_posn`, `_atom_site_disorder_group`, s.u.s in parentheses where
known, the `_atom_site_aniso` loop, the refinement figures and weighting scheme, and the
embedded `_shelx_res_file` / `_shelx_hkl_file` that make the CIF a complete archive.
"""

from __future__ import annotations

import datetime as _dt
import re

import numpy as np

from .. import __version__
from ..types import USER_MODEL, RefinedCandidate, ReflectionData, Structure
from .numbers import cif_string, plain, text_field, with_su

#: Kα wavelengths (Å) named in _diffrn_radiation_type
_RADIATION = {0.71073: "Mo K\\a", 1.54184: "Cu K\\a", 1.54178: "Cu K\\a", 0.56087: "Ag K\\a", 0.56086: "Ag K\\a", 1.34143: "Ga K\\a"}


def block_name(name: str) -> str:
    """A CIF data block name from any string (no blanks, at most 60 characters)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.\-+()]", "_", name.strip()) or "refractor"
    return cleaned[:60]


def _ueq_values(structure: Structure) -> list[float]:
    from ..crystal.cell import u_equiv

    out = []
    for s in structure.sites:
        if s.u_aniso is not None:
            out.append(float(u_equiv(structure.cell, np.array(s.u_aniso))))
        else:
            out.append(float(s.u_iso if s.u_iso is not None else 0.05))
    return out


def _site_orders(structure: Structure) -> list[int]:
    from .res_writer import _site_orders as orders

    return [int(o) for o in orders(structure)]


def _formula_sums(formula: str) -> tuple[float, float] | None:
    """(formula weight, electrons) of a sum formula; None for one that cannot be read."""
    import gemmi

    from ..crystal.formula import parse_formula

    try:
        counts = parse_formula(formula)
    except Exception:  # noqa: BLE001 - only convenience figures
        return None
    elements = {e: gemmi.Element("H" if e == "D" else e) for e in counts}
    return (sum(elements[e].weight * n for e, n in counts.items()),
            sum(elements[e].atomic_number * n for e, n in counts.items()))


#: Avogadro's number (mol⁻¹)
AVOGADRO = 6.02214076e23


def _crystal_figures(formula: str, z: float, volume: float) -> tuple[float, float] | None:
    """(density in g cm⁻³, F(000) as SHELXL gives it: the electrons in the cell) of `z`
    formula units in a cell of `volume` Å³; None for a formula that cannot be read."""
    sums = _formula_sums(formula)
    if sums is None:
        return None
    return z * sums[0] / AVOGADRO / (volume * 1e-24), z * sums[1]


def not_solved_warning(refined: RefinedCandidate | None) -> str | None:
    """The line that marks a best attempt that is not a solution (`meta["solved"]` False)."""
    if refined is None or (refined.meta or {}).get("solved") is not False:
        return None
    return (
        f"NOT SOLVED: best attempt of refractor, R1 = {refined.r1:.4f} above the threshold of a "
        "solution; this model is not a structure solution"
    )


def structure_cif(
    structure: Structure,
    *,
    refined: RefinedCandidate | None = None,
    data: ReflectionData | None = None,
    name: str | None = None,
    formula: str | None = None,
    z: float | None = None,
    res_text: str | None = None,
    hkl_text: str | None = None,
    r1_all: float | None = None,
) -> str:
    """The CIF text of a structure, with refinement figures and embedded files when given."""
    cell = structure.cell
    sg = structure.space_group
    wavelength = (data.wavelength if data is not None else None) or structure.wavelength
    formula = formula or (data.formula if data is not None else None)
    z = z if z is not None else (data.z if data is not None else None)
    out: list[str] = []

    def pair(tag: str, value: str) -> None:
        if "\n" in value:
            out.extend([tag, value])
        else:
            out.append(f"{tag:<39} {value}")

    warning = not_solved_warning(refined)
    if warning:
        out.append(f"# {warning}")
    out.append(f"data_{block_name(name or structure.name)}")
    out.append("")
    pair("_audit_creation_method", cif_string(f"refractor {__version__}"))
    pair("_audit_creation_date", _dt.date.today().isoformat())
    if warning:
        pair("_refine_special_details", f";\n{warning}\n;")
    if formula:
        pair("_chemical_formula_sum", cif_string(formula))
        sums = _formula_sums(formula)
        if sums:
            pair("_chemical_formula_weight", f"{sums[0]:.2f}")
    out.append("")
    gsg = sg.gemmi()
    pair("_space_group_crystal_system", sg.crystal_system)
    pair("_space_group_IT_number", str(sg.number))
    pair("_space_group_name_H-M_alt", cif_string(sg.symbol))
    pair("_space_group_name_Hall", cif_string(sg.hall.strip()))
    out.append("")
    out.append("loop_")
    out.append(" _space_group_symop_operation_xyz")
    for op in gsg.operations():
        out.append(" " + cif_string(", ".join(p.strip() for p in op.triplet().split(","))))
    out.append("")
    su = cell.su or (None,) * 6
    for tag, v, s in zip(
        ("_cell_length_a", "_cell_length_b", "_cell_length_c", "_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma"),
        cell.parameters,
        su,
    ):
        pair(tag, with_su(v, s, 6))
    pair("_cell_volume", f"{cell.volume:.3f}")
    if z is not None:
        pair("_cell_formula_units_Z", plain(z, 3))
        crystal = _crystal_figures(formula, z, cell.volume) if formula else None
        if crystal is not None:
            pair("_exptl_crystal_density_diffrn", f"{crystal[0]:.3f}")
            pair("_exptl_crystal_F_000", plain(crystal[1], 1))
    if wavelength:
        pair("_diffrn_radiation_wavelength", plain(wavelength, 6))
        rad = _RADIATION.get(round(wavelength, 5))
        if rad:
            pair("_diffrn_radiation_type", cif_string(rad))
    out.append("")

    if refined is not None and (refined.meta or {}).get("data_statistics"):
        _data_block(pair, refined.meta["data_statistics"])
        out.append("")
    if refined is not None:
        _refinement_block(pair, refined, structure, r1_all)
        out.append("")

    _atom_loops(out, structure)
    geometry = (refined.meta or {}).get("geometry") if refined is not None else None
    if geometry:
        _geometry_loops(out, geometry, gsg)

    if res_text:
        out.append("")
        out.append("_shelx_res_file")
        out.append(text_field(res_text.rstrip("\n")))
    if hkl_text:
        out.append("")
        out.append("_shelx_hkl_file")
        out.append(text_field(hkl_text.rstrip("\n")))
    out.append("")
    return "\n".join(out) + "\n"


def _symmetry_code(operation, ops: list[tuple[np.ndarray, np.ndarray]]) -> str:
    """SHELXL's site symmetry code of an atom image: "." for the atom itself, else n_klm with
    n the operation's number in the symop loop and klm its lattice shift plus 5 ("?" for an
    operation not in the list)."""
    rot = np.array(operation[0], dtype=np.int64).reshape(3, 3)
    t = np.asarray(operation[1], dtype=np.float64)
    for n, (r, tr) in enumerate(ops, start=1):
        shift = t - tr
        if np.array_equal(r, rot) and np.allclose(shift, np.round(shift), atol=1e-6):
            k = [int(round(v)) for v in shift]
            return "." if n == 1 and not any(k) else f"{n}_{''.join(str(5 + v) for v in k)}"
    return "?"


def _geometry_loops(out: list[str], geometry: dict, gsg) -> None:
    """`_geom_bond` and `_geom_angle` loops (values with su where refined; constrained ones,
    as riding H give them, without)."""
    ops = [(np.array(op.rot, dtype=np.int64) // op.DEN, np.array(op.tran, dtype=np.float64) / op.DEN)
           for op in gsg.operations()]
    for kind, items, tags in (
        ("bond", geometry.get("bonds", []), ("atom_site_label_1", "atom_site_label_2", "distance",
                                             "site_symmetry_2", "publ_flag")),
        ("angle", geometry.get("angles", []), ("atom_site_label_1", "atom_site_label_2", "atom_site_label_3",
                                               "value_angle", "site_symmetry_1", "site_symmetry_3", "publ_flag")),
    ):
        if not items:
            continue
        out.append("")
        out.append("loop_")
        out.extend(f" _geom_{kind}_{tag}" for tag in tags)
        for item in items:
            # a constrained value as SHELXL writes it: 1.0000 Å, 108.4°
            value = (with_su(item["value"], item["su"]) if item["su"] else
                     f"{item['value']:.{4 if kind == 'bond' else 1}f}")
            codes = [_symmetry_code(op, ops) for op in item["operations"]]
            symmetry = codes[1:] if kind == "bond" else [codes[0], codes[2]]
            out.append(" ".join([*(cif_string(label) for label in item["atoms"]), value, *symmetry, "?"]))


def _data_block(pair, stats: dict) -> None:
    """The `_diffrn_reflns_*` items of the data the model was refined against
    (`merging.collection_statistics`), as SHELXL writes them."""
    pair("_diffrn_reflns_number", str(stats["n_measured"]))
    pair("_diffrn_reflns_av_unetI/netI", plain(stats["r_sigma"], 4))
    # merged data hold no equivalents to compare
    pair("_diffrn_reflns_av_R_equivalents", plain(stats["r_int"], 4) if stats["r_int"] > 0 else "?")
    for axis, (low, high) in zip("hkl", stats["limits"]):
        pair(f"_diffrn_reflns_limit_{axis}_min", str(low))
        pair(f"_diffrn_reflns_limit_{axis}_max", str(high))
    pair("_diffrn_reflns_theta_min", plain(stats["theta_min"], 3))
    pair("_diffrn_reflns_theta_max", plain(stats["theta_max"], 3))
    if "theta_full" in stats:
        pair("_diffrn_reflns_theta_full", plain(stats["theta_full"], 3))
    for limit in ("max", "full"):
        laue = stats.get(f"laue_fraction_theta_{limit}")
        if laue is None:
            continue
        pair(f"_diffrn_measured_fraction_theta_{limit}", plain(laue, 3))
        pair(f"_diffrn_reflns_Laue_measured_fraction_{limit}", plain(laue, 3))
        point_group = stats.get(f"point_group_fraction_theta_{limit}", laue)  # = Laue with a centre
        pair(f"_diffrn_reflns_point_group_measured_fraction_{limit}", plain(point_group, 3))


def _refinement_block(pair, refined: RefinedCandidate, structure: Structure, r1_all: float | None) -> None:
    meta = refined.meta or {}
    candidate = refined.candidate
    if candidate is not None and candidate.generator and candidate.generator != USER_MODEL:
        pair("_computing_structure_solution", cif_string(f"refractor {__version__} ({candidate.generator})"))
        # a generator names its method by the CIF's code (charge flipping: iterative)
        pair("_atom_sites_solution_primary", cif_string(candidate.meta.get("solution_method", "other")))
    pair("_computing_structure_refinement", cif_string(f"refractor {__version__}"))
    a, b = refined.weight_a, refined.weight_b
    pair("_refine_ls_structure_factor_coef", "Fsqd")
    pair("_refine_ls_matrix_type", "full")
    pair("_refine_ls_weighting_scheme", "calc")
    pair(
        "_refine_ls_weighting_details",
        cif_string(f"w=1/[\\s^2^(Fo^2^)+({a:.4f}P)^2^+{b:.4f}P] where P=(Fo^2^+2Fc^2^)/3"),
    )
    has_calc = any(s.calc for s in structure.sites)
    has_h = any(s.element in ("H", "D") for s in structure.sites)
    if has_h:
        free_h = any(s.element in ("H", "D") and not s.calc for s in structure.sites)
        pair("_refine_ls_hydrogen_treatment", "mixed" if (has_calc and free_h) else ("constr" if has_calc else "refall"))
    if refined.extinction:
        pair("_refine_ls_extinction_method", cif_string("SHELXL"))
        pair("_refine_ls_extinction_coef", with_su(refined.extinction, meta.get("extinction_su"), 6))
        pair("_refine_ls_extinction_expression", cif_string("Fc^*^=kFc[1+0.001xFc^2^\\l^3^/sin(2\\q)]^-1/4^"))
    else:
        pair("_refine_ls_extinction_method", "none")
    if refined.flack is not None:
        pair("_refine_ls_abs_structure_Flack", with_su(refined.flack, refined.flack_su, 4))
        if meta.get("flack_details"):
            pair("_refine_ls_abs_structure_details", f";\n{meta['flack_details']}\n;")
    pair("_reflns_number_total", str(refined.n_reflections))
    pair("_reflns_number_gt", str(refined.n_gt))
    pair("_reflns_threshold_expression", cif_string("I > 2\\s(I)"))
    pair("_refine_ls_number_reflns", str(refined.n_reflections))
    pair("_refine_ls_number_parameters", str(refined.n_parameters))
    pair("_refine_ls_number_restraints", str(int(meta.get("n_restraints", 0))))
    r_all = r1_all if r1_all is not None else meta.get("r1_all")
    pair("_refine_ls_R_factor_all", plain(r_all, 4) if r_all is not None else "?")
    pair("_refine_ls_R_factor_gt", plain(refined.r1, 4))
    pair("_refine_ls_wR_factor_ref", plain(refined.wr2, 4))
    if meta.get("wr2_gt") is not None:
        pair("_refine_ls_wR_factor_gt", plain(meta["wr2_gt"], 4))
    pair("_refine_ls_goodness_of_fit_ref", plain(refined.goof, 3))
    pair("_refine_ls_restrained_S_all", plain(meta.get("restrained_goof", refined.goof), 3))
    pair("_refine_ls_shift/su_max", plain(refined.max_shift_su, 3) if refined.max_shift_su is not None else "?")
    if meta.get("mean_shift_su") is not None:
        pair("_refine_ls_shift/su_mean", plain(meta["mean_shift_su"], 3))
    pair("_refine_diff_density_max", plain(refined.diff_peak, 3) if refined.diff_peak is not None else "?")
    pair("_refine_diff_density_min", plain(refined.diff_hole, 3) if refined.diff_hole is not None else "?")


def _atom_loops(out: list[str], structure: Structure) -> None:
    ueq = _ueq_values(structure)
    orders = _site_orders(structure)
    out.append("loop_")
    for tag in (
        "label", "type_symbol", "fract_x", "fract_y", "fract_z", "U_iso_or_equiv", "adp_type",
        "occupancy", "site_symmetry_order", "calc_flag", "refinement_flags_posn", "disorder_group",
    ):
        out.append(f" _atom_site_{tag}")
    for s, u, order in zip(structure.sites, ueq, orders):
        xyz_su = s.xyz_su or (None, None, None)
        xyz = [with_su(x, e, 6) for x, e in zip(s.xyz, xyz_su)]
        row = [
            cif_string(s.label),
            cif_string(s.element),
            *xyz,
            with_su(u, s.u_iso_su, 6),  # U_eq's su for an anisotropic site
            s.adp_type,
            with_su(s.occupancy, s.occupancy_su, 6),
            str(order),
            "calc" if s.calc else "d",
            "R" if (s.calc and s.riding_on) else ".",
            str(s.part) if s.part else ".",
        ]
        out.append(" ".join(row))
    aniso = [s for s in structure.sites if s.u_aniso is not None]
    if aniso:
        out.append("")
        out.append("loop_")
        for tag in ("label", "U_11", "U_22", "U_33", "U_23", "U_13", "U_12"):
            out.append(f" _atom_site_aniso_{tag}")
        for s in aniso:
            u11, u22, u33, u12, u13, u23 = s.u_aniso
            sus = s.u_aniso_su or (None,) * 6
            s11, s22, s33, s12, s13, s23 = sus
            values = [with_su(u11, s11, 6), with_su(u22, s22, 6), with_su(u33, s33, 6),
                      with_su(u23, s23, 6), with_su(u13, s13, 6), with_su(u12, s12, 6)]
            out.append(" ".join([cif_string(s.label), *values]))
