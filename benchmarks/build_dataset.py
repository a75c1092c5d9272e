"""Benchmark: build the default simulated dataset and record its size, time and statistics.

    .venv/bin/python benchmarks/build_dataset.py [--output build/datasets/refractor-sim]
        [--executor dask] [--workers 2] [--seed 0] [--name dataset]

Runs `refractor data build` (all default sources: AFLOW prototypes, pyxtal's CSD sample
and example CIFs, random charge-balanced inorganic crystals, random molecular crystals,
element substitutions; two simulated data sets per structure) and `refractor data stats`,
then writes into benchmarks/results: <name>_build.json and <name>_build.md (command,
machine, load, wall time, counts, splits, failures by kind) and <name>_stats.png (the
statistics figure) with <name>_stats.json. The dataset itself (about 50 MB) stays in
build/, which git ignores.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFRACTOR = str(Path(sys.executable).parent / "refractor")


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cores": os.cpu_count(), "load_average_at_start": os.getloadavg()}


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--output", type=Path, default=ROOT / "build" / "datasets" / "refractor-sim")
    ap.add_argument("--executor", default="dask", choices=["local", "dask"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="dataset")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)

    info = machine()
    cmd = [REFRACTOR, "data", "build", "-o", str(args.output), "--executor", args.executor,
           "--workers", str(args.workers), "--seed", str(args.seed), "--force", "--json"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        return proc.returncode
    brief = json.loads(proc.stdout)
    index = json.loads((args.output / "index.json").read_text())
    info["load_average_at_end"] = os.getloadavg()
    stats_png = args.results / f"{args.name}_stats.png"
    stats_json = args.results / f"{args.name}_stats.json"
    stats_cmd = [REFRACTOR, "data", "stats", str(args.output), "--plot", str(stats_png), "--output-json", str(stats_json)]
    st = subprocess.run(stats_cmd, capture_output=True, text=True, cwd=ROOT, check=True)

    failures = Counter()
    for f in index["failures"]:
        e = f["error"]
        failures["excluded: resembles a real evaluation case" if "real evaluation" in e else
                 "excluded: too many atoms" if "atoms per cell" in e else e.split(":")[0]] += 1
    rel = lambda p: str(Path(p).resolve().relative_to(ROOT)) if str(Path(p).resolve()).startswith(str(ROOT)) else str(p)  # noqa: E731
    record = {
        "command": " ".join(["refractor", *[rel(c) if c.startswith("/") else c for c in cmd[1:]]]),
        "stats_command": " ".join(["refractor", *[rel(c) if c.startswith("/") else c for c in stats_cmd[1:]]]),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": info,
        "note": "2 CPU cores shared with other developers' jobs during the build: times are noisy upper bounds",
        "wall_seconds": round(wall, 1),
        "timings": index["timings"],
        "size_bytes": folder_size(args.output),
        "counts": index["counts"],
        "sources": index["sources"],
        "splits": {k: {kk: vv for kk, vv in v.items() if kk != "ids"} for k, v in index["splits"].items()},
        "failures_by_kind": dict(failures),
        "stats_summary": st.stdout,
    }
    (args.results / f"{args.name}_build.json").write_text(json.dumps(record, indent=1) + "\n")
    c = index["counts"]
    md = [
        f"# Dataset build ({args.name})",
        "",
        f"- command: `{record['command']}`",
        f"- statistics: `{record['stats_command']}`",
        f"- date: {record['date']}; machine: {info['cpu']}, {info['cores']} cores, load average "
        f"{info['load_average_at_start'][0]:.1f} at start, {info['load_average_at_end'][0]:.1f} at end "
        "(shared with other jobs: times are noisy upper bounds)",
        f"- **{c['datasets']} simulated data sets** of {c['structures']} structures, {c['reflections']:,} reflections, "
        f"{record['size_bytes'] / 1e6:.0f} MB on disk",
        f"- **wall time {wall / 60:.1f} min** ({args.executor}, {args.workers} workers): structures "
        f"{index['timings']['structures_seconds']:.0f} s, simulation {index['timings']['simulation_seconds']:.0f} s "
        f"(task time {index['timings']['task_seconds_simulation']:.0f} s)",
        "- splits: " + ", ".join(f"{k} {v['structures']} structures / {v['datasets']} data sets"
                                 for k, v in record["splits"].items()),
        "- sources: " + ", ".join(f"{k} {v['built']}/{v['tasks']}" for k, v in index["sources"].items()),
        "- not built or excluded: " + ", ".join(f"{k} {v}" for k, v in failures.most_common()),
        "",
        "## Statistics",
        "",
        st.stdout.strip(),
        "",
        f"![statistics]({stats_png.name})",
        "",
    ]
    (args.results / f"{args.name}_build.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
