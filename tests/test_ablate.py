"""Ablation: one variant per swapped component, unavailable components reported, one table."""

from __future__ import annotations

import json

import pytest

from refractor_core.benchmarking.ablation import comparison_markdown, parse_swaps
from refractor_core.cli import main
from refractor_core.datasets import BuildConfig, build_dataset
from refractor_core.errors import UsageError


def test_parse_swaps():
    assert parse_swaps(["generator=a,b", "ranker=r1"]) == [("generator", "a"), ("generator", "b"), ("ranker", "r1")]
    for bad in (["generator"], ["reader=x"], ["colour=red"], ["generator="]):
        with pytest.raises(UsageError):
            parse_swaps(bad)


def test_comparison_table_rows():
    summary = {"all": {"n": 2, "solved": 1, "success_rate": 0.5, "r1_below_5pct": 0.5, "median_r1": 0.04,
                       "sg_accuracy": 1.0, "median_fraction_matched": 0.9, "median_seconds": 3.0, "failed": 0}}
    md = comparison_markdown({"suite": "real", "n_cases": 2, "variants": [
        {"variant": "ranker=r1", "status": "ok", "summary": summary},
        {"variant": "ranker=nope", "status": "unavailable", "error": "unknown ranker 'nope'"}]})
    lines = md.splitlines()
    assert "| ranker=r1 | ok | 2 | 1 | 50 % | 50 % | 0.0400 | 100 % | 0.90 | 3.0 | 0 |" in lines
    assert any(line.startswith("| ranker=nope | unavailable") for line in lines)


def test_ablate_command(tmp_path, capsys):
    ds = tmp_path / "ds"
    build_dataset(BuildConfig(output=ds, counts={"aflow": 6}, datasets_per_structure=1,
                              fractions={"train": 0.5, "val": 0.0, "test": 0.5}, seed=2))
    base = tmp_path / "base.toml"
    base.write_text(
        'seed = 5\nmax_hypotheses = 1\ncandidates_per_hypothesis = 1\n'
        '[components]\nclassifier = "absences"\ngenerator = "charge-flip"\nrefiner = "lsq"\n'
        f'[benchmark]\nsuite = "simulated"\ndataset = "{ds}"\nlimit = 1\nmax_atoms = 60\n'
    )
    out = tmp_path / "abl"
    code = main(["-q", "ablate", "--base", str(base), "--swap", "ranker=wr2,no-such-ranker", "--swap", "classifier=none",
                 "--given-space-group", "--no-reference-r1", "-o", str(out), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    status = {v["variant"]: v["status"] for v in result["variants"]}
    assert status == {"ranker=wr2": "ok", "ranker=no-such-ranker": "unavailable", "classifier=none": "ok"}
    # without a classifier the given (true) space group is the only hypothesis
    row = json.loads((out / "classifier-none" / "cases.json").read_text())[0]
    assert row["status"] == "ok" and row["sg_rank"] == 1
    assert result["base"]["seed"] == 5 and result["n_cases"] == 1
    assert (out / "ranker-wr2" / "manifest.json").is_file() and (out / "ranker-wr2" / "cases.csv").is_file()
    md = (out / "ablation.md").read_text()
    assert "ranker=wr2 | ok | 1 |" in md
    case = json.loads((out / "ranker-wr2" / "cases.json").read_text())[0]["case"]
    assert "Per case" in md and any(line.startswith(f"| {case} | ") for line in md.splitlines())
    manifest = json.loads((out / "ranker-wr2" / "manifest.json").read_text())
    assert manifest["config"]["components"]["ranker"] == "wr2"
