"""Building a dataset: structures from the sources, splits, simulated data sets, shards.

    build_dataset(BuildConfig(output=Path("build/ds")), executor="dask", workers=2)

1. Task lists from every source (`sources.py`); `realize` runs per task on the executor.
2. Records are filtered: failures are counted, not fatal; duplicates by id dropped; cells
   over `max_atoms_cell` atoms dropped; anything resembling a real evaluation case (same
   non-H elements, same space-group type, cell volume within 3 % or at 1/2 or 2 times) is excluded,
   and a `--cif-dir` inside the real-data folder is refused outright.
3. Splits by structure family (`splits.py`).
4. `datasets_per_structure` simulated data sets per structure, each a pure function of
   (record, k, seed) with parameters from `sampling.py`; the limiting sphere is shrunk when
   a cell would give more than `max_reflections` unique reflections.
5. Parquet shards, structures table and index.json (`store.py`).
"""

from __future__ import annotations

import datetime as _dt
import math
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .. import __version__
from ..errors import UsageError
from ..testing.real_cases import real_data_dir
from . import sources as src
from .sampling import sample_params
from .sources import StructureRecord, StructureTask, stable_seed
from .splits import DEFAULT_FRACTIONS, assign_splits, check_no_leakage
from .store import SCHEMA_VERSION, DataRow, write_index, write_shard, write_structures

DEFAULT_COUNTS: dict[str, int | None] = {
    "aflow": None,  # all
    "pyxtal-db": None,
    "pyxtal-cifs": None,
    "random-inorganic": 250,
    "random-organic": 300,
    "substitution": 250,
}


class BuildConfig(BaseModel):
    """What `refractor data build` builds."""

    model_config = ConfigDict(extra="forbid")

    output: Path
    aflow_dir: Path | None = Field(default_factory=src.default_aflow_dir)
    cif_dir: Path | None = None
    counts: dict[str, int | None] = Field(default_factory=lambda: dict(DEFAULT_COUNTS))
    datasets_per_structure: int = Field(2, ge=1, le=50)
    fractions: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    seed: int = 0
    max_atoms_cell: int = 600
    max_reflections: int = 25000
    unmerged_fraction: float = Field(0.3, ge=0.0, le=1.0)
    #: share of data sets written with their systematic absences (noise only), as measured data have them
    absences_fraction: float = Field(0.0, ge=0.0, le=1.0)
    shard_size: int = Field(250, ge=1)


# --------------------------------------------------------------------------------------
# real-case guard
# --------------------------------------------------------------------------------------


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def refuse_real_data(path: Path | None) -> None:
    """UsageError when `path` is (inside, or contains) the real evaluation data folder."""
    real = real_data_dir()
    if path is None or real is None:
        return
    if _inside(Path(path), real) or _inside(real, Path(path)):
        raise UsageError(
            f"{path} holds the real evaluation cases ({real}); they are never training data",
            hint="point --cif-dir at a folder of other structures",
        )


def real_fingerprints() -> list[tuple[frozenset[str], float, int, str]]:
    """(non-H elements, cell volume, space-group number, name) of every real case's reference."""
    from ..dataio import load_structure
    from ..testing.real_cases import load_cases

    out = []
    for case in load_cases():
        try:
            ref = case.reference if case.data_block is None else Path(f"{case.reference}#{case.data_block}")
            st = load_structure(ref)
        except Exception:  # a reference the reader cannot load cannot leak either
            continue
        els = frozenset(s.element for s in st.sites if s.element not in ("H", "D"))
        out.append((els, st.cell.volume, st.space_group.number, case.name))
    return out


def matches_real_case(record: StructureRecord, fingerprints) -> str | None:
    """Name of the real case this record resembles, if any."""
    els = frozenset(s.element for s in record.structure.sites if s.element not in ("H", "D"))
    v = record.structure.cell.volume
    sg = record.structure.space_group.number
    for f_els, f_v, f_sg, name in fingerprints:
        if els == f_els and sg == f_sg and any(abs(v * k / f_v - 1.0) < 0.03 for k in (0.5, 1.0, 2.0)):
            return name
    return None


# --------------------------------------------------------------------------------------
# tasks run on the executor (module level: picklable)
# --------------------------------------------------------------------------------------


def realize_task(task: StructureTask) -> dict[str, Any]:
    """{'record': StructureRecord | None, 'error': str | None, 'seconds': float}."""
    t0 = time.perf_counter()
    try:
        record = src.realize(task)
        return {"record": record, "error": None, "seconds": time.perf_counter() - t0}
    except Exception as exc:  # recorded per task; one bad structure never stops a build
        return {"record": None, "error": f"{type(exc).__name__}: {exc}"[:300], "seconds": time.perf_counter() - t0}


def _estimated_unique(record: StructureRecord, d_min: float, friedel: bool) -> float:
    from ..crystal.symmetry import SymmetryOps

    n_sym = SymmetryOps.from_space_group(record.structure.space_group).n
    n = 4.0 / 3.0 * math.pi / d_min**3 * record.structure.cell.volume / max(n_sym, 1)
    return n if friedel else 2.0 * n


def keeps_absences(seed: int, record_id: str, k: int, fraction: float) -> bool:
    """Whether data set k of a record keeps its systematic absences: a stable draw of its own,
    so the other parameters of the data set do not depend on `fraction`."""
    return fraction > 0 and (stable_seed(seed, "absences", record_id, k) % 1_000_000) < fraction * 1_000_000


def simulate_task(job: tuple) -> dict[str, Any]:
    """One simulated data set of a record: {'row': DataRow | None, 'error', 'seconds'}.

    `job` = (record, k, seed, unmerged_fraction, max_reflections[, absences_fraction]).
    """
    from ..simulation.simulator import simulate_detailed

    record, k, seed, unmerged_fraction, max_reflections, *rest = job
    absences_fraction = float(rest[0]) if rest else 0.0
    t0 = time.perf_counter()
    try:
        s = stable_seed(seed, "simulate", record.id, k)
        rng = np.random.default_rng(s)
        sg = record.structure.space_group
        params = sample_params(
            rng, kind=record.kind, centrosymmetric=sg.is_centrosymmetric, seed=s, unmerged_fraction=unmerged_fraction
        )
        friedel = sg.is_centrosymmetric or not params.anomalous
        n_est = _estimated_unique(record, params.d_min, friedel)
        if n_est > max_reflections:
            d_new = params.d_min * (n_est / max_reflections) ** (1.0 / 3.0)
            params = params.model_copy(update={"d_min": round(d_new, 3)})
            n_est = max_reflections
        if n_est * params.redundancy > 2 * max_reflections:
            params = params.model_copy(update={"redundancy": max(1.0, 2 * max_reflections / n_est)})
        if keeps_absences(seed, record.id, k, absences_fraction):
            params = params.model_copy(update={"keep_absences": True})
        res = simulate_detailed(record.structure, params)
        stored = res.params.model_dump(mode="json")
        stored["d_min_used"] = res.d_min
        row = DataRow(
            dataset_id=f"{record.id}#{k}",
            structure_id=record.id,
            split=record.split or "",
            params=stored,
            reflections=res.data,
        )
        return {"row": row, "error": None, "seconds": time.perf_counter() - t0}
    except Exception as exc:  # recorded per data set
        return {"row": None, "error": f"{type(exc).__name__}: {exc}"[:300] + " | " + traceback.format_exc(limit=2)[-200:],
                "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------
# the build
# --------------------------------------------------------------------------------------


def make_tasks(config: BuildConfig) -> list[StructureTask]:
    """All structure tasks of the configured sources."""
    tasks: list[StructureTask] = []
    c = config.counts
    seed = config.seed
    if "aflow" in c and config.aflow_dir is not None:
        tasks += src.aflow_tasks(config.aflow_dir, seed, c["aflow"])
    if "pyxtal-db" in c:
        tasks += src.pyxtal_db_tasks(seed, c["pyxtal-db"])
    if "pyxtal-cifs" in c:
        tasks += src.pyxtal_cif_tasks(seed, c["pyxtal-cifs"])
    if config.cif_dir is not None:
        refuse_real_data(config.cif_dir)
        tasks += src.cif_dir_tasks(config.cif_dir, seed, c.get("cif-dir"))
    for name in ("random-inorganic", "random-organic"):
        if c.get(name):
            tasks += src.random_tasks(name, int(c[name]), seed)
    if c.get("substitution") and config.aflow_dir is not None:
        tasks += src.substitution_tasks(config.aflow_dir, int(c["substitution"]), seed)
    unknown = set(c) - set(DEFAULT_COUNTS) - {"cif-dir"}
    if unknown:
        raise UsageError(f"unknown structure source(s) {sorted(unknown)}; sources are {sorted(DEFAULT_COUNTS)}")
    return tasks


def build_dataset(
    config: BuildConfig,
    *,
    executor: str = "local",
    scheduler: str | None = None,
    workers: int | None = None,
    progress: Callable[..., Any] | None = None,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Build the dataset into `config.output`; returns the index written."""
    from ..benchmarking.executors import map_tasks

    refuse_real_data(config.output)
    t_start = time.perf_counter()
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    tasks = make_tasks(config)
    if not tasks:
        raise UsageError("no structure sources selected")

    t0 = time.perf_counter()
    realized = map_tasks(realize_task, tasks, executor=executor, scheduler=scheduler, workers=workers,
                         progress=progress, description="building structures")
    t_structures = time.perf_counter() - t0

    per_source: dict[str, dict[str, int]] = {}
    failures: list[dict[str, str]] = []
    records: list[StructureRecord] = []
    seen: set[str] = set()
    fingerprints = real_fingerprints()
    for task, res in zip(tasks, realized):
        stat = per_source.setdefault(task.source, {"tasks": 0, "built": 0, "failed": 0, "excluded": 0})
        stat["tasks"] += 1
        record = res["record"]
        if record is None:
            stat["failed"] += 1
            failures.append({"task": f"{task.source}:{Path(task.key).name}", "error": res["error"]})
            continue
        reason = None
        if record.id in seen:
            reason = "duplicate id"
        elif record.n_atoms_cell > config.max_atoms_cell:
            reason = f"{record.n_atoms_cell:g} atoms per cell > {config.max_atoms_cell}"
        elif not record.structure.sites:
            reason = "no atoms"
        else:
            real = matches_real_case(record, fingerprints)
            if real:
                reason = f"resembles the real evaluation case {real}"
        if reason:
            stat["excluded"] += 1
            failures.append({"task": record.id, "error": f"excluded: {reason}"})
            continue
        seen.add(record.id)
        stat["built"] += 1
        records.append(record)

    split_of = assign_splits(records, config.fractions, seed=config.seed)
    records = [r.model_copy(update={"split": split_of[r.id]}) for r in records]
    leaks = check_no_leakage(records)
    if leaks:  # cannot happen by construction; a bug if it does
        raise RuntimeError(f"split leakage for keys {leaks[:5]}")

    jobs = [(r, k, config.seed, config.unmerged_fraction, config.max_reflections, config.absences_fraction)
            for r in records for k in range(config.datasets_per_structure)]
    t0 = time.perf_counter()
    simulated = map_tasks(simulate_task, jobs, executor=executor, scheduler=scheduler, workers=workers,
                          progress=progress, description="simulating data sets")
    t_sim = time.perf_counter() - t0

    rows: list[DataRow] = []
    for job, res in zip(jobs, simulated):
        if res["row"] is None:
            failures.append({"task": f"{job[0].id}#{job[1]}", "error": res["error"]})
        else:
            rows.append(res["row"])
    shards = []
    for i in range(0, len(rows), config.shard_size):
        chunk = rows[i : i + config.shard_size]
        name = write_shard(out, i // config.shard_size, chunk)
        shards.append({"file": name, "datasets": len(chunk), "reflections": int(sum(r.reflections.n for r in chunk))})
    write_structures(out, records)

    splits: dict[str, dict[str, Any]] = {}
    for name in config.fractions:
        members = [r for r in records if r.split == name]
        splits[name] = {
            "structures": len(members),
            "datasets": sum(1 for r in rows if r.split == name),
            "groups": len({(r.group, r.formula) for r in members}),
            "ids": [r.id for r in members],
        }
    wall = time.perf_counter() - t_start
    index = {
        "schema_version": SCHEMA_VERSION,
        "format": "refractor-dataset",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "refractor_version": __version__,
        "command": command or [],
        "config": config.model_dump(mode="json"),
        "seed": config.seed,
        "sources": per_source,
        "counts": {
            "structures": len(records),
            "datasets": len(rows),
            "reflections": int(sum(r.reflections.n for r in rows)),
            "failed_or_excluded": len(failures),
        },
        "splits": splits,
        "split_rule": "structures sharing an AFLOW prototype label or a reduced formula are one component; "
        "components are assigned whole to train/val/test (see docs/datasets.md)",
        "simulation": "parameters drawn per data set by refractor_core.datasets.sampling.sample_params; "
        "each data set's parameters are stored with it (params_json)",
        "timings": {
            "executor": executor,
            "workers": workers,
            "scheduler": scheduler,
            "structures_seconds": round(t_structures, 2),
            "simulation_seconds": round(t_sim, 2),
            "wall_seconds": round(wall, 2),
            "task_seconds_structures": round(sum(r["seconds"] for r in realized), 2),
            "task_seconds_simulation": round(sum(r["seconds"] for r in simulated), 2),
        },
        "shards": shards,
        "failures": failures[:500],
    }
    write_index(out, index)
    return index
