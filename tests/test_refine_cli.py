"""`refractor refine DATA --model MODEL`, run as users run it (a fresh interpreter)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "data" / "pr_sulfate_hydroxide"


def refractor(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "refractor_core.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("refine")
    shutil.copy(EXAMPLE / "2229150.hkl", d / "2229150.hkl")
    shutil.copy(EXAMPLE / "reference" / "2229150.cif", d / "2229150.cif")  # found beside the data too
    return d


@pytest.fixture(scope="module")
def refined(workdir):
    proc = refractor("refine", "2229150.hkl", "--model", "2229150.cif", "--json", "--output", "out",
                     "--refiner-opt", "max_cycles=30", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc


def test_a_model_block_named_in_the_path(workdir):
    proc = refractor("refine", "2229150.hkl", "--model", "2229150.cif#2229150", "--json", "--output", "blk",
                     "--refiner-opt", "max_cycles=5", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["cif"].endswith("blk/2229150.cif")


def test_refine_json_and_outputs(workdir, refined):
    out, proc = refined
    for key in ("R1", "wR2", "GooF", "cycles", "max_shift_su", "cif"):
        assert key in out
    assert out["R1"] < 0.04 and 0.8 < out["GooF"] < 1.5 and out["max_shift_su"] < 0.05
    # pr_sulfate's model brings no restraints: the restrained GooF is the GooF
    assert out["n_restraints"] == 0 and out["restrained_GooF"] == pytest.approx(out["GooF"])
    worst = out["disagreeable_reflections"]  # (SHELXL's list of the most disagreeable reflections)
    assert len(worst) == 10 and abs(worst[0]["error_esd"]) >= abs(worst[-1]["error_esd"])
    assert "most disagreeable reflections" in (workdir / "out" / "refine.log").read_text()
    cif = Path(out["cif"])
    assert cif.is_file() and cif.parent == workdir / "out"
    text = cif.read_text()
    assert "_refine_ls_R_factor_gt" in text and "_refine_ls_goodness_of_fit_ref" in text
    assert f"{out['R1']:.4f}" in text
    # the data's own figures, as SHELXL states them (merged data: no R_int to give)
    for tag in ("_diffrn_reflns_number", "_diffrn_reflns_theta_max", "_diffrn_measured_fraction_theta_full",
                "_diffrn_reflns_limit_l_max", "_diffrn_reflns_av_unetI/netI"):
        assert tag in text, tag
    assert re.search(r"^_diffrn_reflns_av_R_equivalents\s+\?$", text, re.M)
    # each anisotropic atom's U_eq carries its su, as SHELXL writes it (left out before)
    uani = [line.split() for line in text.splitlines() if " Uani " in line]
    assert uani and all(re.fullmatch(r"0\.\d+\(\d+\)", row[5]) for row in uani)
    for name in ("2229150.res", "2229150.fcf", "refine.json", "manifest.json", "refine.log"):
        assert (workdir / "out" / name).is_file()
    assert "cycle" in (workdir / "out" / "refine.log").read_text()
    assert "refining" in proc.stderr  # progress on stderr, stdout holds only the JSON


def test_refined_res_refines_again_to_the_same_figures(workdir, refined):
    """The written .res is a valid start model: refining it changes little."""
    out, _ = refined
    proc = refractor("refine", "2229150.hkl", "--model", "out/2229150.res", "--json", "--output", "again",
                     "--refiner-opt", "max_cycles=10", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout)
    assert again["R1"] == pytest.approx(out["R1"], abs=0.002)


def test_refine_usage_errors(workdir):
    proc = refractor("refine", "2229150.hkl", "--model", "2229150.cif", "--refiner-opt", "no_such_key=1", cwd=workdir)
    assert proc.returncode == 2 and "no_such_key" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = refractor("refine", "2229150.hkl", "--model", "missing.res", cwd=workdir)
    assert proc.returncode == 2 and "missing.res" in proc.stderr
    assert not list(workdir.glob("missing_refined*"))
    # a CIF data block named in the path, as the option's help says (was "does not exist")
    proc = refractor("refine", "2229150.hkl", "--model", "2229150.cif#no_such_block", cwd=workdir)
    assert proc.returncode == 1 and "no_such_block" in proc.stderr and "does not exist" not in proc.stderr


def test_neutron_data_are_refused(tmp_path):
    """A .res saying NEUT, or a CIF whose _diffrn_radiation_probe is neutron, describes
    neutron data: X-ray form factors would give a wrong refinement, so refine and rfactor
    stop with a clear message, exit code 1 and no output."""
    shutil.copy(EXAMPLE / "2229150.hkl", tmp_path / "2229150.hkl")
    cif = (EXAMPLE / "reference" / "2229150.cif").read_text()
    at = cif.index("_diffrn_radiation_wavelength")
    # the CIF beside the data gives their cell, and here says they are neutron data
    (tmp_path / "2229150.cif").write_text(cif[:at] + "_diffrn_radiation_probe neutron\n" + cif[at:])
    for extra in (["refine", "--output", "out"], ["rfactor"]):
        proc = refractor(extra[0], "2229150.hkl", "--model", "2229150.cif", *extra[1:], cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr
        assert "neutron diffraction data" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_what_the_readers_noted_is_shown(tmp_path):
    """An instruction the refiner does not honour (CONN) is named on stderr and in the
    JSON's notes, not dropped silently."""
    from refractor_core.testing.real_cases import get_case

    case = get_case("fe_perchlorate_hydrate")
    shutil.copy(case.reflections, tmp_path / "fe.hkl")
    text = case.reference.read_text().replace("\nSFAC", "\nCONN 4 O1\nSFAC", 1)
    (tmp_path / "fe.res").write_text(text)
    proc = refractor("refine", "fe.hkl", "--model", "fe.res", "--json", "--output", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "note: instructions read but not honoured by the refiner: CONN" in proc.stderr
    assert "instructions read but not honoured by the refiner: CONN" in json.loads(proc.stdout)["notes"]


def test_the_model_gives_the_crystal_data_when_nothing_is_beside_the_data(tmp_path):
    """`refractor refine data.hkl --model start.res` with no .ins beside the data (the
    README's example): the cell, SFAC/UNIT and wavelength come from the model file, which
    failed with 'no unit cell' before."""
    from refractor_core.testing.real_cases import get_case

    case = get_case("fe_perchlorate_hydrate")
    (tmp_path / "data").mkdir()
    (tmp_path / "model").mkdir()
    shutil.copy(case.reflections, tmp_path / "data" / "fe.hkl")
    shutil.copy(case.reference, tmp_path / "model" / "start.res")
    proc = refractor("refine", "data/fe.hkl", "--model", "model/start.res", "--json", "--output", "out",
                     "--refiner-opt", "max_cycles=5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["R1"] < 0.05
    assert "crystal data from model/start.res" in proc.stderr or "start.res" in " ".join(out.get("notes", []))


def test_a_failure_with_json_still_prints_one_json_object(workdir):
    """A script reading stdout gets {"error", "exit_code"} when the command fails."""
    proc = refractor("refine", "2229150.hkl", "--model", "missing.res", "--json", cwd=workdir)
    assert proc.returncode == 2
    out = json.loads(proc.stdout)
    assert out["exit_code"] == 2 and "missing.res" in out["error"]
    proc = refractor("refine", "2229150.hkl", "--model", "2229150.cif#no_such_block", "--json", cwd=workdir)
    assert proc.returncode == 1 and "no_such_block" in json.loads(proc.stdout)["error"]


def test_warnings_reach_stderr_with_json(workdir):
    """The refined model's warnings go to stderr as 'warning:' lines with --json too (stdout
    holds only the JSON object): two cycles leave the model's hydroxyl H replaced."""
    proc = refractor("refine", "2229150.hkl", "--model", "2229150.cif", "--json", "--output", "warn",
                     "--refiner-opt", "max_cycles=2", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    warnings = json.loads(proc.stdout)["warnings"]
    assert warnings
    for w in warnings:
        assert f"warning: {w}" in proc.stderr
