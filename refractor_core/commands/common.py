"""Options and helpers shared by the subcommands.

`data_options` gives every command that reads measured data the same way to describe the
crystal: a reflection file plus, when the files beside it do not say, `--ins`, `--cell`,
`--wavelength`, `--formula`, `--z`. `run_options` gives `--seed`, `--device`, `--output`,
`--json` and `--offline`.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable

import click

from ..types import ReflectionData


def data_options(f: Callable) -> Callable:
    """Options describing the crystal when the files beside DATA do not."""
    options = [
        click.argument("data", type=click.Path(dir_okay=False, path_type=Path)),
        click.option(
            "--ins",
            "ins",
            type=click.Path(dir_okay=False, path_type=Path),
            help="SHELX .ins/.res/.p4p or CIF giving cell, wavelength and formula "
            "(default: a file with the same stem beside DATA).",
        ),
        click.option(
            "--cell",
            nargs=6,
            type=float,
            default=None,
            metavar="A B C ALPHA BETA GAMMA",
            help="Unit cell (Å, degrees); overrides the files.",
        ),
        click.option("--wavelength", type=float, default=None, help="Wavelength in Å (default Mo Kα 0.71073 if unknown)."),
        click.option("--formula", type=str, default=None, help='Sum formula, e.g. "C12 H22 O11".'),
        click.option("--z", "z", type=float, default=None, help="Formula units per cell."),
        click.option("--reader", type=str, default=None, help="Reader component (default: sniffed)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def run_options(f: Callable) -> Callable:
    """Options every computing command shares."""
    options = [
        click.option("--seed", type=int, default=None, help="Random seed (recorded; chosen if omitted)."),
        click.option(
            "--device",
            type=click.Choice(["auto", "cpu", "cuda"]),
            default="auto",
            show_default=True,
            help="Where torch computes.",
        ),
        click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), default=None, help="Output folder."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout."),
        click.option("--offline", is_flag=True, help="Never contact the Hugging Face Hub."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def load_data(
    data: Path,
    *,
    ins: Path | None = None,
    cell: tuple[float, ...] | None = None,
    wavelength: float | None = None,
    formula: str | None = None,
    z: float | None = None,
    reader: str | None = None,
    fallback_companion: Path | None = None,
) -> ReflectionData:
    """Read DATA (and the files beside it, else `fallback_companion`) into ReflectionData,
    applying option overrides."""
    from ..crystal.observations import require_xray
    from ..dataio import load_reflections

    reflections = load_reflections(
        data,
        companion=ins,
        cell=cell,
        wavelength=wavelength,
        formula=formula,
        z=z,
        reader=reader,
        fallback_companion=fallback_companion,
    )
    require_xray(reflections.instructions, "the data file", reflections.source)
    return reflections


def reading_notes(*lists: list[str], show: bool = True) -> list[str]:
    """The readers' notes on the input files (instructions not honoured, assumptions made),
    without repeats; printed to stderr as `note: ...` unless `show` is false or -q is given."""
    notes: list[str] = []
    for lst in lists:
        notes.extend(n for n in lst if n not in notes)
    ctx = click.get_current_context(silent=True)
    quiet = ctx is not None and isinstance(ctx.obj, dict) and ctx.obj.get("verbosity", 0) < 0
    if show and not quiet:
        for n in notes:
            click.echo(f"note: {n}", err=True)
    return notes


#: whether this process printed its JSON object already (the CLI then adds no error object)
json_emitted = False


def emit_json(obj: Any) -> None:
    """Print one JSON object on stdout (a figure that is not finite is written null)."""
    global json_emitted
    json_emitted = True
    json.dump(json_safe(obj), sys.stdout, indent=2, default=_json_default, allow_nan=False)
    sys.stdout.write("\n")
    sys.stdout.flush()


def json_safe(obj: Any) -> Any:
    """`obj` with every NaN or infinite number replaced by None: JSON has no NaN, and a
    reader of our JSON must not meet one."""
    import numpy as np

    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def pass_verbosity(f: Callable) -> Callable:
    """Inject the global verbosity (-1 quiet, 0 normal, 1+ verbose) as `verbosity`."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        root = ctx.find_root()
        kwargs["verbosity"] = (root.obj or {}).get("verbosity", 0)
        return f(*args, **kwargs)

    return wrapper


#: a Flack parameter with a larger su says nothing about the hand (Flack & Bernardinelli,
#: J. Appl. Cryst. 33 (2000) 1143: su < 0.04 for an unknown hand, < 0.1 for a known one)
FLACK_UNINFORMATIVE_SU = 0.3


def print_warnings(warnings: list[str]) -> None:
    """The refined model's warnings on stderr, one 'warning:' line each (with --json too:
    stdout holds only the JSON object)."""
    for w in warnings:
        click.echo(f"warning: {w}", err=True)


def flack_line(flack: float, flack_su: float | None) -> str:
    """'Flack x = 0.740(0.470)', with a note when its su is too large for the data to
    determine the absolute structure (light atoms with Mo radiation, as L-alanine)."""
    line = f"Flack x = {flack:.3f}({flack_su or 0:.3f})"
    if flack_su is not None and flack_su > FLACK_UNINFORMATIVE_SU:
        line += (f" (su above {FLACK_UNINFORMATIVE_SU}: these data do not determine the absolute structure; "
                 "the hand is the model's)")
    return line

