"""Running the pipeline over a suite: one pure task per case, metrics, summary.

`run_case((spec, config, seed, options))` loads the case, runs `run_pipeline` and judges
the best result; it never raises: a failing case is a row with `status` "failed" (a
`RefractorError`: no candidate, refinement impossible, missing plugin...) or "error" (an
unexpected exception), with the message. Per-case metrics:

- R1, wR2, GooF of the best refined candidate; the R1 of the reference model against the
  same data (kernel `evaluate_model`, no instructions) for scale;
- space group found vs true (same number), the rank of the true number among the hypotheses;
- the fraction of reference non-H sites matched within 0.3 Å after origin/enantiomorph
  matching, element agreement, found atoms on reference sites (`matching.py`);
- solved = R1 <= `r1_threshold` (0.10) and fraction matched >= `match_threshold` (0.8);
- seconds (total and per stage).

Each case's seed is derived from the run seed and the case name, so a case gives the same
result alone, in any order, and on any executor.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..datasets.sources import stable_seed
from .suites import CaseSpec, load_case, subsets_of

R1_THRESHOLD = 0.10
MATCH_THRESHOLD = 0.8
SUBSETS = ("all", "low_symmetry", "light_only", "heavy_atom")


@dataclass(frozen=True)
class CaseOptions:
    """How each case is run and judged (picklable)."""

    reader: str | None = None
    r1_threshold: float = R1_THRESHOLD
    match_threshold: float = MATCH_THRESHOLD
    reference_r1: bool = True
    device: str = "cpu"
    offline: bool = True
    #: the data state the true space group (as a .ins would); meant for runs without a classifier
    given_space_group: bool = False
    #: simulated suite: re-simulate each stored experiment with the systematic absences kept
    keep_absences: bool = False


def case_seed(seed: int, name: str) -> int:
    """The seed of one case: a stable function of the run seed and the case name."""
    return stable_seed(seed, "case", name)


def _nan(x) -> float:
    return float("nan") if x is None else float(x)


def run_case(job: tuple[CaseSpec, dict[str, Any], int, CaseOptions]) -> dict[str, Any]:
    """Run and judge one case; returns a flat, JSON-able row (see the module docstring)."""
    from ..errors import RefractorError
    from ..pipeline import PipelineContext, run_pipeline
    from ..types import RunConfig

    spec, config_dict, seed, options = job
    t0 = time.perf_counter()
    row: dict[str, Any] = {"case": spec.name, "suite": spec.suite, "status": "ok", "error": ""}
    try:
        case = load_case(spec, options.reader, given_space_group=options.given_space_group,
                         keep_absences=options.keep_absences)
    except Exception as exc:  # a case that cannot be loaded is a result too
        row.update(status="load-error", error=f"{type(exc).__name__}: {exc}"[:500], seconds=time.perf_counter() - t0)
        return row
    ref = case.reference
    row.update(
        {
            "true_space_group": ref.space_group.symbol,
            "true_sg_number": ref.space_group.number,
            "crystal_system": ref.space_group.crystal_system,
            "n_reflections": case.data.n,
            "non_h_sites": len([s for s in ref.sites if s.element.upper() not in ("H", "D")]),
            **subsets_of(ref),
            **{f"info_{k}": v for k, v in case.info.items()},
        }
    )
    if options.reference_r1:
        try:
            from ..crystal.evaluation import evaluate_model

            row["r1_reference"] = float(evaluate_model(case.data, ref)["R1"])
        except Exception as exc:  # the reference may use features the kernel lacks
            row["r1_reference"] = float("nan")
            row["error"] = f"reference R1: {type(exc).__name__}: {exc}"[:200]
    s = case_seed(seed, spec.name)
    config = RunConfig.model_validate({**config_dict, "seed": s})
    t1 = time.perf_counter()
    try:
        context = PipelineContext(seed=s, device=options.device, offline=options.offline)
        result = run_pipeline(case.data, config, context)
    except RefractorError as exc:
        row.update(status="failed", error=str(exc)[:500])
        result = None
    except Exception as exc:  # a crashing component is recorded, not fatal
        row.update(status="error", error=f"{type(exc).__name__}: {exc} | {traceback.format_exc(limit=3)[-300:]}"[:800])
        result = None
    row["pipeline_seconds"] = time.perf_counter() - t1
    row["seed"] = s
    best = result.best if result is not None else None
    if best is None:
        row.update({"r1": float("nan"), "wr2": float("nan"), "goof": float("nan"), "sg_found": "",
                    "sg_found_number": 0, "sg_correct": False, "sg_rank": 0, "fraction_matched": 0.0,
                    "element_agreement": 0.0, "found_correct": 0.0, "match_rms": float("nan"), "solved": False})
        if result is not None and best is None:
            row.update(status="failed", error="no refined candidate")
    else:
        sg = best.structure.space_group
        ranks = [h.space_group.number for h in result.hypotheses]
        row.update(
            {
                "r1": float(best.r1),
                "wr2": float(best.wr2),
                "goof": float(best.goof),
                "sg_found": sg.symbol,
                "sg_found_number": sg.number,
                "sg_correct": sg.number == ref.space_group.number,
                "sg_rank": (ranks.index(ref.space_group.number) + 1) if ref.space_group.number in ranks else 0,
                "n_candidates": result.n_candidates,
                **{f"t_{k}": round(v, 4) for k, v in result.timings.items()},
            }
        )
        try:
            from .matching import match_structures

            m = match_structures(best.structure, ref)
            row.update({"fraction_matched": m.fraction_matched, "element_agreement": m.element_agreement,
                        "found_correct": m.found_correct, "match_rms": m.rms, "match_note": m.note})
        except Exception as exc:  # matching must never lose the case
            row.update({"fraction_matched": 0.0, "element_agreement": 0.0, "found_correct": 0.0,
                        "match_rms": float("nan"), "match_note": f"matching failed: {exc}"[:200]})
        r1 = row["r1"]
        row["solved"] = bool(math.isfinite(r1) and r1 <= options.r1_threshold
                             and row["fraction_matched"] >= options.match_threshold)
    row["seconds"] = time.perf_counter() - t0
    return row


# --------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------


def _subset_rows(rows: list[dict[str, Any]], subset: str) -> list[dict[str, Any]]:
    if subset == "all":
        return rows
    return [r for r in rows if r.get(subset)]


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Success rate, median R1, space-group accuracy and time, overall and per subset."""
    out: dict[str, Any] = {}
    for subset in SUBSETS:
        sel = _subset_rows(rows, subset)
        n = len(sel)
        r1 = np.array([r.get("r1", float("nan")) for r in sel], dtype=float)
        finite = r1[np.isfinite(r1)]
        seconds = np.array([r.get("seconds", float("nan")) for r in sel], dtype=float)
        out[subset] = {
            "n": n,
            "solved": int(sum(bool(r.get("solved")) for r in sel)),
            "success_rate": (sum(bool(r.get("solved")) for r in sel) / n) if n else float("nan"),
            "r1_below_5pct": (float(np.sum(finite < 0.05)) / n) if n else float("nan"),
            "median_r1": float(np.median(finite)) if len(finite) else float("nan"),
            "with_result": int(len(finite)),
            "sg_accuracy": (sum(bool(r.get("sg_correct")) for r in sel) / n) if n else float("nan"),
            "median_fraction_matched": float(np.median([r.get("fraction_matched", 0.0) for r in sel])) if n else float("nan"),
            "median_seconds": float(np.nanmedian(seconds)) if n else float("nan"),
            "failed": int(sum(r.get("status") != "ok" for r in sel)),
        }
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r.get("status", "?")] = statuses.get(r.get("status", "?"), 0) + 1
    out["statuses"] = statuses
    out["total_seconds"] = float(np.nansum([r.get("seconds", 0.0) for r in rows]))
    return out


def summary_markdown(summary: dict[str, Any], title: str = "benchmark") -> str:
    """The summary as a markdown table."""
    lines = [f"### {title}", "",
             "| subset | n | solved | success | R1 < 5 % | median R1 | SG accuracy | median matched | median s | failed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for subset in SUBSETS:
        s = summary[subset]
        if not s["n"]:
            lines.append(f"| {subset} | 0 | | | | | | | | |")
            continue
        lines.append(
            f"| {subset} | {s['n']} | {s['solved']} | {100 * s['success_rate']:.0f} % | {100 * s['r1_below_5pct']:.0f} % | "
            f"{_fmt(s['median_r1'])} | {100 * s['sg_accuracy']:.0f} % | {_fmt(s['median_fraction_matched'], 2)} | "
            f"{s['median_seconds']:.1f} | {s['failed']} |"
        )
    lines.append("")
    lines.append("statuses: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["statuses"].items())))
    return "\n".join(lines) + "\n"


def _fmt(x: float, digits: int = 4) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"
