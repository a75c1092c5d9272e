"""Configuration of the wr2 ranker (pydantic; unknown keys are rejected)."""

from __future__ import annotations

from pydantic import Field

from refractor_core.interfaces import ComponentConfig


class WR2Config(ComponentConfig):
    """Options of the wr2 ranker."""

    goof_weight: float = Field(
        default=0.0,
        ge=0.0,
        description="Add goof_weight * |GooF - 1| to the score (0: wR2 alone).",
    )
