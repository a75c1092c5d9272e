"""Published R1 values are reproduced from the published models (issue 3 acceptance)."""

from __future__ import annotations

import json

import pytest

from refractor_core.cli import main as cli_main
from refractor_core.crystal.evaluation import evaluate_model
from refractor_core.dataio import load_bundle, load_reflections

from .conftest import REAL_CASES

PUBLISHED = [c for c in REAL_CASES if c.published_r1 is not None]


def _r1(case) -> float:
    data = load_reflections(case.reflections)
    bundle = load_bundle(case.reference, block=case.data_block)
    return evaluate_model(data, bundle.structure, instructions=bundle.instructions)["R1"]


def test_published_r1_reproduced_for_the_real_cases():
    assert len(PUBLISHED) >= 15
    diffs = {c.name: _r1(c) - c.published_r1 for c in PUBLISHED}
    within_3 = [n for n, d in diffs.items() if abs(d) <= 0.003]
    assert len(within_3) >= 0.9 * len(PUBLISHED), diffs
    assert all(abs(d) <= 0.01 for d in diffs.values()), diffs


def test_rfactor_command_json(real_case, capsys):
    case = real_case("urea")
    code = cli_main(["rfactor", str(case.reflections), "--model", str(case.reference), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("R1", "wR2", "GooF", "n_reflections", "n_gt", "scale"):
        assert key in out
    assert out["R1"] == pytest.approx(case.published_r1, abs=0.003)
    assert out["n_gt"] <= out["n_reflections"]


def test_rfactor_with_cell_given_on_the_command_line(real_case, capsys):
    """A bare HKLF 4 file plus --cell/--wavelength works (the bundled example's route)."""
    case = real_case("pr_sulfate_hydroxide")
    code = cli_main([
        "rfactor", str(case.reflections), "--cell", "4.4891", "12.484", "6.894", "90", "106.310", "90",
        "--wavelength", "0.71073", "--model", str(case.reference), "--json",
    ])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["R1"] == pytest.approx(0.0329, abs=0.003)


def test_rfactor_missing_model_file_is_a_clear_error(real_case, capsys, tmp_path):
    case = real_case("urea")
    code = cli_main(["rfactor", str(case.reflections), "--model", str(tmp_path / "missing.cif")])
    assert code == 1
    err = capsys.readouterr().err
    assert "missing.cif" in err and "Traceback" not in err
