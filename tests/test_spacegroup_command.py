"""`refractor spacegroup DATA`: table and JSON output, cell handling, errors."""

from __future__ import annotations

import json
import shutil

import pytest

from refractor_core.cli import main
from refractor_core.simulation import simulate, write_dataset_files
from refractor_core.testing.samples import sample_structure


@pytest.fixture
def run(capsys):
    def _run(*args):
        code = main(["spacegroup", *map(str, args)])
        out = capsys.readouterr()
        return code, out.out, out.err

    return _run


def test_json_on_simulated_files(tmp_path, run):
    data = simulate(sample_structure(), d_min=0.8, redundancy=2.0, seed=3)
    hkl, _ins = write_dataset_files(tmp_path, "pr", data)
    code, out, err = run(hkl, "--json", "--top", "3")
    assert code == 0, err
    report = json.loads(out)
    assert isinstance(report["ambiguous"], bool)
    hyps = report["hypotheses"]
    assert 1 <= len(hyps) <= 3
    assert hyps[0]["symbol"] == "P 1 21/n 1" and hyps[0]["number"] == 14
    assert 0.0 <= hyps[-1]["probability"] <= hyps[0]["probability"] <= 1.0
    assert report["classifier"]["name"] == "absences"


def test_table_on_a_real_case(real_case, run):
    case = real_case("pr_sulfate_hydroxide")
    code, out, err = run(case.reflections, "--top", "4")
    assert code == 0, err
    lines = out.splitlines()
    row = next(line for line in lines if line.startswith(" 1  "))
    assert "P 1 21/n 1" in row
    assert any(line.startswith("ambiguous") for line in lines)
    assert "files say   P 1 21/n 1 (not used)" in out


def test_missing_cell_is_exit_code_1(tmp_path, real_case, run):
    case = real_case("pr_sulfate_hydroxide")
    lone = tmp_path / "alone.hkl"
    shutil.copy(case.reflections, lone)
    code, out, err = run(lone)
    assert code == 1
    assert "no unit cell" in err and "alone.hkl" in err
    assert "Traceback" not in err and out == ""
    code, out, err = run(lone, "--cell", "4.4891", "12.484", "6.894", "90", "106.31", "90", "--json", "--top", "1")
    assert code == 0, err
    assert json.loads(out)["hypotheses"][0]["symbol"] == "P 1 21/n 1"


def test_classifier_options_are_validated(real_case, run):
    case = real_case("pr_sulfate_hydroxide")
    code, _, err = run(case.reflections, "--opt", "nonsense=1")
    assert code == 2 and "nonsense" in err
    code, out, _ = run(case.reflections, "--opt", "max_hypotheses=2", "--json")
    assert code == 0 and len(json.loads(out)["hypotheses"]) <= 2
