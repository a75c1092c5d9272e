"""Bad input: mutated real files give clear InputErrors (or read cleanly), never anything else.

Runs a deterministic round of the generator in benchmarks/fuzz_readers.py (seed 0): every
mutated input goes through `load_bundle` and, for reflection files, `load_reflections`;
a few go through `refractor rfactor` (exit code 0 or 1, no traceback). The longer run is
`python benchmarks/fuzz_readers.py`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from refractor_core.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
PER_SEED = 80


def _fuzz_module():
    spec = importlib.util.spec_from_file_location("fuzz_readers", ROOT / "benchmarks" / "fuzz_readers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fuzz_readers", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fuzz():
    return _fuzz_module()


def test_fuzz_readers_only_clear_input_errors(fuzz):
    report = fuzz.run_fuzz(per_seed=PER_SEED, seed=0, cli=15)
    print(
        f"\nfuzz: {report.inputs} inputs, {report.calls} reader calls, outcomes {report.counts}, "
        f"{report.with_line} errors with a line number, {report.cli_runs} CLI runs, {report.seconds:.1f} s"
    )
    assert report.inputs >= 2000
    assert report.counts["clean"] > 1000 and report.counts["ok"] > 100  # both kinds exercised
    assert report.counts["escaped"] == 0, report.problems[:3]
    assert report.counts["internal"] == 0, report.problems[:3]
    assert not report.without_path, report.without_path[:3]
    assert report.with_line > report.counts["clean"] // 3  # most text errors name a line
    assert report.cli_runs == 15 and not report.cli_problems, report.cli_problems[:3]
    every = set(report.by_mutation)
    assert every == set(fuzz.MUTATIONS)  # every kind of mutation was tried


def test_fuzz_harness_detects_escapes_and_safety_net(fuzz, tmp_path):
    seed = fuzz.Seed("x", b"", ".hkl", "hkl")
    p = tmp_path / "x.hkl"

    def escapes(path):
        raise KeyError("boom")

    def safety_net(path):
        err = InputError("cannot read this file", path=path)
        err.internal = True
        raise err

    assert fuzz._call(escapes, p, seed, "m", "f").result == "escaped"
    assert fuzz._call(safety_net, p, seed, "m", "f").result == "internal"
    assert fuzz._call(lambda path: None, p, seed, "m", "f").result == "ok"


def test_mutations_are_deterministic(fuzz):
    import random

    seeds = fuzz.seed_files()
    a = [fuzz.mutate(random.Random(5), s)[1] for s in seeds[:6]]
    b = [fuzz.mutate(random.Random(5), s)[1] for s in seeds[:6]]
    assert a == b


@pytest.mark.parametrize(
    "content, line",
    [
        ("   1   0   0  100.00    5.00\n   2   0   0     nan    1.00\n", 2),
        ("   1   0   0  100.00    5.00\n   2   0   0  100.00     inf\n", 2),
        ("   1   0   0  100.00    5.00\n  2   0   0  100.00    1.00   1   5\n", 2),
        ("   1   0   0  100.00    5.00\n   2   0   0  1e999    1.00\n", 2),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, content, line):
    from refractor_core.dataio import load_reflections

    p = tmp_path / "d.hkl"
    p.write_text(content)
    with pytest.raises(InputError) as err:
        load_reflections(p, cell=(5, 5, 5, 90, 90, 90))
    assert err.value.line == line and str(p) in str(err.value)
