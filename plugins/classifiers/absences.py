"""The classical space-group classifier `absences` (XPREP-style, likelihood-based).

Lattice centring, Laue class, systematic absences, centrosymmetry (E statistics of the
general reflections, Bijvoet differences) and the centricity of zones and rows are weighed
as one likelihood per space-group setting compatible with the cell metric in the data's
own axes, combined with space-group frequencies as a prior (see `analysis.py`). The
probabilities are calibrated on simulated data (`benchmarks/spacegroup.py`).
"""

from __future__ import annotations

from typing import ClassVar

from refractor_core.interfaces import SpaceGroupClassifier
from refractor_core.types import Embedding, ReflectionData, SpaceGroupHypothesis

from .analysis import SpaceGroupAnalysis, analyse
from .configs import AbsencesConfig


class AbsencesClassifier(SpaceGroupClassifier):
    """Ranks space groups from centring, Laue symmetry, absences and E statistics."""

    name: ClassVar[str] = "absences"
    version: ClassVar[str] = "0.1.0"
    Config: ClassVar[type[AbsencesConfig]] = AbsencesConfig

    def analyse(self, data: ReflectionData) -> SpaceGroupAnalysis:
        """The full analysis: hypotheses plus the Laue, operator and centring tables."""
        return analyse(data, self.config)

    def classify(self, data: ReflectionData, embedding: Embedding | None = None) -> list[SpaceGroupHypothesis]:
        """Ranked hypotheses, best first; the embedding is not used."""
        return self.analyse(data).hypotheses
