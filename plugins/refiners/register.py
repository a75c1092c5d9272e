"""Registration of the built-in refiners (light module: pydantic and refractor_core only)."""

from __future__ import annotations

from refractor_core.hookspecs import hookimpl


@hookimpl
def refractor_register(register):
    """Register the built-in refiners."""
