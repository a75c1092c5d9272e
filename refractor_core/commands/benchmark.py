"""`refractor benchmark --suite real|simulated`: the pipeline over a suite, judged per case.

    refractor benchmark --suite real --ranker wr2 -o bench-real
    refractor benchmark --suite simulated --dataset build/ds --limit 50 --executor dask

Writes cases.csv/json, summary.json/md, r1_hist.png, subsets.png, sg_accuracy.png,
time.png and manifest.json into --output (see refractor_core.benchmarking).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..errors import UsageError
from .common import emit_json, pass_verbosity, run_options
from .data import executor_options

STAGES = ("reader", "encoder", "classifier", "generator", "refiner", "ranker")
PIPELINE_STAGES = STAGES[1:]


def stage_options(f):
    """--<stage> NAME and --<stage>-opt KEY=VALUE for every stage."""
    for stage in reversed(STAGES):
        if stage != "reader":
            f = click.option(f"--{stage}-opt", f"{stage}_opt", multiple=True, metavar="KEY=VALUE",
                             help=f"Option of the {stage} (repeatable).")(f)
        f = click.option(f"--{stage}", stage, default=None, metavar="NAME",
                         help=f"{stage.capitalize()} component" + (" ('none' to skip)." if stage in ("encoder", "classifier") else "."))(f)
    return f


def suite_options(f):
    for option in reversed([
        click.option("--suite", type=click.Choice(["real", "simulated"]), required=True, help="Which cases."),
        click.option("--dataset", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
                     help="Dataset folder for --suite simulated (refractor data build)."),
        click.option("--split", default="test", show_default=True, help="Split of the dataset to run."),
        click.option("--cases", default=None, metavar="NAME,...", help="Only these real cases."),
        click.option("--limit", type=click.IntRange(min=1), default=None,
                     help="At most N cases (simulated: a deterministic random sample)."),
        click.option("--max-atoms", type=click.IntRange(min=1), default=None,
                     help="Only cases whose reference has at most N non-H sites in the asymmetric unit."),
        click.option("--given-space-group", is_flag=True,
                     help="Give the pipeline the true space group, as a .ins would (use with --classifier none)."),
        click.option("--keep-absences", is_flag=True,
                     help="Simulated suite: re-simulate each data set with its systematic absences kept."),
        click.option("--r1-threshold", type=float, default=0.10, show_default=True,
                     help="Solved: best R1 at most this ..."),
        click.option("--match-threshold", type=float, default=0.8, show_default=True,
                     help="... and at least this fraction of reference non-H atoms matched within 0.3 Å."),
        click.option("--no-reference-r1", is_flag=True, help="Skip the R1 of the reference model per case."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                     default=None, help="A RunConfig as TOML (as for refractor run)."),
        click.option("--max-hypotheses", type=click.IntRange(min=1), default=None),
        click.option("--candidates", type=click.IntRange(min=1), default=None),
    ]):
        f = option(f)
    return f


def make_specs(suite: str, dataset: Path | None, split: str, cases: str | None, limit: int | None, reader: str | None,
               max_atoms: int | None = None):
    """The case specs of a suite (`max_atoms` filters before `limit`)."""
    from ..benchmarking.suites import real_specs, simulated_specs

    if suite == "real":
        if dataset is not None:
            raise UsageError("--dataset is for --suite simulated")
        names = [c.strip() for c in cases.split(",") if c.strip()] if cases else None
        specs = real_specs(names, reader, max_atoms)
        return specs[:limit] if limit else specs
    if dataset is None:
        raise UsageError("--suite simulated needs --dataset DIR", hint="build one with: refractor data build -o DIR")
    if cases:
        raise UsageError("--cases names real cases; use --limit with --suite simulated")
    return simulated_specs(dataset, split, limit, max_atoms)


def config_from_options(kw: dict[str, Any]):
    """RunConfig from --config and the stage options; the set of explicitly named stages."""
    from .run import build_run_config, stage_options as parse_stage_options

    overrides: dict[str, Any] = {
        "components": {s: kw[s] for s in PIPELINE_STAGES if kw.get(s) is not None},
        "options": {s: parse_stage_options(kw[f"{s}_opt"], f"--{s}-opt") for s in PIPELINE_STAGES if kw.get(f"{s}_opt")},
        "seed": kw.get("seed"),
        "device": kw["device"] if kw.get("device") not in (None, "auto") else None,
        "offline": True if kw.get("offline") else None,
        "max_hypotheses": kw.get("max_hypotheses"),
        "candidates_per_hypothesis": kw.get("candidates"),
    }
    explicit = set(overrides["components"])
    if kw.get("config_file") is not None:
        import tomllib

        try:
            explicit |= set(tomllib.loads(Path(kw["config_file"]).read_text()).get("components", {}))
        except (OSError, tomllib.TOMLDecodeError):
            pass  # build_run_config reports it
    return build_run_config(kw.get("config_file"), overrides), explicit


@click.command("benchmark")
@suite_options
@stage_options
@executor_options
@run_options
@pass_verbosity
def command(verbosity: int, **kw: Any) -> None:
    """Run the pipeline over a benchmark suite and report per case, per subset, with plots.

    \b
    Suites:
      real       the measured cases beside the project (reflections, cell, wavelength,
                 formula and Z only; the space group and model are never given)
      simulated  a split (default: test) of a dataset built by `refractor data build`
    """
    from ..benchmarking.harness import resolve_components, run_benchmark
    from ..benchmarking.runner import CaseOptions
    from ..manifest import choose_seed, resolve_device
    from ..progress import Progress

    config, explicit = config_from_options(kw)
    seed = choose_seed(config.seed)
    device = resolve_device(config.device)
    config, notes = resolve_components(config.model_copy(update={"seed": seed}), explicit)
    if kw["keep_absences"] and kw["suite"] != "simulated":
        raise UsageError("--keep-absences re-simulates data sets: it is for --suite simulated")
    specs = make_specs(kw["suite"], kw["dataset"], kw["split"], kw["cases"], kw["limit"], kw["reader"], kw["max_atoms"])
    if not specs:
        raise UsageError("the suite has no cases")
    options = CaseOptions(reader=kw["reader"], r1_threshold=kw["r1_threshold"], match_threshold=kw["match_threshold"],
                          reference_r1=not kw["no_reference_r1"], device=device, offline=bool(kw["offline"]),
                          given_space_group=kw["given_space_group"], keep_absences=kw["keep_absences"])
    output = kw["output"] or Path(f"benchmark-{kw['suite']}")
    progress = Progress(verbosity)
    for n in notes:
        if verbosity >= 0:
            click.echo(f"note: {n}", err=True)
    extra = {"dataset": str(kw["dataset"]) if kw["dataset"] else None, "split": kw["split"] if kw["suite"] == "simulated" else None,
             "n_cases": len(specs), "max_atoms": kw["max_atoms"], "limit": kw["limit"]}
    record = run_benchmark(
        specs, config, options, output=output, suite=kw["suite"], executor=kw["executor"], scheduler=kw["scheduler"],
        workers=kw["workers"], progress=progress, command=["refractor", *sys.argv[1:]], notes=notes, extra=extra,
    )
    if kw["as_json"]:
        emit_json({k: v for k, v in record.items() if k != "rows"} | {"output": str(output)})
        return
    from ..benchmarking.runner import summary_markdown

    click.echo(summary_markdown(record["summary"], record["title"]))
    click.echo(f"components: {', '.join(f'{k}={v}' for k, v in record['components'].items() if v)}")
    click.echo(f"results: {output}/ (cases.csv, summary.md, r1_hist.png, subsets.png, sg_accuracy.png, time.png)")
