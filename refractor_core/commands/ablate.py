"""`refractor ablate --base run.toml --swap STAGE=A,B,...`: one benchmark per swapped component.

    refractor ablate --base run.toml --swap generator=symmcd,flow,wyckoff-ar,charge-flip --suite real
    refractor ablate --swap ranker=wr2,r1,composite --suite simulated --dataset build/ds --limit 40
    refractor ablate --base run.toml --swap classifier=absences,none --given-space-group --suite real

The base TOML is a RunConfig (as `refractor run --config`), optionally with a [benchmark]
table (suite, dataset, split, cases, limit, max_atoms, given_space_group) that command-line options override. Each
variant writes its own folder with manifest.json; the comparison goes to ablation.md and
ablation.json and is printed (markdown, or JSON with --json).
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Any

import click

from ..errors import UsageError
from .benchmark import make_specs
from .common import emit_json, pass_verbosity, run_options
from .data import executor_options


def _read_base(path: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(RunConfig dict, [benchmark] table) from the base TOML."""
    if path is None:
        return {}, {}
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from None
    bench = doc.pop("benchmark", {})
    if not isinstance(bench, dict):
        raise UsageError(f"{path}: [benchmark] must be a table")
    unknown = set(bench) - {"suite", "dataset", "split", "cases", "limit", "max_atoms", "given_space_group"}
    if unknown:
        raise UsageError(f"{path}: unknown [benchmark] keys {sorted(unknown)}")
    return doc, bench


@click.command("ablate")
@click.option("--base", "base_file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Base RunConfig TOML (with an optional [benchmark] table).")
@click.option("--swap", "swaps", multiple=True, required=True, metavar="STAGE=NAME[,NAME...]",
              help="Components to swap in, one variant each (repeatable).")
@click.option("--suite", type=click.Choice(["real", "simulated"]), default=None, help="Default: from --base, else real.")
@click.option("--dataset", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None)
@click.option("--split", default=None, help="Dataset split (default test).")
@click.option("--cases", default=None, metavar="NAME,...", help="Only these real cases.")
@click.option("--limit", type=click.IntRange(min=1), default=None)
@click.option("--max-atoms", type=click.IntRange(min=1), default=None,
              help="Only cases whose reference has at most N non-H sites in the asymmetric unit.")
@click.option("--given-space-group", is_flag=True, default=None,
              help="Give the true space group as a .ins would (for --swap classifier=absences,none).")
@click.option("--r1-threshold", type=float, default=0.10, show_default=True)
@click.option("--match-threshold", type=float, default=0.8, show_default=True)
@click.option("--no-reference-r1", is_flag=True)
@executor_options
@run_options
@pass_verbosity
def command(verbosity: int, base_file, swaps, suite, dataset, split, cases, limit, max_atoms, given_space_group,
            r1_threshold, match_threshold,
            no_reference_r1, executor, scheduler, workers, seed, device, output, as_json, offline) -> None:
    """Swap one component at a time into a base configuration and compare the benchmarks."""
    from ..benchmarking.ablation import parse_swaps, run_ablation
    from ..benchmarking.harness import resolve_components
    from ..benchmarking.runner import CaseOptions
    from ..manifest import choose_seed, resolve_device
    from ..progress import Progress
    from .run import build_run_config

    doc, bench = _read_base(base_file)
    swap_list = parse_swaps(swaps)
    suite = suite or bench.get("suite", "real")
    dataset = dataset or (Path(bench["dataset"]) if bench.get("dataset") else None)
    split = split or bench.get("split", "test")
    cases = cases or (",".join(bench["cases"]) if isinstance(bench.get("cases"), list) else bench.get("cases"))
    limit = limit or bench.get("limit")
    max_atoms = max_atoms or bench.get("max_atoms")
    given_space_group = bool(given_space_group or bench.get("given_space_group", False))
    overrides: dict[str, Any] = {"seed": seed, "device": device if device != "auto" else None,
                                 "offline": True if offline else None}
    # the base file's RunConfig keys, with command-line values taking precedence
    merged = {**doc, **{k: v for k, v in overrides.items() if v is not None}}
    merged.setdefault("components", {})
    merged.setdefault("options", {})
    base = build_run_config(None, merged)
    explicit = set(doc.get("components", {}))
    base = base.model_copy(update={"seed": choose_seed(base.seed)})
    device_used = resolve_device(base.device)
    base, notes = resolve_components(base, explicit - {s for s, _ in swap_list})
    reader = base.components.get("reader")
    specs = make_specs(suite, dataset, split, cases, limit, reader, max_atoms)
    if not specs:
        raise UsageError("the suite has no cases")
    options = CaseOptions(reader=reader, r1_threshold=r1_threshold, match_threshold=match_threshold,
                          reference_r1=not no_reference_r1, device=device_used, offline=bool(offline),
                          given_space_group=given_space_group)
    out = output or Path(f"ablate-{swap_list[0][0]}")
    for n in notes:
        if verbosity >= 0:
            click.echo(f"note: {n}", err=True)
    result = run_ablation(base, swap_list, specs, options, output=out, suite=suite, executor=executor,
                          scheduler=scheduler, workers=workers, progress=Progress(verbosity),
                          command=["refractor", *sys.argv[1:]],
                          extra={"dataset": str(dataset) if dataset else None, "notes": notes})
    if as_json:
        emit_json({k: v for k, v in result.items() if k != "markdown"} | {"output": str(out)})
        return
    click.echo(result["markdown"])
    click.echo(f"variants: {out}/<stage>-<name>/ ; table: {out}/ablation.md, {out}/ablation.json")

