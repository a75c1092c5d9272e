"""Registration of the built-in classifiers (light module: pydantic and refractor_core only)."""

from __future__ import annotations

from refractor_core.hookspecs import hookimpl
from refractor_core.interfaces import ComponentSpec

from .configs import AbsencesConfig

_PKG = "refractor_plugins.classifiers"

SPECS = [
    ComponentSpec(
        kind="classifier",
        name="absences",
        target=f"{_PKG}.absences:AbsencesClassifier",
        config=AbsencesConfig,
        version="0.1.0",
        summary="classical space-group determination: centring, Laue class (per-operator agreement), "
        "systematic-absence likelihoods, E statistics and space-group frequencies",
    ),
]


@hookimpl
def refractor_register(register):
    """Register the built-in classifiers."""
    for spec in SPECS:
        register(spec)
