"""One benchmark run: resolve components, run every case on an executor, write the results.

    result = run_benchmark(specs, config, options, output=Path("bench"), executor="dask")

Outputs (staged, moved into place only when complete): `cases.csv` and `cases.json` (one
row per case), `summary.json` and `summary.md` (overall and per subset), the figures
(`plots.py`), and `manifest.json` (resolved configuration, seed, versions).

Components: a stage the user named must exist (a usage error otherwise, with "did you
mean"). A stage left at its default whose default component is not installed falls back
to an installed component of that kind, with a note, so the harness runs with whatever
exists; a stage with nothing installed makes every case fail, recorded per case.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from ..types import RunConfig
from .executors import map_tasks
from .runner import CaseOptions, run_case, summarize, summary_markdown
from .suites import CaseSpec

log = logging.getLogger("refractor.benchmark")

#: preferred fallbacks when a default component is missing (first installed wins)
PREFERRED = {"ranker": ("composite", "r1", "wr2"), "refiner": ("lsq",), "generator": ("charge-flip",),
             "classifier": ("absences",)}


def resolve_components(config: RunConfig, explicit: set[str], registry=None) -> tuple[RunConfig, list[str]]:
    """Check named components; replace missing defaults by installed ones (see module doc)."""
    from ..plugins import get_registry

    registry = registry or get_registry()
    components = dict(config.components)
    notes = []
    for stage, name in config.components.items():
        if stage == "reader" or not name:
            continue
        if name in registry.names(stage):
            continue
        if stage in explicit:
            registry.spec(stage, name)  # raises UsageError with "did you mean"
        installed = registry.names(stage)
        pick = next((p for p in PREFERRED.get(stage, ()) if p in installed), installed[0] if installed else None)
        if pick is None:
            notes.append(f"no {stage} is installed: every case will fail at that stage")
            continue
        components[stage] = pick
        notes.append(f"default {stage} {name!r} is not installed: using {pick!r}")
    return config.model_copy(update={"components": components}), notes


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_value(r.get(k)) for k in keys})
    return buf.getvalue()


def _csv_value(v):
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}"
    return v


def run_benchmark(
    specs: list[CaseSpec],
    config: RunConfig,
    options: CaseOptions,
    *,
    output: Path | None,
    suite: str,
    title: str | None = None,
    executor: str = "local",
    scheduler: str | None = None,
    workers: int | None = None,
    progress: Callable[..., Any] | None = None,
    command: list[str] | None = None,
    notes: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the pipeline over `specs`; write outputs to `output` (if given); return the record."""
    from ..atomic import OutputFolder, atomic_write_json, atomic_write_text
    from ..manifest import finish_manifest, library_versions, new_manifest, write_manifest

    seed = int(config.seed or 0)
    config = config.model_copy(update={"seed": seed})
    started = time.perf_counter()
    manifest = new_manifest(config, seed=seed, device=options.device, command=command)
    jobs = [(spec, config.model_dump(mode="json"), seed, options) for spec in specs]
    done = [0]

    def report(index: int, row: dict[str, Any]) -> None:
        done[0] += 1
        log.info("[%d/%d] %s: %s, R1 %s, %.0f s", done[0], len(jobs), row.get("case"), row.get("status"),
                 f"{row.get('r1', float('nan')):.4f}", row.get("seconds", 0.0))

    rows = map_tasks(run_case, jobs, executor=executor, scheduler=scheduler, workers=workers,
                     progress=progress, description=f"benchmark {suite}", on_result=report)
    summary = summarize(rows)
    wall = time.perf_counter() - started
    title = title or f"refractor benchmark --suite {suite}"
    record = {
        "suite": suite,
        "title": title,
        "command": command or [],
        "components": {k: v for k, v in config.components.items()},
        "options": config.options,
        "seed": seed,
        "case_options": asdict(options),
        "executor": executor,
        "workers": workers,
        "scheduler": scheduler,
        "wall_seconds": wall,
        "notes": list(notes or []),
        "summary": summary,
        **(extra or {}),
    }
    if output is not None:
        from .plots import write_plots

        with OutputFolder(output) as stage:
            atomic_write_text(stage.path / "cases.csv", rows_to_csv(rows))
            atomic_write_json(stage.path / "cases.json", rows, indent=1)
            plots = write_plots(rows, summary, stage.path, title, options.r1_threshold)
            record["plots"] = {k: str(Path(output) / Path(v).name) for k, v in plots.items()}
            md = summary_markdown(summary, title)
            if command:
                md = f"command: `{' '.join(command)}`\n\n" + md
            md += "\ncomponents: " + ", ".join(f"{k}={v}" for k, v in config.components.items() if v) + "\n"
            if notes:
                md += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
            atomic_write_text(stage.path / "summary.md", md)
            atomic_write_json(stage.path / "summary.json", record, indent=1)
            manifest = manifest.model_copy(update={"versions": library_versions()})
            failed = sum(r.get("status") != "ok" for r in rows)
            write_manifest(finish_manifest(manifest), stage.path)
            del failed
    record["rows"] = rows
    return record


def load_rows(folder: Path) -> list[dict[str, Any]]:
    """The per-case rows of a benchmark output folder."""
    return json.loads((Path(folder) / "cases.json").read_text())


def replot(folder: Path) -> dict[str, str]:
    """Redraw the figures of a benchmark output folder from its cases.json and summary.json
    (after a change to the figures; the results themselves are not touched)."""
    from .plots import write_plots
    from .runner import summarize

    folder = Path(folder)
    rows = load_rows(folder)
    record = json.loads((folder / "summary.json").read_text())
    threshold = float(record.get("case_options", {}).get("r1_threshold", 0.10))
    return write_plots(rows, summarize(rows), folder, record.get("title", "benchmark"), threshold)
