"""Counting statistics of a measured intensity: expected counts, σ, noise, outliers.

For a reflection with expected (true) counts N the model is

    σ²(N) = N + B + (p N)²

N is the Poisson term of the peak, B the variance that background subtraction adds (the same
for every reflection, set relative to the median N), p the relative instability of the
experiment (beam, absorption and scaling errors; it caps I/σ near 1/p for strong data).
The overall count level c (N = c · F²) is chosen so that the median I/σ of the rows written
matches a target. Observations are

    I_obs = N (1 + p ε₁) + √(N + B) ε₂,   ε₁, ε₂ ~ N(0, 1)

and the reported σ is `sigma_scale` · σ evaluated at max(I_obs, 0), as integration programs
estimate σ from the counts they see (σ is slightly correlated with the noise, as in real
data). Outliers are drawn after σ: most are too strong (zingers, overlaps), some too weak
(beam-stop or detector-gap shadow).

Defaults come from the 23 measured data sets in ../shared/data/real (rows with σ > 0):
median I/σ per row ranges 3.5-62 (typical 5-25), 0-10 % of rows are negative, the 90th
percentile of I/σ is 13-250; see docs/datasets.md.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class NoiseModel(BaseModel):
    """Parameters of the counting-noise model (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    median_i_over_sigma: float = Field(12.0, gt=0.2, description="median I/σ of the rows written")
    background: float = Field(0.5, ge=0.0, description="background variance B relative to the median counts")
    instability: float = Field(0.03, ge=0.0, lt=1.0, description="relative error p of the experiment")
    sigma_scale: float = Field(1.0, gt=0.0, description="reported σ / model σ (σ misestimation)")


def _sigma_model(n: np.ndarray, b: float, p: float) -> np.ndarray:
    n = np.maximum(n, 0.0)
    return np.sqrt(n + b + (p * n) ** 2)


def calibrate_counts(f2: np.ndarray, model: NoiseModel) -> tuple[float, float, float]:
    """(c, B, p): counts per unit F² giving the target median I/σ, background, instability.

    The target is capped at 0.8/p (strong data cannot beat the instability limit); p is
    then kept, and the cap is reported by the achieved median, not by an error.
    """
    f2 = np.maximum(np.asarray(f2, dtype=np.float64), 0.0)
    p = model.instability
    med_f2 = float(np.median(f2[f2 > 0])) if np.any(f2 > 0) else 1.0
    target = model.median_i_over_sigma
    if p > 0:
        target = min(target, 0.8 / p)

    def median_ratio(log_c: float) -> float:
        c = np.exp(log_c)
        n = c * f2
        b = model.background * c * med_f2
        return float(np.median(n / _sigma_model(n, b, p)))

    lo, hi = np.log(1e-6 / med_f2), np.log(1e12 / med_f2)
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if median_ratio(mid) < target:
            lo = mid
        else:
            hi = mid
    c = float(np.exp(0.5 * (lo + hi)))
    return c, model.background * c * med_f2, p


def observe(
    f2: np.ndarray, model: NoiseModel, rng: np.random.Generator, calibrate: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Noisy intensities and σ (counts scale) of true F² values; also the count level c.

    `calibrate` (bool mask) chooses the rows whose median I/σ sets the count level (e.g.
    the allowed reflections when systematic absences are kept); default all rows.
    """
    f2_cal = f2 if calibrate is None or not np.any(calibrate) else np.asarray(f2)[calibrate]
    c, b, p = calibrate_counts(f2_cal, model)
    n = c * np.maximum(np.asarray(f2, dtype=np.float64), 0.0)
    e1 = rng.standard_normal(len(n))
    e2 = rng.standard_normal(len(n))
    i_obs = n * (1.0 + p * e1) + np.sqrt(n + b) * e2
    sigma = model.sigma_scale * _sigma_model(np.maximum(i_obs, 0.0), b, p)
    return i_obs, sigma, c


def add_outliers(
    intensity: np.ndarray,
    sigma: np.ndarray,
    fraction: float,
    rng: np.random.Generator,
    *,
    strong_share: float = 0.75,
) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt a fraction of rows; returns (new intensities, boolean mask of outliers)."""
    i = np.array(intensity, dtype=np.float64, copy=True)
    mask = np.zeros(len(i), dtype=bool)
    if fraction <= 0 or not len(i):
        return i, mask
    n_out = int(rng.binomial(len(i), min(fraction, 1.0)))
    if n_out == 0:
        return i, mask
    rows = rng.choice(len(i), size=n_out, replace=False)
    mask[rows] = True
    strong = rng.random(n_out) < strong_share
    up = rows[strong]
    i[up] = np.abs(i[up]) * rng.uniform(1.5, 5.0, size=len(up)) + rng.uniform(5.0, 25.0, size=len(up)) * sigma[up]
    down = rows[~strong]
    i[down] = i[down] * rng.uniform(0.0, 0.3, size=len(down))
    return i, mask
