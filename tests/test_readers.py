"""The built-in readers: SHELX HKLF/.ins/.res, .p4p, CIF, MTZ, and every real case loading."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from refractor_core.crystal.formula import parse_formula
from refractor_core.dataio import load_bundle, load_reflections, load_structure
from refractor_core.errors import InputError
from refractor_plugins.readers.cif_reader import CifReader, read_cif_bundle
from refractor_plugins.readers.p4p import parse_p4p
from refractor_plugins.readers.shelx_hkl import ShelxHklReader, parse_hklf
from refractor_plugins.readers.shelx_ins import ins_bundle, parse_ins

from .conftest import REAL_CASES, REAL_CASE_NAMES

# --------------------------------------------------------------------------------------
# every real case
# --------------------------------------------------------------------------------------


def _case_json(case) -> dict:
    return json.loads((case.folder / "case.json").read_text())


def _same_formula(a: str, b: str) -> bool:
    fa, fb = parse_formula(a), parse_formula(b)
    return set(fa) == set(fb) and all(abs(fa[k] - fb[k]) < 1e-3 for k in fb)


@pytest.mark.parametrize("case", REAL_CASES, ids=REAL_CASE_NAMES)
def test_real_case_reflections_load(case):
    info = _case_json(case)
    data = load_reflections(case.reflections)
    assert data.n == info["reflections"]["rows_with_positive_sigma"]
    assert data.n_skipped == info["reflections"]["rows"] - info["reflections"]["rows_with_positive_sigma"]
    assert data.wavelength == pytest.approx(case.wavelength, abs=1e-5)
    assert data.formula is not None and _same_formula(data.formula, case.formula)
    assert data.z == pytest.approx(case.z)
    assert data.space_group_hint is not None and data.space_group_hint.number == case.sg_number
    assert np.all(data.sigma > 0) and np.all(np.isfinite(data.intensity))
    model = load_structure(str(case.reference) + (f"#{case.data_block}" if case.data_block else ""))
    assert np.allclose(data.cell.parameters, model.cell.parameters, atol=2e-3)
    d = 1.0 / np.sqrt(np.einsum("ni,ij,nj->n", data.hkl.astype(float), np.linalg.inv(
        _metric(data.cell)), data.hkl.astype(float)))
    assert d.min() == pytest.approx(case.d_min, abs=0.01)


def _metric(cell) -> np.ndarray:
    from refractor_core.crystal.cell import metric_tensor

    return metric_tensor(cell)


@pytest.mark.parametrize("case", REAL_CASES, ids=REAL_CASE_NAMES)
def test_real_case_reference_model_loads(case):
    info = _case_json(case)
    model = load_structure(str(case.reference) + (f"#{case.data_block}" if case.data_block else ""))
    assert model.n_sites == info["reference"]["all_sites_in_asu"]
    assert len(model.non_hydrogen()) == case.non_h_sites
    assert model.space_group.number == case.sg_number
    for site in model.sites:
        assert 0.0 <= site.occupancy <= 1.0 + 1e-6, site
        assert site.u_iso is not None or site.u_aniso is not None


def test_real_cases_are_all_there():
    assert len(REAL_CASES) == 23


# --------------------------------------------------------------------------------------
# HKLF 4 / 5
# --------------------------------------------------------------------------------------


def test_hklf4_touching_fields_and_batch():
    text = (
        "  -2   0   017931.98   97.99   1\n"
        "   1   2   3-1234.56   12.34  12\n"
        " 100-100 1001234567.  12345.   3\n"
        "   0   0   0    0.00    0.00   0\n"
    )
    t = parse_hklf(text)
    assert t.hkl.tolist() == [[-2, 0, 0], [1, 2, 3], [100, -100, 100]]
    assert t.intensity.tolist() == [17931.98, -1234.56, 1234567.0]
    assert t.sigma.tolist() == [97.99, 12.34, 12345.0]
    assert t.batch.tolist() == [1, 12, 3]
    assert t.hklf == 4


def test_hklf4_terminator_footer_and_placeholders():
    text = (
        "   1   0   0  100.00    5.00\r\n"
        "   2   0   0   -1.00   -1.00\r\n"
        "   3   0   0   50.00    0.00\r\n"
        "   0   0   0    0.00    0.00\r\n"
        " The following wavelength and cell were deduced by SADABS\r\n"
        " CELL 0.71073 1 2 3 90 90 90\r\n"
    )
    t = parse_hklf(text.replace("\r\n", "\n"))
    assert t.n_rows == 3 and t.n_skipped == 2
    assert t.hkl.tolist() == [[1, 0, 0]]
    assert any("after the data" in n for n in t.notes)


def test_hklf_free_format_when_columns_do_not_apply():
    t = parse_hklf("1 0 0 100 5\n-1 2 -3 7.5 0.5 2\n0 0 0 0 0\n")
    assert t.hkl.tolist() == [[1, 0, 0], [-1, 2, -3]]
    assert t.intensity.tolist() == [100.0, 7.5]
    assert any("free" in n for n in t.notes)


def test_hklf_shifted_columns_are_an_error_not_a_misparse():
    good = "   1   0   0  100.00    5.00\n   2   0   0   -2.00    1.00\n"
    shifted = good + "    -2   0   017931.98   97.99\n"  # one column to the right
    with pytest.raises(InputError) as err:
        parse_hklf(shifted, "x.hkl")
    assert err.value.line == 3 and "x.hkl" in str(err.value)


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_hklf_non_finite_values_are_errors(bad):
    with pytest.raises(InputError) as err:
        parse_hklf(f"   1   0   0  100.00    5.00\n   2   0   0 {bad:>7}    1.00\n", "d.hkl")
    assert err.value.line == 2


def test_hklf_nan_sigma_is_an_error():
    with pytest.raises(InputError) as err:
        parse_hklf("   1   0   0  100.00     nan\n", "d.hkl")
    assert err.value.line == 1 and "sigma" in str(err.value)


def test_hklf5_twin_components_and_groups():
    text = (
        "   1   0   0  100.00    5.00  -2\n"
        "   1   0   0  100.00    5.00   1\n"
        "   2   0   0   10.00    1.00   1\n"
        "   3   0   0   20.00    2.00  -2\n"
        "   3   0   0   20.00   -1.00   1\n"  # group closed by a placeholder: dropped whole
        "   4   0   0   40.00    4.00   2\n"
    )
    t = parse_hklf(text)
    assert t.hklf == 5
    assert t.batch.tolist() == [-2, 1, 1, 2]
    assert t.hkl[:, 0].tolist() == [1, 1, 2, 4]
    assert t.n_skipped == 2
    refl = t.to_reflections()
    assert refl.hklf == 5


def test_hklf3_amplitudes_become_intensities():
    t = parse_hklf("   1   0   0   10.00    0.50\n   2   0   0    0.00    0.30\n", hklf=3)
    assert t.intensity.tolist() == [100.0, 0.0]
    assert t.sigma[0] == pytest.approx(2 * 10 * 0.5)
    assert t.sigma[1] == pytest.approx(0.09)  # σ² where F = 0
    assert t.source_kind == "F"


def test_hklf_garbage_first_line_names_the_line(tmp_path):
    p = tmp_path / "x.hkl"
    p.write_text("\nhello world\n")
    with pytest.raises(InputError) as err:
        ShelxHklReader().read(p)
    assert err.value.line == 2 and str(p) in str(err.value)


# --------------------------------------------------------------------------------------
# .ins / .res
# --------------------------------------------------------------------------------------

INS = """TITL test in P2(1)/c
CELL 0.71073 10.0 11.0 12.0 90 100 90
ZERR 4 0.001 0.002 0.003 0 0.01 0
LATT 1
SYMM -X, 0.5+Y, 0.5-Z
SFAC C H O
SFAC CU 13.338 3.583 7.168 0.247 5.616 11.397 1.673 64.831 1.191 =
   0.32 1.265 0 0 63.55
UNIT 24 44 22 2
DISP $C 0.003 0.002
OMIT -3 55
OMIT 1 2 3
SHEL 10 0.8
TWIN -1 0 0 0 -1 0 0 0 -1 2
BASF 0.3
EXTI 0.01
WGHT 0.05 0.2
MERG 2
ACTA
REM a comment
   an indented comment line
FVAR 1.5 0.7
RESI MOL 1
O1   3  0.10 0.20 0.30 11.0 0.02 0.03 0.04 0.001 0.002 0.003
C1   1  0.15 0.25 =
       0.35 21.0 0.03
PART 1
C2   1  0.2 0.3 0.4 -21.0 0.04
PART 0
CU1  4  0.5 0.5 0.5 10.5 0.02
AFIX 137
H1A  2  0.1 0.1 0.1 11.0 -1.5
H1B  2  0.1 0.2 0.1 11.0 -1.5
AFIX 0
C3   1  10.25 0.1 0.2 11.0 0.05
HKLF 4 1 0 0 1 0 1 0 -1 0 0
REM after HKLF
END
Q1 1 0.1 0.1 0.1 11 0.05 1.2
"""


def test_ins_crystal_data_and_instructions():
    ins = parse_ins(INS, "t.ins")
    b = ins_bundle(ins, "t.ins")
    assert b.cell.parameters == (10.0, 11.0, 12.0, 90.0, 100.0, 90.0)
    assert b.cell.su == (0.001, 0.002, 0.003, 0.0, 0.01, 0.0)
    assert b.wavelength == 0.71073
    assert b.space_group.number == 14 and b.space_group.symbol == "P 1 21/c 1"
    assert parse_formula(b.formula) == {"C": 6.0, "H": 11.0, "O": 5.5, "Cu": 0.5}
    assert b.z == 4
    i = b.instructions
    assert i.omit_sigma == -3 and i.omit_2theta_max == 55 and i.omit_hkl == [(1, 2, 3)]
    assert i.shel == (10.0, 0.8)
    assert i.twin_matrix == (-1, 0, 0, 0, -1, 0, 0, 0, -1) and i.twin_n == 2
    assert i.basf == [0.3] and i.exti == 0.01 and i.wght == (0.05, 0.2)
    assert i.fvar == [1.5, 0.7] and i.merg == 2 and i.acta and i.hklf == 4
    assert ins.hklf_matrix == (0, 0, 1, 0, 1, 0, -1, 0, 0) and ins.hklf_scale == 1.0


def test_ins_anis_names_the_atoms_to_make_anisotropic():
    """ANIS alone: every non-H atom after it; ANIS n: the next n isotropic atoms (an
    anisotropic one is not counted); ANIS names: those atoms, ranges and $element included."""
    atoms_at = INS.index("RESI MOL 1")

    def anis(line: str, where: int = atoms_at) -> list[str]:
        return parse_ins(INS[:where] + line + "\n" + INS[where:], "a.ins").instructions.anis

    assert anis("ANIS") == ["O1", "C1", "C2", "CU1", "C3"]
    assert anis("ANIS 2") == ["C1", "C2"]  # O1 is anisotropic already
    assert anis("ANIS", INS.index("CU1")) == ["CU1", "C3"]
    assert anis("ANIS $C") == ["C1", "C2", "C3"]
    assert anis("ANIS C1 > CU1") == ["C1", "C2", "CU1"]
    assert parse_ins(INS, "t.ins").instructions.anis == []
    noted = parse_ins(INS[:atoms_at] + "ANIS C9\n" + INS[atoms_at:], "a.ins")
    assert noted.instructions.anis == [] and any("ANIS ignored: no atom C9" in n for n in noted.notes)


def test_neut_marks_neutron_data_which_are_not_evaluated():
    """NEUT says the data are neutron data; X-ray form factors would misfit them, so the
    data are refused where observations are prepared, whichever side says it."""
    from refractor_core.crystal.observations import prepare_observations
    from refractor_core.types import ReflectionData, UnitCell

    at = INS.index("SFAC C H O")
    neutron = parse_ins(INS[:at] + "NEUT\n" + INS[at:], "n.ins").instructions
    assert neutron.radiation == "neutron" and parse_ins(INS, "t.ins").instructions.radiation == "x-ray"
    data = ReflectionData(hkl=np.array([[1, 0, 0], [0, 1, 0]], dtype=np.int32), intensity=np.array([10.0, 20.0]),
                          sigma=np.array([1.0, 1.0]), cell=UnitCell(a=5, b=6, c=7, alpha=90, beta=90, gamma=90))
    assert prepare_observations(data, "P 1").data.n == 2
    with pytest.raises(InputError, match="neutron diffraction data .the model gives NEUT"):
        prepare_observations(data, "P 1", neutron)
    with pytest.raises(InputError, match="neutron diffraction data .the data file gives NEUT"):
        prepare_observations(data.model_copy(update={"instructions": neutron}), "P 1")


def test_ins_notes_what_the_refiner_does_not_honour():
    """ABIN (a .fab solvent contribution), a variable-metric rigid group (AFIX 69) and a
    rigid group (AFIX 66) too small to have rotations change a SHELXL refinement; the
    refiner does none of them, and the notes say so."""
    at = INS.index("RESI MOL 1")
    text = INS[:at] + "ABIN\n" + INS[at:]
    text = text.replace("O1   3", "AFIX 69\nO1   3", 1).replace("PART 1\n", "AFIX 0\nPART 1\n", 1)
    notes = parse_ins(text, "r.ins").notes
    assert any(n.startswith("instructions read but not honoured") and "ABIN" in n for n in notes)
    assert "variable-metric rigid groups (AFIX n = 9) are refined as free atoms: O1, C1" in notes
    small = parse_ins(text.replace("AFIX 69", "AFIX 66"), "r.ins")
    assert "rigid groups (AFIX n = 6) of fewer than 3 atoms are refined as free atoms: O1, C1" in small.notes
    # refined as free atoms, they are free atoms of the model (a .res written from it has no AFIX 66)
    sites = ins_bundle(small, "r.ins").structure.sites
    assert all(s.rigid_group is None for s in sites if s.label in ("O1", "C1"))
    assert not any("rigid" in n or "ABIN" in n for n in parse_ins(INS, "t.ins").notes)


def test_ins_atoms_free_variables_riding_and_special_positions():
    b = ins_bundle(parse_ins(INS.replace("HKLF 4 1 0 0 1 0 1 0 -1 0 0", "HKLF 4"), "t.ins"), "t.ins")
    s = {x.label: x for x in b.structure.sites}
    assert list(s) == ["O1", "C1", "C2", "CU1", "H1A", "H1B", "C3"]  # Q peaks after END ignored
    o1 = s["O1"]
    assert o1.u_aniso == (0.02, 0.03, 0.04, 0.003, 0.002, 0.001)  # SHELX order -> CIF order
    assert o1.occupancy == 1.0 and o1.u_iso is None
    assert s["C1"].xyz == (0.15, 0.25, 0.35)  # continuation line
    assert s["C1"].occupancy == pytest.approx(0.7)  # 21.0 -> fv(2)
    assert s["C2"].occupancy == pytest.approx(0.3)  # -21.0 -> 1 - fv(2)
    assert s["C2"].part == 1 and s["C1"].part == 0
    # 10.5 on an inversion centre (site-symmetry order 2): chemical occupancy 1
    assert s["CU1"].site_symmetry_order == 2 and s["CU1"].occupancy == pytest.approx(1.0)
    assert s["CU1"].element == "Cu"
    h = s["H1A"]
    assert h.calc and h.riding_on == "CU1" and h.afix == 137
    assert h.u_iso == pytest.approx(1.5 * 0.02)
    assert s["C3"].xyz[0] == pytest.approx(0.25) and not s["C3"].calc  # 10.25: fixed x


def test_ins_negative_uiso_rides_on_ueq_of_anisotropic_parent():
    text = INS.split("FVAR")[0] + "FVAR 1\nO1 3 0.1 0.2 0.3 11 0.02 0.03 0.04 0 0 0\nH1 2 0.2 0.2 0.3 11 -1.2\nHKLF 4\n"
    b = ins_bundle(parse_ins(text, "t.ins"), "t.ins")
    from refractor_core.crystal.cell import u_equiv

    ueq = float(u_equiv(b.cell, np.array(b.structure.sites[0].u_aniso)))
    assert b.structure.sites[1].u_iso == pytest.approx(1.2 * ueq)
    assert b.structure.sites[1].riding_on == "O1" and not b.structure.sites[1].calc


@pytest.mark.parametrize(
    "mutation, line_word",
    [
        (("SFAC C H O", "SFAC C H Xx"), "SFAC"),
        (("CELL 0.71073 10.0 11.0 12.0 90 100 90", "CELL 0.71073 10.0 11.0 12.0 90 190 90"), "CELL"),
        (("CELL 0.71073 10.0 11.0 12.0 90 100 90", "CELL 0.71073 10.0 11.0"), "CELL"),
        (("UNIT 24 44 22 2", "UNIT 24 44 22"), "UNIT"),
        (("LATT 1", "LATT 9"), "LATT"),
        (("SYMM -X, 0.5+Y, 0.5-Z", "SYMM -X, 0.5+Y, 0.5-Q"), "SYMM"),
        (("C1   1  0.15 0.25 =", "C1   1  0.15 abc ="), "C1"),
    ],
)
def test_ins_errors_name_file_and_line(mutation, line_word):
    text = INS.replace(*mutation)
    lines = text.split("\n")
    with pytest.raises(InputError) as err:
        ins_bundle(parse_ins(text, "t.ins"), "t.ins")
    assert err.value.path == "t.ins"
    assert err.value.line is not None and lines[err.value.line - 1].split()[0] == line_word


def test_ins_atom_with_undefined_free_variable():
    text = INS.replace("FVAR 1.5 0.7", "FVAR 1.5")
    with pytest.raises(InputError, match="free variable 2"):
        ins_bundle(parse_ins(text, "t.ins"), "t.ins")


def test_ins_sfac_index_out_of_range():
    text = INS.replace("CU1  4", "CU1  7")
    with pytest.raises(InputError, match="scattering factor number 7"):
        ins_bundle(parse_ins(text, "t.ins"), "t.ins")


def test_ins_hklf_matrix_scale_and_formula_z_fallback():
    ins = parse_ins("CELL 1.0 5 5 5 90 90 90\nLATT -1\nSFAC Na Cl\nUNIT 4 4\nHKLF 4 2.0 0 1 0 -1 0 0 0 0 1\n", "x.ins")
    assert ins.hklf_scale == 2.0 and ins.hklf_matrix == (0, 1, 0, -1, 0, 0, 0, 0, 1)
    from refractor_core.types import ReflectionData

    refl = ReflectionData(hkl=[[1, 2, 3]], intensity=[10.0], sigma=[1.0])
    out = ins.apply_to(refl)
    assert out.hkl.tolist() == [[2, -1, 3]] and out.intensity[0] == 20.0 and out.sigma[0] == 2.0
    formula, z = ins.formula_and_z()  # no ZERR: Z from the symmetry (P1, Z' = 1)
    assert z == 1 and parse_formula(formula) == {"Na": 4.0, "Cl": 4.0}
    ins = parse_ins("CELL 1.0 5 5 5 90 90 90\nZERR 192 0 0 0 0 0 0\nSFAC Na Cl\nUNIT 4 4\n", "y.ins")
    formula, z = ins.formula_and_z()  # Z = 192 leaves no whole atom: smallest whole formula
    assert z == 4 and parse_formula(formula) == {"Na": 1.0, "Cl": 1.0}


def test_nacl_res_sof_includes_site_multiplicity():
    case = next(c for c in REAL_CASES if c.name == "nacl")
    s = load_structure(case.folder / "NaCl.res")
    assert [x.site_symmetry_order for x in s.sites] == [48, 48]
    assert [x.occupancy for x in s.sites] == [1.0, 1.0]


def test_res_part_minus_one_has_no_special_position():
    case = next(c for c in REAL_CASES if c.name == "ni_cubic_i43d")
    s = load_structure(case.folder / "I-43d.res")
    c20 = next(x for x in s.sites if x.label == "C20")
    assert c20.part < 0 and c20.site_symmetry_order == 1 and c20.occupancy == pytest.approx(0.25)
    ni = next(x for x in s.sites if x.label == "NI1")
    assert ni.site_symmetry_order == 3 and ni.occupancy == pytest.approx(1.0)


def test_frag_blocks_are_skipped():
    text = "CELL 0.71 5 5 5 90 90 90\nSFAC C\nUNIT 1\nFRAG 17 1 1 1 90 90 90\nC9 1 0.1 0.1 0.1\nFEND\nC1 1 0.2 0.2 0.2 11 0.03\nEND\n"
    b = ins_bundle(parse_ins(text, "f.ins"), "f.ins")
    assert [s.label for s in b.structure.sites] == ["C1"]


MINI = "TITL m\nCELL 0.71073 10 11 12 90 100 90\nZERR 4 0.001 0.002 0.003 0 0.01 0\nLATT 1\n" \
       "SYMM -X, 0.5+Y, 0.5-Z\nSFAC C N\nUNIT 8 8\nFVAR 1.0\n"


def test_solution_res_peak_height_after_uiso_is_ignored():
    """SHELXS/SHELXT write the peak height after Uiso; that extra number is dropped (noted),
    while a continued (anisotropic) line or two extra numbers stay errors."""
    text = MINI + "C1 1 0.1 0.2 0.3 11.0 0.04 62.33\nN2 2 0.2 0.3 0.4 11.0 0.05 25.8\nC3 1 0.3 0.1 0.2 11 0.03\nEND\n"
    b = ins_bundle(parse_ins(text, "s.res"), "s.res")
    assert [(s.label, s.u_iso) for s in b.structure.sites] == [("C1", 0.04), ("N2", 0.05), ("C3", 0.03)]
    assert sum("2 atom line(s) carry a number after Uiso" in n for n in b.notes) == 1
    for bad in ("C1 1 0.1 0.2 0.3 11.0 0.04 =\n   0.05\n", "C1 1 0.1 0.2 0.3 11.0 0.04 62.3 1.0\n"):
        with pytest.raises(InputError, match="numbers after the scattering factor") as err:
            parse_ins(MINI + bad + "END\n", "s.res")
        assert err.value.line == 9


def test_malformed_zerr_is_a_note_and_z_comes_from_the_symmetry():
    text = MINI.replace("ZERR 4 0.001 0.002 0.003 0 0.01 0", "ZERR 2.0002 0.0002 0.0003 0.002 0.002 0.002")
    ins = parse_ins(text + "C1 1 0.1 0.2 0.3 11 0.03\nEND\n", "z.res")
    b = ins_bundle(ins, "z.res")
    assert b.z == 4 and b.cell.su is None  # P2(1)/c: Z = 4 at Z' = 1
    assert any(n.startswith("line 3: ZERR ignored: it needs Z and six") for n in b.notes)
    assert "ZERR ignored: Z = 4 taken from the symmetry (Z' = 1)" in b.notes
    for bad in ("ZERR 0 0.001 0.002 0.003 0 0.01 0", "ZERR 4 -0.001 0.002 0.003 0 0.01 0", "ZERR 4 a b c d e f"):
        notes = parse_ins(MINI.replace("ZERR 4 0.001 0.002 0.003 0 0.01 0", bad), "z.res").notes
        assert any(n.startswith("line 3: ZERR ignored") for n in notes), bad
    assert ins_bundle(parse_ins(MINI + "C1 1 0.1 0.2 0.3 11 0.03\n", "z.res"), "z.res").cell.su == \
        (0.001, 0.002, 0.003, 0.0, 0.01, 0.0)


def test_keyword_glued_to_a_number_is_read_as_shelxl_does():
    """SHELXL reads four characters as the keyword: `CELL0.71073 ...` is CELL 0.71073 ..."""
    text = MINI.replace("CELL 0.71073", "CELL0.71073") + "C1 1 0.1 0.2 0.3 11 0.03\nEND\n"
    b = ins_bundle(parse_ins(text, "g.res"), "g.res")
    assert b.wavelength == 0.71073 and b.cell.parameters == (10.0, 11.0, 12.0, 90.0, 100.0, 90.0)
    assert "line 2: 'CELL0.71073' read as 'CELL 0.71073'" in b.notes
    assert [s.label for s in b.structure.sites] == ["C1"]
    olex2 = parse_ins(MINI + "BOND$H\nC1 1 0.1 0.2 0.3 11 0.03\nEND\n", "g.res").notes  # (Olex2 writes it so)
    assert not any("unknown instructions" in n for n in olex2)
    assert any("'BOND$H' read as 'BOND $H'" in n for n in olex2)


def test_unknown_instruction_note_quotes_the_line_and_shel_still_reads():
    text = "SHELXL97 (Sheldrick, 2008)\n" + MINI + "SHEL 10 0.8\nC1 1 0.1 0.2 0.3 11 0.03\nEND\n"
    ins = parse_ins(text, "u.res")
    assert "unknown instructions ignored: line 1 'SHELXL97 (Sheldrick, 2008)'" in ins.notes
    assert ins.instructions.shel == (10.0, 0.8)
    many = parse_ins("XYZW 1\nXYZW 2\n" + MINI, "u.res").notes
    assert "unknown instructions ignored: line 1 'XYZW 1' and 1 more such line(s)" in many


def test_afix_fitting_a_frag_fragment_is_refused():
    """AFIX m >= 17 fits atoms (DSR placeholders at 0,0,0) to a FRAG fragment: refused, and the
    FRAG atoms themselves are never model atoms."""
    text = (MINI + "FRAG 17 1 1 1 90 90 90\nO1 2 -0.01 1.66 0.11\nFEND\nC1 1 0.1 0.2 0.3 11 0.03\n"
            "AFIX 179\nO1 2 0 0 0 11 0.04\nC2 1 0 0 0 11 0.04\nAFIX 0\nEND\n")
    with pytest.raises(InputError, match=r"AFIX 179 asks SHELXL to fit these atoms to the FRAG 17 fragment; "
                       r"refractor does not fit fragments: run SHELXL \(or DSR\) once") as err:
        parse_ins(text, "d.res")
    assert err.value.line == 13 and err.value.path == "d.res"
    b = ins_bundle(parse_ins(text.replace("AFIX 179\nO1 2 0 0 0 11 0.04\nC2 1 0 0 0 11 0.04\n", ""), "d.res"), "d.res")
    assert [s.label for s in b.structure.sites] == ["C1"]
    with pytest.raises(InputError, match="FRAG without FEND") as err:
        parse_ins(MINI + "FRAG 17 1 1 1 90 90 90\nO1 2 -0.01 1.66 0.11\nC1 1 0.1 0.2 0.3 11 0.03\n", "d.res")
    assert err.value.line == 9


def test_element_wildcard_with_residue_suffix():
    """`$N_*` is every N atom (all residues), `$C_1` the C atoms of residue 1."""
    atoms = "RESI 1 MOL\nN1 2 0.1 0.2 0.3 11 0.03\nC1 1 0.2 0.2 0.3 11 0.03\nRESI 2 MOL\n" \
            "N1 2 0.3 0.2 0.3 11 0.03\nC1 1 0.4 0.2 0.3 11 0.03\nRESI 0\nC9 1 0.5 0.5 0.5 11 0.03\nEND\n"

    def rigu(args: str) -> list[list[str]]:
        ins = parse_ins(MINI + f"RIGU {args}\n" + atoms, "w.res")
        assert not any("ignored" in n for n in ins.notes), ins.notes
        return [[a.label for a in r.atoms] for r in ins.instructions.restraints]

    assert rigu("$N_* $C_*") == [["N1", "N1_2", "C1", "C1_2", "C9"]]
    assert rigu("$N") == [["N1", "N1_2"]]
    assert rigu("$C_1 $N_2") == [["C1", "N1_2"]]


# --------------------------------------------------------------------------------------
# .p4p
# --------------------------------------------------------------------------------------


def test_p4p_bruker_and_olex2_cellsd():
    bruker = (
        "FILEID SAINT  test\nTITLE x\nCHEM C12H22O11\n"
        "CELL 7.7156 8.6605 10.8035 90.000 102.955 90.000 703.6\n"
        "CELLSD 0.0011 0.0013 0.0016 0.000 0.004 0.000 0.2\n"
        "SOURCE MO 0.71073 0.70930 0.71359 0.50 50.0 40.0\nREF05 ...\n"
    )
    b = parse_p4p(bruker, "x.p4p")
    assert b.cell.parameters == (7.7156, 8.6605, 10.8035, 90.0, 102.955, 90.0)
    assert b.cell.su == (0.0011, 0.0013, 0.0016, 0.0, 0.004, 0.0)
    assert b.wavelength == 0.71073 and parse_formula(b.formula) == {"C": 12, "H": 22, "O": 11}
    olex = "FILEID Created by OLEX2\nCELL 5 6 7 90 90 90\nCELLSD 4 0.1 0.2 0.3 0 0 0\nSOURCE Cu\n"
    b = parse_p4p(olex, "o.p4p")
    assert b.z == 4 and b.cell.su == (0.1, 0.2, 0.3, 0.0, 0.0, 0.0) and b.wavelength == 1.54184


def test_p4p_bad_chem_and_missing_cell():
    with pytest.raises(InputError) as err:
        parse_p4p("CELL 5 6 7 90 90 90\nCELLSD 0 0 0 0 0 0\nCHEM C12Qq3\n", "q.p4p")
    assert err.value.line == 3
    with pytest.raises(InputError, match="no CELL"):
        parse_p4p("FILEID x\nCELLSD 0 0 0 0 0 0\n", "q.p4p")


# --------------------------------------------------------------------------------------
# CIF
# --------------------------------------------------------------------------------------

DDLM_CIF = """data_other
_publ_section_title 'nothing here'
data_mine
_cell.length_a 5.6410(5)
_cell.length_b 5.6410(5)
_cell.length_c 5.6410(5)
_cell.angle_alpha 90
_cell.angle_beta 90
_cell.angle_gamma 90
_chemical_formula.sum 'Cl Na'
_cell.formula_units_Z 4
_diffrn_radiation_wavelength.value 0.71073
_space_group.name_H-M_alt 'F m -3 m'
loop_
_atom_site.label
_atom_site.type_symbol
_atom_site.fract_x
_atom_site.fract_y
_atom_site.fract_z
_atom_site.U_iso_or_equiv
_atom_site.occupancy
Na1 Na 0 0 0 0.0200(3) 1
Cl1 Cl- 0.5 0.5 0.5 0.018 1
loop_
_refln.index_h
_refln.index_k
_refln.index_l
_refln.F_meas
_refln.F_sigma
1 1 1 10.0 0.5
2 0 0 20.0 1.0
2 2 0 ? ?
"""


def test_cif_ddlm_names_amplitudes_and_block_choice(tmp_path):
    p = tmp_path / "nacl.cif"
    p.write_text(DDLM_CIF)
    b = CifReader().read(p)  # the block with reflections
    assert b.cell.parameters[0] == 5.641 and b.cell.su[0] == pytest.approx(0.0005)
    assert b.wavelength == 0.71073 and b.z == 4 and b.space_group.number == 225
    assert parse_formula(b.formula) == {"Cl": 1.0, "Na": 1.0}
    r = b.reflections
    assert r.n == 2 and r.n_skipped == 1 and r.source_kind == "F"
    assert r.intensity.tolist() == [100.0, 400.0] and r.sigma.tolist() == [10.0, 40.0]
    s = b.structure
    assert [x.element for x in s.sites] == ["Na", "Cl"] and s.sites[0].u_iso_su == pytest.approx(0.0003)
    # by name, as an option or in the path
    with pytest.raises(InputError, match="no data block named"):
        CifReader(CifReader.Config(block="nope")).read(p)
    other = load_reflections_or_error(str(p) + "#other")
    assert "no reflections" in other


@pytest.mark.parametrize("method, expected", [
    ("'SHELXL-2018/3 (Sheldrick 2018)'", 0.0303),
    ("none", 0.0303),  # (no method stated: SHELXL's, the usual case)
    ("\n;\nB-C type 1 Lorentzian isotropic (Becker & Coppens, 1974)\n;", None),
])
def test_cif_extinction_coefficient_is_exti_only_when_it_is_shelxls(tmp_path, method, expected):
    """A JANA CIF's Becker-Coppens coefficient (2380 in COD 2108989) is on another scale
    than SHELXL's EXTI: taken as EXTI, it held a refinement at GooF 3 for 25 cycles."""
    text = DDLM_CIF.split("data_mine")[1].replace(
        "_space_group.name_H-M_alt", "_refine_ls_extinction_coef 0.0303(17)\n_refine_ls_extinction_method "
        + method + "\n_space_group.name_H-M_alt")
    p = tmp_path / "x.cif"
    p.write_text("data_mine" + text)
    bundle = load_bundle(p)
    exti = bundle.instructions.exti if bundle.instructions is not None else None
    assert exti == expected
    assert any("not SHELXL's EXTI" in n for n in bundle.notes) == (expected is None)


JANA_M40 = """_iucr_refine_instructions_details
;
    3    0    0    1
 2.964250 0.000000 0.000000 0.000000 0.000000 0.000142      100001
Na        1  2     0.020833 0.000000 0.000000 0.000000
 0.020000 0.020000 0.020000 0.000000 0.000000 0.000000      0000101000
;
"""


def test_cif_with_another_programs_instructions_reads_the_atom_site_loops(tmp_path):
    """JANA2006 puts its m40 file in _iucr_refine_instructions_details (COD 2020013): not
    SHELXL instructions, so the model comes from the atom_site loops, with a note."""
    p = tmp_path / "jana.cif"
    mine = "data_mine" + DDLM_CIF.split("data_mine")[1]  # the block with the model
    p.write_text(mine.replace("loop_\n_atom_site.label", JANA_M40 + "loop_\n_atom_site.label", 1))
    bundle = load_bundle(p)
    assert [s.label for s in bundle.structure.sites] == ["Na1", "Cl1"]
    assert any("holds no SHELXL instructions" in n and "_iucr_refine_instructions_details" in n for n in bundle.notes)


def load_reflections_or_error(path: str) -> str:
    try:
        load_reflections(path)
    except InputError as exc:
        return str(exc)
    return ""


def test_cif_unknown_type_symbol_names_the_loop_line(tmp_path):
    p = tmp_path / "bad.cif"
    p.write_text(DDLM_CIF.replace("Cl1 Cl-", "Cl1 Qq"))
    with pytest.raises(InputError) as err:
        CifReader().read(p)
    assert "Qq" in str(err.value) and err.value.line is not None


def test_cif_syntax_error_has_a_line(tmp_path):
    p = tmp_path / "broken.cif"
    p.write_text("data_x\n_cell_length_a 5\n_title 'unterminated\n")
    with pytest.raises(InputError) as err:
        CifReader().read(p)
    assert err.value.line == 3


def test_cif_embedded_res_gives_riding_information():
    case = next(c for c in REAL_CASES if c.name == "sucrose")
    s = load_structure(case.reference)
    h = [x for x in s.sites if x.calc]
    assert h and all(x.riding_on for x in h) and all(x.afix for x in h)
    parents = {x.label for x in s.sites}
    assert all(x.riding_on in parents for x in h)
    assert s.sites[0].xyz_su is not None and s.sites[0].u_aniso_su is not None


def test_cif_embedded_res_gives_the_model_at_full_precision(tmp_path):
    """The atom list is rounded to its su (N z 0.17896(10)); the embedded .res has the six
    decimals SHELXL refined. An atom moved in the list after the .res was written keeps the
    list's numbers."""
    case = next(c for c in REAL_CASES if c.name == "urea")
    text = case.reference.read_text()
    res = parse_ins(text[text.index("TITL"):]).structure()
    res_n = next(x for x in res.sites if x.label == "N")
    s = load_structure(case.reference)
    n = next(x for x in s.sites if x.label == "N")
    assert n.xyz == res_n.xyz and n.u_aniso == res_n.u_aniso
    assert n.xyz[2] != 0.17896 and abs(n.xyz[2] - 0.17896) <= 0.0001
    assert n.xyz_su is not None  # the su still come from the CIF
    edited = text.replace("N N 0.14465(7) 0.64465(7) 0.17896(10)", "N N 0.14465(7) 0.64465(7) 0.18896(10)")
    assert edited != text
    path = tmp_path / "edited.cif"
    path.write_text(edited)
    n_edited = next(x for x in load_structure(path).sites if x.label == "N")
    assert n_edited.xyz[2] == 0.18896
    o_edited = next(x for x in load_structure(path).sites if x.label == "O")
    assert o_edited.xyz == next(x for x in res.sites if x.label == "O").xyz


def test_fcf_list4_reads_as_reflections():
    case = next(c for c in REAL_CASES if c.name == "nacl")
    b = read_cif_bundle((case.folder / "NaCl.fcf").read_text(), case.folder / "NaCl.fcf")
    assert b.reflections.n == 111 and b.cell.parameters[0] == pytest.approx(5.6411, abs=1e-3)


# --------------------------------------------------------------------------------------
# MTZ and sniffing
# --------------------------------------------------------------------------------------


def test_mtz_reader_intensities(tmp_path):
    import gemmi

    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup = gemmi.SpaceGroup("P 21 21 21")
    mtz.set_cell_for_all(gemmi.UnitCell(5, 6, 7, 90, 90, 90))
    mtz.add_dataset("x").wavelength = 1.0
    mtz.add_column("IMEAN", "J")
    mtz.add_column("SIGIMEAN", "Q")
    mtz.set_data(np.array([[1, 0, 0, 50.0, 2.0], [0, 2, 1, 10.0, 1.0], [1, 1, 1, 5.0, 0.0]], dtype=np.float32))
    p = tmp_path / "d.mtz"
    mtz.write_to_file(str(p))
    data = load_reflections(p)
    assert data.n == 2 and data.n_skipped == 1
    assert data.intensity.tolist() == [50.0, 10.0] and data.wavelength == 1.0
    assert data.space_group_hint.number == 19 and data.cell.parameters[:3] == (5.0, 6.0, 7.0)


def test_sniffing_by_content_not_suffix(tmp_path):
    case = next(c for c in REAL_CASES if c.name == "fe_perchlorate_hydrate")
    hkl = tmp_path / "data.dat"
    hkl.write_bytes((case.folder / "2240189.hkl").read_bytes())
    res = tmp_path / "crystal"
    res.write_bytes((case.folder / "2240189.res").read_bytes().replace(b"\n", b"\r\n"))
    data = load_reflections(hkl, companion=res)
    assert data.n == 782 and data.space_group_hint.number == 167
    assert data.instructions.omit_2theta_max == 55
    s = load_structure(res)
    assert s.n_sites == 12


def test_binary_and_empty_files_are_input_errors(tmp_path):
    empty = tmp_path / "e.hkl"
    empty.write_text("  \n")
    with pytest.raises(InputError, match="empty"):
        load_reflections(empty)
    binary = tmp_path / "b.hkl"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InputError, match="recognise"):
        load_reflections(binary)


def test_f_to_f2_propagation():
    from refractor_plugins.readers.shelx_hkl import f_to_f2

    i, s = f_to_f2(np.array([3.0]), np.array([0.1]))
    assert i[0] == 9.0 and s[0] == pytest.approx(0.6)
    assert math.isclose(f_to_f2(np.array([0.0]), np.array([0.2]))[1][0], 0.04)


MMCIF = """data_1ABC
_cell.length_a 10.000
_cell.length_b 12.000
_cell.length_c 14.000
_cell.angle_alpha 90.00
_cell.angle_beta 90.00
_cell.angle_gamma 90.00
_symmetry.space_group_name_H-M 'P 21 21 21'
loop_
_atom_site.group_PDB
_atom_site.id
_atom_site.type_symbol
_atom_site.label_atom_id
_atom_site.label_seq_id
_atom_site.Cartn_x
_atom_site.Cartn_y
_atom_site.Cartn_z
_atom_site.occupancy
_atom_site.B_iso_or_equiv
ATOM 1 N N 1 1.000 2.400 3.500 1.00 15.79
ATOM 2 C CA 1 2.000 3.600 4.900 0.50 7.90
loop_
_refln.index_h
_refln.index_k
_refln.index_l
_refln.intensity_meas
_refln.intensity_sigma
1 0 0 123.0 4.0
0 1 1 12.5 1.5
"""


def test_mmcif_model_and_reflections(tmp_path):
    p = tmp_path / "x.cif"
    p.write_text(MMCIF)
    b = CifReader().read(p)
    assert b.space_group.number == 19 and b.reflections.n == 2
    s = b.structure
    assert [x.label for x in s.sites] == ["N_1", "CA_1"]
    assert s.sites[0].xyz == pytest.approx((0.1, 0.2, 0.25))
    assert s.sites[1].occupancy == 0.5 and s.sites[0].u_iso == pytest.approx(15.79 / (8 * math.pi**2))


def test_utf16_text_files_are_read(tmp_path):
    case = next(c for c in REAL_CASES if c.name == "fe_perchlorate_hydrate")
    hkl = tmp_path / "x.hkl"
    hkl.write_bytes((case.folder / "2240189.hkl").read_text().encode("utf-16"))
    res = tmp_path / "x.res"
    res.write_bytes((case.folder / "2240189.res").read_text().replace("\n", "\r\n").encode("utf-16"))
    data = load_reflections(hkl)
    assert data.n == 782 and data.space_group_hint.number == 167


# --------------------------------------------------------------------------------------
# the conformance kit for the reader the shared samples do not cover (.p4p)
# --------------------------------------------------------------------------------------

def test_a_solvent_mask_of_the_published_refinement_is_noted_once():
    """sucrose's CIF with ABIN added to its embedded .res, or with a `_shelx_fab_file`, or
    with both: one note says the mask's contribution is not applied (the notes of an
    embedded .res were dropped before, ABIN's among them)."""
    from refractor_plugins.readers._common import SOLVENT_MASK_NOTE

    case = next(c for c in REAL_CASES if c.name == "sucrose")
    text = case.reference.read_text()
    assert text.count("\nHKLF 4") == 1
    with_abin = text.replace("\nHKLF 4", "\nABIN\nHKLF 4")
    fab = "\n_shelx_fab_file\n;\n   1   0   0    0.52    0.00\n;\n"
    prefix = SOLVENT_MASK_NOTE.split("(")[0]
    for variant, named in ((with_abin, "ABIN"), (text + fab, "_shelx_fab_file"), (with_abin + fab, "ABIN")):
        notes = read_cif_bundle(variant, case.reference, want="model").notes
        masks = [n for n in notes if prefix in n]
        assert len(masks) == 1 and f"({named})" in masks[0], masks
    assert not any(prefix in n for n in read_cif_bundle(text, case.reference, want="model").notes)


from refractor_core.testing.conformance import ReaderConformance  # noqa: E402


class TestP4pReaderConformance(ReaderConformance):
    component_name = "p4p"

    @pytest.fixture
    def samples(self, tmp_path):
        import dataclasses

        from refractor_core.testing.samples import default_samples

        p = tmp_path / "sample.p4p"
        p.write_text(
            "FILEID SAINT x\nCHEM C12H22O11\nCELL 7.7156 8.6605 10.8035 90.000 102.955 90.000 703.6\n"
            "CELLSD 0.0011 0.0013 0.0016 0.000 0.004 0.000 0.2\nSOURCE MO 0.71073 0.7093 0.71359\n"
        )
        return dataclasses.replace(default_samples(), reader_files=[p])


def test_a_non_h_atom_whose_u_is_tied_to_the_atom_before_is_noted():
    """SHELXL's negative U_iso (-1.5: 1.5 times the U_eq of the atom before) on a non-H
    atom starts there; the refiner then refines that U on its own, and a note says so."""
    text = INS.replace("HKLF 4 1 0 0 1 0 1 0 -1 0 0", "HKLF 4").replace("C3   1  10.25 0.1 0.2 11.0 0.05",
                                                                        "C3   1  10.25 0.1 0.2 11.0 -1.5")
    ins = parse_ins(text, "t.ins")
    bundle = ins_bundle(ins, "t.ins")
    c3 = next(s for s in bundle.structure.sites if s.label == "C3")
    assert c3.u_iso == pytest.approx(1.5 * 0.02)  # of CU1, the last non-H atom before it (H skipped)
    assert any("refined independently: C3" in n and "negative U_iso" in n for n in ins.notes)


def test_shelxl_syntax_that_is_not_read_is_named_as_such():
    """An include line (+name) and an instruction with a suffix the reader does not honour
    (BIND_$1) are SHELXL syntax: the notes say what is not read, not 'unknown instruction'."""
    at = INS.index("SFAC C H O")
    text = INS[:at] + "+extra.dfix\nBIND_$1 C1 C2\nBIND_$1 C2 C3\n" + INS[at:]
    notes = parse_ins(text, "t.ins").notes
    assert any(n.startswith("include files (+name) are not read:") and "+extra.dfix" in n for n in notes)
    assert any(n.startswith("BIND with a suffix is not honoured:") and "1 more such line" in n for n in notes)
    assert not any(n.startswith("unknown instructions") for n in notes)


def test_occupancies_above_one_and_labels_of_another_element_are_noted():
    """A sof of 1 on an inversion centre (SHELXL wants 10.5 there: occupancy 2) and an atom
    named O1 whose SFAC number makes it Cu: SHELXL refines both without comment; the notes
    point at them. The file as it is draws neither note."""
    text = INS.replace("HKLF 4 1 0 0 1 0 1 0 -1 0 0", "HKLF 4")
    notes = ins_bundle(parse_ins(text, "t.ins"), "t.ins").notes
    assert not any("occupancies above 1" in n or "labels naming" in n for n in notes)
    odd = text.replace("CU1  4  0.5 0.5 0.5 10.5", "CU1  4  0.5 0.5 0.5 11.0").replace("O1   3", "O1   4", 1)
    ins = parse_ins(odd, "t.ins")
    ins_bundle(ins, "t.ins")
    assert any(n.startswith("occupancies above 1") and "CU1 (2)" in n for n in ins.notes)
    assert "atom labels naming another element than their SFAC type: O1 (Cu)" in ins.notes
