"""`refractor weights list` / `refractor weights pull NAME`: model cards and their files."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import WeightsError
from .common import emit_json


@click.group("weights")
def command() -> None:
    """List model cards and fetch the weights of learned components."""


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per card.")
def list_cards(as_json: bool) -> None:
    """List model cards and where each resolves now (no network access)."""
    from ..plugins import get_registry, warn_problems
    from ..weights import available_cards, resolve_weights

    registry = get_registry()
    warn_problems(registry)
    rows = []
    for card in available_cards(registry):
        row = {
            "kind": card.kind,
            "name": card.name,
            "repo_id": card.repo_id,
            "revision": card.revision,
            "files": [f.model_dump() for f in card.files],
            "bundled": card.bundled.filename if card.bundled else None,
            "license": card.license,
        }
        try:
            resolved = resolve_weights(card, download=False)
            row.update(status="ok", source=resolved.source, path=str(resolved.path), error=None)
        except WeightsError as exc:
            row.update(status="missing", source=None, path=None, error=exc.message)
        rows.append(row)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no model cards installed (no learned component needs weights yet)")
        return
    for r in rows:
        where = f"{r['source']}: {r['path']}" if r["status"] == "ok" else f"not available locally ({r['error']})"
        click.echo(f"{r['kind']:10s} {r['name']:20s} {r['repo_id']}@{r['revision'][:12]}  {where}")


@command.command("pull")
@click.argument("name")
@click.option("--kind", default=None, help="Component kind, when NAME has cards in several kinds.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Hugging Face cache folder (default: HF_HUB_CACHE or ~/.cache/huggingface/hub).")
@click.option("--local-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Put the files in this folder instead of the cache.")
@click.option("--offline", is_flag=True, help="Only check the local copies; never contact the hub.")
@click.option("--json", "as_json", is_flag=True, help="Print the resolved files as JSON.")
def pull_card(name: str, kind: str | None, cache_dir: Path | None, local_dir: Path | None, offline: bool, as_json: bool) -> None:
    """Download (or verify the local copy of) the weights of component NAME."""
    from ..weights import available_cards, find_card, pull

    names = sorted({c.name for c in available_cards() if kind is None or c.kind == kind})
    if name not in names:
        import difflib

        from ..errors import UsageError

        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        raise UsageError(
            f"no model card for {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""),
            hint=f"cards: {', '.join(names) if names else '(none installed)'}",
        )
    card = find_card(name, kind)
    results = pull(card, offline=offline, cache_dir=cache_dir, local_dir=local_dir)
    if as_json:
        emit_json([r.record().model_dump(mode="json") for r in results])
        return
    for r in results:
        click.echo(f"{r.filename}: {r.source} {r.path} (sha256 {r.sha256[:16]}… verified)")
