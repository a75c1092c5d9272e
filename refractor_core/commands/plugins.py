"""`refractor plugins`: list installed components; `refractor plugins check NAME`."""

from __future__ import annotations

import click

from ..errors import PluginError, UsageError
from .common import emit_json, pass_verbosity

COLUMNS = ("kind", "name", "distribution", "version", "status")


@click.group("plugins", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per component.")
@click.pass_context
def command(ctx: click.Context, as_json: bool) -> None:
    """List installed components (built-in and third-party) and broken plugins.

    Run `refractor plugins check NAME` to run the conformance checks on one component.
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..plugins import get_registry

    records = get_registry().listing()
    if as_json:
        emit_json(records)
        return
    if not records:
        click.echo("no components installed")
        return
    widths = {c: max(len(c), *(len(str(r[c])) for r in records)) for c in COLUMNS}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in COLUMNS) + "  SUMMARY")
    for r in records:
        line = "  ".join(str(r[c]).ljust(widths[c]) for c in COLUMNS)
        tail = r["summary"] or ""
        if r["status"] != "ok":
            tail = f"error: {r['error']}"
        click.echo(f"{line}  {tail}".rstrip())
    broken = sum(r["status"] != "ok" for r in records)
    if broken:
        click.echo(f"\n{broken} broken entr{'y' if broken == 1 else 'ies'}; other components work normally.", err=True)


@command.command("check")
@click.argument("name")
@click.option(
    "--kind",
    type=click.Choice(["reader", "encoder", "classifier", "generator", "refiner", "ranker"]),
    default=None,
    help="Component kind, when NAME exists in several kinds.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@pass_verbosity
def check(name: str, kind: str | None, as_json: bool, verbosity: int) -> None:
    """Run the conformance checks on one installed component (exit 0 pass, 3 fail)."""
    from ..plugins import get_registry
    from ..testing.checks import run_checks

    registry = get_registry()
    specs = registry.find(name, kind)
    if not specs:
        if kind is None:
            names = sorted({s.name for s in registry.all_specs()})
            import difflib

            close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
            hint = f"installed components: {', '.join(names) or '(none)'}"
            raise UsageError(
                f"no component called {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""), hint=hint
            )
        registry.spec(kind, name)  # raises with "did you mean" and the list
    if len(specs) > 1:
        raise UsageError(
            f"{name!r} exists in several kinds ({', '.join(s.kind for s in specs)})", hint="pass --kind"
        )
    spec = specs[0]
    results = run_checks(spec.kind, spec.name, registry=registry)
    failed = [r for r in results if r.status == "fail"]
    if as_json:
        emit_json(
            {
                "kind": spec.kind,
                "name": spec.name,
                "distribution": spec.distribution,
                "passed": not failed,
                "checks": [r.as_dict() for r in results],
            }
        )
    else:
        click.echo(f"{spec.kind} {spec.name!r} from {spec.distribution!r}:")
        for r in results:
            line = f"  {r.status.upper():4s}  {r.name}"
            if r.message and (r.status != "pass" or verbosity > 0):
                line += f": {r.message}"
            click.echo(line)
        n_pass = sum(r.status == "pass" for r in results)
        n_skip = sum(r.status == "skip" for r in results)
        click.echo(f"{n_pass} passed, {len(failed)} failed" + (f", {n_skip} skipped" if n_skip else ""))
    if failed:
        raise PluginError(
            f"{spec.kind} {spec.name!r} failed {len(failed)} conformance check(s): "
            + ", ".join(r.name for r in failed)
        )
