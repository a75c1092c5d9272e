"""`refractor run DATA`: determine a structure, data in, refined CIF out.

Every stage is chosen by name (`--classifier absences`, `--ranker r1`, ...) and configured
with `--<stage>-opt key=value` (repeatable; values are parsed as JSON when they can be,
`a.b=1` sets a nested key), validated against that component's Config before any work
starts. `--config run.toml` gives a whole RunConfig; command-line options override it.

Outputs go atomically into `--output` (default `<data stem>_refractor/` beside the data):
the best structure (CIF, .res, ... through `refractor_core.io.outputs`), `report.json` and
`manifest.json`; `--keep N` adds the next candidates as `candidate_2/`, ... An error or an
interrupt leaves no partial output.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from ..errors import PluginError, UsageError
from .common import (data_options, emit_json, flack_line, load_data, pass_verbosity, print_warnings, reading_notes,
                     run_options)

STAGES = ("encoder", "classifier", "generator", "refiner", "ranker")
NONE_NAMES = ("", "none", "null", "off")


def parse_assignment(text: str, option: str) -> tuple[list[str], Any]:
    """'key=value' -> (['key'], value); the value is JSON when it parses, else a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"{option} expects KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.split("."), value


def stage_options(pairs: tuple[str, ...], option: str) -> dict[str, Any]:
    """Nested option dict from repeated KEY=VALUE pairs."""
    out: dict[str, Any] = {}
    for text in pairs:
        path, value = parse_assignment(text, option)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UsageError(f"{option} {text!r}: {part!r} is both a value and a group")
        node[path[-1]] = value
    return out


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_config_file(path: Path) -> dict[str, Any]:
    """A RunConfig as a dict from TOML, from JSON, or from a run's manifest.json."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}, line {exc.lineno}: invalid JSON: {exc.msg}") from None
        if isinstance(data, dict) and "refractor_version" in data and isinstance(data.get("config"), dict):
            data = data["config"]  # a manifest: repeat the run it records
        if not isinstance(data, dict):
            raise UsageError(f"{path}: expected a JSON object")
        return data
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from None


def build_run_config(config_file: Path | None, overrides: dict[str, Any]):
    """A RunConfig from a TOML file (optional) with command-line overrides applied."""
    from ..types import RunConfig

    base: dict[str, Any] = {}
    if config_file is not None:
        base = read_config_file(config_file)
    components = dict(RunConfig().components)
    components.update(base.get("components", {}))
    components.update(overrides.pop("components", {}))
    base["components"] = {k: (None if isinstance(v, str) and v.strip().lower() in NONE_NAMES else v) for k, v in components.items()}
    base["options"] = _merge(base.get("options", {}), overrides.pop("options", {}))
    base.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return RunConfig.model_validate(base)
    except ValidationError as exc:
        where = f"{config_file}: " if config_file else ""
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(config)'}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"{where}invalid run configuration: {problems}") from None


def _stage_options_decorator(f):
    for stage in reversed(STAGES):
        f = click.option(
            f"--{stage}-opt",
            f"{stage}_opt",
            multiple=True,
            metavar="KEY=VALUE",
            help=f"Option of the {stage} (repeatable), checked against its Config.",
        )(f)
        f = click.option(
            f"--{stage}",
            f"{stage}",
            default=None,
            metavar="NAME",
            help=f"{stage.capitalize()} component" + (" ('none' to skip)." if stage in ("encoder", "classifier") else "."),
        )(f)
    return f


@click.command("run")
@data_options
@run_options
@_stage_options_decorator
@click.option("--max-hypotheses", type=click.IntRange(min=1), default=None, help="Space groups to try (default 3).")
@click.option("--candidates", type=click.IntRange(min=1), default=None, help="Candidates per space group (default 4).")
@click.option("--refine-top", type=click.IntRange(min=1), default=None,
              help="Candidates refined fully after all are screened (default 3).")
@click.option("--no-screen", "no_screen", is_flag=True, default=False,
              help="Refine every candidate fully instead of screening them first.")
@click.option("--keep", type=click.IntRange(min=1), default=None, help="Write the best N structures (default 1).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="A RunConfig as TOML or JSON, or a manifest.json to repeat a run; options override it.")
@click.option("--weights", "weights_paths", multiple=True, metavar="NAME=PATH",
              help="Use a local weights file for a learned component (verified against its card).")
@pass_verbosity
def command(verbosity: int, **kw: Any) -> None:
    """Determine a structure: DATA (HKL file + cell + formula) in, refined CIF out.

    \b
    Examples:
      refractor run sample.hkl                      (sample.ins beside it)
      refractor run data.hkl --cell 4.49 12.48 6.89 90 106.3 90 --formula "H O5 Pr S"
      refractor run data.hkl --ranker r1 --refiner-opt max_cycles=20 --json
    """
    started = time.perf_counter()
    from ..dataio import split_block

    data_path: Path = kw["data"]
    data_file, _ = split_block(data_path)  # `file.cif#block` names one block of a CIF
    if not data_file.is_file():
        raise UsageError(f"data file {data_file} does not exist")
    from ..manifest import choose_seed, new_manifest, resolve_device
    from ..plugins import get_registry, warn_problems

    overrides: dict[str, Any] = {
        "components": {s: kw[s] for s in STAGES if kw[s] is not None},
        "options": {s: stage_options(kw[f"{s}_opt"], f"--{s}-opt") for s in STAGES if kw[f"{s}_opt"]},
        "seed": kw["seed"],
        "device": kw["device"] if kw["device"] != "auto" else None,
        "offline": True if kw["offline"] else None,
        "max_hypotheses": kw["max_hypotheses"],
        "candidates_per_hypothesis": kw["candidates"],
        "refine_top": kw["refine_top"],
        "screen": False if kw["no_screen"] else None,
        "keep": kw["keep"],
    }
    if kw["reader"]:
        overrides["components"]["reader"] = kw["reader"]
    config = build_run_config(kw["config_file"], overrides)

    registry = get_registry()
    warn_problems(registry)
    for stage, name in config.components.items():  # fail fast: names and options
        if name:
            registry.validate_options(stage, name, config.options.get(stage))
    weights_paths = {}
    for text in kw["weights_paths"]:
        name, sep, path = text.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise UsageError(f"--weights expects NAME=PATH, got {text!r}")
        weights_paths[name.strip()] = path.strip()

    seed = choose_seed(config.seed)
    device = resolve_device(config.device)
    config = config.model_copy(update={"seed": seed, "device": device})

    from ..pipeline import PipelineContext, run_pipeline
    from ..progress import Progress

    progress = Progress(verbosity)
    try:
        with progress(f"reading {data_path.name}", total=1) as bar:
            data = load_data(
                data_path, ins=kw["ins"], cell=kw["cell"], wavelength=kw["wavelength"],
                formula=kw["formula"], z=kw["z"], reader=config.components.get("reader"),
            )
            bar.update(1)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("refractor"):
            raise PluginError(f"the data readers are not available in this installation ({exc.name} missing)") from None
        raise
    reading_notes(data.notes)

    context = PipelineContext(
        registry=registry, device=device, seed=seed, offline=config.offline,
        progress=progress, weights_paths=weights_paths,
    )
    manifest = new_manifest(config, seed=seed, device=device)
    result = run_pipeline(data, config, context)

    output = (kw["output"] or default_output(data_file)).absolute()
    inputs = [data_file, kw["ins"] or _companion(data_file), kw["config_file"], data.source]
    summary = write_run_outputs(result, data, output, data_file.stem, config, manifest, inputs, registry, started)
    print_warnings(summary["warnings"])
    if kw["as_json"]:
        emit_json(summary)
    else:
        print_summary(summary, verbosity)


def _ranking_warnings(best) -> list[str]:
    """Warnings from the ranker's record of the best model (pseudo-symmetry)."""
    pseudo = best.score_details.get("pseudo_symmetry")
    if not isinstance(pseudo, dict):
        return []
    return [
        f"pseudo-symmetry: {pseudo['fraction_matched']:.0%} of the non-H atoms obey {pseudo['higher_group']} within "
        f"{pseudo['max_distance']:.2f} Å, but some deviate from it by {pseudo['max_deviation_su']:.0f} su and the "
        f"{best.structure.space_group.symbol} model fits significantly better (Hamilton: wR2 ratio "
        f"{pseudo['wR2_ratio']:.3f} > {pseudo['critical_ratio']:.3f}); {best.structure.space_group.symbol} is kept, "
        f"check it against {pseudo['higher_group']} with disorder or twinning"
    ]


def default_output(data_path: Path) -> Path:
    """`<stem>_refractor/` beside the data (the current folder when that is not writable)."""
    import os

    folder = data_path.resolve().parent
    if not os.access(folder, os.W_OK):
        folder = Path.cwd()
    return folder / f"{data_path.stem}_refractor"


def _companion(data_path: Path) -> Path | None:
    """The companion file dataio picks up beside the data (recorded in the manifest)."""
    try:
        from ..dataio import find_companion
    except ImportError:
        return None
    return find_companion(data_path)


def _formula(data, refined) -> str | None:
    if data.formula:
        return data.formula
    counts: dict[str, float] = {}
    for site in refined.structure.sites:
        counts[site.element] = counts.get(site.element, 0.0) + site.occupancy
    try:
        from ..crystal.formula import format_formula

        return format_formula(counts)
    except ImportError:
        return " ".join(f"{el}{n:g}" for el, n in sorted(counts.items()))


def _formula_found(data, refined) -> str | None:
    """The model's contents per formula unit (per cell when Z is unknown), H included."""
    try:
        from ..crystal.formula import format_formula
        from ..simulation.composition import cell_contents_of

        counts = cell_contents_of(refined.structure)
    except Exception:  # noqa: BLE001 - a summary field, never worth failing a run over
        return None
    z = data.z or 1.0
    return format_formula({e: n / z for e, n in counts.items() if n > 1e-6})


def _final_path(path: Path, staging: Path, output: Path) -> Path:
    """Where a file written into the staging folder ends up."""
    try:
        return output / path.resolve().relative_to(staging.resolve())
    except ValueError:
        return path


def _structure_writer():
    """`refractor_core.io.outputs.write_structure_outputs`, or None (with one warning)."""
    try:
        from ..io.outputs import write_structure_outputs
    except ImportError:
        import logging

        logging.getLogger("refractor").warning(
            "structure writers (refractor_core.io.outputs) are not available: "
            "the structure is only in report.json"
        )
        return None
    return write_structure_outputs


def _write_structure(writer, refined, data, folder: Path, stem: str) -> dict[str, Path]:
    """The structure files of one candidate (none without a writer)."""
    return {} if writer is None else dict(writer(refined, data, folder, stem))


def write_run_outputs(result, data, output: Path, stem: str, config, manifest, inputs, registry, started: float) -> dict[str, Any]:
    """Write structures, report.json and manifest.json atomically; return the summary."""
    import math

    from ..atomic import OutputFolder, atomic_write_json
    from ..manifest import finish_manifest, input_records, library_versions, write_manifest
    from ..pipeline import SOLVED_R1

    best = result.best
    if best is not None:  # the writers mark a best attempt that is not a solution
        best = best.model_copy(update={"meta": {**best.meta, "solved": result.solved}})
    keep = min(config.keep, len(result.ranked))
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):  # turn SIGTERM into an exception so staging is removed
        raise SystemExit(143)

    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        previous = None
    try:
        with OutputFolder(output) as stage:
            writer = _structure_writer()
            files = _write_structure(writer, best, data, stage.path, stem)
            extra = []
            for i, refined in enumerate(result.ranked[1:keep], start=2):
                sub = stage.path / f"candidate_{i}"
                sub.mkdir()
                solved = bool(math.isfinite(refined.r1) and refined.r1 <= SOLVED_R1)
                refined = refined.model_copy(update={"meta": {**refined.meta, "solved": solved}})
                written = _write_structure(writer, refined, data, sub, stem)
                extra.append({"rank": i, "files": {k: str(_final_path(Path(v), stage.path, output)) for k, v in written.items()}})
            final_files = {k: str(_final_path(Path(v), stage.path, output)) for k, v in files.items()}
            seconds = round(time.perf_counter() - started, 3)
            cif = final_files.get("cif")
            summary = {
                "solved": result.solved,
                "space_group": best.structure.space_group.symbol,
                "space_group_number": best.structure.space_group.number,
                "R1": best.r1,
                "wR2": best.wr2,
                "GooF": best.goof,
                "formula": _formula(data, best),
                "formula_given": data.formula,
                "formula_found": _formula_found(data, best),
                "cif": cif,
                "seconds": seconds,
                "output": str(output),
                "seed": result.seed,
                "device": manifest.device,
                "n_reflections": best.n_reflections,
                "n_parameters": best.n_parameters,
                "flack": best.flack,
                "flack_su": best.flack_su,
                "inverted": best.meta.get("inverted"),
                "warnings": [*best.meta.get("warnings", []), *_ranking_warnings(best)],
                "files": final_files,
            }
            report = {
                **summary,
                "data": {"source": data.source, "n": data.n, "cell": data.cell.model_dump() if data.cell else None,
                         "wavelength": data.wavelength, "formula": data.formula, "z": data.z,
                         "notes": list(data.notes)},
                "hypotheses": [h.model_dump(mode="json") for h in result.hypotheses],
                "candidates": [
                    {"rank": i + 1, "space_group": r.structure.space_group.symbol, "R1": r.r1, "wR2": r.wr2,
                     "GooF": r.goof, "score": r.score, "converged": r.converged,
                     "screened_only": bool(r.meta.get("screened")),
                     "generator": r.candidate.generator if r.candidate else None}
                    for i, r in enumerate(result.ranked)
                ],
                "kept": extra,
                "best": best.model_dump(mode="json", exclude={"candidate"}),
                "timings": result.timings,
                "components": [c.model_dump(mode="json") for c in result.components],
                "notes": result.notes,
            }
            atomic_write_json(stage.path / "report.json", report)
            manifest = manifest.model_copy(
                update={
                    "components": result.components,
                    "weights": result.weights,
                    "inputs": input_records(inputs),
                    "versions": library_versions(registry.distribution_versions()),
                }
            )
            write_manifest(finish_manifest(manifest), stage.path)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    summary["report"] = str(output / "report.json")
    summary["manifest"] = str(output / "manifest.json")
    return summary


def print_summary(summary: dict[str, Any], verbosity: int) -> None:
    """A few human-readable lines on stdout."""
    state = "solved" if summary["solved"] else "not solved"
    click.echo(
        f"{state}: {summary['space_group']} (No. {summary['space_group_number']}), "
        f"R1 = {summary['R1']:.4f}, wR2 = {summary['wR2']:.4f}, GooF = {summary['GooF']:.3f} "
        f"[{summary['seconds']:.1f} s, seed {summary['seed']}]"
    )
    if summary.get("flack") is not None:
        note = ""
        if summary.get("inverted"):
            note = (f" (the refined model had the wrong hand, Flack {summary['inverted']['flack_before']:.2f}: "
                    f"its mirror image, in {summary['space_group']}, is the result)")
        click.echo(flack_line(summary["flack"], summary["flack_su"]) + note)
    if summary.get("formula_found"):
        given = summary.get("formula_given")
        click.echo(f"formula found: {summary['formula_found']}" + (f" (given: {given})" if given else ""))
    if summary["cif"]:
        click.echo(f"CIF: {summary['cif']}")
    click.echo(f"output: {summary['output']}")
