"""The built-in rankers: `r1` (ascending R1) and `composite` (R1 plus plausibility penalties).

Both are deterministic and independent of the order of their input: ties are broken by
wR2, then by |GooF - 1|, then by a digest of the refined structure.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import ClassVar

from refractor_core.interfaces import Ranker
from refractor_core.simulation.composition import formula_mismatch
from refractor_core.types import RefinedCandidate, ReflectionData

from .configs import CompositeConfig, R1Config
from .plausibility import non_positive_adps, short_contacts
from .symmetry_preference import prefer_higher_symmetry


def _digest(r: RefinedCandidate) -> str:
    sites = [(s.label, s.element, [round(v, 5) for v in s.xyz]) for s in r.structure.sites]
    return hashlib.sha256(json.dumps([r.structure.space_group.hall, sites]).encode()).hexdigest()


def _finite(x: float | None, default: float = math.inf) -> float:
    return float(x) if x is not None and math.isfinite(x) else default


def _order(items: list[RefinedCandidate]) -> list[RefinedCandidate]:
    return sorted(
        items,
        key=lambda r: (_finite(r.score), _finite(r.wr2), abs(_finite(r.goof, 1e9) - 1.0), _digest(r)),
    )


class R1Ranker(Ranker):
    """Orders refined candidates by R1 (I > 2σ), lowest first."""

    name: ClassVar[str] = "r1"
    version: ClassVar[str] = "0.1.0"
    Config: ClassVar[type] = R1Config

    def rank(self, data: ReflectionData, refined: list[RefinedCandidate]) -> list[RefinedCandidate]:
        out = []
        for r in refined:
            r = r.model_copy(deep=False)
            r.score = _finite(r.r1, 1e9)
            r.score_details = {"ranker": self.name, "R1": r.r1, "wR2": r.wr2, "GooF": r.goof}
            out.append(r)
        return _order(out)


class CompositeRanker(Ranker):
    """R1 plus penalties for chemically impossible models.

    score = R1 + w_c·(short contacts) + w_adp·(non-positive-definite ADPs)
                + w_f·(relative formula mismatch) + w_x·[Flack ≈ 0.5], each term capped;
    then a candidate in a higher-symmetry supergroup goes first unless Hamilton's test
    finds the lower symmetry significantly better (see symmetry_preference).
    """

    name: ClassVar[str] = "composite"
    version: ClassVar[str] = "0.1.0"
    Config: ClassVar[type] = CompositeConfig

    def rank(self, data: ReflectionData, refined: list[RefinedCandidate]) -> list[RefinedCandidate]:
        out = []
        for r in refined:
            r = r.model_copy(deep=False)
            r.score, r.score_details = self.score(data, r)
            out.append(r)
        ordered = _order(out)
        cfg: CompositeConfig = self.config  # type: ignore[assignment]
        if cfg.prefer_higher_symmetry:
            ordered = prefer_higher_symmetry(ordered, cfg.hamilton_alpha)
        return ordered

    def score(self, data: ReflectionData, r: RefinedCandidate) -> tuple[float, dict]:
        """The composite score and its terms."""
        cfg: CompositeConfig = self.config  # type: ignore[assignment]
        cap = cfg.max_penalty
        contacts = short_contacts(r.structure, cfg.short_contact_factor)
        npd = non_positive_adps(r.structure, r.meta.get("non_positive_definite"))
        mismatch = formula_mismatch(r.structure, data.formula, data.z)
        flack_flag = False
        if r.flack is not None and r.flack_su is not None and r.structure.space_group and not r.structure.space_group.is_centrosymmetric:
            flack_flag = r.flack_su <= 0.15 and abs(r.flack - 0.5) <= max(2.0 * r.flack_su, 0.1)
        p_contacts = min(cfg.short_contact * len(contacts), cap)
        p_adp = min(cfg.non_positive_adp * len(npd), cap)
        p_formula = min(cfg.formula_mismatch * (mismatch or 0.0), cap)
        p_flack = cfg.flack_half if flack_flag else 0.0
        base = _finite(r.r1, 1e9)
        total = base + p_contacts + p_adp + p_formula + p_flack
        details = {
            "ranker": self.name,
            "R1": r.r1,
            "wR2": r.wr2,
            "GooF": r.goof,
            "short_contacts": [f"{c.a}-{c.b} {c.distance:.2f} Å" for c in contacts[:20]],
            "n_short_contacts": len(contacts),
            "non_positive_definite": npd,
            "formula_mismatch": mismatch,
            "flack": r.flack,
            "flack_su": r.flack_su,
            "penalties": {"short_contacts": p_contacts, "adp": p_adp, "formula": p_formula, "flack": p_flack},
            "score": total,
        }
        return total, details
