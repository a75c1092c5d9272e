"""The wr2 ranker: best candidate = lowest weighted R factor on F²."""

from __future__ import annotations

from typing import ClassVar

from refractor_core.interfaces import Ranker
from refractor_core.types import RefinedCandidate, ReflectionData

from .config import WR2Config


class WR2Ranker(Ranker):
    """Score = wR2 + goof_weight * |GooF - 1|; lower is better."""

    name: ClassVar[str] = "wr2"
    version: ClassVar[str] = "0.1.0"
    Config: ClassVar[type[WR2Config]] = WR2Config

    def rank(self, data: ReflectionData, refined: list[RefinedCandidate]) -> list[RefinedCandidate]:
        """Candidates best first, each with `score` and `score_details` set."""
        scored = []
        for r in refined:
            goof_term = self.config.goof_weight * abs(r.goof - 1.0)
            score = float(r.wr2 + goof_term)
            scored.append(
                r.model_copy(
                    update={
                        "score": score,
                        "score_details": {**r.score_details, "ranker": self.name, "wR2": r.wr2, "goof_term": goof_term},
                    }
                )
            )
        return sorted(scored, key=lambda r: (r.score, r.r1, abs(r.goof - 1.0)))
