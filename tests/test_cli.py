"""The command line, run as users run it (a fresh interpreter per command)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from refractor_core import __version__

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLE_DATA = ROOT / "examples" / "data" / "pr_sulfate_hydroxide" / "2229150.hkl"
#: the bundled example carries no companion file: cell, wavelength, formula and Z are given
EXAMPLE = (str(EXAMPLE_DATA), "--cell", "4.4891", "12.484", "6.894", "90", "106.310", "90",
           "--wavelength", "0.71073", "--formula", "H O5 Pr S", "--z", "4")
FIXTURE_STAGES = ["--classifier", "fixture-fixed", "--generator", "fixture-model", "--refiner", "fixture-evaluate",
                  "--ranker", "fixture-r1"]


def refractor(*args: str, fixtures: tuple[str, ...] = (), env: dict[str, str] | None = None, cwd: Path | None = None,
              timeout: float = 180) -> subprocess.CompletedProcess:
    """Run `refractor ARGS` in a fresh interpreter with fixture distributions on its path."""
    full_env = {**os.environ, **(env or {})}
    paths = [str(FIXTURES / f) for f in fixtures]
    if full_env.get("PYTHONPATH"):
        paths.append(full_env["PYTHONPATH"])
    full_env["PYTHONPATH"] = os.pathsep.join(paths)
    return subprocess.run([sys.executable, "-m", "refractor_core.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)


def imported_modules(code: str) -> set[str]:
    """Modules imported by running `code` in a fresh interpreter (from -X importtime)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


# --------------------------------------------------------------------------------------
# fast, torch-free entry points
# --------------------------------------------------------------------------------------


def test_importing_the_cli_imports_no_torch():
    mods = imported_modules("import refractor_core.cli")
    assert "refractor_core.cli" in mods
    assert not {m for m in mods if m == "torch" or m.startswith("torch.")}


@pytest.mark.parametrize("args", [["--help"], ["plugins", "--json"], ["plugins"], ["run", "--help"], ["weights", "list"]])
def test_help_and_listing_do_not_import_torch(args):
    code = (
        "import sys\nfrom refractor_core.cli import main\n"
        f"code = main({args!r})\n"
        "heavy = [m for m in ('torch', 'e3nn', 'torch_geometric', 'pymatgen') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\nsys.exit(code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stderr


def test_version():
    proc = refractor("--version")
    assert proc.returncode == 0 and __version__ in proc.stdout


def test_help_lists_commands():
    proc = refractor("--help")
    assert proc.returncode == 0
    for name in ("run", "plugins", "weights"):
        assert name in proc.stdout


def test_unknown_command_suggests_and_exits_2():
    proc = refractor("rnu")
    assert proc.returncode == 2
    assert "Did you mean 'run'" in proc.stderr


def test_plugins_json_lists_every_component_with_required_fields():
    proc = refractor("plugins", "--json", fixtures=("pipeline_plugin",))
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)
    assert isinstance(records, list) and records
    for r in records:
        assert {"kind", "name", "distribution", "version", "status", "error", "summary", "target"} <= set(r)
        assert r["status"] in ("ok", "broken")
    from refractor_core.plugins import load_registry

    builtin = {(s.kind, s.name) for s in load_registry().all_specs() if s.distribution == "refractor"}
    listed = {(r["kind"], r["name"]) for r in records if r["distribution"] == "refractor"}
    assert listed == builtin
    assert ("ranker", "fixture-r1", "refractor-fixture-pipeline") in {(r["kind"], r["name"], r["distribution"]) for r in records}


# --------------------------------------------------------------------------------------
# a broken third-party plugin
# --------------------------------------------------------------------------------------


def test_broken_plugin_is_listed_and_nothing_else_breaks(tmp_path):
    listed = refractor("plugins", "--json", fixtures=("broken_plugin",))
    assert listed.returncode == 0, listed.stderr
    [broken] = [r for r in json.loads(listed.stdout) if r["distribution"] == "refractor-fixture-broken"]
    assert broken["status"] == "broken" and broken["kind"] == "plugin" and broken["name"] == "broken-fixture"
    assert "fails on import on purpose" in broken["error"]

    helped = refractor("--help", fixtures=("broken_plugin",))
    assert helped.returncode == 0 and "Commands" in helped.stdout

    table = refractor("plugins", fixtures=("broken_plugin",))
    assert table.returncode == 0 and "broken-fixture" in table.stdout and "broken" in table.stdout

    ran = refractor("run", *EXAMPLE, *FIXTURE_STAGES, "--output", str(tmp_path / "out"), "--json",
                    fixtures=("broken_plugin", "pipeline_plugin"))
    assert ran.returncode == 0, ran.stderr
    assert "broken-fixture" in ran.stderr and "WARNING" in ran.stderr  # reported as a warning
    assert json.loads(ran.stdout)["space_group_number"] == 14


def test_unknown_hook_plugin_is_listed_broken():
    proc = refractor("plugins", "--json", fixtures=("typo_plugin",))
    [broken] = [r for r in json.loads(proc.stdout) if r["distribution"] == "refractor-fixture-typo"]
    assert broken["status"] == "broken" and "refractor_regster" in broken["error"]


def test_clashing_names_are_listed_broken_naming_both():
    proc = refractor("plugins", "--json", fixtures=("clash_plugins",))
    records = [r for r in json.loads(proc.stdout) if r["name"] == "fixture-clash"]
    assert {r["distribution"] for r in records} == {"refractor-fixture-clash-a", "refractor-fixture-clash-b"}
    assert all(r["status"] == "broken" for r in records)
    assert "refractor-fixture-clash-a" in records[0]["error"] and "refractor-fixture-clash-b" in records[0]["error"]


# --------------------------------------------------------------------------------------
# plugins check
# --------------------------------------------------------------------------------------


def test_plugins_check_passes_a_conforming_component():
    proc = refractor("plugins", "check", "fixture-r1", fixtures=("pipeline_plugin",))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS  light_registration" in proc.stdout and "PASS  ranker_output" in proc.stdout
    assert "0 failed" in proc.stdout


def test_plugins_check_fails_a_heavy_registration_with_exit_3():
    proc = refractor("plugins", "check", "heavy-fixture", "--json", fixtures=("heavy_plugin",))
    assert proc.returncode == 3
    out = json.loads(proc.stdout)
    status = {c["name"]: c["status"] for c in out["checks"]}
    assert status["light_registration"] == "fail" and status["ranker_output"] == "pass"
    assert not out["passed"]


def test_plugins_check_unknown_name_suggests():
    proc = refractor("plugins", "check", "fixture-r2", fixtures=("pipeline_plugin",))
    assert proc.returncode == 2 and "did you mean 'fixture-r1'" in proc.stderr


# --------------------------------------------------------------------------------------
# run: usage errors (exit 2) before any work
# --------------------------------------------------------------------------------------


def test_run_unknown_component_lists_available(tmp_path):
    proc = refractor("run", *EXAMPLE, *FIXTURE_STAGES[:-1], "fixture-r2", "--output", str(tmp_path / "o"),
                     fixtures=("pipeline_plugin",))
    assert proc.returncode == 2
    assert "unknown ranker 'fixture-r2'" in proc.stderr and "did you mean 'fixture-r1'" in proc.stderr
    assert "available rankers:" in proc.stderr and "fixture-r1" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_run_unknown_option_key_is_a_usage_error(tmp_path):
    proc = refractor("run", *EXAMPLE, *FIXTURE_STAGES, "--refiner-opt", "anomalus=true",
                     "--output", str(tmp_path / "o"), fixtures=("pipeline_plugin",))
    assert proc.returncode == 2 and "anomalus" in proc.stderr and "valid keys: anomalous" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_bad_toml_config_is_a_usage_error(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text("seed = 1\nmax_hypotheses = 0\n")
    proc = refractor("run", *EXAMPLE, "--config", str(cfg), fixtures=("pipeline_plugin",))
    assert proc.returncode == 2 and "max_hypotheses" in proc.stderr and str(cfg) in proc.stderr


def test_run_missing_data_file_is_a_usage_error(tmp_path):
    proc = refractor("run", str(tmp_path / "nothing.hkl"), *FIXTURE_STAGES, fixtures=("pipeline_plugin",))
    assert proc.returncode == 2 and "nothing.hkl" in proc.stderr


def test_run_bad_data_exits_1_with_file_named(tmp_path):
    bad = tmp_path / "bad.hkl"
    bad.write_text("this is not a reflection file\n")
    proc = refractor("run", str(bad), *FIXTURE_STAGES, "--cell", "4.49", "12.48", "6.89", "90", "106.3", "90",
                     "--output", str(tmp_path / "out"), fixtures=("pipeline_plugin",))
    assert proc.returncode == 1, proc.stderr
    assert "bad.hkl" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------
# run: a whole pipeline through the CLI (test-only components, real data)
# --------------------------------------------------------------------------------------


def test_run_json_and_outputs(tmp_path):
    out = tmp_path / "out"
    proc = refractor("run", *EXAMPLE, *FIXTURE_STAGES, "--seed", "7", "--device", "cpu", "--keep", "2",
                     "--candidates", "3", "--output", str(out), "--json", "--offline", fixtures=("pipeline_plugin",))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    for key in ("solved", "space_group", "space_group_number", "R1", "wR2", "GooF", "formula", "cif", "seconds",
                "warnings"):
        assert key in summary
    for w in summary["warnings"]:  # the best model's warnings, on stderr too
        assert f"warning: {w}" in proc.stderr
    assert summary["space_group_number"] == 14 and summary["formula"] == "H O5 Pr S"
    assert 0 < summary["R1"] < 0.15 and summary["solved"] is True and summary["seed"] == 7
    assert (out / "report.json").is_file() and (out / "manifest.json").is_file() and (out / "candidate_2").is_dir()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 7 and manifest["device"] == "cpu" and manifest["status"] == "ok"
    assert manifest["config"]["components"]["ranker"] == "fixture-r1" and manifest["config"]["offline"] is True
    assert manifest["config"]["candidates_per_hypothesis"] == 3
    assert {c["name"] for c in manifest["components"]} == {"fixture-fixed", "fixture-model", "fixture-evaluate", "fixture-r1"}
    assert manifest["versions"]["refractor"] == __version__ and "torch" in manifest["versions"]
    assert manifest["versions"]["refractor-fixture-pipeline"] == "0.1.0"
    inputs = {Path(i["path"]).name: i["sha256"] for i in manifest["inputs"]}
    assert set(inputs) == {"2229150.hkl"}  # no companion: the cell came from the command line
    import hashlib

    assert inputs["2229150.hkl"] == hashlib.sha256(EXAMPLE_DATA.read_bytes()).hexdigest()
    report = json.loads((out / "report.json").read_text())
    assert len(report["candidates"]) == 3 and report["candidates"][0]["R1"] == summary["R1"]


def test_run_is_reproducible_from_the_seed(tmp_path):
    runs = []
    for i in range(2):
        proc = refractor("run", *EXAMPLE, *FIXTURE_STAGES, "--seed", "11", "--output", str(tmp_path / f"o{i}"),
                         "--json", "-q", fixtures=("pipeline_plugin",))
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads((tmp_path / f"o{i}" / "report.json").read_text())["candidates"])
    assert runs[0] == runs[1]


def test_seed_is_chosen_and_recorded_when_omitted(tmp_path):
    proc = refractor("run", *EXAMPLE, *FIXTURE_STAGES, "--output", str(tmp_path / "o"), "--json",
                     fixtures=("pipeline_plugin",))
    assert proc.returncode == 0, proc.stderr
    seed = json.loads(proc.stdout)["seed"]
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert isinstance(seed, int) and manifest["seed"] == seed and manifest["config"]["seed"] == seed


def test_config_file_with_command_line_override(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        'seed = 5\nmax_hypotheses = 1\n[components]\nclassifier = "fixture-fixed"\ngenerator = "fixture-model"\n'
        'refiner = "fixture-evaluate"\nranker = "fixture-r1"\n[options.classifier]\nalternatives = ["P 1 21/c 1"]\n'
    )
    proc = refractor("run", *EXAMPLE, "--config", str(cfg), "--max-hypotheses", "2", "--ranker-opt", "{}=1",
                     "--output", str(tmp_path / "o"), fixtures=("pipeline_plugin",))
    assert proc.returncode == 2  # '{}' is not a valid option key of fixture-r1
    proc = refractor("run", *EXAMPLE, "--config", str(cfg), "--max-hypotheses", "2",
                     "--output", str(tmp_path / "o"), "--json", fixtures=("pipeline_plugin",))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["seed"] == 5 and manifest["config"]["max_hypotheses"] == 2
    assert manifest["config"]["options"]["classifier"] == {"alternatives": ["P 1 21/c 1"]}
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert len(report["hypotheses"]) == 2


def test_progress_goes_to_stderr_and_quiet_silences_it(tmp_path):
    loud = refractor("run", *EXAMPLE, *FIXTURE_STAGES, "--output", str(tmp_path / "a"), "--json",
                     fixtures=("pipeline_plugin",))
    assert "refining (fixture-evaluate)" in loud.stderr
    json.loads(loud.stdout)  # stdout holds only the JSON object
    quiet = refractor("-q", "run", *EXAMPLE, *FIXTURE_STAGES, "--output", str(tmp_path / "b"), "--json",
                      fixtures=("pipeline_plugin",))
    assert quiet.returncode == 0 and quiet.stderr.strip() == ""


def test_failure_inside_the_pipeline_leaves_no_output(tmp_path):
    out = tmp_path / "out"
    proc = refractor("run", *EXAMPLE, *FIXTURE_STAGES, "--refiner-opt", "fail_above_sites=2",
                     "--output", str(out), fixtures=("pipeline_plugin",))
    assert proc.returncode == 1, proc.stderr
    assert "no candidate could be refined" in proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cuda_request_without_cuda_is_a_usage_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc = refractor("run", *EXAMPLE, *FIXTURE_STAGES, "--device", "cuda", fixtures=("pipeline_plugin",))
    assert proc.returncode == 2 and "CUDA" in proc.stderr


def test_a_run_repeats_from_its_manifest(tmp_path):
    proc = refractor("run", *EXAMPLE, *FIXTURE_STAGES, "--candidates", "2", "--output", str(tmp_path / "a"),
                     "--json", fixtures=("pipeline_plugin",))
    assert proc.returncode == 0, proc.stderr
    manifest = tmp_path / "a" / "manifest.json"
    again = refractor("run", *EXAMPLE, "--config", str(manifest), "--output", str(tmp_path / "b"), "--json",
                      fixtures=("pipeline_plugin",))
    assert again.returncode == 0, again.stderr
    a, b = (json.loads((tmp_path / x / "manifest.json").read_text()) for x in "ab")
    assert a["config"] == b["config"] and a["seed"] == b["seed"]
    ra, rb = (json.loads((tmp_path / x / "report.json").read_text())["candidates"] for x in "ab")
    assert ra == rb and len(ra) == 2


def test_run_on_a_cif_data_block_named_in_the_path(tmp_path):
    """`refractor run file.cif#block` reads that block (the existence check took the whole
    string for a file name); outputs are named after the file."""
    cif = tmp_path / "two.cif"
    text = (EXAMPLE_DATA.parent / "reference" / "2229150.cif").read_text()
    hkl = EXAMPLE_DATA.read_text()
    cif.write_text("data_other\n_cell_length_a 5\n\n" + text.replace(
        "data_2229150", "data_2229150\n_shelx_hkl_file\n;\n" + hkl.rstrip() + "\n;\n", 1))
    proc = refractor("run", f"{cif}#2229150", *FIXTURE_STAGES, "--json", fixtures=("pipeline_plugin",), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "two_refractor").is_dir()
    proc = refractor("run", f"{tmp_path / 'missing.cif'}#x", *FIXTURE_STAGES, fixtures=("pipeline_plugin",))
    assert proc.returncode == 2 and "missing.cif does not exist" in proc.stderr
