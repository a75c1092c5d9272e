"""dataio: reader sniffing, companion files beside a reflection file, overrides, clear errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from refractor_core.cli import main as cli_main
from refractor_core.dataio import (
    choose_reader,
    find_companion,
    load_bundle,
    load_reflections,
    load_structure,
)
from refractor_core.errors import InputError

from .conftest import REAL_CASES


def _case(name):
    return next(c for c in REAL_CASES if c.name == name)


HKL = "   1   0   0  100.00    5.00\n   0   2   0   50.00    2.00\n   1   1   1   10.00    1.00\n   0   0   0    0.00    0.00\n"
INS = "TITL t\nCELL 0.71073 5 6 7 90 90 90\nZERR 4 0.001 0.001 0.001 0 0 0\nLATT -1\nSYMM -X, -Y, Z\nSFAC C H\nUNIT 8 16\nHKLF 4\nEND\n"


def test_companion_stem_case_insensitive_and_order(tmp_path):
    (tmp_path / "Data.HKL").write_text(HKL)
    (tmp_path / "data.RES").write_text(INS)
    (tmp_path / "other.ins").write_text(INS)
    assert find_companion(tmp_path / "Data.HKL").name == "data.RES"
    (tmp_path / "DATA.ins").write_text(INS)
    assert find_companion(tmp_path / "Data.HKL").name == "DATA.ins"  # .ins before .res


def test_companion_single_ins_in_folder(tmp_path):
    (tmp_path / "x.hkl").write_text(HKL)
    (tmp_path / "struct.ins").write_text(INS)
    (tmp_path / "struct.res").write_text(INS)
    assert find_companion(tmp_path / "x.hkl").name == "struct.ins"
    (tmp_path / "other.res").write_text(INS)
    assert find_companion(tmp_path / "x.hkl") is None  # ambiguous


def test_load_reflections_with_companion_and_overrides(tmp_path):
    (tmp_path / "x.hkl").write_text(HKL)
    (tmp_path / "x.ins").write_text(INS)
    data = load_reflections(tmp_path / "x.hkl")
    assert data.n == 3 and data.cell.parameters == (5.0, 6.0, 7.0, 90.0, 90.0, 90.0)
    assert data.cell.su == (0.001, 0.001, 0.001, 0.0, 0.0, 0.0)
    assert data.formula == "C2 H4" and data.z == 4 and data.wavelength == 0.71073
    assert data.space_group_hint.number == 3 and data.instructions.hklf == 4
    over = load_reflections(
        tmp_path / "x.hkl", cell=(5.5, 6, 7, 90, 91, 90), wavelength=1.54184, formula="C6H6", z=2
    )
    assert over.cell.parameters == (5.5, 6.0, 7.0, 90.0, 91.0, 90.0)
    assert over.wavelength == 1.54184 and over.formula == "C6 H6" and over.z == 2


def test_missing_cell_message_names_the_file(tmp_path):
    (tmp_path / "data.hkl").write_text(HKL)
    with pytest.raises(InputError) as err:
        load_reflections(tmp_path / "data.hkl")
    assert "no unit cell: give --cell or put data.ins beside data.hkl" in str(err.value)
    assert str(tmp_path / "data.hkl") in str(err.value)
    data = load_reflections(tmp_path / "data.hkl", cell=(5, 6, 7, 90, 90, 90))
    assert data.wavelength == 0.71073 and any("Mo" in n for n in data.notes)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"cell": (5, 6, 7, 90, 190, 90)}, "--cell"),
        ({"cell": (5, 6)}, "--cell"),
        ({"cell": (5, 6, 7, 120, 120, 120)}, "--cell"),
        ({"wavelength": 50.0}, "--wavelength"),
        ({"formula": "C6 Xq2"}, "--formula"),
        ({"z": -1}, "--z"),
    ],
)
def test_bad_overrides_are_input_errors(tmp_path, kwargs, match):
    (tmp_path / "x.hkl").write_text(HKL)
    (tmp_path / "x.ins").write_text(INS)
    with pytest.raises(InputError, match=match):
        load_reflections(tmp_path / "x.hkl", **kwargs)


def test_explicit_companion_overrides_the_data_file(tmp_path):
    case = _case("urea")
    other = tmp_path / "other.ins"
    other.write_text(INS.replace("CELL 0.71073 5 6 7", "CELL 0.5996 5.5 5.5 4.7"))
    data = load_reflections(case.reflections, companion=other)
    assert data.cell.parameters[:3] == (5.5, 5.5, 4.7)
    assert data.n == 1022


def test_hklf5_from_companion_and_hklf_matrix(tmp_path):
    (tmp_path / "t.hkl").write_text(
        "   1   0   0  100.00    5.00   1\n   2   0   0   10.00    1.00  -2\n   2   0   0   10.00   -1.00   1\n"
    )
    (tmp_path / "t.ins").write_text(INS.replace("HKLF 4", "HKLF 5 2 0 1 0 -1 0 0 0 0 1"))
    data = load_reflections(tmp_path / "t.hkl")
    assert data.hklf == 5 and data.batch.tolist() == [1]  # the group closed by sigma <= 0 dropped
    assert data.hkl.tolist() == [[0, -1, 0]] and data.intensity.tolist() == [200.0]
    assert data.n_skipped == 2


def test_cif_block_selection(tmp_path):
    case = _case("nacl")
    s = load_structure(f"{case.reference}#NaCl_olex2_C2/m")
    assert s.space_group.number == 12
    assert load_structure(case.reference).space_group.number == 225
    with pytest.raises(InputError, match="no data block named"):
        load_structure(f"{case.reference}#nothere")
    b = load_bundle(case.reference, block="NaCl_negative_ADPs")  # a block with only aniso U
    assert b.structure is None and b.cell is not None and b.reflections is None


def test_load_structure_without_atoms(tmp_path):
    p = tmp_path / "x.ins"
    p.write_text(INS)
    with pytest.raises(InputError, match="no atom sites"):
        load_structure(p)


def test_unknown_reader_name_is_a_usage_error(tmp_path):
    from refractor_core.errors import UsageError

    (tmp_path / "x.hkl").write_text(HKL)
    with pytest.raises(UsageError, match="did you mean"):
        choose_reader(tmp_path / "x.hkl", "shelx-hk")


def test_real_case_copied_without_extensions(tmp_path):
    case = _case("difluoro_6ring_pna21")
    shutil.copy(case.reflections, tmp_path / "reflections")
    shutil.copy(case.folder / "6-ring-twist-disorder.res", tmp_path / "model")
    data = load_reflections(tmp_path / "reflections", companion=tmp_path / "model")
    assert data.n == 14485 and data.space_group_hint.number == 33
    assert data.instructions.omit_2theta_max == 58


def test_cli_missing_cell_exit_code_and_no_traceback(tmp_path, capsys):
    (tmp_path / "data.hkl").write_text(HKL)
    (tmp_path / "models").mkdir()
    model = tmp_path / "models" / "m.ins"  # not beside the data: no companion
    model.write_text(INS.replace("HKLF 4", "C1 1 0.1 0.2 0.3 11 0.05\nHKLF 4"))
    # nothing beside the data and no model to fall back on: no cell, a clear error
    code = cli_main(["spacegroup", str(tmp_path / "data.hkl")])
    err = capsys.readouterr().err
    assert code == 1
    assert "no unit cell" in err and "Traceback" not in err
    # rfactor and refine take the crystal data from the model file instead
    code = cli_main(["rfactor", str(tmp_path / "data.hkl"), "--model", str(model)])
    err = capsys.readouterr().err
    assert code == 0 and "crystal data from" in err, err


def test_cli_bad_file_exit_code(tmp_path, capsys):
    bad = tmp_path / "data.hkl"
    bad.write_text(HKL.replace("  50.00", "  5a.00"))
    (tmp_path / "data.ins").write_text(INS)
    code = cli_main(["rfactor", str(bad), "--model", str(_case("urea").reference)])
    err = capsys.readouterr().err
    assert code == 1 and "line 2" in err and "Traceback" not in err


def test_reflection_file_sigma_and_intensity_arrays_are_clean():
    data = load_reflections(_case("pd_complex_malbac").reflections)
    assert np.all(data.sigma > 0) and data.n_skipped == 8051


def test_p4p_companion(tmp_path):
    (tmp_path / "s.hkl").write_text(HKL)
    (tmp_path / "S.p4p").write_text(
        "FILEID SAINT x\nCHEM C12H22O11\nCELL 7.7156 8.6605 10.8035 90.000 102.955 90.000 703.6\n"
        "CELLSD 0.0011 0.0013 0.0016 0.000 0.004 0.000 0.2\nSOURCE CU 1.54184 1.5406 1.5444\n"
    )
    data = load_reflections(tmp_path / "s.hkl")
    assert data.cell.beta == 102.955 and data.cell.su[4] == 0.004
    assert data.wavelength == 1.54184 and data.formula == "C12 H22 O11" and data.z is None
