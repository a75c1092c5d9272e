"""Reproduce the published R1 of every real case from its published model (no refinement).

For each case in ../shared/data/real: read the reflections and the published model (CIF or
.res, with the embedded SHELXL instructions when present), merge as SHELXL does, honour
OMIT/SHEL/TWIN/BASF/EXTI/WGHT, fit the scale, and compare R1(I > 2σ) with the published
value. Equivalent to running `refractor rfactor DATA --model MODEL --json` per case.

    python benchmarks/rfactor_real.py

Writes benchmarks/results/rfactor_real.json and .md.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def evaluate_case(case) -> dict:
    from refractor_core.crystal.evaluation import evaluate_model
    from refractor_core.dataio import load_bundle, load_reflections

    t0 = time.perf_counter()
    data = load_reflections(case.reflections)
    bundle = load_bundle(case.reference, block=case.data_block)
    report = evaluate_model(data, bundle.structure, instructions=bundle.instructions)
    report["seconds"] = time.perf_counter() - t0
    report["case"] = case.name
    report["published_R1"] = case.published_r1
    report["difference"] = None if case.published_r1 is None else report["R1"] - case.published_r1
    return report


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from refractor_core.testing.real_cases import load_cases

    rows = []
    for case in load_cases():
        r = evaluate_case(case)
        rows.append(r)
        diff = "" if r["difference"] is None else f"{r['difference']:+.4f}"
        print(f"{case.name:30s} R1 {r['R1']:.4f} published {case.published_r1} {diff} ({r['seconds']:.1f} s)", flush=True)
    with_pub = [r for r in rows if r["difference"] is not None]
    within_3 = sum(abs(r["difference"]) <= 0.003 for r in with_pub)
    within_10 = sum(abs(r["difference"]) <= 0.01 for r in with_pub)
    summary = {
        "command": "python benchmarks/rfactor_real.py",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "cases_with_published_R1": len(with_pub),
        "within_0.003": within_3,
        "within_0.01": within_10,
        "fraction_within_0.003": within_3 / max(len(with_pub), 1),
        "cases": rows,
    }
    out = ROOT / "benchmarks" / "results" / "rfactor_real"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2, default=str))
    lines = [
        "# Published R1 reproduced from the published models",
        "",
        f"Command: `{summary['command']}`; date {summary['date']}; {summary['machine']['platform']}",
        "",
        f"Within 0.003 of the published R1: {within_3}/{len(with_pub)}; within 0.01: {within_10}/{len(with_pub)}.",
        "",
        "| case | space group | unique refl. | I>2σ | dropped | R1 | published | difference | wR2 | GooF | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        dropped = ", ".join(f"{k} {v}" for k, v in r["dropped"].items() if v) or "-"
        diff = "-" if r["difference"] is None else f"{r['difference']:+.4f}"
        pub = "?" if r["published_R1"] is None else f"{r['published_R1']:.4f}"
        lines.append(
            f"| {r['case']} | {r['space_group']} | {r['n_reflections']} | {r['n_gt']} | {dropped} | {r['R1']:.4f} | {pub} | {diff} | "
            f"{r['wR2']:.4f} | {r['GooF']:.2f} | {r['seconds']:.1f} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"within 0.003: {within_3}/{len(with_pub)}; within 0.01: {within_10}/{len(with_pub)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
