"""Statistics of a built dataset and its figure (like the paper's Fig. 3b-d).

`dataset_stats(ds)` counts structures per element, atoms per asymmetric unit, crystal
systems, sources, kinds and splits, and summarises the simulated data sets (wavelength,
d_min, median I/σ, reflections). `plot_stats(stats, path)` draws a periodic-table heat map
of element occurrence, a histogram of atoms per asymmetric unit, crystal-system bars per
split, and the resolution / I/σ distributions of the data sets.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .store import Dataset

CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")

#: periodic-table layout: period rows, 18 groups; lanthanides/actinides on rows 8 and 9
_PT_ROWS = [
    "H . . . . . . . . . . . . . . . . He",
    "Li Be . . . . . . . . . . B C N O F Ne",
    "Na Mg . . . . . . . . . . Al Si P S Cl Ar",
    "K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr",
    "Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe",
    "Cs Ba * Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn",
    "Fr Ra ** Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og",
    ". . La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu .",
    ". . Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr .",
]


def periodic_positions() -> dict[str, tuple[int, int]]:
    """element -> (row, column) in the 9 x 18 layout above."""
    pos = {}
    for r, line in enumerate(_PT_ROWS):
        for c, el in enumerate(line.split()):
            if el not in (".", "*", "**"):
                pos[el] = (r if r < 7 else r + 0, c)
    return pos


def dataset_stats(ds: Dataset) -> dict[str, Any]:
    """Counts and distributions of a dataset (JSON-serialisable)."""
    t = ds.structure_table()
    elements = Counter()
    for els in t.column("elements").to_pylist():
        elements.update(set(els))
    n_sites = t.column("n_sites").to_pylist()
    systems = Counter(zip(t.column("split").to_pylist(), t.column("crystal_system").to_pylist()))
    by_split: dict[str, dict[str, int]] = {}
    for (split, system), n in systems.items():
        by_split.setdefault(split, {s: 0 for s in CRYSTAL_SYSTEMS})[system] += n
    wl, dmin, isig, nref, red = [], [], [], [], []
    for shard in ds.shards:
        import pyarrow.parquet as pq

        tab = pq.read_table(shard, columns=["params_json", "n"])
        import json

        for pj, n in zip(tab.column("params_json").to_pylist(), tab.column("n").to_pylist()):
            p = json.loads(pj)
            wl.append(p["wavelength"])
            dmin.append(p.get("d_min_used", p["d_min"]))
            isig.append(p["noise"]["median_i_over_sigma"])
            red.append(p["redundancy"])
            nref.append(n)
    sg_numbers = Counter(t.column("space_group_number").to_pylist())
    return {
        "structures": t.num_rows,
        "datasets": len(nref),
        "sources": dict(Counter(t.column("source").to_pylist())),
        "kinds": dict(Counter(t.column("kind").to_pylist())),
        "splits": dict(Counter(t.column("split").to_pylist())),
        "space_groups": len(sg_numbers),
        "top_space_groups": [[int(k), int(v)] for k, v in sg_numbers.most_common(10)],
        "elements": dict(sorted(elements.items(), key=lambda kv: -kv[1])),
        "atoms_per_asu": {
            "median": float(np.median(n_sites)) if n_sites else 0.0,
            "p90": float(np.percentile(n_sites, 90)) if n_sites else 0.0,
            "max": int(max(n_sites)) if n_sites else 0,
            "values": [int(x) for x in n_sites],
        },
        "crystal_systems": by_split,
        "data": {
            "wavelengths": {f"{k:.5f}": int(v) for k, v in Counter(wl).items()},
            "d_min": [float(x) for x in dmin],
            "median_i_over_sigma": [float(x) for x in isig],
            "reflections": [int(x) for x in nref],
            "unmerged_fraction": float(np.mean(np.array(red) > 1.0)) if red else 0.0,
            "reflections_total": int(sum(nref)),
        },
    }


def summary_text(stats: dict[str, Any]) -> str:
    """A short human-readable summary (markdown)."""
    d = stats["data"]
    lines = [
        f"- structures: {stats['structures']} ({', '.join(f'{k} {v}' for k, v in sorted(stats['sources'].items()))})",
        f"- kinds: {', '.join(f'{k} {v}' for k, v in sorted(stats['kinds'].items()))}",
        f"- splits (structures): {', '.join(f'{k} {v}' for k, v in sorted(stats['splits'].items()))}",
        f"- simulated data sets: {stats['datasets']}, reflections {d['reflections_total']:,}"
        f" (median {int(np.median(d['reflections'])) if d['reflections'] else 0} per data set);"
        f" unmerged {100 * d['unmerged_fraction']:.0f} %",
        f"- space groups: {stats['space_groups']} distinct; elements: {len(stats['elements'])}",
        f"- atoms per asymmetric unit: median {stats['atoms_per_asu']['median']:g},"
        f" 90th percentile {stats['atoms_per_asu']['p90']:g}, max {stats['atoms_per_asu']['max']}",
        f"- wavelengths: {', '.join(f'{k} Å × {v}' for k, v in sorted(d['wavelengths'].items()))}",
    ]
    if d["d_min"]:
        lines.append(
            f"- d_min: median {np.median(d['d_min']):.2f} Å (range {min(d['d_min']):.2f}-{max(d['d_min']):.2f});"
            f" median I/σ target: median {np.median(d['median_i_over_sigma']):.1f}"
        )
    return "\n".join(lines)


def plot_stats(stats: dict[str, Any], path: str | Path, title: str = "refractor dataset") -> Path:
    """Write the statistics figure as PNG (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colors

    fig = plt.figure(figsize=(15, 11), dpi=110)
    gs = fig.add_gridspec(2, 3, height_ratios=[1.35, 1.0], hspace=0.22, wspace=0.28)
    # (b) periodic table heat map
    ax = fig.add_subplot(gs[0, :])
    pos = periodic_positions()
    counts = stats["elements"]
    vmax = max(counts.values()) if counts else 1
    norm = colors.LogNorm(vmin=1, vmax=max(vmax, 2))
    cmap = plt.get_cmap("viridis")
    for el, (r, c) in pos.items():
        y = r + (0.5 if r >= 7 else 0.0)
        n = counts.get(el, 0)
        face = cmap(norm(n)) if n > 0 else (0.93, 0.93, 0.93, 1.0)
        ax.add_patch(plt.Rectangle((c, -y), 0.95, -0.95, facecolor=face, edgecolor="white"))
        dark = n > 0 and norm(n) < 0.6
        ax.text(c + 0.47, -y - 0.36, el, ha="center", va="center", fontsize=9, fontweight="bold",
                color="white" if dark else "black")
        if n:
            ax.text(c + 0.47, -y - 0.72, str(n), ha="center", va="center", fontsize=6.5,
                    color="white" if dark else "black")
    ax.set_xlim(-0.1, 18.1)
    ax.set_ylim(-9.6, 0.1)
    ax.set_aspect("equal")
    ax.set_anchor("C")
    ax.axis("off")
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    cb = fig.colorbar(sm, ax=ax, fraction=0.02, pad=0.01, shrink=0.8, anchor=(0.0, 0.5))
    cb.set_label("structures containing the element")
    ax.set_title(f"{title}: {stats['structures']} structures, {stats['datasets']} simulated data sets — elements",
                 fontsize=12)
    # (c) atoms per asymmetric unit
    ax = fig.add_subplot(gs[1, 0])
    vals = np.array(stats["atoms_per_asu"]["values"])
    if len(vals):
        bins = np.unique(np.round(np.logspace(0, np.log10(max(vals.max(), 2) + 1), 30))).astype(int)
        ax.hist(vals, bins=bins, color="#4477aa", edgecolor="white")
        ax.set_xscale("log")
    ax.set_xlabel("atoms in the asymmetric unit")
    ax.set_ylabel("structures")
    ax.set_title(f"atoms per ASU (median {stats['atoms_per_asu']['median']:g})")
    # (d) crystal systems by split
    ax = fig.add_subplot(gs[1, 1])
    splits = [s for s in ("train", "val", "test") if s in stats["crystal_systems"]]
    x = np.arange(len(CRYSTAL_SYSTEMS))
    width = 0.8 / max(len(splits), 1)
    palette = {"train": "#4477aa", "val": "#ee7733", "test": "#228833"}
    for i, s in enumerate(splits):
        ys = [stats["crystal_systems"][s].get(cs, 0) for cs in CRYSTAL_SYSTEMS]
        ax.bar(x + (i - (len(splits) - 1) / 2) * width, ys, width, label=f"{s} ({stats['splits'].get(s, 0)})",
               color=palette.get(s))
    ax.set_xticks(x)
    ax.set_xticklabels(CRYSTAL_SYSTEMS, rotation=35, ha="right")
    ax.set_ylabel("structures")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("crystal systems by split")
    # data sets: d_min vs median I/σ
    ax = fig.add_subplot(gs[1, 2])
    d = stats["data"]
    if d["d_min"]:
        ax.scatter(d["d_min"], d["median_i_over_sigma"], s=4, alpha=0.4, color="#aa3377")
        ax.set_yscale("log")
    ax.set_xlabel("d_min (Å)")
    ax.set_ylabel("median I/σ of the data set")
    wl = ", ".join(f"{float(k):.3f} Å: {v}" for k, v in sorted(d["wavelengths"].items()))
    ax.set_title("simulated data sets", fontsize=11)
    ax.text(0.02, 0.02, wl, transform=ax.transAxes, fontsize=7.5, va="bottom")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
