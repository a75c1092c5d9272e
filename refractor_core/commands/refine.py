"""`refractor refine DATA --model start.res|start.cif`: refine a model the user already has.

The start model's own SHELXL instructions (OMIT, SHEL, TWIN/BASF, EXTI, WGHT as the starting
weights, ANIS) are honoured, and so are its restraints and constraints (DFIX, DANG, SADI,
SAME, FLAT, DELU, RIGU, SIMU, ISOR, SUMP, EADP, EXYZ); the log lists the restraints the
refined model disagrees with. Its H atoms keep their names, and their treatment: riding
(re-placed each cycle, with a U of their own where the model refines one), or refined
freely. What the readers could not honour is printed as `note: ...`.
The refiner (default `lsq`) is built through the plugin registry with `--refiner-opt
key=value` options validated by its Config. Outputs go atomically into `--output`
(default `<model stem>_refined/` beside the model): `<stem>.cif`, `.res`, `.fcf`,
`refine.json` (figures and the refinement log) and `manifest.json`. Progress goes to
stderr; `--json` prints one JSON object on stdout.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click

from ..errors import InputError, UsageError
from .common import (data_options, emit_json, flack_line, load_data, pass_verbosity, print_warnings, reading_notes,
                     run_options)


def _stage_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    from .run import stage_options

    return stage_options(pairs, "--refiner-opt")


def default_output(model_path: Path) -> Path:
    """`<model stem>_refined/` beside the model (the current folder if that is not writable)."""
    folder = model_path.resolve().parent
    if not os.access(folder, os.W_OK):
        folder = Path.cwd()
    return folder / f"{model_path.stem}_refined"


@click.command("refine")
@data_options
@click.option(
    "--model",
    "model_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Start model: SHELX .res/.ins or CIF (a data block as file.cif#block).",
)
@click.option("--block", default=None, help="CIF data block of the model (default: the one with atoms).")
@click.option("--refiner", "refiner_name", default="lsq", show_default=True, help="Refiner component.")
@click.option(
    "--refiner-opt",
    "refiner_opt",
    multiple=True,
    metavar="KEY=VALUE",
    help="Refiner option (repeatable), e.g. --refiner-opt max_cycles=20 --refiner-opt anisotropic=false.",
)
@click.option("--ignore-instructions", is_flag=True, help="Do not honour the model's OMIT/SHEL/TWIN/BASF/EXTI/WGHT or its restraints.")
@run_options
@pass_verbosity
def command(verbosity: int, **kw: Any) -> None:
    """Refine the start MODEL against DATA; write the refined CIF, .res and .fcf.

    \b
    Examples:
      refractor refine data.hkl --model start.res
      refractor refine data.hkl --model start.cif --output refined --json
      refractor refine data.hkl --model start.res --refiner-opt riding_h=false
    """
    started = time.perf_counter()
    from ..dataio import load_bundle, split_block
    from ..interfaces import BuildContext
    from ..manifest import choose_seed, new_manifest, resolve_device, seed_everything
    from ..plugins import get_registry, warn_problems
    from ..progress import Progress
    from ..types import USER_MODEL, Candidate, RunConfig

    data_path: Path = kw["data"]
    model_path: Path = kw["model_path"]
    model_file, _ = split_block(model_path)  # `file.cif#block` names one block of a CIF
    for p, what in ((data_path, "data"), (model_file, "model")):
        if not p.is_file():
            raise UsageError(f"{what} file {p} does not exist")
    options = _stage_options(kw["refiner_opt"])
    if kw["ignore_instructions"]:
        options["ignore_instructions"] = True
    registry = get_registry()
    warn_problems(registry)
    registry.validate_options("refiner", kw["refiner_name"], options)  # fail fast on bad options

    seed = choose_seed(kw["seed"])
    seed_everything(seed)
    device = resolve_device(kw["device"])
    progress = Progress(verbosity)

    with progress(f"reading {data_path.name}", total=2) as bar:
        data = load_data(
            data_path, ins=kw["ins"], cell=kw["cell"], wavelength=kw["wavelength"],
            formula=kw["formula"], z=kw["z"], reader=kw["reader"],
            fallback_companion=model_file,  # the model's CELL, SFAC/UNIT, HKLF when nothing is beside the data
        )
        bar.update(1)
        bundle = load_bundle(model_path, block=kw["block"])
        bar.update(1)
    if bundle.structure is None:
        raise InputError("no atom sites found: the model file holds no structure", path=model_path)
    data = _complete_data(data, bundle)
    notes = reading_notes(data.notes, bundle.notes)
    instructions = bundle.instructions
    meta: dict[str, Any] = {"source": str(model_path)}
    if instructions is not None and not kw["ignore_instructions"]:
        meta["instructions"] = instructions.model_dump(mode="json")
    candidate = Candidate(structure=bundle.structure, generator=USER_MODEL, seed=seed, meta=meta)

    context = BuildContext(device=device, seed=seed, offline=bool(kw["offline"]), progress=progress)
    refiner = registry.build("refiner", kw["refiner_name"], options, context)
    refined = refiner.refine(data, candidate)

    output = (kw["output"] or default_output(model_file)).absolute()
    stem = model_file.stem
    config = RunConfig(
        components={"refiner": kw["refiner_name"]}, options={"refiner": options}, seed=seed, device=device,
    )
    summary = _write_outputs(refined, data, output, stem, config, seed, device, [data_path, model_file, kw["ins"]], started,
                             notes)
    if verbosity > 0 and not kw["as_json"]:
        for line in refined.log:
            click.echo(line, err=True)
    print_warnings(summary["warnings"])
    if kw["as_json"]:
        emit_json(summary)
    else:
        _print_summary(summary)


def _complete_data(data, bundle):
    """Fill the formula, Z and wavelength from the model file when the data lack them."""
    update: dict[str, Any] = {}
    if data.formula is None and bundle.formula:
        update["formula"] = bundle.formula
    if data.z is None and bundle.z:
        update["z"] = bundle.z
    if data.wavelength is None and bundle.wavelength:
        update["wavelength"] = bundle.wavelength
    return data.model_copy(update=update) if update else data


def _write_outputs(refined, data, output: Path, stem: str, config, seed: int, device: str, inputs, started: float,
                   notes: list[str]) -> dict[str, Any]:
    """Structure files, refine.json and manifest.json, all or nothing (`notes`: the readers'
    notes on the inputs)."""
    from ..atomic import OutputFolder, atomic_write_json, atomic_write_text
    from ..io.outputs import write_structure_outputs
    from ..manifest import finish_manifest, input_records, library_versions, new_manifest, write_manifest
    from ..types import RefinementInstructions

    refined_instr = refined.meta.get("refined_instructions")
    out_data = data
    if refined_instr is not None:
        out_data = data.model_copy(update={"instructions": RefinementInstructions.model_validate(refined_instr)})
    manifest = new_manifest(config, seed=seed, device=device, inputs=input_records(inputs), versions=library_versions())
    with OutputFolder(output) as stage:
        files = write_structure_outputs(refined, out_data, stage.path, stem)
        summary = {
            "R1": refined.r1,
            "R1_all": refined.meta.get("r1_all"),
            "wR2": refined.wr2,
            "GooF": refined.goof,
            "restrained_GooF": refined.meta.get("restrained_goof"),
            "n_restraints": refined.meta.get("n_restraints", 0),
            "cycles": refined.cycles,
            "max_shift_su": refined.max_shift_su,
            "converged": refined.converged,
            "n_reflections": refined.n_reflections,
            "n_gt": refined.n_gt,
            "n_parameters": refined.n_parameters,
            "weights": [refined.weight_a, refined.weight_b],
            "scale": refined.scale,
            "extinction": refined.extinction,
            "flack": refined.flack,
            "flack_su": refined.flack_su,
            "inverted": refined.meta.get("inverted"),
            "twin_laws_found": refined.meta.get("twin_laws_found", []),
            "space_group": refined.structure.space_group.symbol,
            "diff_peak": refined.diff_peak,
            "diff_hole": refined.diff_hole,
            "disagreeable_reflections": refined.meta.get("disagreeable_reflections", []),
            "warnings": refined.meta.get("warnings", []),
            "notes": notes,
            "seed": seed,
            "seconds": time.perf_counter() - started,
        }
        for kind, path in files.items():
            summary[kind] = str(output / path.name)
        atomic_write_json(stage.path / "refine.json", {**summary, "log": refined.log})
        atomic_write_text(stage.path / "refine.log", "\n".join(refined.log) + "\n")
        write_manifest(finish_manifest(manifest), stage.path)
    summary["output"] = str(output)
    summary["manifest"] = str(output / "manifest.json")
    return summary


def _print_summary(summary: dict[str, Any]) -> None:
    state = "converged" if summary["converged"] else "NOT converged"
    click.echo(
        f"R1 {summary['R1']:.4f}  wR2 {summary['wR2']:.4f}  GooF {summary['GooF']:.3f}  "
        + (f"(restrained {summary['restrained_GooF']:.3f}, {summary['n_restraints']} restraints)  "
           if summary["n_restraints"] and summary["restrained_GooF"] is not None else "")
        + f"{summary['n_reflections']} reflections, {summary['n_parameters']} parameters, "
        f"{summary['cycles']} cycles ({state}, max shift/su {summary['max_shift_su'] or 0:.3f})"
    )
    if not summary["converged"]:
        click.echo(f"not converged: more cycles with --refiner-opt max_cycles={2 * max(summary['cycles'], 30)}, "
                   "or start again from the written .res", err=True)
    inverted = summary.get("inverted")
    if inverted:
        click.echo(
            f"absolute structure: the model had the wrong hand (Flack x {inverted['flack_before']:.3f}"
            f"({inverted['flack_su_before'] or 0:.3f})); its mirror image was refined, in {summary['space_group']}"
            + (f" (given: {inverted['space_group_before']})" if inverted["space_group_before"] != summary["space_group"] else "")
        )
    if summary.get("flack") is not None:
        click.echo(flack_line(summary["flack"], summary["flack_su"]))
    click.echo(f"Δρ max {summary['diff_peak']:+.2f}, min {summary['diff_hole']:+.2f} e/Å³")
    click.echo(f"written: {summary.get('cif')}")
