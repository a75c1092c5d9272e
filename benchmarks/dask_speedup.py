"""Benchmark: the Dask executor against the local one — identical results, speed-up 1 -> 2 workers.

    .venv/bin/python benchmarks/dask_speedup.py [--structures 200] [--cases 8] [--name dask_speedup]

Workload 1 (dataset builder): simulate two data sets for each of N fixed structures (AFLOW
prototypes and random molecular crystals, built once beforehand, untimed) with
`refractor_core.datasets.build.simulate_task`, on the local executor, on Dask with one
worker and on Dask with two workers (LocalCluster, processes, one thread each). Workload 2
(benchmark harness): `run_case` on a few simulated cases with the default pipeline
(charge-flip stops on a deterministic work budget, not on wall-clock time, so results
cannot depend on machine load). The 1-minute load average is recorded before and after
every timed run: on a shared machine the speed-up is only as good as those numbers.

Identity: every data set (indices, intensities, σ) and every case row (status, R1, wR2,
space group, matched fraction, seed) must be equal bit for bit across executors.

Times: the speed-up is measured on warm executors — the cluster started and every worker
(and, for `local`, this process) having run one task of the workload, so imports and
caches are not counted; the start-up (cluster and warm-up task) is reported separately,
since on a small workload it dominates. Results go to benchmarks/results/<name>.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.build_dataset import machine  # noqa: E402


def digest_rows(results) -> str:
    h = hashlib.sha256()
    for r in results:
        d = r["row"].reflections
        for arr in (d.hkl, d.intensity, d.sigma):
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


CASE_KEYS = ("case", "status", "r1", "wr2", "goof", "sg_found", "fraction_matched", "element_agreement", "seed")


def digest_cases(rows) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps([r.get(k) if not (isinstance(r.get(k), float) and math.isnan(r.get(k))) else "nan"
                             for k in CASE_KEYS]).encode())
    return h.hexdigest()[:16]


def _finite(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def timed(fn, *args, **kw):
    """(result, seconds, (load average before, after)) of fn(*args, **kw)."""
    before = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0, (round(before, 2), round(os.getloadavg()[0], 2))


def run_three(fn, jobs) -> dict:
    """fn over jobs on local, Dask 1 worker and Dask 2 workers, each warm (see the module doc):
    label -> (results, seconds, (load before, after), start-up seconds or None)."""
    from dask.distributed import Client

    from refractor_core.benchmarking.executors import _single_thread, local_cluster, map_tasks

    out = {}
    _single_thread(fn, jobs[0])  # warm this process like the workers
    res, sec, load = timed(map_tasks, fn, jobs, executor="local")
    out["local"] = (res, sec, load, None)
    for n in (1, 2):
        t0 = time.perf_counter()
        cluster = local_cluster(n)  # the cluster `--executor dask` starts
        client = Client(cluster)
        try:
            client.run(_single_thread, fn, jobs[0])  # every worker runs one task: imports, caches
            startup = time.perf_counter() - t0
            res, sec, load = timed(map_tasks, fn, jobs, executor="dask", scheduler=cluster.scheduler_address)
        finally:
            client.close()
            cluster.close()
        out[f"dask-{n}"] = (res, sec, load, round(startup, 2))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--structures", type=int, default=200)
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="dask_speedup")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")

    from refractor_core.benchmarking.runner import CaseOptions, run_case
    from refractor_core.benchmarking.suites import simulated_specs
    from refractor_core.datasets import BuildConfig, build_dataset
    from refractor_core.datasets.build import simulate_task
    from refractor_core.datasets.sources import aflow_tasks, default_aflow_dir, random_tasks, realize
    from refractor_core.types import RunConfig

    info = machine()
    # fixed structures (untimed)
    n_af = args.structures // 2
    tasks = aflow_tasks(default_aflow_dir(), args.seed)[::7][:n_af] + random_tasks("random-organic", args.structures - n_af, args.seed)
    records = []
    for t in tasks:
        try:
            records.append(realize(t).model_copy(update={"split": "train"}))
        except Exception:  # noqa: BLE001 - a structure pyxtal cannot build is skipped
            pass
    jobs = [(r, k, args.seed, 0.3, 25000) for r in records for k in range(2)]

    sim = {}
    for label, (out, sec, load, startup) in run_three(simulate_task, jobs).items():
        sim[label] = {"seconds": round(sec, 2), "startup_seconds": startup, "digest": digest_rows(out),
                      "failed": sum(r["row"] is None for r in out), "load_average_before_after": load}
        print(label, sim[label], flush=True)

    # benchmark cases from a small dataset built for the purpose
    tmp = ROOT / "build" / "dask-speedup-ds"
    build_dataset(BuildConfig(output=tmp, counts={"aflow": 40}, datasets_per_structure=1,
                              fractions={"train": 0.5, "val": 0.0, "test": 0.5}, seed=args.seed))
    specs = simulated_specs(tmp, "test", limit=args.cases)
    config = RunConfig(components={
        "classifier": "absences", "generator": "charge-flip", "refiner": "lsq", "ranker": "r1"}, seed=args.seed)
    cjobs = [(s, config.model_dump(mode="json"), args.seed, CaseOptions(reference_r1=False)) for s in specs]
    bench = {}
    for label, (rows, sec, load, startup) in run_three(run_case, cjobs).items():
        bench[label] = {"seconds": round(sec, 2), "startup_seconds": startup, "digest": digest_cases(rows),
                        "statuses": sorted({r["status"] for r in rows}), "load_average_before_after": load,
                        "rows": [{k: _finite(r.get(k)) for k in CASE_KEYS} for r in rows]}
        print(label, bench[label], flush=True)

    def speed(d):
        return round(d["dask-1"]["seconds"] / d["dask-2"]["seconds"], 2)

    record = {
        "command": f".venv/bin/python benchmarks/dask_speedup.py --structures {args.structures} --cases {args.cases}",
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": info | {"load_average_at_end": os.getloadavg()},
        "note": "2 cores shared with other developers' jobs: speed-ups are noisy (see the load averages "
                "before/after each timed run); the ideal is 2.0",
        "simulation": {"jobs": len(jobs), "structures": len(records), **sim,
                       "identical": len({v["digest"] for v in sim.values()}) == 1, "speedup_1_to_2_workers": speed(sim)},
        "benchmark": {"cases": len(specs), **bench, "identical": len({v["digest"] for v in bench.values()}) == 1,
                      "speedup_1_to_2_workers": speed(bench)},
    }
    (args.results / f"{args.name}.json").write_text(json.dumps(record, indent=1) + "\n")
    md = [
        "# Dask executor: identical results, speed-up from 1 to 2 workers", "",
        f"- command: `{record['command']}`",
        f"- date: {record['date']}; machine: {info['cpu']}, {info['cores']} cores; load average "
        f"{info['load_average_at_start'][0]:.1f} at start, {record['machine']['load_average_at_end'][0]:.1f} at end "
        "(shared with other jobs: noisy)", "",
        "| workload | tasks | local s | Dask 1 worker s | Dask 2 workers s | speed-up 1→2 | identical |",
        "|---|---|---|---|---|---|---|",
        f"| simulate data sets (data build) | {len(jobs)} | {sim['local']['seconds']} | {sim['dask-1']['seconds']} | "
        f"{sim['dask-2']['seconds']} | {speed(sim)} | {record['simulation']['identical']} |",
        f"| benchmark cases (full pipeline) | {len(specs)} | {bench['local']['seconds']} | {bench['dask-1']['seconds']} | "
        f"{bench['dask-2']['seconds']} | {speed(bench)} | {record['benchmark']['identical']} |", "",
        "Seconds of warm executors (see below); start-up of the LocalCluster plus one warm-up task per worker, "
        f"not included above: simulate {sim['dask-1']['startup_seconds']} s (1 worker) / "
        f"{sim['dask-2']['startup_seconds']} s (2 workers), benchmark {bench['dask-1']['startup_seconds']} s / "
        f"{bench['dask-2']['startup_seconds']} s.", "",
        "1-minute load average before → after each timed run (2 cores; anything above ~2 means other jobs "
        "competed for the cores, so the speed-up understates what 2 free cores give):", "",
        "| workload | local | Dask 1 worker | Dask 2 workers |", "|---|---|---|---|",
        *(f"| {name} | " + " | ".join(f"{d[k]['load_average_before_after'][0]} → {d[k]['load_average_before_after'][1]}"
                                      for k in ("local", "dask-1", "dask-2")) + " |"
          for name, d in (("simulate", sim), ("benchmark", bench))), "",
        "Warm: the LocalCluster (processes, one thread per worker) started and every worker (for local: this "
        "process) having run one task of the workload before the clock starts. Identical = equal digests of "
        "every data set's indices, intensities and σ / every case's status, R1, wR2, GooF, space group, matched "
        "fraction and seed.", "",
    ]
    (args.results / f"{args.name}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
