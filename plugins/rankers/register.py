"""Registration of the built-in rankers (light module: pydantic and refractor_core only)."""

from __future__ import annotations

from refractor_core.hookspecs import hookimpl
from refractor_core.interfaces import ComponentSpec

from .configs import CompositeConfig, R1Config


@hookimpl
def refractor_register(register):
    """Register the built-in rankers."""
    register(
        ComponentSpec(
            kind="ranker",
            name="r1",
            target="refractor_plugins.rankers.rankers:R1Ranker",
            config=R1Config,
            version="0.1.0",
            summary="ascending R1 after refinement",
        )
    )
    register(
        ComponentSpec(
            kind="ranker",
            name="composite",
            target="refractor_plugins.rankers.rankers:CompositeRanker",
            config=CompositeConfig,
            version="0.1.0",
            summary="R1 plus penalties for short contacts, non-positive-definite ADPs, formula mismatch, Flack ≈ 0.5",
        )
    )
