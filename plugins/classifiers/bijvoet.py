"""Centrosymmetry from Bijvoet differences: Friedel mates measured apart.

In a centrosymmetric crystal I(h) = I(-h) exactly, anomalous scatterers or not. In a
non-centrosymmetric one, anomalous dispersion makes the Bijvoet mates differ, by an amount
the formula predicts (`intensity_stats.bijvoet_ratio`): Var(ΔI | I) ≈ 8 ρ² I Σ for
reflections that are acentric in every non-centrosymmetric point group of the Laue class
(the general ones). With the measurement variance v of each difference (the σ of the two
mates, scaled by the scatter of repeated measurements of the same index), each Friedel
pair j gives

    p(ΔI_j | centric)  = N(0, λ v_j)            p(ΔI_j | acentric) = N(0, λ v_j + a_j)

(each with a small share of outliers). Measured Friedel mates differ more than repeated
measurements of one index even without anomalous signal (absorption and detector
position differ between the mates: on the real test data, by 1.2-1.3 times in scatter),
so the variance of a difference is λ v_j + (e Ī_j)², with a factor λ and a relative
error e that are unknown: both hypotheses are averaged over λ from 1 to 2 and e from 0
to 4 %. Only differences beyond what such systematic errors explain, with the pattern the
formula predicts, count for no centre. Even so, a weak predicted signal is of the size of
the excess variance the real test data show between Friedel mates (0 to 0.75 of the
measurement variance): the evidence is scaled by S/(S + 1), S the mean predicted signal
variance over the measurement variance, so that only a signal well above that floor
decides. No difference where one is predicted is evidence
for a centre of symmetry, but never strong: an inversion twin (racemic crystal) has no
Bijvoet differences either, so the acentric hypothesis is a mixture with a share
`twin_share` of such crystals, and the evidence for a centre is at most log(1/twin_share).
The evidence for no centre (clear Bijvoet differences) is capped at `cap` nats.

Without the formula or the wavelength nothing is predicted and the evidence is 0; a file
whose Friedel mates were merged has no pairs and says nothing either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from refractor_core.crystal.cell import stol
from refractor_core.crystal.formula import parse_formula
from refractor_core.crystal.intensity_stats import bijvoet_ratio, expected_intensity
from refractor_core.crystal.orbits import orbit_keys
from refractor_core.crystal.symmetry import keys_to_hkl
from refractor_core.types import UnitCell

_IDENTITY = np.eye(3, dtype=np.int64)[None]
#: repeated measurements of one index needed to measure the error scale
MIN_REPEATS = 30
#: error scale and relative systematic error assumed when no repeats measure them
UNSCALED_K = 1.2
UNSCALED_SYSTEMATIC = 0.03
#: relative systematic error of a Bijvoet difference when the error scale is measured
SYSTEMATIC = 0.01
#: share of Friedel pairs that are outliers (either hypothesis)
OUTLIER_SHARE = 0.02
#: fewer general Friedel pairs than this: no evidence
MIN_PAIRS = 20
#: variance factors λ of the Friedel differences over their measurement variance that
#: both hypotheses average over (systematic differences between the mates)
LAMBDA_GRID = np.linspace(1.0, 2.0, 5)
#: relative systematic errors e of a Friedel difference averaged over (both hypotheses)
RELATIVE_GRID = np.array([0.0, 0.02, 0.04])
#: predicted signal variance (over the measurement variance) at which the evidence is halved
SIGNAL_FLOOR = 1.0


@dataclass
class FriedelPairs:
    """Friedel mates measured apart, repeats of one index averaged."""

    hkl: np.ndarray  # (n, 3): the index of the I(+) member
    i_plus: np.ndarray
    s_plus: np.ndarray
    i_minus: np.ndarray
    s_minus: np.ndarray
    k: float | None  # error scale from repeated measurements of one index (None: unmeasured)
    n_repeats: int


@dataclass
class BijvoetEvidence:
    """What the Friedel pairs say about a centre of symmetry (positive: centrosymmetric)."""

    llr: float
    stats: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {**{k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.stats.items()}, "bijvoet_llr": round(self.llr, 3)}


def friedel_pairs(hkl: np.ndarray, intensity: np.ndarray, sigma: np.ndarray) -> FriedelPairs:
    """Pair the rows of a file with their Friedel mates (same index repeats averaged)."""
    h = np.asarray(hkl, dtype=np.int64)
    i_obs = np.asarray(intensity, dtype=np.float64)
    s_obs = np.maximum(np.asarray(sigma, dtype=np.float64), 1e-12)
    keys = orbit_keys(h, _IDENTITY, friedel=False)
    uniq, inv = np.unique(keys, return_inverse=True)
    w = 1.0 / s_obs**2
    sw = np.bincount(inv, w)
    i_m = np.bincount(inv, w * i_obs) / sw
    s_m = 1.0 / np.sqrt(sw)
    # error scale: the first two rows of every index measured more than once
    order = np.argsort(inv, kind="stable")
    ks = inv[order]
    same = np.nonzero(ks[1:] == ks[:-1])[0]
    first = same[np.r_[True, ks[same[1:]] != ks[same[:-1]]]] if len(same) else same
    a, b = order[first], order[first + 1]
    k = None
    if len(a) >= MIN_REPEATS:
        z = (i_obs[a] - i_obs[b]) / np.sqrt(s_obs[a] ** 2 + s_obs[b] ** 2)
        k = float(max(np.median(np.abs(z)) / 0.6745, 0.5))
    u_hkl = keys_to_hkl(uniq)
    mate = orbit_keys(-u_hkl, _IDENTITY, friedel=False)
    pos = np.clip(np.searchsorted(uniq, mate), 0, len(uniq) - 1)
    has = (uniq[pos] == mate) & (uniq > mate)  # each pair once
    i = np.nonzero(has)[0]
    j = pos[has]
    return FriedelPairs(u_hkl[i], i_m[i], s_m[i], i_m[j], s_m[j], k, int(len(a)))


def _log_normal(d: np.ndarray, var: np.ndarray) -> np.ndarray:
    return -0.5 * d**2 / var - 0.5 * np.log(2.0 * math.pi * var)


def bijvoet_evidence(
    pairs: FriedelPairs,
    general: np.ndarray,
    cell: UnitCell,
    formula: str | None,
    wavelength: float | None,
    *,
    twin_share: float = 0.15,
    cap: float = 30.0,
) -> BijvoetEvidence:
    """Evidence for a centre of symmetry from the Friedel pairs whose index is general
    (`general`, bool per pair) in the candidate Laue group; see the module doc."""
    n = int(np.count_nonzero(general))
    if not formula or not wavelength or n < MIN_PAIRS:
        return BijvoetEvidence(0.0, {"n_pairs": n})
    try:
        composition = parse_formula(formula)
    except Exception:
        return BijvoetEvidence(0.0, {"n_pairs": n})
    h = pairs.hkl[general]
    ip, sp = pairs.i_plus[general], pairs.s_plus[general]
    im, sm = pairs.i_minus[general], pairs.s_minus[general]
    s = stol(cell, h)
    mean = 0.5 * (ip + im)
    big_sigma = expected_intensity(s**2, mean)
    rho2 = bijvoet_ratio(composition, float(wavelength), s)
    a = 8.0 * rho2 * np.maximum(mean, 0.0) * big_sigma
    if pairs.k is not None:
        k, systematic = pairs.k, SYSTEMATIC
    else:
        k, systematic = UNSCALED_K, UNSCALED_SYSTEMATIC
    v = k**2 * (sp**2 + sm**2) + (systematic * np.maximum(mean, 0.0)) ** 2
    v = np.maximum(v, 1e-12)
    d = ip - im
    wide = 100.0 * v + mean**2 + a  # outliers: anything of the order of the intensity
    lo = math.log(OUTLIER_SHARE)
    lk = math.log1p(-OUTLIER_SHARE)
    log_grid = math.log(len(LAMBDA_GRID) * len(RELATIVE_GRID))
    rel2 = np.maximum(mean, 0.0) ** 2

    def marginal(extra: np.ndarray) -> float:
        per = [
            float(np.logaddexp(lk + _log_normal(d, lam * v + e * e * rel2 + extra), lo + _log_normal(d, wide)).sum())
            for lam in LAMBDA_GRID
            for e in RELATIVE_GRID
        ]
        return float(np.logaddexp.reduce(per)) - log_grid

    l_centric = marginal(np.zeros_like(a))
    l_acentric = marginal(a)
    # non-centrosymmetric crystals: a share are inversion twins without Bijvoet differences
    l_noncentro = float(np.logaddexp(math.log1p(-twin_share) + l_acentric, math.log(twin_share) + l_centric))
    signal = float(np.mean(a / v))
    llr = float(np.clip(l_centric - l_noncentro, -cap, -math.log(twin_share))) * signal / (signal + SIGNAL_FLOOR)
    z = d / np.sqrt(v)
    stats = {
        "n_pairs": n,
        "error_scale": None if pairs.k is None else round(pairs.k, 3),
        "predicted_signal": math.sqrt(signal),  # rms predicted ΔI over its error
        "observed_scatter": float(np.median(np.abs(z)) / 0.6745),  # 1: differences are noise
    }
    return BijvoetEvidence(llr, stats)
