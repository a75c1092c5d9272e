"""`refractor spacegroup DATA`: rank the space groups the data allow.

The cell comes from the files beside DATA (or `--ins`, `--cell`); the space group those
files may state is never used, only echoed for comparison. `--json` prints one object:
`hypotheses` (best first: `symbol` as gemmi writes it, `number`, `hall`, `probability`,
`evidence`), `ambiguous`, and the Laue, operator and centring tables behind them.
"""

from __future__ import annotations

from typing import Any

import click

from ..errors import InputError
from .common import data_options, emit_json, load_data


def _classifier(name: str, options: dict[str, Any]):
    from ..plugins import get_registry, warn_problems

    registry = get_registry()
    warn_problems(registry)
    return registry.build("classifier", name, options)


@click.command("spacegroup")
@data_options
@click.option("--top", "top", type=click.IntRange(min=1), default=10, show_default=True, help="Hypotheses to show.")
@click.option("--classifier", "classifier_name", default="absences", show_default=True, help="Classifier component.")
@click.option(
    "--opt",
    "opts",
    multiple=True,
    metavar="KEY=VALUE",
    help="Classifier option (repeatable), e.g. --opt metric_tolerance=0.03.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def command(data, ins, cell, wavelength, formula, z, reader, top, classifier_name, opts, as_json):
    """Rank the space groups compatible with DATA (cell from the files beside it or --cell).

    Lattice centring, Laue class, systematic absences and E statistics are weighed in one
    likelihood per space-group setting in the data's own axes; probabilities are
    calibrated on simulated data. "ambiguous" means the best hypotheses cannot be told
    apart from these data (e.g. P2₁ and P2₁/m): try several.
    """
    from .run import stage_options

    reflections = load_data(data, ins=ins, cell=cell, wavelength=wavelength, formula=formula, z=z, reader=reader)
    if reflections.cell is None:
        raise InputError(
            "no unit cell: the space group cannot be determined without it",
            path=data,
            hint="put the .ins/.p4p/.cif beside the data, or give --ins FILE or --cell A B C ALPHA BETA GAMMA",
        )
    stated = reflections.space_group_hint
    reflections = reflections.model_copy(update={"space_group_hint": None})
    classifier = _classifier(classifier_name, stage_options(opts, "--opt"))
    if hasattr(classifier, "analyse"):
        analysis = classifier.analyse(reflections)
        report = analysis.as_dict(top=top)
    else:
        hyps = classifier.classify(reflections)
        report = {
            "hypotheses": [
                {"symbol": h.space_group.symbol, "number": h.space_group.number, "hall": h.space_group.hall, "probability": h.probability, "evidence": h.evidence}
                for h in hyps[:top]
            ],
            "ambiguous": bool(hyps and hyps[0].evidence.get("ambiguous", False)),
            "warnings": [],
            "notes": [],
        }
    report["data"] = str(data)
    report["classifier"] = classifier.describe()
    report["space_group_in_files"] = stated.symbol if stated is not None else None
    if as_json:
        emit_json(report)
        return
    _print_table(report, reflections)


def _fmt(x: Any, spec: str = ".3f") -> str:
    if x is None:
        return "-"
    try:
        return format(x, spec)
    except (TypeError, ValueError):
        return str(x)


def _print_table(report: dict, data) -> None:
    c = data.cell
    click.echo(f"data        {report['data']}")
    click.echo(
        f"cell        {c.a:.4f} {c.b:.4f} {c.c:.4f}  {c.alpha:.3f} {c.beta:.3f} {c.gamma:.3f}"
        + (f"   ({report.get('n_rows')} rows, {report.get('n_unique')} unique after Friedel merging)" if "n_rows" in report else "")
    )
    if report.get("space_group_in_files"):
        click.echo(f"files say   {report['space_group_in_files']} (not used)")
    if report.get("laue_groups"):
        click.echo("")
        click.echo("Laue group              evidence   R_int")
        for row in report["laue_groups"][:6]:
            click.echo(f"  {row['laue']:22s} {row['llr']:8.1f}   {_fmt(row['r_int'], '.4f')}")
    click.echo("")
    header = f"{'#':>2}  {'space group':16s} {'No.':>4} {'prob.':>7}  {'Laue':10s} {'lat':3s} {'R_int':>6} {'abs. (I>3σ)':>12} {'<|E²-1|>':>9}"
    click.echo(header)
    for i, h in enumerate(report["hypotheses"], 1):
        ev = h.get("evidence", {})
        est = ev.get("e_statistics", {}) or {}
        checked = ev.get("n_absent_checked")
        viol = ev.get("n_absent_violations")
        absences = "-" if checked is None else f"{checked} ({viol})"
        if checked == 0 and ev.get("n_absent_missing"):
            absences = f"0 ({ev['n_absent_missing']} missing)"
        click.echo(
            f"{i:>2}  {h['symbol']:16s} {h['number']:>4} {h['probability']:7.4f}  {str(ev.get('laue', '-')):10s} "
            f"{str(ev.get('centring', '-')):3s} {_fmt(ev.get('r_int'), '.4f'):>6} {absences:>12} "
            f"{_fmt(est.get('mean_abs_e2_minus_1'), '.3f'):>9}"
        )
    click.echo("")
    click.echo("ambiguous   " + ("yes: the best hypotheses cannot be told apart from these data" if report["ambiguous"] else "no"))
    for w in report.get("warnings", []):
        click.echo(f"warning     {w}")
    for n in report.get("notes", []):
        click.echo(f"note        {n}")
