"""Laue class from the agreement of reflections related by each candidate rotation.

For every proper rotation R the cell metric admits (beside the identity), the reflections
h and hR both measured are paired and their normalised differences

    z = (I_h - I_hR) / sqrt(σ_h² + σ_hR²)

are compared with two references measured on the same data:

- *present*: a true symmetry makes z a measurement error, <|z|> = 0.798·k, with k
  the error scale of this data set (from repeated measurements and Friedel mates: it
  absorbs misestimated σ and anomalous differences);
- *absent*: unrelated reflections of similar resolution (random pairs within resolution
  shells), whose mean clipped |z| is m₀.

The agreement a = (m₀ - <|z|>) / (m₀ - 0.798·k), with |z| clipped at 6k so that an outlier
counts but boundedly, is 1 for a symmetry and 0 for none, whatever the intensity scale. Each rotation gets a
log-likelihood ratio "present vs absent" from a (absent rotations may show any partial
agreement: pseudo-symmetry); a Laue group's log-likelihood is the sum over its rotations
(Pointless's per-operator idea, with our own statistic). The Pearson correlation of E² is
reported beside it.

Data already merged in some group hold one reflection per orbit: no pairs exist for the
rotations of that group. When the pairs a rotation should find are almost all missing,
the rotation is reported as "merged"; how much that says for it (the processing used it,
or merely stored one asymmetric unit) is a weight of its own, fitted with the others.
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
#: a rotation finding partners for less than this fraction of the reflections that chance
#: would give (the file's coverage) was merged
MERGED_FRACTION = 0.25
MIN_CANDIDATES_MERGED = 30
#: |z| is clipped at this many error scales (outliers count, but boundedly)
Z_CLIP = 6.0
#: mean of min(|z|, Z_CLIP) for a standard normal variate
MEAN_ABS_NORMAL = 0.797885
#: pairs needed to measure the error scale k
MIN_SCALE_PAIRS = 30

_IDENTITY = np.eye(3, dtype=np.int64)[None]


@dataclass
class OperatorEvidence:
    """Agreement of the reflections related by one rotation."""

    rotation: np.ndarray  # (3, 3) int, acting on fractional coordinates
    n_pairs: int
    n_candidates: int
    agreement: float  # 1: equal within errors, 0: as unrelated reflections
    cc: float  # Pearson correlation of E² (reported)
    llr: float  # log p(data | present) - log p(data | absent)
    status: str  # agree, disagree, uncertain, merged, untested

    @property
    def name(self) -> str:
        return rotation_name(self.rotation)

    def as_dict(self) -> dict:
        def r(x, d=4):
            return None if not np.isfinite(x) else round(float(x), d)

        return {
            "operator": self.name,
            "n_pairs": self.n_pairs,
            "agreement": r(self.agreement),
            "cc": r(self.cc),
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


def error_scale(hkl: np.ndarray, intensity: np.ndarray, sigma: np.ndarray) -> tuple[float, int]:
    """k = median |z| / 0.674 over pairs of rows of one Friedel class (repeats and mates).

    1 when the σ describe the scatter of repeated measurements (anomalous differences,
    when present, enlarge k: a rotation relating Bijvoet mates is judged with them).
    Returns (k, pairs used); k = 1 when fewer than `MIN_SCALE_PAIRS` pairs exist.
    """
    keys = orbit_keys(np.asarray(hkl, dtype=np.int64), _IDENTITY)
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    same = np.nonzero(k[1:] == k[:-1])[0]
    # one pair per class: the first two rows
    first = same[np.r_[True, k[same[1:]] != k[same[:-1]]]] if len(same) else same
    a, b = order[first], order[first + 1]
    n = len(a)
    if n < MIN_SCALE_PAIRS:
        return 1.0, n
    z = (intensity[a] - intensity[b]) / np.sqrt(sigma[a] ** 2 + sigma[b] ** 2)
    return float(max(np.median(np.abs(z)) / 0.6745, 0.5)), n


def unrelated_level(intensity: np.ndarray, sigma: np.ndarray, s2: np.ndarray, clip: float, n_shells: int = 20) -> float:
    """Mean of min(|z|, clip) over pairs of unrelated reflections of similar resolution.

    Reflections are paired at random within resolution shells (a fixed seed: the answer
    depends on the data only); equivalents, which share their resolution exactly, would
    pair up if neighbours in sin θ/λ were taken instead.
    """
    from refractor_core.crystal.intensity_stats import shell_index

    n = len(intensity)
    if n < 4:
        return float("nan")
    shell = shell_index(s2, min(n_shells, max(n // 50, 1)))
    rng = np.random.default_rng(12345)
    order = np.lexsort((rng.random(n), shell))
    a, b = order[0:-1:2], order[1::2]
    same = shell[a] == shell[b]
    a, b = a[same], b[same]
    z = (intensity[a] - intensity[b]) / np.sqrt(sigma[a] ** 2 + sigma[b] ** 2)
    return float(np.minimum(np.abs(z), clip).mean()) if len(z) else float("nan")


def _operator_llr(a: float, se: float, width: float, outlier: float) -> float:
    """log p(a | rotation present) - log p(a | absent) for the agreement a.

    Present: a scatters about 1 (sampling error `se` plus `width` for systematic error).
    Absent: half of the time near 0 (unrelated reflections), half anywhere between 0 and 1
    (pseudo-symmetry makes reflections similar without making them equal). Both carry an
    `outlier` share spread over [-0.5, 1.5].
    """
    uniform = np.log(0.5)
    sd1 = np.sqrt(se**2 + width**2)
    sd0 = np.sqrt(se**2 + width**2)
    pseudo = 0.0 if 0.0 <= a <= 1.0 else -np.inf  # log of the U(0, 1) density
    lp1 = np.logaddexp(np.log1p(-outlier) + _normal_logpdf(a, 1.0, sd1), np.log(outlier) + uniform)
    lp0_core = np.logaddexp(np.log(0.5) + _normal_logpdf(a, 0.0, sd0), np.log(0.5) + pseudo)
    lp0 = np.logaddexp(np.log1p(-outlier) + lp0_core, np.log(outlier) + uniform)
    return float(lp1 - lp0)


def score_operators(
    hkl: np.ndarray,
    intensity: np.ndarray,
    sigma: np.ndarray,
    e2: np.ndarray,
    s2: np.ndarray,
    rotations: np.ndarray,
    *,
    scale: float = 1.0,
    systematic_width: float = 0.04,
    outlier_fraction: float = 0.01,
    centring: np.ndarray | None = None,
    coverage: float = 1.0,
    merge_group: np.ndarray | None = None,
) -> list[OperatorEvidence]:
    """Evidence for each rotation (identity excluded) from Friedel-merged reflections.

    `hkl`, `intensity`, `sigma`: one row per Friedel-merged reflection; `e2` their
    normalised intensities (for the reported correlation), `s2` their sin²θ/λ²; `scale`
    the data's error scale k (`error_scale`). `centring`: the lattice's centring vectors,
    when known; a rotation the lattice does not have maps allowed reflections onto
    forbidden ones, whose absence from the file must not be read as "merged with it".
    `coverage`: the fraction of the Friedel-unique reflections of the resolution range the
    file holds; an unrelated rotation finds partners about that often, a rotation the
    data were merged with (one reflection kept per orbit) almost never.
    `merge_group`: rotations the file was merged with (`merge_group`), when found. Each
    reflection then stands for its orbit under them, and a rotation outside the group is
    tested against whichever member of the image's orbit the file kept; a rotation inside
    the group maps every orbit onto itself and is reported "merged".
    """
    h = np.asarray(hkl, dtype=np.int64)
    i_all = np.asarray(intensity, dtype=np.float64)
    s_all = np.asarray(sigma, dtype=np.float64)
    group = _IDENTITY if merge_group is None else np.asarray(merge_group, dtype=np.int64)
    keys = orbit_keys(h, group)
    order = np.argsort(keys)
    sorted_keys = keys[order]
    x_all = np.clip(np.asarray(e2, dtype=np.float64), -E2_CLIP, E2_CLIP)
    clip = Z_CLIP * scale
    m0 = unrelated_level(i_all, s_all, np.asarray(s2, dtype=np.float64), clip)
    m1 = MEAN_ABS_NORMAL * scale
    span = m0 - m1
    out = []
    for r in rotations:
        r = np.asarray(r, dtype=np.int64)
        if np.array_equal(r, _IDENTITY[0]):
            continue
        hr = h @ r
        k2 = orbit_keys(hr, group)
        moved = k2 != keys
        if merge_group is not None and moved.sum() < 0.5 * len(h):
            # the rotation maps the orbits of the merge group onto themselves: in the group
            out.append(OperatorEvidence(r, 0, int(moved.sum()), float("nan"), float("nan"), 0.0, "merged"))
            continue
        if centring is not None:
            moved &= ~violates_centring(hr, centring)
        pos = np.clip(np.searchsorted(sorted_keys, k2), 0, len(sorted_keys) - 1)
        found = (sorted_keys[pos] == k2) & moved
        n_cand = int(moved.sum())
        i = np.nonzero(found)[0]
        j = order[pos[found]]
        n = len(i)
        nan = float("nan")
        if merge_group is None and n_cand >= MIN_CANDIDATES_MERGED and n < MERGED_FRACTION * max(coverage, 0.05) * n_cand:
            out.append(OperatorEvidence(r, n, n_cand, nan, nan, 0.0, "merged"))
            continue
        if n < MIN_PAIRS or not np.isfinite(span):
            out.append(OperatorEvidence(r, n, n_cand, nan, nan, 0.0, "untested"))
            continue
        z = np.minimum(np.abs(i_all[i] - i_all[j]) / np.sqrt(s_all[i] ** 2 + s_all[j] ** 2), clip)
        m = float(z.mean())
        x, y = x_all[i], x_all[j]
        cc = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else nan
        if span <= 0.05 * m1:
            # unrelated reflections differ no more than their errors: no information
            out.append(OperatorEvidence(r, n, n_cand, nan, cc, 0.0, "untested"))
            continue
        a = float(np.clip((m0 - m) / span, -0.5, 1.5))
        se = float(z.std()) / np.sqrt(n) / span
        llr = _operator_llr(a, se, systematic_width, outlier_fraction)
        status = "agree" if llr > 2.0 else ("disagree" if llr < -2.0 else "uncertain")
        out.append(OperatorEvidence(r, n, n_cand, a, cc, llr, status))
    return out


#: a group whose orbits share reflections for at most this fraction of the file's
#: reflections is one the data were merged with (a few boundary quirks allowed)
MERGE_GROUP_PAIRS = 0.003


def merge_group(hkl: np.ndarray, candidates: list[np.ndarray]) -> np.ndarray | None:
    """The largest of the candidate rotation groups under which (nearly) no two reflections
    of the file are equivalent: the group the file was merged with, or None.

    A file merged under L0 keeps one reflection per L0-orbit: every subgroup of L0 shows
    no equivalent pairs, every group reaching beyond L0 does. Identity-only groups do not
    count. `hkl` are Friedel-merged reflections (see `bijvoet_merge_group` for files that
    keep Bijvoet mates apart).
    """
    h = np.asarray(hkl, dtype=np.int64)
    best, best_rank = None, None
    for rots in candidates:
        rots = np.asarray(rots, dtype=np.int64)
        if len(rots) < 2:
            continue
        keys = orbit_keys(h, rots)
        shared = len(keys) - len(np.unique(keys))
        if shared > MERGE_GROUP_PAIRS * len(keys):
            continue
        rank = (-len(rots), shared)  # the largest group, then the cleanest
        if best_rank is None or rank < best_rank:
            best, best_rank = rots, rank
    return best


def bijvoet_merge_group(
    hkl: np.ndarray, point_groups: list[tuple[np.ndarray, np.ndarray]], min_order: int = 2
) -> np.ndarray | None:
    """Proper rotations of the Laue group whose non-centrosymmetric point group the file's
    own rows were merged with, Bijvoet mates kept apart (the usual merged file of a
    non-centrosymmetric crystal), or None.

    `point_groups`: (point-group matrices, proper rotations of its Laue group) of the
    candidate non-centrosymmetric point groups. A file merged under P holds one row per
    P-orbit (Friedel mates not paired): no two rows are equivalent under P, while any larger
    group joins orbits. The Friedel-merged reflections cannot show this (they pair Bijvoet
    mates up). Groups of the same order may both look merged when the kept representatives
    happen to agree; then only the rotations common to their Laue groups are returned.
    Only point groups of more than `min_order` operations count: a file merged under a
    centrosymmetric Laue group of that order (Friedel mates paired) may look merged under
    an acentric group of the same order for the same reason.
    """
    h = np.asarray(hkl, dtype=np.int64)
    best_order, found = 0, []
    for pg, laue in point_groups:
        pg = np.asarray(pg, dtype=np.int64)
        if len(pg) <= min_order or len(pg) < best_order:
            continue
        keys = orbit_keys(h, pg, friedel=False)
        if len(keys) - len(np.unique(keys)) > MERGE_GROUP_PAIRS * len(keys):
            continue
        if len(pg) > best_order:
            best_order, found = len(pg), []
        found.append(np.asarray(laue, dtype=np.int64))
    if not found:
        return None
    common = [r for r in found[0] if all(any(np.array_equal(r, q) for q in other) for other in found[1:])]
    return np.array(common, dtype=np.int64) if len(common) >= 2 else None


def laue_log_likelihood(laue_rotations: np.ndarray, evidence: list[OperatorEvidence]) -> tuple[float, int]:
    """(Σ of the evidence of the tested rotations in a Laue group, relative to -1; number
    of its rotations the data were merged with)."""
    by_key = {e.rotation.tobytes(): e for e in evidence}
    total, merged = 0.0, 0
    for r in laue_rotations:
        e = by_key.get(np.asarray(r, dtype=np.int64).tobytes())
        if e is None:
            continue
        total += e.llr
        merged += e.status == "merged"
    return total, merged


def weak_operators(laue_rotations: np.ndarray, evidence: list[OperatorEvidence], threshold: float = 1.0) -> list[OperatorEvidence]:
    """Rotations of a Laue group whose own evidence is weak or against them."""
    keys = {np.asarray(r, dtype=np.int64).tobytes() for r in laue_rotations}
    return [e for e in evidence if e.rotation.tobytes() in keys and e.llr < threshold and e.status != "merged"]


__all__ = [
    "OperatorEvidence",
    "error_scale",
    "bijvoet_merge_group",
    "laue_log_likelihood",
    "merge_group",
    "rotation_name",
    "score_operators",
    "unrelated_level",
    "weak_operators",
]
