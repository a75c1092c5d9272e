"""Registration of the built-in refiners (light module: pydantic and refractor_core only)."""

from __future__ import annotations

from refractor_core.hookspecs import hookimpl
from refractor_core.interfaces import ComponentSpec

from .configs import LsqConfig


@hookimpl
def refractor_register(register):
    """Register the built-in refiners."""
    register(
        ComponentSpec(
            kind="refiner",
            name="lsq",
            target="refractor_plugins.refiners.lsq.refiner:LsqRefiner",
            config=LsqConfig,
            version="0.1.0",
            summary="SHELXL-style least squares on F²: constraints, riding H, weights, completion",
        )
    )
