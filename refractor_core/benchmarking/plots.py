"""Benchmark figures (matplotlib, Agg): R1 histogram, subsets, space-group accuracy, time.

- `r1_hist.png`: R1 of the best candidate per case, the R1 < 5 % region shaded, the
  success threshold marked; failed cases counted in the title.
- `subsets.png`: success rate, median R1 and R1 box plots for all cases and the subsets
  low-symmetry (triclinic/monoclinic), light-atom only (Z <= 10) and heavy-atom (Z > 36).
- `sg_accuracy.png`: space group found = true, per crystal system.
- `time.png`: seconds per case (one horizontal bar each) split by pipeline stage.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .runner import SUBSETS

SUBSET_LABELS = {"all": "all", "low_symmetry": "low symmetry\n(tri/monoclinic)",
                 "light_only": "light atoms only\n(Z ≤ 10)", "heavy_atom": "heavy atom\n(Z > 36)"}
STAGE_COLOURS = {"build": "#bbbbbb", "encoder": "#66ccee", "classifier": "#4477aa", "generator": "#228833",
                 "refiner": "#ccbb44", "ranker": "#ee6677", "other": "#aa3377"}
CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _r1(rows) -> np.ndarray:
    return np.array([r.get("r1", float("nan")) for r in rows], dtype=float)


def plot_r1_histogram(rows: list[dict[str, Any]], path: Path, title: str, r1_threshold: float) -> Path:
    plt = _plt()
    r1 = _r1(rows)
    finite = r1[np.isfinite(r1)]
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=120)
    hi = min(1.0, max(0.2, 1.1 * float(np.max(finite)) if len(finite) else 0.6))
    ax.axvspan(0, 0.05, color="#228833", alpha=0.18, label="R1 < 5 %")
    bins = np.linspace(0, hi, int(round(hi / 0.01)) + 1 if hi <= 0.3 else 31)  # 0.01 wide when it fits
    ax.hist(np.clip(finite, 0, hi), bins=bins, color="#4477aa", edgecolor="white", label="cases")
    ax.axvline(r1_threshold, color="#cc3311", ls="--", lw=1.2, label=f"solved if R1 ≤ {r1_threshold:g} and atoms match")
    n_fail = int(np.sum(~np.isfinite(r1)))
    below = int(np.sum(finite < 0.05))
    ax.set_xlabel("R1 of the best refined candidate (I > 2σ)")
    ax.set_ylabel("cases")
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"{title}\n{len(rows)} cases: {below} with R1 < 5 %, {n_fail} without a result", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_subsets(rows: list[dict[str, Any]], summary: dict[str, Any], path: Path, title: str) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), dpi=120)
    labels = [f"{SUBSET_LABELS[s]}\nn = {summary[s]['n']}" for s in SUBSETS]
    x = np.arange(len(SUBSETS))
    rates = [summary[s]["success_rate"] if summary[s]["n"] else 0.0 for s in SUBSETS]
    ax = axes[0]
    bars = ax.bar(x, [100 * (r if math.isfinite(r) else 0) for r in rates], color="#228833")
    for b, s in zip(bars, SUBSETS):
        n = summary[s]["n"]
        ax.text(b.get_x() + b.get_width() / 2, b.get_height() + 1, f"{summary[s]['solved']}/{n}", ha="center", fontsize=9)
    ax.set_ylim(0, 110)
    ax.set_ylabel("success rate (%)")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_title("success rate")
    ax = axes[1]
    med = [summary[s]["median_r1"] for s in SUBSETS]
    ax.bar(x, [m if math.isfinite(m) else 0 for m in med], color="#4477aa")
    for i, m in enumerate(med):
        ax.text(i, (m if math.isfinite(m) else 0) + 0.005, "–" if not math.isfinite(m) else f"{m:.3f}", ha="center", fontsize=9)
    ax.axhline(0.05, color="#228833", ls=":", lw=1)
    finite_med = [m for m in med if math.isfinite(m)]
    ax.set_ylim(0, max([0.06] + [1.25 * m + 0.01 for m in finite_med]))
    ax.set_ylabel("median R1 (cases with a result)")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_title("median R1")
    ax = axes[2]
    data = []
    for s in SUBSETS:
        r1 = _r1([r for r in rows if s == "all" or r.get(s)])
        data.append(r1[np.isfinite(r1)])
    ax.axhspan(0, 0.05, color="#228833", alpha=0.15)
    ax.boxplot([d if len(d) else [np.nan] for d in data], tick_labels=labels, showfliers=True)
    for i, d in enumerate(data):
        if len(d):
            jitter = np.random.default_rng(i).uniform(-0.12, 0.12, size=len(d))
            ax.scatter(np.full(len(d), i + 1) + jitter, d, s=8, alpha=0.5, color="#4477aa")
    ax.set_ylabel("R1")
    ax.tick_params(axis="x", labelsize=8)
    ax.set_title("R1 by subset")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_sg_accuracy(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.5, 4.8), dpi=120)
    systems = [s for s in CRYSTAL_SYSTEMS if any(r.get("crystal_system") == s for r in rows)]
    acc, ns, top3 = [], [], []
    for s in systems:
        sel = [r for r in rows if r.get("crystal_system") == s]
        ns.append(len(sel))
        acc.append(100 * sum(bool(r.get("sg_correct")) for r in sel) / len(sel))
        top3.append(100 * sum(1 for r in sel if 0 < int(r.get("sg_rank") or 0) <= 3) / len(sel))
    x = np.arange(len(systems))
    ax.bar(x - 0.2, acc, 0.4, label="best candidate's group = true", color="#4477aa")
    ax.bar(x + 0.2, top3, 0.4, label="true group among the top-3 hypotheses", color="#88ccee")
    for i in range(len(systems)):
        ax.text(i - 0.2, acc[i] + 1.5, f"{acc[i]:.0f}", ha="center", fontsize=8)
        ax.text(i + 0.2, top3[i] + 1.5, f"{top3[i]:.0f}", ha="center", fontsize=8)
    total = 100 * sum(bool(r.get("sg_correct")) for r in rows) / max(len(rows), 1)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{s}\nn = {n}" for s, n in zip(systems, ns)], fontsize=9)
    ax.set_ylim(0, 110)
    ax.set_ylabel("cases (%)")
    ax.set_title(f"{title}: space-group accuracy {total:.0f} % overall", fontsize=10, pad=26)
    ax.legend(fontsize=8, ncol=2, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _short(name: str, width: int = 38) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def plot_time(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Horizontal stacked bars, one per case (slowest at the top), split by pipeline stage."""
    plt = _plt()
    order = sorted(rows, key=lambda r: r.get("seconds", 0.0))
    n = len(order)
    fig, ax = plt.subplots(figsize=(10, max(3.2, 0.24 * n + 1.9)), dpi=120)
    left = np.zeros(n)
    y = np.arange(n)
    for st, label, colour, vals in _stage_times(order):
        if vals.sum() > 0:
            ax.barh(y, vals, left=left, color=colour, label=label, height=0.8)
            left += vals
    other = np.array([max(float(r.get("seconds", 0.0)) - b, 0.0) for r, b in zip(order, left)])
    ax.barh(y, other, left=left, color=STAGE_COLOURS["other"], label="loading, reference R1, matching", height=0.8)
    if n <= 80:
        ax.set_yticks(y)
        ax.set_yticklabels([_short(str(r["case"])) for r in order], fontsize=7 if n > 25 else 8)
    else:
        ax.set_ylabel("cases (sorted by time)")
    ax.set_ylim(-0.6, n - 0.4)
    secs = [r.get("seconds", 0.0) for r in rows]
    ax.set_xlabel("seconds per case")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"{title}: time per case (median {np.median(secs) if secs else 0:.1f} s, total {sum(secs):.0f} s)",
                 fontsize=10)
    ax.legend(fontsize=7, loc="lower right", framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _stage_times(rows: list[dict[str, Any]]):
    """(stage, label, colour, seconds per row) in pipeline order; the refiner's time split
    into screening, full refinement and the rest when the pipeline reports them."""
    def t(key: str) -> np.ndarray:
        return np.array([float(r.get(f"t_{key}", 0.0) or 0.0) for r in rows])

    out = []
    for st in ("build", "encoder", "classifier", "generator", "refiner", "ranker"):
        if st == "refiner" and (t("screening").sum() > 0 or t("refinement").sum() > 0):
            screening, full = t("screening"), t("refinement")
            out.append(("screening", "refiner: screening", "#eedd88", screening))
            out.append(("refinement", "refiner: full refinement", STAGE_COLOURS["refiner"], full))
            out.append(("refiner", "refiner: not split by step", "#999933", np.maximum(t("refiner") - screening - full, 0.0)))
            continue
        out.append((st, st, STAGE_COLOURS[st], t(st)))
    # steps a newer pipeline reports that are not part of the stages above (e.g. symmetry_upgrade)
    known = {"build", "encoder", "classifier", "generator", "refiner", "ranker", "screening", "refinement"}
    extra = sorted({k[2:] for r in rows for k in r if k.startswith("t_") and k[2:] not in known})
    for key, colour in zip(extra, ("#77aadd", "#ee8866", "#44bb99", "#dddddd", "#bbcc33")):
        out.append((key, key.replace("_", " "), colour, t(key)))
    return out


def write_plots(rows, summary, folder: Path, title: str, r1_threshold: float) -> dict[str, str]:
    """All benchmark figures into `folder`; returns name -> path."""
    folder = Path(folder)
    return {
        "r1_hist": str(plot_r1_histogram(rows, folder / "r1_hist.png", title, r1_threshold)),
        "subsets": str(plot_subsets(rows, summary, folder / "subsets.png", title)),
        "sg_accuracy": str(plot_sg_accuracy(rows, folder / "sg_accuracy.png", title)),
        "time": str(plot_time(rows, folder / "time.png", title)),
    }
