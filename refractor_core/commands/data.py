"""`refractor data build|stats`: build a simulated dataset; print and plot its statistics.

    refractor data build -o build/ds                         (all default sources)
    refractor data build -o build/ds --cif-dir ~/cod --random-organic 500 --executor dask
    refractor data stats build/ds --plot stats.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import UsageError
from .common import emit_json, pass_verbosity

SOURCE_OPTIONS = ("aflow", "pyxtal-db", "pyxtal-cifs", "random-inorganic", "random-organic", "substitution")


def executor_options(f):
    """--executor, --scheduler, --workers (shared by data build and benchmark)."""
    for option in reversed([
        click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True,
                      help="Run tasks in this process or on Dask."),
        click.option("--scheduler", default=None, metavar="ADDRESS",
                     help="Dask scheduler address (tcp://host:8786); default: a LocalCluster."),
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="Workers of the LocalCluster (default: CPU count, at most 4)."),
    ]):
        f = option(f)
    return f


@click.group("data")
def command() -> None:
    """Build and inspect training/benchmark datasets of simulated diffraction data."""


@command.command("build")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Dataset folder to write (index.json, structures.parquet, data-*.parquet).")
@click.option("--cif-dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Add every CIF under this folder (e.g. a COD download).")
@click.option("--aflow-dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="AFLOW prototype CIFs (default ../shared/data/structures/aflow-prototypes).")
@click.option("--sources", default=",".join(SOURCE_OPTIONS), show_default=True,
              help="Comma-separated structure sources to use.")
@click.option("--aflow", "n_aflow", type=click.IntRange(min=0), default=None, help="At most N AFLOW prototypes (default all).")
@click.option("--random-inorganic", "n_inorg", type=click.IntRange(min=0), default=250, show_default=True)
@click.option("--random-organic", "n_org", type=click.IntRange(min=0), default=300, show_default=True)
@click.option("--substitution", "n_sub", type=click.IntRange(min=0), default=250, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N structures per file source (quick builds).")
@click.option("--per-structure", type=click.IntRange(min=1, max=50), default=2, show_default=True,
              help="Simulated data sets per structure.")
@click.option("--split", "fractions", default="0.8,0.1,0.1", show_default=True, metavar="TRAIN,VAL,TEST",
              help="Split fractions (by structure family).")
@click.option("--max-reflections", type=click.IntRange(min=100), default=25000, show_default=True,
              help="Shrink the limiting sphere of larger data sets to about this many unique reflections.")
@click.option("--keep-absences", "absences_fraction", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              metavar="FRACTION", help="Share of data sets that keep their systematic absences (noise only), as measured data do.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the whole build.")
@click.option("--json", "as_json", is_flag=True, help="Print the index (without id lists) as JSON.")
@click.option("--force", is_flag=True, help="Write into a folder that already holds a dataset.")
@executor_options
@pass_verbosity
def build(verbosity: int, output: Path, cif_dir, aflow_dir, sources: str, n_aflow, n_inorg, n_org, n_sub, limit,
          per_structure: int, fractions: str, max_reflections: int, absences_fraction: float, seed: int, as_json: bool,
          force: bool,
          executor: str, scheduler, workers) -> None:
    """Build a dataset: structures, leak-free splits and simulated HKL data."""
    from ..datasets.build import BuildConfig, build_dataset
    from ..progress import Progress

    chosen = [s.strip() for s in sources.split(",") if s.strip()]
    unknown = set(chosen) - set(SOURCE_OPTIONS)
    if unknown:
        raise UsageError(f"unknown source(s) {sorted(unknown)}; choose from {', '.join(SOURCE_OPTIONS)}")
    try:
        fr = [float(x) for x in fractions.split(",")]
        if len(fr) != 3 or min(fr) < 0 or sum(fr) <= 0:
            raise ValueError
    except ValueError:
        raise UsageError(f"--split expects three non-negative numbers TRAIN,VAL,TEST, got {fractions!r}") from None
    if (output / "index.json").exists() and not force:
        raise UsageError(f"{output} already holds a dataset", hint="use --force to overwrite, or another --output")
    counts: dict[str, int | None] = {}
    for name, n in (("aflow", n_aflow if n_aflow is not None else limit), ("pyxtal-db", limit), ("pyxtal-cifs", limit),
                    ("random-inorganic", n_inorg), ("random-organic", n_org), ("substitution", n_sub)):
        if name in chosen:
            counts[name] = n
    if cif_dir is not None:
        counts["cif-dir"] = limit
    config = BuildConfig(
        output=output, cif_dir=cif_dir, counts=counts, datasets_per_structure=per_structure,
        fractions=dict(zip(("train", "val", "test"), fr)), seed=seed, max_reflections=max_reflections,
        absences_fraction=absences_fraction,
        **({"aflow_dir": aflow_dir} if aflow_dir is not None else {}),
    )
    index = build_dataset(config, executor=executor, scheduler=scheduler, workers=workers,
                          progress=Progress(verbosity), command=["refractor", *sys.argv[1:]])
    brief = {k: v for k, v in index.items() if k not in ("splits", "failures")}
    brief["splits"] = {k: {kk: vv for kk, vv in v.items() if kk != "ids"} for k, v in index["splits"].items()}
    brief["n_failures"] = len(index["failures"])
    if as_json:
        emit_json(brief)
        return
    c, t = index["counts"], index["timings"]
    click.echo(f"dataset: {output}")
    click.echo(f"structures {c['structures']}, data sets {c['datasets']}, reflections {c['reflections']:,}"
               f" ({c['failed_or_excluded']} tasks failed or excluded; see index.json)")
    click.echo("splits: " + ", ".join(f"{k} {v['structures']} structures / {v['datasets']} data sets"
                                      for k, v in index["splits"].items()))
    click.echo(f"time: {t['wall_seconds']:.0f} s wall (structures {t['structures_seconds']:.0f} s, "
               f"simulation {t['simulation_seconds']:.0f} s, executor {executor})")


@command.command("stats")
@click.argument("dataset", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the statistics figure (PNG).")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
@click.option("--output-json", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the statistics (without per-structure lists) to this JSON file.")
def stats(dataset: Path, plot_path: Path | None, as_json: bool, output_json: Path | None) -> None:
    """Statistics of a dataset: elements, atoms per ASU, crystal systems, data sets."""
    from ..datasets.stats import dataset_stats, plot_stats, summary_text
    from ..datasets.store import open_dataset

    ds = open_dataset(dataset)
    st = dataset_stats(ds)
    compact = _compact(st)
    if plot_path is not None:
        plot_stats(st, plot_path, title=dataset.name)
    if output_json is not None:
        from ..atomic import atomic_write_text

        atomic_write_text(output_json, json.dumps(compact, indent=1) + "\n")
    if as_json:
        emit_json(compact)
        return
    click.echo(f"dataset {dataset}")
    click.echo(summary_text(st))
    if plot_path is not None:
        click.echo(f"plot: {plot_path}")


def _compact(st: dict[str, Any]) -> dict[str, Any]:
    """The statistics without per-item lists (for JSON output)."""
    import numpy as np

    out = {k: v for k, v in st.items() if k not in ("atoms_per_asu", "data")}
    a = st["atoms_per_asu"]
    out["atoms_per_asu"] = {k: v for k, v in a.items() if k != "values"}
    d = st["data"]
    out["data"] = {
        "wavelengths": d["wavelengths"],
        "unmerged_fraction": d["unmerged_fraction"],
        "reflections_total": d["reflections_total"],
        "reflections_median": float(np.median(d["reflections"])) if d["reflections"] else 0.0,
        "d_min_median": float(np.median(d["d_min"])) if d["d_min"] else None,
        "median_i_over_sigma_median": float(np.median(d["median_i_over_sigma"])) if d["median_i_over_sigma"] else None,
    }
    return out
