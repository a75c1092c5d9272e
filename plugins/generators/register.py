"""Registration of the built-in generators (light module: pydantic and refractor_core only)."""

from __future__ import annotations

from refractor_core.hookspecs import hookimpl
from refractor_core.interfaces import ComponentSpec

from .configs import ChargeFlipConfig

_PKG = "refractor_plugins.generators"

SPECS = [
    ComponentSpec(
        kind="generator",
        name="charge-flip",
        target=f"{_PKG}.charge_flip.generator:ChargeFlipGenerator",
        config=ChargeFlipConfig,
        version="0.1.0",
        summary="classical ab initio phasing by charge flipping in P1, origin search, peak interpretation",
    ),
]


@hookimpl
def refractor_register(register):
    """Register the built-in generators."""
    for spec in SPECS:
        register(spec)
