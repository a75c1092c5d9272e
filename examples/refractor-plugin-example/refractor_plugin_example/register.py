"""Entry-point module: registers the `wr2` ranker. Light: no torch, no heavy imports."""

from __future__ import annotations

from refractor_core.hookspecs import hookimpl
from refractor_core.interfaces import ComponentSpec

from .config import WR2Config


@hookimpl
def refractor_register(register):
    """Register the wr2 ranker; its class is imported only when a run uses it."""
    register(
        ComponentSpec(
            kind="ranker",
            name="wr2",
            target="refractor_plugin_example.ranker:WR2Ranker",
            config=WR2Config,
            version="0.1.0",
            summary="Order candidates by ascending wR2 (ties: R1, then |GooF - 1|).",
        )
    )
