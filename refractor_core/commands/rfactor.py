"""`refractor rfactor`: agreement of a given model with the measured data, no refinement."""

from __future__ import annotations

from pathlib import Path

import click

from .common import data_options, emit_json, load_data, reading_notes


@click.command("rfactor")
@data_options
@click.option(
    "--model",
    "model_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Model to evaluate: CIF (optionally with an embedded _shelx_res_file) or SHELX .res/.ins.",
)
@click.option("--block", default=None, help="CIF data block of the model (default: the one with atoms).")
@click.option(
    "--ignore-instructions",
    is_flag=True,
    help="Do not honour the model's OMIT/SHEL/TWIN/BASF/EXTI/WGHT records.",
)
@click.option("--weights", nargs=2, type=float, default=None, metavar="A B", help="SHELXL weighting a, b (default: the model's WGHT, else 0.1 0).")
@click.option("--no-anomalous", is_flag=True, help="Ignore anomalous dispersion.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def command(data, ins, cell, wavelength, formula, z, reader, model_path, block, ignore_instructions, weights, no_anomalous, as_json):
    """R1, wR2 and GooF of MODEL against DATA with a fitted scale (no refinement).

    Data are merged as SHELXL does (Friedel mates merged only in centrosymmetric groups;
    systematic absences removed); the model's own refinement instructions are honoured.
    """
    from ..crystal.evaluation import evaluate_model
    from ..dataio import load_bundle, split_block

    # (the model file is the data's companion when nothing is beside the data, as for refine)
    reflections = load_data(data, ins=ins, cell=cell, wavelength=wavelength, formula=formula, z=z, reader=reader,
                            fallback_companion=split_block(model_path)[0])
    bundle = load_bundle(model_path, block=block)
    if bundle.structure is None:
        from ..errors import InputError

        raise InputError("no atom sites found: the model file holds no structure", path=model_path)
    notes = reading_notes(reflections.notes, bundle.notes)
    report = evaluate_model(
        reflections,
        bundle.structure,
        instructions=None if ignore_instructions else bundle.instructions,
        weights=tuple(weights) if weights else None,
        anomalous=not no_anomalous,
    )
    report["notes"] = notes
    if as_json:
        emit_json(report)
        return
    click.echo(f"model        {model_path}")
    click.echo(f"space group  {report['space_group']} ({report['space_group_number']})")
    click.echo(
        f"reflections  {report['n_reflections']} unique ({report['n_gt']} with I > 2σ); "
        f"R_int {report['R_int']:.4f}"
    )
    for key, value in report["dropped"].items():
        if value:
            click.echo(f"  dropped    {value} ({key.replace('_', ' ')})")
    click.echo(f"scale        {report['scale']:.5g}")
    click.echo(f"R1 (I>2σ)    {report['R1']:.4f}")
    click.echo(f"R1 (all)     {report['R1_all']:.4f}")
    click.echo(f"wR2          {report['wR2']:.4f}   (w = 1/[σ² + ({report['weight_a']:.4f}P)² + {report['weight_b']:.4f}P])")
    click.echo(f"GooF         {report['GooF']:.3f}   ({report['n_parameters']} parameters assumed)")
