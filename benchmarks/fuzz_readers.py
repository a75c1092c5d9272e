"""Fuzz the readers with mutated real files: only clear InputErrors may come out.

Seeds are the real cases' files (reflection files cut to their first rows, .res/.ins,
the small CIFs, an fcf, a SHELXL CIF with its embedded hkl cut short, and a .p4p).
Each input is one deterministic mutation (seeded): truncation, shifted columns, NaN,
huge numbers, a wrong or impossible CELL, an unknown SFAC element, binary garbage, an
empty file, a missing cell, negative or NaN sigmas, deleted/duplicated lines, CR line
ends... Every input is read through `load_bundle` (sniffed reader) and, when it looks like
reflections, `load_reflections`. Outcomes:

- ok: read (the typed models validated the result),
- clean: an `InputError` naming the file (line numbers are counted where given),
- internal: an `InputError` from the readers' safety net (a reader bug behind it),
- escaped: any other exception type (a bug).

    .venv/bin/python benchmarks/fuzz_readers.py [--per-seed 400] [--seed 0] [--cli 50]

writes benchmarks/results/fuzz_readers.json. `tests/test_fuzz_readers.py` runs a smaller
round of the same generator.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import random
import re
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------
# seeds
# --------------------------------------------------------------------------------------


@dataclass
class Seed:
    name: str
    data: bytes
    suffix: str
    kind: str  # "hkl", "ins", "cif", "p4p"


P4P = (
    b"FILEID SAINT  V8.40A  test\r\nTITLE fuzz\r\nCHEM C12H22O11\r\n"
    b"CELL 7.7156 8.6605 10.8035 90.000 102.955 90.000 703.6\r\n"
    b"CELLSD 0.0011 0.0013 0.0016 0.000 0.004 0.000 0.2\r\n"
    b"SOURCE MO 0.71073 0.70930 0.71359 0.50000 50.00 40.00\r\n"
    b"ORT1 0.1 0.2 0.3\r\nREF05 1 2 3\r\n"
)


def _head_rows(data: bytes, rows: int) -> bytes:
    lines = data.split(b"\n")
    out = lines[:rows]
    if lines[rows:] and b" 0   0   0" not in out[-1]:
        out.append(b"   0   0   0    0.00    0.00")
    return b"\n".join(out) + b"\n"


def _cut_embedded_hkl(text: bytes, rows: int) -> bytes:
    start = text.find(b"_shelx_hkl_file")
    if start < 0:
        return text
    body = text.find(b"\n;", start)
    end = text.find(b"\n;", body + 2)
    if body < 0 or end < 0:
        return text
    lines = text[body + 2 : end].split(b"\n")
    return text[: body + 2] + b"\n".join(lines[: rows + 1] + [b"   0   0   0    0.00    0.00"]) + text[end:]


def seed_files(max_cif_bytes: int = 70_000, hkl_rows: int = 150) -> list[Seed]:
    """Small seed inputs from the real cases (deterministic order)."""
    sys.path.insert(0, str(ROOT))
    from refractor_core.testing.real_cases import load_cases

    seeds: list[Seed] = []
    for case in load_cases():
        for p in sorted(case.folder.iterdir()):
            suffix = p.suffix.lower()
            data = p.read_bytes()
            if suffix == ".hkl" and not data.lstrip().startswith(b"data_") and p.name != "extracted_from_cif.hkl":
                seeds.append(Seed(f"{case.name}/{p.name}", _head_rows(data, hkl_rows), ".hkl", "hkl"))
            elif suffix in (".res", ".ins"):
                seeds.append(Seed(f"{case.name}/{p.name}", data, suffix, "ins"))
            elif suffix in (".cif", ".fcf", ".hkl") and len(data) <= max_cif_bytes:
                seeds.append(Seed(f"{case.name}/{p.name}", data, suffix, "cif"))
    one = next(c for c in load_cases() if c.name == "alga_amide_inversion_twin")
    seeds.append(Seed("alga_amide/1b.cif (hkl cut)", _cut_embedded_hkl(one.reflections.read_bytes(), hkl_rows), ".cif", "cif"))
    seeds.append(Seed("synthetic.p4p", P4P, ".p4p", "p4p"))
    return seeds


# --------------------------------------------------------------------------------------
# mutations
# --------------------------------------------------------------------------------------

_NUMBER = re.compile(rb"(?<![A-Za-z_$])[-+]?\d+\.\d+|(?<![A-Za-z_$.\d])[-+]?\d+(?![\d.])")
_BAD_NUMBERS = [b"nan", b"NaN", b"inf", b"-inf", b"1e308", b"-1e308", b"9" * 40, b"1e-320", b"0", b"-0.0", b"?", b"1.2.3", b"--5", b"1e999"]


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _pick_line(rng: random.Random, lines: list[bytes], pattern: bytes | None = None) -> int | None:
    idx = [i for i, ln in enumerate(lines) if ln.strip() and (pattern is None or re.search(pattern, ln))]
    return rng.choice(idx) if idx else None


def m_truncate(rng, data, seed):
    return data[: rng.randrange(0, max(len(data), 1))]


def m_shift_columns(rng, data, seed):
    lines = _lines(data)
    for _ in range(rng.randint(1, 4)):
        i = _pick_line(rng, lines)
        if i is None:
            break
        k = rng.randint(1, 3)
        lines[i] = (b" " * k + lines[i]) if rng.random() < 0.6 else lines[i][k:]
    return b"\n".join(lines)


def m_delete_char(rng, data, seed):
    if not data:
        return data
    i = rng.randrange(len(data))
    return data[:i] + data[i + 1 :]


def m_bad_number(rng, data, seed):
    matches = list(_NUMBER.finditer(data))
    if not matches:
        return data + b" nan"
    out = data
    for m in sorted(rng.sample(matches, min(len(matches), rng.randint(1, 3))), key=lambda m: -m.start()):
        bad = rng.choice(_BAD_NUMBERS)
        width = m.end() - m.start()
        if seed.kind == "hkl" and rng.random() < 0.7:
            bad = bad[:width].rjust(width)  # keep the columns
        out = out[: m.start()] + bad + out[m.end() :]
    return out


def m_sigma(rng, data, seed):
    """Negative, zero or NaN sigmas in HKLF rows (columns 21-28)."""
    lines = _lines(data)
    for _ in range(rng.randint(1, 6)):
        i = _pick_line(rng, lines, rb"^\s*-?\d+\s+-?\d+\s+-?\d+\s")
        if i is None or len(lines[i]) < 28:
            break
        val = rng.choice([b"   -1.00", b"    0.00", b"     nan", b"    -inf", b"-9999.99", b" 1e+300"])
        lines[i] = lines[i][:20] + val + lines[i][28:]
    return b"\n".join(lines)


def m_wrong_cell(rng, data, seed):
    choices = [
        b"0 0 0 90 90 90", b"-5 6 7 90 90 90", b"5 6 7 200 90 90", b"5 6 7 120 120 120",
        b"5 6 7 0 90 90", b"5 6 7 90 90", b"1e9 6 7 90 90 90", b"5 6 7 179.9 179.9 1", b"nan 6 7 90 90 90",
    ]
    new = rng.choice(choices)
    lines = _lines(data)
    i = _pick_line(rng, lines, rb"^(CELL|_cell[._]length_a)")
    if i is None:
        return data
    line = lines[i]
    if line.startswith(b"CELL"):
        parts = line.split()
        head = b"CELL " + (parts[1] + b" " if seed.kind == "ins" and len(parts) > 1 else b"")
        lines[i] = head + new
    else:
        tag = line.split()[0]
        lines[i] = tag + b" " + new.split()[0]
        j = _pick_line(rng, lines, rb"^_cell[._]angle_(alpha|beta|gamma)")
        if j is not None:
            lines[j] = lines[j].split()[0] + b" " + rng.choice([b"180", b"0", b"-90", b"359", b"nan"])
    return b"\n".join(lines)


def m_unknown_element(rng, data, seed):
    lines = _lines(data)
    i = _pick_line(rng, lines, rb"^(SFAC|CHEM)\s")
    if i is not None:
        parts = lines[i].split()
        if len(parts) > 1:
            parts[rng.randrange(1, len(parts))] = rng.choice([b"Xx", b"Q", b"Jj", b"C2+x", b"$$"])
            lines[i] = b" ".join(parts)
            return b"\n".join(lines)
    i = _pick_line(rng, lines, rb"^\s*[A-Z][a-z]?\d+[A-Za-z']*\s+[A-Z][a-z]?\s")  # an atom_site row
    if i is not None:
        parts = lines[i].split()
        parts[1] = rng.choice([b"Xx", b"Qq", b"Zz9"])
        lines[i] = b" ".join(parts)
    return b"\n".join(lines)


def m_binary(rng, data, seed):
    garbage = bytes(rng.randrange(256) for _ in range(rng.randint(1, 400)))
    mode = rng.random()
    if mode < 0.3:
        return garbage
    if mode < 0.6:
        i = rng.randrange(len(data) + 1)
        return data[:i] + garbage + data[i:]
    return data.replace(b" ", b"\x00", rng.randint(1, 5))


def m_empty(rng, data, seed):
    return rng.choice([b"", b"\n", b"   \r\n\t\n", b"\xef\xbb\xbf", b"0"])


def m_missing_cell(rng, data, seed):
    lines = _lines(data)
    keep = [ln for ln in lines if not re.match(rb"^\s*(CELL|ZERR|_cell[._])", ln)]
    return b"\n".join(keep)


def m_lines(rng, data, seed):
    lines = _lines(data)
    for _ in range(rng.randint(1, 5)):
        if not lines:
            break
        op = rng.random()
        i = rng.randrange(len(lines))
        if op < 0.4:
            del lines[i]
        elif op < 0.7:
            lines.insert(i, lines[rng.randrange(len(lines))])
        else:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines)


def m_garbage_token(rng, data, seed):
    lines = _lines(data)
    i = _pick_line(rng, lines)
    if i is None:
        return data
    parts = lines[i].split(b" ")
    k = rng.randrange(len(parts))
    parts[k] = rng.choice([b"abc", b"loop_", b"data_", b";", b"'", b'"', b"=", b"!", b"_x", b"#", b"END", b"HKLF"])
    lines[i] = b" ".join(parts)
    return b"\n".join(lines)


def m_line_ends(rng, data, seed):
    return data.replace(b"\n", rng.choice([b"\r\n", b"\r", b"\n\n", b"\r\r\n"]))


def m_long_line(rng, data, seed):
    lines = _lines(data)
    i = rng.randrange(len(lines) + 1)
    lines.insert(i, rng.choice([b"1" * 5000, b"CELL " + b"1 " * 3000, b"x" * 20000, b"   1   0   0" * 200]))
    return b"\n".join(lines)


def m_hkl_index(rng, data, seed):
    """Indices out of range or all zero in the middle (an early terminator)."""
    lines = _lines(data)
    i = _pick_line(rng, lines, rb"^\s*-?\d+\s+-?\d+\s+-?\d+\s")
    if i is None:
        return data
    bad = rng.choice([b"9999", b"   0", b"-999", b"  1a"])
    lines[i] = bad + lines[i][4:]
    return b"\n".join(lines)


MUTATIONS = {
    "truncate": m_truncate,
    "shift_columns": m_shift_columns,
    "delete_char": m_delete_char,
    "bad_number": m_bad_number,
    "sigma": m_sigma,
    "wrong_cell": m_wrong_cell,
    "unknown_element": m_unknown_element,
    "binary": m_binary,
    "empty": m_empty,
    "missing_cell": m_missing_cell,
    "lines": m_lines,
    "garbage_token": m_garbage_token,
    "line_ends": m_line_ends,
    "long_line": m_long_line,
    "hkl_index": m_hkl_index,
}


def mutate(rng: random.Random, seed: Seed) -> tuple[str, bytes]:
    """One or two mutations of a seed."""
    names = [rng.choice(list(MUTATIONS))]
    if rng.random() < 0.25:
        names.append(rng.choice(list(MUTATIONS)))
    data = seed.data
    for n in names:
        data = MUTATIONS[n](rng, data, seed)
    return "+".join(names), data


# --------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    seed: str
    mutation: str
    call: str
    result: str  # ok | clean | internal | escaped
    message: str = ""
    has_line: bool = False


@dataclass
class FuzzReport:
    inputs: int = 0
    calls: int = 0
    counts: dict = field(default_factory=lambda: {"ok": 0, "clean": 0, "internal": 0, "escaped": 0})
    by_mutation: dict = field(default_factory=dict)
    with_line: int = 0
    without_path: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    cli_runs: int = 0
    cli_problems: list = field(default_factory=list)
    seconds: float = 0.0

    def add(self, o: Outcome, path: Path) -> None:
        self.calls += 1
        self.counts[o.result] += 1
        bm = self.by_mutation.setdefault(o.mutation.split("+")[0], {"ok": 0, "clean": 0, "internal": 0, "escaped": 0})
        bm[o.result] += 1
        if o.result == "clean":
            self.with_line += int(o.has_line)
            if str(path) not in o.message and path.name not in o.message:
                self.without_path.append(o.__dict__)
        if o.result in ("internal", "escaped"):
            self.problems.append(o.__dict__)


def _call(fn, path: Path, seed: Seed, mutation: str, name: str) -> Outcome:
    from refractor_core.errors import InputError, RefractorError

    try:
        result = fn(path)
        _check_result(result)
        return Outcome(seed.name, mutation, name, "ok")
    except InputError as exc:
        kind = "internal" if getattr(exc, "internal", False) or (exc.__cause__ is not None and getattr(exc.__cause__, "internal", False)) else "clean"
        return Outcome(seed.name, mutation, name, kind, str(exc)[:300], exc.line is not None)
    except RefractorError as exc:  # UsageError/PluginError: not expected from a data file
        return Outcome(seed.name, mutation, name, "escaped", f"{type(exc).__name__}: {exc}"[:300])
    except Exception as exc:  # noqa: BLE001 - the point of the exercise
        tb = traceback.format_exc(limit=3)
        return Outcome(seed.name, mutation, name, "escaped", f"{type(exc).__name__}: {exc}\n{tb}"[:1200])


def _check_result(result) -> None:
    """A successful read must hold clean numbers (the models validate most of it)."""
    import math

    import numpy as np

    refl = getattr(result, "reflections", None) if not hasattr(result, "hkl") else result
    if refl is not None:
        assert np.all(np.isfinite(refl.intensity)) and np.all(refl.sigma > 0)
    structure = getattr(result, "structure", None)
    if structure is not None:
        for s in structure.sites:
            assert all(math.isfinite(x) for x in s.xyz)


def run_fuzz(per_seed: int = 60, seed: int = 0, cli: int = 10, seeds: list[Seed] | None = None) -> FuzzReport:
    """Mutate every seed `per_seed` times and read each input; `cli` inputs also via the CLI."""
    sys.path.insert(0, str(ROOT))
    from refractor_core.dataio import load_bundle, load_reflections

    t0 = time.perf_counter()
    report = FuzzReport()
    rng = random.Random(seed)
    seeds = seeds if seeds is not None else seed_files()
    cli_inputs: list[tuple[Path, Seed, str]] = []
    with tempfile.TemporaryDirectory(prefix="refractor-fuzz-") as tmp:
        folder = Path(tmp)
        for si, s in enumerate(seeds):
            for j in range(per_seed):
                mutation, data = mutate(rng, s)
                suffix = s.suffix if rng.random() < 0.8 else ""
                path = folder / f"in{si:02d}_{j:04d}{suffix}"
                path.write_bytes(data)
                report.inputs += 1
                report.add(_call(load_bundle, path, s, mutation, "load_bundle"), path)
                if s.kind in ("hkl", "cif"):
                    def lr(p):
                        return load_reflections(p, cell=(10, 11, 12, 90, 95, 90)) if s.kind == "hkl" else load_reflections(p)
                    report.add(_call(lr, path, s, mutation, "load_reflections"), path)
                if s.kind in ("hkl", "cif") and len(cli_inputs) < cli and rng.random() < 0.05:
                    keep = folder / "cli" / f"c{len(cli_inputs):03d}{suffix}"
                    keep.parent.mkdir(exist_ok=True)
                    keep.write_bytes(data)
                    cli_inputs.append((keep, s, mutation))
                path.unlink()
        report.cli_runs, report.cli_problems = _run_cli(cli_inputs)
    report.seconds = time.perf_counter() - t0
    return report


def _run_cli(inputs: list[tuple[Path, Seed, str]]) -> tuple[int, list]:
    """`refractor rfactor DATA --model MODEL` on mutated data: exit code 0 or 1, no traceback."""
    from refractor_core.cli import main as cli_main
    from refractor_core.testing.real_cases import get_case

    model = get_case("urea").reference
    problems = []
    for path, s, mutation in inputs:
        err = io.StringIO()
        out = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = cli_main(["rfactor", str(path), "--model", str(model), "--cell", "5.578", "5.578", "4.686", "90", "90", "90"])
            except SystemExit as exc:  # pragma: no cover - main(argv) returns instead
                code = exc.code
        text = err.getvalue()
        if code not in (0, 1) or "Traceback" in text or "unexpected" in text:
            problems.append({"seed": s.name, "mutation": mutation, "code": code, "stderr": text[-600:]})
    return len(inputs), problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-seed", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cli", type=int, default=50)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz_readers.json")
    args = ap.parse_args()
    rep = run_fuzz(per_seed=args.per_seed, seed=args.seed, cli=args.cli)
    summary = {
        "command": f"python benchmarks/fuzz_readers.py --per-seed {args.per_seed} --seed {args.seed} --cli {args.cli}",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "note": "shared machine; timings are noisy"},
        "inputs": rep.inputs,
        "reader_calls": rep.calls,
        "outcomes": rep.counts,
        "clean_errors_with_line": rep.with_line,
        "clean_errors_without_path": len(rep.without_path),
        "by_mutation": rep.by_mutation,
        "cli_runs": rep.cli_runs,
        "cli_problems": rep.cli_problems,
        "problems": rep.problems[:50],
        "seconds": round(rep.seconds, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("by_mutation", "problems", "cli_problems")}, indent=2))
    if rep.problems or rep.cli_problems or rep.without_path:
        print(f"{len(rep.problems)} reader problems, {len(rep.cli_problems)} CLI problems, "
              f"{len(rep.without_path)} errors without the file name", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
