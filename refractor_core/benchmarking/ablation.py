"""Ablation: one benchmark per component swapped into a base configuration, then one table.

A variant is the base RunConfig with one stage's component replaced. Each variant runs the
same cases with the same seed and writes its own folder (cases, summary, plots,
manifest.json) under the ablation output; a component that is not installed is reported
as an unavailable variant instead of stopping the ablation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from ..errors import RefractorError, UsageError
from ..types import RunConfig
from .harness import run_benchmark
from .runner import CaseOptions
from .suites import CaseSpec

COLUMNS = ("variant", "status", "n", "solved", "success", "R1<5%", "median R1", "SG acc.", "median matched",
           "median s", "failed")


def parse_swaps(texts: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """'generator=a,b' ... -> [('generator', 'a'), ('generator', 'b'), ...]."""
    from ..types import STAGES

    out: list[tuple[str, str]] = []
    for text in texts:
        stage, sep, values = text.partition("=")
        stage = stage.strip()
        if not sep or not values.strip():
            raise UsageError(f"--swap expects STAGE=NAME[,NAME...], got {text!r}")
        if stage not in STAGES or stage == "reader":
            raise UsageError(f"--swap: unknown stage {stage!r}; stages are {', '.join(s for s in STAGES if s != 'reader')}")
        for v in values.split(","):
            v = v.strip()
            if v and (stage, v) not in out:
                out.append((stage, v))
    if not out:
        raise UsageError("--swap names no component")
    return out


def run_ablation(
    base: RunConfig,
    swaps: list[tuple[str, str]],
    specs: list[CaseSpec],
    options: CaseOptions,
    *,
    output: Path,
    suite: str,
    executor: str = "local",
    scheduler: str | None = None,
    workers: int | None = None,
    progress: Callable[..., Any] | None = None,
    command: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run every variant; write `ablation.json` and `ablation.md`; return the comparison."""
    from ..atomic import atomic_write_json, atomic_write_text
    from ..plugins import get_registry

    registry = get_registry()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    variants = []
    for stage, name in swaps:
        label = f"{stage}={name}"
        config = base.model_copy(update={"components": {**base.components, stage: None if name in ("none", "off") else name}})
        options_for_stage = {k: v for k, v in config.options.items() if not (k == stage and base.components.get(stage) != name)}
        config = config.model_copy(update={"options": options_for_stage})
        entry: dict[str, Any] = {"variant": label, "stage": stage, "component": name,
                                 "components": dict(config.components), "folder": None}
        if name not in ("none", "off"):
            try:
                registry.spec(stage, name)
            except RefractorError as exc:
                entry.update(status="unavailable", error=str(exc))
                variants.append(entry)
                continue
        folder = output / f"{stage}-{name}"
        try:
            record = run_benchmark(specs, config, options, output=folder, suite=suite,
                                   title=f"ablation {label} ({suite})", executor=executor, scheduler=scheduler,
                                   workers=workers, progress=progress, command=command, extra=extra)
        except RefractorError as exc:  # e.g. an invalid option for this component
            entry.update(status="failed", error=str(exc))
            variants.append(entry)
            continue
        entry.update(status="ok", folder=str(folder), summary=record["summary"], wall_seconds=record["wall_seconds"])
        variants.append(entry)
    result = {"suite": suite, "base": base.model_dump(mode="json"), "swaps": [f"{s}={n}" for s, n in swaps],
              "n_cases": len(specs), "command": command or [], "variants": variants, **(extra or {})}
    md = comparison_markdown(result)
    result["markdown"] = md
    atomic_write_text(output / "ablation.md", md)
    atomic_write_json(output / "ablation.json", result, indent=1)
    return result


def _pct(x) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:.0f} %"


def _num(x, d=4) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{d}f}"


def comparison_markdown(result: dict[str, Any]) -> str:
    """One row per variant (overall figures; subsets are in each variant's summary), then
    one row per case with each variant's R1, space group and matched fraction."""
    lines = [f"### ablation over {result['n_cases']} {result['suite']} cases", ""]
    if result.get("command"):
        lines += [f"command: `{' '.join(result['command'])}`", ""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for v in result["variants"]:
        if v["status"] != "ok":
            msg = v.get("error", "").split("\n")[0][:80]
            lines.append(f"| {v['variant']} | {v['status']}: {msg} |" + " |" * (len(COLUMNS) - 2))
            continue
        s = v["summary"]["all"]
        lines.append(
            f"| {v['variant']} | ok | {s['n']} | {s['solved']} | {_pct(s['success_rate'])} | {_pct(s['r1_below_5pct'])} | "
            f"{_num(s['median_r1'])} | {_pct(s['sg_accuracy'])} | {_num(s['median_fraction_matched'], 2)} | "
            f"{_num(s['median_seconds'], 1)} | {s['failed']} |"
        )
    lines += _per_case_lines(result)
    return "\n".join(lines) + "\n"


def _per_case_lines(result: dict[str, Any]) -> list[str]:
    """Per case: R1 / space group found / fraction matched of every variant that ran."""
    ran = [v for v in result["variants"] if v.get("status") == "ok" and v.get("folder")]
    per_variant = {}
    for v in ran:
        try:
            per_variant[v["variant"]] = {r["case"]: r for r in json.loads((Path(v["folder"]) / "cases.json").read_text())}
        except (OSError, ValueError):
            return []
    if not per_variant:
        return []
    cases = list(next(iter(per_variant.values())))
    lines = ["", "Per case: R1 · space group found · fraction of reference atoms matched (✓ solved)", "",
             "| case | " + " | ".join(per_variant) + " |", "|---|" + "---|" * len(per_variant)]
    for c in cases:
        cells = []
        for rows in per_variant.values():
            r = rows.get(c, {})
            r1 = r.get("r1")
            cells.append("–" if r1 is None or not math.isfinite(r1) else
                         f"{r1:.4f} · {r.get('sg_found') or '?'} · {r.get('fraction_matched', 0.0):.2f}"
                         + (" ✓" if r.get("solved") else ""))
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return lines


def load_ablation(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / "ablation.json").read_text())
