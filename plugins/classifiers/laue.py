"""Laue class from the agreement of reflections related by each candidate rotation.

For every proper rotation R the cell metric admits (beside the identity), the reflections
h and hR both measured are paired, and the correlation of their normalised intensities
E² is compared with what a true symmetry would give (`cc_expected`, from the σ of the
pairs: the correlation measurement noise allows) and with what an unrelated pair gives
(0). Each rotation so gets a log-likelihood ratio "present vs absent"; a Laue group's
log-likelihood is the sum over its rotations (Pointless's per-operator idea, our own model).

Data already merged in some group hold one reflection per orbit: no pairs exist for the
rotations of that group. When the pairs a rotation should find are almost all missing,
the rotation is reported as "merged" and counted as moderate evidence for it (the data
processing used it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refractor_core.crystal.lattice import violates_centring
from refractor_core.crystal.orbits import orbit_keys

#: E² values above this are clipped before correlating (one huge reflection must not decide)
E2_CLIP = 12.0
#: fewer pairs than this: the rotation is not tested
MIN_PAIRS = 8
#: a rotation whose pairs are found for less than this fraction of candidates was merged
MERGED_FRACTION = 0.02
MIN_CANDIDATES_MERGED = 30

_IDENTITY = np.eye(3, dtype=np.int64)[None]


@dataclass
class OperatorEvidence:
    """Agreement of the reflections related by one rotation."""

    rotation: np.ndarray  # (3, 3) int, acting on fractional coordinates
    n_pairs: int
    n_candidates: int
    cc: float
    cc_expected: float
    llr: float  # log p(data | present) - log p(data | absent)
    status: str  # agree, disagree, uncertain, merged, untested

    @property
    def name(self) -> str:
        return rotation_name(self.rotation)

    def as_dict(self) -> dict:
        return {
            "operator": self.name,
            "n_pairs": self.n_pairs,
            "cc": None if not np.isfinite(self.cc) else round(float(self.cc), 4),
            "cc_expected": None if not np.isfinite(self.cc_expected) else round(float(self.cc_expected), 4),
            "llr": round(float(self.llr), 3),
            "status": self.status,
        }


def rotation_name(r: np.ndarray) -> str:
    """'2 [010]', '3+ [001]', '4- [100]' ...: order, sense and axis (direct-space direction)."""
    r = np.asarray(r, dtype=np.int64)
    order = {3: 1, -1: 2, 0: 3, 1: 4, 2: 6}.get(int(np.trace(r)), 0)
    if order == 1:
        return "1"
    w, v = np.linalg.eig(r.astype(np.float64))
    axis = np.real(v[:, np.argmin(np.abs(w - 1.0))])
    axis = axis / np.max(np.abs(axis))
    ints = np.rint(axis * 6).astype(int)
    g = np.gcd.reduce(np.abs(ints[ints != 0])) if np.any(ints) else 1
    ints = ints // max(g, 1)
    if ints[np.nonzero(ints)[0][0]] < 0:
        ints = -ints
    sense = ""
    if order > 2:
        u = ints.astype(np.float64)
        trial = np.eye(3)[np.argmin(np.abs(u))]
        perp = trial - u * (trial @ u) / (u @ u)
        sense = "+" if np.linalg.det(np.stack([u, perp, r @ perp])) > 0 else "-"
    return f"{order}{sense} [{''.join(str(x) if x >= 0 else '-' + str(-x) for x in ints)}]"


def _normal_logpdf(x: float, mu: float, sd: float) -> float:
    return float(-0.5 * ((x - mu) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi))


def _operator_llr(cc: float, cc_exp: float, n: int, width: float, outlier: float) -> float:
    """log p(cc | rotation present) - log p(cc | absent).

    Present: cc scatters about cc_expected (sampling error plus `width` for systematic
    error). Absent: half of the time near 0 (unrelated reflections), half anywhere between
    0 and cc_expected (pseudo-symmetry correlates reflections without making them equal).
    Both carry an `outlier` share spread over [-1, 1].
    """
    uniform = np.log(0.5)
    sd1 = np.sqrt((1.0 - cc_exp**2) ** 2 / n + width**2)
    sd0 = np.sqrt(1.0 / n + width**2)
    top = max(cc_exp, 0.3)
    pseudo = np.log(1.0 / (top + 0.2)) if -0.2 <= cc <= top else -np.inf
    lp1 = np.logaddexp(np.log1p(-outlier) + _normal_logpdf(cc, cc_exp, sd1), np.log(outlier) + uniform)
    lp0_core = np.logaddexp(np.log(0.5) + _normal_logpdf(cc, 0.0, sd0), np.log(0.5) + pseudo)
    lp0 = np.logaddexp(np.log1p(-outlier) + lp0_core, np.log(outlier) + uniform)
    return float(lp1 - lp0)


def score_operators(
    hkl: np.ndarray,
    e2: np.ndarray,
    sigma_e2: np.ndarray,
    rotations: np.ndarray,
    *,
    systematic_width: float = 0.08,
    outlier_fraction: float = 0.01,
    merged_evidence: float = 3.0,
    centring: np.ndarray | None = None,
) -> list[OperatorEvidence]:
    """Evidence for each rotation (identity excluded) from Friedel-merged reflections.

    `hkl` must hold one row per Friedel-merged reflection; `e2` its normalised intensity and
    `sigma_e2` the σ of it. `centring`: the lattice's centring vectors, when known; a
    rotation the lattice does not have maps allowed reflections onto forbidden ones, whose
    absence from the file must not be read as "merged with this rotation".
    """
    h = np.asarray(hkl, dtype=np.int64)
    keys = orbit_keys(h, _IDENTITY)
    order = np.argsort(keys)
    sorted_keys = keys[order]
    x_all = np.clip(np.asarray(e2, dtype=np.float64), -E2_CLIP, E2_CLIP)
    s_all = np.asarray(sigma_e2, dtype=np.float64)
    out = []
    for r in rotations:
        r = np.asarray(r, dtype=np.int64)
        if np.array_equal(r, _IDENTITY[0]):
            continue
        hr = h @ r
        k2 = orbit_keys(hr, _IDENTITY)
        moved = k2 != keys
        if centring is not None:
            moved &= ~violates_centring(hr, centring)
        pos = np.clip(np.searchsorted(sorted_keys, k2), 0, len(sorted_keys) - 1)
        found = (sorted_keys[pos] == k2) & moved
        n_cand = int(moved.sum())
        i = np.nonzero(found)[0]
        j = order[pos[found]]
        n = len(i)
        if n_cand >= MIN_CANDIDATES_MERGED and n < MERGED_FRACTION * n_cand:
            out.append(OperatorEvidence(r, n, n_cand, float("nan"), float("nan"), merged_evidence, "merged"))
            continue
        if n < MIN_PAIRS:
            out.append(OperatorEvidence(r, n, n_cand, float("nan"), float("nan"), 0.0, "untested"))
            continue
        x, y = x_all[i], x_all[j]
        vx, vy = x.var(), y.var()
        if vx <= 0 or vy <= 0:
            out.append(OperatorEvidence(r, n, n_cand, float("nan"), float("nan"), 0.0, "untested"))
            continue
        cc = float(np.mean((x - x.mean()) * (y - y.mean())) / np.sqrt(vx * vy))
        noise = 0.5 * (np.mean(s_all[i] ** 2) + np.mean(s_all[j] ** 2))
        cc_exp = float(np.clip(1.0 - noise / (0.5 * (vx + vy)), 0.0, 1.0))
        llr = _operator_llr(cc, cc_exp, n, systematic_width, outlier_fraction)
        status = "agree" if llr > 2.0 else ("disagree" if llr < -2.0 else "uncertain")
        out.append(OperatorEvidence(r, n, n_cand, cc, cc_exp, llr, status))
    return out


def laue_log_likelihood(laue_rotations: np.ndarray, evidence: list[OperatorEvidence]) -> float:
    """Σ of the evidence of the rotations in a Laue group (relative to -1)."""
    by_key = {e.rotation.tobytes(): e.llr for e in evidence}
    total = 0.0
    for r in laue_rotations:
        total += by_key.get(np.asarray(r, dtype=np.int64).tobytes(), 0.0)
    return total


def weak_operators(laue_rotations: np.ndarray, evidence: list[OperatorEvidence], threshold: float = 1.0) -> list[OperatorEvidence]:
    """Rotations of a Laue group whose own evidence is weak or against them."""
    keys = {np.asarray(r, dtype=np.int64).tobytes() for r in laue_rotations}
    return [e for e in evidence if e.rotation.tobytes() in keys and e.llr < threshold and e.status != "merged"]
