"""The `refractor` command line.

Subcommands live one per module in `refractor_core.commands` and are imported only when
invoked, so `refractor --help` stays fast and never imports torch. Errors derived from
`RefractorError` become one clear message on stderr and their exit code (1 runtime,
2 usage, 3 plugin/weights); anything unexpected is reported without a traceback unless
`-v` is given. With `--json`, a failure also prints {"error": ..., "exit_code": n} on stdout,
so a script always gets one JSON object.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import traceback

import click

from . import __version__
from .errors import RefractorError

#: command name -> (module, attribute, one-line help shown by --help without importing)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("refractor_core.commands.run", "command", "Determine a structure: data in, refined CIF out."),
    "rfactor": ("refractor_core.commands.rfactor", "command", "R1, wR2 and GooF of a given model against the data."),
    "refine": ("refractor_core.commands.refine", "command", "Refine a given starting model against the data."),
    "spacegroup": ("refractor_core.commands.spacegroup", "command", "Rank space groups for a data set."),
    "plugins": ("refractor_core.commands.plugins", "command", "List installed components; check one."),
    "weights": ("refractor_core.commands.weights", "command", "List and fetch model weights."),
    "benchmark": ("refractor_core.commands.benchmark", "command", "Run the pipeline over a benchmark suite."),
    "ablate": ("refractor_core.commands.ablate", "command", "Swap one component at a time and compare."),
    "data": ("refractor_core.commands.data", "command", "Build and inspect training/benchmark datasets."),
}

log = logging.getLogger("refractor")


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attr, _ = COMMANDS[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # command not implemented yet in this build
                return None
            raise
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name is not None and name not in COMMANDS and not name.startswith("-"):
            import difflib

            close = difflib.get_close_matches(name, list(COMMANDS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            ctx.fail(f"No such command {name!r}.{hint} Commands: {', '.join(sorted(COMMANDS))}")
        return super().resolve_command(ctx, args)


def _configure_logging(verbosity: int) -> None:
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr)
    logging.getLogger("refractor").setLevel(level)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="refractor")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr; no progress bars.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """refractor: crystal structures from single-crystal X-ray diffraction data.

    Typical use:  refractor run data.hkl   (with data.ins beside it)
    """
    verbosity = -1 if quiet else verbose
    ctx.ensure_object(dict)
    ctx.obj["verbosity"] = verbosity
    _configure_logging(verbosity)


def hoist_global_flags(args: list[str]) -> list[str]:
    """Move -v/-vv/-q/--verbose/--quiet given after the subcommand to the front.

    `refractor run data.hkl -q` then means what users expect; arguments after `--` are
    left alone.
    """
    front, rest = [], []
    for i, arg in enumerate(args):
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg in ("-q", "--quiet", "--verbose") or (len(arg) > 1 and arg.startswith("-") and set(arg[1:]) == {"v"}):
            front.append(arg)
        else:
            rest.append(arg)
    return front + rest


def _json_emitted() -> bool:
    common = sys.modules.get("refractor_core.commands.common")
    return bool(common is not None and common.json_emitted)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `refractor` console script; returns the exit code."""
    args = hoist_global_flags(sys.argv[1:] if argv is None else list(argv))
    verbose = any(a == "--verbose" or (a.startswith("-v") and set(a[1:]) == {"v"}) for a in args)
    message = None  # the error, for a --json caller
    common = sys.modules.get("refractor_core.commands.common")
    if common is not None:  # (main may run more than once in one process, as in tests)
        common.json_emitted = False
    try:
        rv = cli.main(args=args, prog_name="refractor", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:  # usage errors: exit code 2
        exc.show()
        code, message = exc.exit_code, exc.format_message()
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        code = 130
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        code = 130
    except RefractorError as exc:
        if verbose:
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        code, message = exc.exit_code, str(exc)
    except Exception as exc:  # never show a bare traceback to users
        if verbose:
            traceback.print_exc()
        click.echo(
            f"error: unexpected {type(exc).__name__}: {exc}\n"
            "  (run with -v for the traceback and please report it)",
            err=True,
        )
        code, message = 1, f"unexpected {type(exc).__name__}: {exc}"
    options = args[: args.index("--")] if "--" in args else args
    if message is not None and "--json" in options and not _json_emitted():
        # a script reading stdout gets a JSON object on failure too (one: a command that
        # printed its report, as `plugins check` does, is not followed by another)
        json.dump({"error": message, "exit_code": code}, sys.stdout)
        sys.stdout.write("\n")
        sys.stdout.flush()
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":  # pragma: no cover
    main()
