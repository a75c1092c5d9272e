"""Prefer the higher symmetry unless the lower one fits significantly better.

Two tests, either of which keeps the higher symmetry: the model refined in the subgroup
itself obeys the higher group (ADDSYM-style, `refractor_core.crystal.addsym`; a model that
has the symmetry must be described in it, even if its extra parameters fit systematic
errors "significantly"), or Hamilton's test finds its better fit not significant. The first
does not overrule a significant Hamilton test when some atom deviates from the higher
symmetry by far more than its su (`ADDSYM_MAX_DEVIATION_SU`): that is pseudo-symmetry,
which the data can tell apart.

A structure refined in a subgroup (Cc instead of C2/c, P1 instead of P-1) always fits a
little better, because it has more parameters. Crystallographers keep the higher symmetry
unless the improvement is significant; Hamilton's R-factor ratio test (Acta Cryst. 18
(1965) 502) makes that decision: with n reflections, m parameters of the lower-symmetry
model and b = m - m_high extra parameters, the lower symmetry is significantly better at
level α when

    wR2_high / wR2_low  >  sqrt(1 + b / (n - m) · F(b, n - m; 1 - α)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from refractor_core.crystal.addsym import deviation_in_su, missed_symmetry
from refractor_core.crystal.symmetry import SymmetryOps
from refractor_core.types import RefinedCandidate

#: the higher-symmetry model may refine this much worse in R1 and still be preferred when
#: the lower-symmetry model is found to obey the higher group (its extra freedom fits noise)
ADDSYM_R1_MARGIN = 0.03
#: ... unless some matched atom deviates from the higher symmetry by more than this many
#: standard uncertainties: then the subgroup model is taken as pseudo-symmetric and
#: Hamilton's test alone decides. Centrosymmetric structures refined in P1 against
#: measured data deviate by up to ~18 su (systematic errors fitted, ill-conditioning);
#: a fragment displaced by 0.3 Å in a pseudo-centrosymmetric P1 structure by ~50 su.
ADDSYM_MAX_DEVIATION_SU = 20.0


@dataclass(frozen=True)
class HamiltonTest:
    """Outcome of comparing a lower-symmetry model with a higher-symmetry one."""

    ratio: float  # wR2(high) / wR2(low)
    critical: float  # the ratio above which the lower symmetry is significantly better
    extra_parameters: int

    @property
    def lower_is_better(self) -> bool:
        return self.ratio > self.critical


def hamilton_test(low: RefinedCandidate, high: RefinedCandidate, alpha: float) -> HamiltonTest | None:
    """Hamilton's test of `low` (more parameters) against `high`; None when not applicable."""
    from scipy.stats import f as f_dist

    n = min(low.n_reflections, high.n_reflections)
    m = low.n_parameters
    b = low.n_parameters - high.n_parameters
    if not (math.isfinite(low.wr2) and math.isfinite(high.wr2)) or low.wr2 <= 0 or n - m < 1:
        return None
    ratio = high.wr2 / low.wr2
    # at least one degree of freedom: models with equal parameter counts (atoms on special
    # positions of both groups) differ at least by the choice of group
    dof = max(b, 1)
    critical = math.sqrt(1.0 + dof / (n - m) * float(f_dist.ppf(1.0 - alpha, dof, n - m)))
    return HamiltonTest(ratio, critical, b)


def _penalty(r: RefinedCandidate) -> float:
    """The ranker's penalties for impossible geometry (short contacts, non-positive-definite
    ADPs); where it gave no breakdown, all it added to R1. A formula mismatch does not count:
    models in a group and its subgroup differ in completeness, not in plausibility."""
    terms = (r.score_details or {}).get("penalties")
    if isinstance(terms, dict):
        return float(terms.get("short_contacts", 0.0)) + float(terms.get("adp", 0.0))
    if r.score is None or not math.isfinite(r.score) or not math.isfinite(r.r1):
        return 0.0
    return max(r.score - r.r1, 0.0)


def _with_pseudo_symmetry(low: RefinedCandidate, high: RefinedCandidate, missed, deviation: float,
                          test: HamiltonTest) -> RefinedCandidate:
    """`low` with `score_details["pseudo_symmetry"]`: its atoms obey `high`'s group within the
    missed-symmetry tolerance, but deviate from it significantly and fit significantly better."""
    low = low.model_copy(deep=False)
    low.score_details = {**low.score_details, "pseudo_symmetry": {
        "higher_group": high.structure.space_group.symbol,
        "fraction_matched": round(missed.fraction, 3),
        "max_distance": round(missed.max_distance, 3),
        "max_deviation_su": round(deviation, 1),
        "wR2_ratio": round(test.ratio, 4),
        "critical_ratio": round(test.critical, 4),
    }}
    return low


def prefer_higher_symmetry(ordered: list[RefinedCandidate], alpha: float) -> list[RefinedCandidate]:
    """Reorder (best first): a candidate in a supergroup of a better-ranked candidate's group
    moves in front of it unless Hamilton's test says the lower symmetry fits significantly
    better (or the ranker penalised the higher-symmetry model's geometry more). Scores are adjusted so that they stay in order; the decision is recorded in
    `score_details["symmetry_preference"]`, and a subgroup model kept although it is
    pseudo-symmetric in the higher group carries `score_details["pseudo_symmetry"]`."""
    out = list(ordered)
    ops = {}

    def sym(r: RefinedCandidate) -> SymmetryOps:
        key = r.structure.space_group.hall
        if key not in ops:
            ops[key] = SymmetryOps.from_space_group(r.structure.space_group)
        return ops[key]

    changed = True
    guard = 0
    while changed and guard < len(out) ** 2 + 1:
        changed = False
        guard += 1
        for i in range(len(out)):
            low = out[i]
            for j in range(i + 1, len(out)):
                high = out[j]
                if not sym(low).is_proper_subgroup_of(sym(high)):
                    continue
                if _penalty(high) > _penalty(low) + 1e-9:
                    continue  # the higher symmetry makes the model implausible
                test = hamilton_test(low, high, alpha)
                missed = None
                deviation = None
                if high.r1 <= low.r1 + ADDSYM_R1_MARGIN:
                    missed = missed_symmetry(low.structure, high.structure.space_group)
                if missed is not None and test is not None and test.lower_is_better:
                    deviation = deviation_in_su(low.structure, high.structure.space_group, missed)
                    if deviation is not None and deviation > ADDSYM_MAX_DEVIATION_SU:
                        # pseudo-symmetry: the subgroup's better fit is real
                        out[i] = low = _with_pseudo_symmetry(low, high, missed, deviation, test)
                        missed = None
                if missed is None and (test is None or test.lower_is_better):
                    continue
                reason = {"preferred_over": low.structure.space_group.symbol, "alpha": alpha}
                if test is not None:
                    reason.update({
                        "wR2_ratio": round(test.ratio, 4),
                        "critical_ratio": round(test.critical, 4),
                        "extra_parameters_of_lower": test.extra_parameters,
                        "hamilton_lower_significantly_better": test.lower_is_better,
                    })
                if missed is not None:
                    reason["missed_symmetry"] = {
                        "origin_shift": [round(float(v), 4) for v in missed.shift],
                        "fraction_matched": round(missed.fraction, 3),
                        "max_distance": round(missed.max_distance, 3),
                    }
                    if deviation is not None:
                        reason["missed_symmetry"]["max_deviation_su"] = round(deviation, 1)
                high = high.model_copy(deep=False)
                high.score_details = {**high.score_details, "symmetry_preference": reason}
                if low.score is not None:
                    high.score = low.score - 1e-6
                del out[j]
                out.insert(i, high)
                changed = True
                break
            if changed:
                break
    return out
