"""Configuration of the built-in rankers (light: pydantic and refractor_core only)."""

from __future__ import annotations

from pydantic import Field

from refractor_core.interfaces import ComponentConfig


class R1Config(ComponentConfig):
    """Options of the `r1` ranker (none: it orders by R1 after refinement)."""


class CompositeConfig(ComponentConfig):
    """Weights of the `composite` ranker's penalties (added to R1; lower is better)."""

    short_contact: float = Field(0.02, ge=0.0, description="Penalty per too-short contact between non-H atoms.")
    short_contact_factor: float = Field(
        0.7, gt=0.0, lt=1.0, description="A contact is too short below this fraction of the sum of covalent radii."
    )
    non_positive_adp: float = Field(0.01, ge=0.0, description="Penalty per non-positive-definite (or floored) ADP.")
    formula_mismatch: float = Field(
        0.1, ge=0.0, description="Penalty per unit of relative mismatch between the model's and the formula's non-H cell contents."
    )
    flack_half: float = Field(
        0.02, ge=0.0, description="Penalty when the Flack parameter is close to 0.5 (racemic twin or missed inversion centre)."
    )
    max_penalty: float = Field(0.5, ge=0.0, description="Cap of each penalty term.")
    prefer_higher_symmetry: bool = Field(
        True,
        description="A candidate in a supergroup of a better-scored candidate's space group "
        "(C2/c over Cc, P-1 over P1) ranks first unless Hamilton's R-ratio test finds the "
        "lower symmetry significantly better.",
    )
    hamilton_alpha: float = Field(0.01, gt=0.0, lt=0.5, description="Significance level of Hamilton's test.")
