"""Benchmark harness: suites, per-case rows (also failures), summaries, plots, CLI."""

from __future__ import annotations

import json
import math

import pytest

from refractor_core.benchmarking.harness import resolve_components, rows_to_csv, run_benchmark
from refractor_core.benchmarking.runner import CaseOptions, run_case, summarize, summary_markdown
from refractor_core.benchmarking.suites import load_case, real_specs, simulated_specs, subsets_of
from refractor_core.cli import main
from refractor_core.datasets import BuildConfig, build_dataset
from refractor_core.errors import UsageError
from refractor_core.types import RunConfig


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "ds"
    build_dataset(BuildConfig(output=out, counts={"aflow": 12}, datasets_per_structure=1,
                              fractions={"train": 0.5, "val": 0.0, "test": 0.5}, seed=11))
    return out


def test_real_suite_gives_only_user_inputs():
    spec = next(s for s in real_specs() if s.name == "agnafe_molybdate")
    case = load_case(spec)
    d = case.data
    assert d.space_group_hint is None and d.instructions is None
    assert d.formula == "Ag0.6 Fe Mo2 Na0.4 O8" and d.z == 4 and d.wavelength == pytest.approx(0.71073)
    assert case.true_space_group.number == 15
    assert subsets_of(case.reference) == {"low_symmetry": True, "light_only": False, "heavy_atom": True}
    with pytest.raises(UsageError):
        real_specs(["no_such_case"])


def test_simulated_suite_reads_through_files(tiny_dataset):
    specs = simulated_specs(tiny_dataset, "test")
    assert specs and all(s.suite == "simulated" for s in specs)
    case = load_case(specs[0])
    assert case.data.space_group_hint is None  # the .ins states no symmetry
    assert case.data.cell is not None and case.data.formula and case.data.z
    assert len(simulated_specs(tiny_dataset, "test", limit=1)) == 1


def test_failures_are_rows_not_crashes(tiny_dataset):
    spec = simulated_specs(tiny_dataset, "test", limit=1)[0]
    config = RunConfig(components={"classifier": "absences", "generator": "no-such-generator",
                                   "refiner": "lsq", "ranker": "wr2"}).model_dump(mode="json")
    row = run_case((spec, config, 0, CaseOptions()))
    assert row["status"] == "failed" and "no-such-generator" in row["error"]
    assert math.isnan(row["r1"]) and row["solved"] is False and row["r1_reference"] < 0.2


def test_missing_defaults_fall_back_and_named_ones_fail():
    config = RunConfig(components={"classifier": "absences", "generator": "charge-flip", "refiner": "lsq",
                                   "ranker": "definitely-missing"})
    resolved, notes = resolve_components(config, explicit=set())
    assert resolved.components["ranker"] != "definitely-missing" and notes
    with pytest.raises(UsageError):
        resolve_components(config, explicit={"ranker"})


def test_summary_subsets_and_plots(tmp_path):
    rows = [
        {"case": "a", "status": "ok", "r1": 0.03, "solved": True, "sg_correct": True, "sg_rank": 1, "seconds": 2.0,
         "low_symmetry": True, "light_only": True, "heavy_atom": False, "crystal_system": "monoclinic",
         "fraction_matched": 1.0, "t_generator": 1.0, "t_refiner": 0.5},
        {"case": "b", "status": "ok", "r1": 0.25, "solved": False, "sg_correct": False, "sg_rank": 2, "seconds": 5.0,
         "low_symmetry": False, "light_only": False, "heavy_atom": True, "crystal_system": "cubic",
         "fraction_matched": 0.2},
        {"case": "c", "status": "failed", "r1": float("nan"), "solved": False, "sg_correct": False, "seconds": 1.0,
         "low_symmetry": True, "light_only": False, "heavy_atom": True, "crystal_system": "triclinic",
         "fraction_matched": 0.0},
    ]
    s = summarize(rows)
    assert s["all"]["n"] == 3 and s["all"]["solved"] == 1 and s["all"]["success_rate"] == pytest.approx(1 / 3)
    assert s["low_symmetry"]["n"] == 2 and s["heavy_atom"]["median_r1"] == pytest.approx(0.25)
    assert s["all"]["median_r1"] == pytest.approx(0.14) and s["statuses"] == {"ok": 2, "failed": 1}
    assert "| low_symmetry | 2 | 1 |" in summary_markdown(s)
    assert rows_to_csv(rows).splitlines()[0].startswith("case,status,r1")
    from refractor_core.benchmarking.plots import write_plots

    plots = write_plots(rows, s, tmp_path, "test", 0.1)
    for p in plots.values():
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_benchmark_command_on_a_simulated_case(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["-q", "benchmark", "--suite", "simulated", "--dataset", str(tiny_dataset), "--limit", "1",
                 "--generator", "no-such-generator-either", "-o", str(out), "--json"])
    assert code == 2  # a named component that does not exist is a usage error
    capsys.readouterr()
    code = main(["-q", "benchmark", "--suite", "simulated", "--dataset", str(tiny_dataset), "--limit", "1",
                 "--seed", "4", "--candidates", "1", "--max-hypotheses", "1", "--no-reference-r1", "-o", str(out), "--json"])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record["summary"]["all"]["n"] == 1
    rows = json.loads((out / "cases.json").read_text())
    assert rows[0]["status"] in ("ok", "failed", "error") and rows[0]["seed"] > 0
    for name in ("cases.csv", "summary.md", "summary.json", "manifest.json", "r1_hist.png", "subsets.png",
                 "sg_accuracy.png", "time.png"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 4 and manifest["status"] == "ok"


def test_case_results_do_not_depend_on_order_or_executor(tiny_dataset):
    specs = simulated_specs(tiny_dataset, "test", limit=2)
    # default options: charge-flip stops on a work budget, not a wall clock, so load cannot matter
    config = RunConfig(components={"classifier": "absences", "generator": "charge-flip", "refiner": "lsq",
                                   "ranker": "wr2"}, candidates_per_hypothesis=1, max_hypotheses=1, seed=9)
    opts = CaseOptions(reference_r1=False)
    a = run_benchmark(specs, config, opts, output=None, suite="simulated")["rows"]
    b = run_benchmark(specs[::-1], config, opts, output=None, suite="simulated", executor="dask", workers=2)["rows"][::-1]
    keys = ("case", "status", "r1", "wr2", "sg_found", "fraction_matched", "seed")
    for ra, rb in zip(a, b):
        for k in keys:
            va, vb = ra.get(k), rb.get(k)
            assert (va == vb) or (isinstance(va, float) and math.isnan(va) and math.isnan(vb)), (k, va, vb)


def test_case_selection_given_space_group_and_kept_absences(tiny_dataset):
    from refractor_core.crystal.symmetry import SymmetryOps

    small = real_specs(max_atoms=3)
    assert small and {s.name for s in small} <= {"nacl", "urea", "ethylene_oxide"}
    assert "sucrose" not in {s.name for s in real_specs(max_atoms=20)}
    specs = simulated_specs(tiny_dataset, "test")
    few = simulated_specs(tiny_dataset, "test", max_atoms=3)
    assert len(few) < len(specs) and all(len(load_case(s).reference.sites) <= 3 for s in few)
    with_absences = 0
    for spec in specs:
        plain, kept = load_case(spec), load_case(spec, keep_absences=True, given_space_group=True)
        assert plain.data.space_group_hint is None
        assert kept.data.space_group_hint.number == plain.true_space_group.number
        sym = SymmetryOps.from_space_group(plain.true_space_group)
        n_absent = int(sym.is_absent(kept.data.hkl).sum())
        assert not sym.is_absent(plain.data.hkl).any()
        # the stored experiment, re-simulated with the absences (incompleteness and the
        # choice of equivalents are drawn afresh over the larger set, so counts agree closely)
        assert abs(kept.data.n - n_absent - plain.data.n) <= 0.05 * plain.data.n
        with_absences += n_absent > 0
    assert with_absences


def test_local_cluster_workers_keep_default_malloc_and_one_thread():
    import os

    from dask.distributed import Client

    from refractor_core.benchmarking.executors import local_cluster

    cluster = local_cluster(1)
    client = Client(cluster)
    try:
        env = list(client.run(lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS"))).values())
    finally:
        client.close()
        cluster.close()
    assert env == [(None, "1")]
