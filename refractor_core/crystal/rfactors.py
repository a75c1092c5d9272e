"""Agreement figures as SHELXL defines them: R1, wR2, GooF, scale, weights, extinction.

    R1   = Σ ||Fo| - |Fc|| / Σ |Fo|             over Fo² > 2σ(Fo²)
    wR2  = [Σ w (Fo² - Fc²)² / Σ w (Fo²)²]^½    over all reflections
    GooF = [Σ w (Fo² - Fc²)² / (n - p)]^½
    w    = 1 / [σ²(Fo²) + (aP)² + bP],  P = (max(Fo², 0) + 2 Fc²) / 3

Fo² are put on the scale of Fc² (divided by the fitted scale k), as SHELXL does. The
SHELXL extinction correction multiplies Fc² by [1 + 0.001 x Fc² λ³ / sin 2θ]^-½.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def shelxl_weights(fo2: np.ndarray, sigma: np.ndarray, fc2: np.ndarray, a: float = 0.0, b: float = 0.0) -> np.ndarray:
    """SHELXL weights 1/[σ² + (aP)² + bP] (all quantities on the Fc² scale)."""
    p = (np.maximum(fo2, 0.0) + 2.0 * fc2) / 3.0
    return 1.0 / (sigma**2 + (a * p) ** 2 + b * p)


def extinction_factor(fc2: np.ndarray, x: float, stol: np.ndarray, wavelength: float) -> np.ndarray:
    """Multiplier of Fc² for SHELXL's extinction parameter x (EXTI); a negative Fc² (a twin
    fraction slightly below 0 on an HKLF 5 component) takes the factor of Fc² = 0."""
    if not x:
        return np.ones_like(fc2)
    sin_theta = np.clip(stol * wavelength, 1e-8, 1.0)
    sin_2theta = np.clip(2.0 * sin_theta * np.sqrt(1.0 - sin_theta**2), 1e-8, None)
    return 1.0 / np.sqrt(1.0 + 0.001 * x * np.maximum(fc2, 0.0) * wavelength**3 / sin_2theta)


def scale_factor(fo2: np.ndarray, fc2: np.ndarray, weights: np.ndarray | None = None) -> float:
    """k minimising Σ w (Fo² - k Fc²)²."""
    w = np.ones_like(fo2) if weights is None else weights
    den = float(np.sum(w * fc2 * fc2))
    return float(np.sum(w * fo2 * fc2) / den) if den > 0 else 1.0


def r1(fo2: np.ndarray, fc2: np.ndarray, sigma: np.ndarray, *, threshold: float = 2.0) -> float:
    """R1 over reflections with Fo² > threshold·σ(Fo²); Fo², Fc² on the same scale."""
    gt = fo2 > threshold * sigma
    fo = np.sqrt(np.maximum(fo2[gt], 0.0))
    fc = np.sqrt(np.maximum(fc2[gt], 0.0))
    den = fo.sum()
    return float(np.abs(fo - fc).sum() / den) if den > 0 else float("nan")


def r1_all(fo2: np.ndarray, fc2: np.ndarray) -> float:
    """R1 over all reflections (negative Fo² count as |Fo| = 0)."""
    fo = np.sqrt(np.maximum(fo2, 0.0))
    fc = np.sqrt(np.maximum(fc2, 0.0))
    den = fo.sum()
    return float(np.abs(fo - fc).sum() / den) if den > 0 else float("nan")


def wr2(fo2: np.ndarray, fc2: np.ndarray, weights: np.ndarray) -> float:
    """wR2 on F²."""
    den = float(np.sum(weights * fo2**2))
    return float(np.sqrt(np.sum(weights * (fo2 - fc2) ** 2) / den)) if den > 0 else float("nan")


def goof(fo2: np.ndarray, fc2: np.ndarray, weights: np.ndarray, n_parameters: int) -> float:
    """Goodness of fit S."""
    dof = max(len(fo2) - int(n_parameters), 1)
    return float(np.sqrt(np.sum(weights * (fo2 - fc2) ** 2) / dof))


@dataclass
class Agreement:
    """Agreement of a model with the data (Fo² on the Fc² scale after dividing by `scale`)."""

    R1: float
    R1_all: float
    wR2: float
    GooF: float
    n_reflections: int
    n_gt: int
    n_parameters: int
    scale: float
    weight_a: float
    weight_b: float
    extinction: float

    def as_dict(self) -> dict:
        return asdict(self)


def fit_extinction(
    fo2: np.ndarray,
    sigma: np.ndarray,
    fc2: np.ndarray,
    stol: np.ndarray,
    wavelength: float,
    *,
    weight_a: float = 0.0,
    weight_b: float = 0.0,
    x_max: float = 1.0,
) -> float:
    """SHELXL extinction x >= 0 minimising wR2 (with the scale refitted for each x)."""
    from scipy.optimize import minimize_scalar

    def cost(x: float) -> float:
        ag = agreement(fo2, sigma, fc2, extinction=x, stol=stol, wavelength=wavelength,
                       weight_a=weight_a, weight_b=weight_b, iterations=3)
        return ag.wR2 if np.isfinite(ag.wR2) else 1e9

    res = minimize_scalar(cost, bounds=(0.0, x_max), method="bounded", options={"xatol": 1e-6})
    best = float(res.x)
    return 0.0 if cost(0.0) <= cost(best) else best


def agreement(
    fo2: np.ndarray,
    sigma: np.ndarray,
    fc2: np.ndarray,
    *,
    n_parameters: int = 0,
    weight_a: float = 0.0,
    weight_b: float = 0.0,
    scale: float | None = None,
    extinction: float = 0.0,
    stol: np.ndarray | None = None,
    wavelength: float | None = None,
    iterations: int = 6,
) -> Agreement:
    """R1, wR2, GooF with a fitted (or given) scale k: Fo²/k is compared with Fc².

    With `extinction` non-zero, `stol` and `wavelength` are needed and Fc² is corrected.
    The scale is fitted by weighted least squares with the given SHELXL weights
    (iterated, since the weights depend on the scale through P).
    """
    fo2 = np.asarray(fo2, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    fc2 = np.asarray(fc2, dtype=np.float64)
    if extinction:
        if stol is None or wavelength is None:
            raise ValueError("extinction needs stol and wavelength")
        fc2 = fc2 * extinction_factor(fc2, extinction, stol, wavelength)
    if scale is None:
        k = scale_factor(fo2, fc2, 1.0 / sigma**2)
        for _ in range(iterations):
            w = shelxl_weights(fo2 / k, sigma / k, fc2, weight_a, weight_b)
            k = scale_factor(fo2, fc2, w)
    else:
        k = float(scale)
    if not (np.isfinite(k) and k > 0):
        k = 1.0
    fo2s, sigs = fo2 / k, sigma / k
    w = shelxl_weights(fo2s, sigs, fc2, weight_a, weight_b)
    return Agreement(
        R1=r1(fo2s, fc2, sigs),
        R1_all=r1_all(fo2s, fc2),
        wR2=wr2(fo2s, fc2, w),
        GooF=goof(fo2s, fc2, w, n_parameters),
        n_reflections=int(len(fo2)),
        n_gt=int(np.sum(fo2s > 2.0 * sigs)),
        n_parameters=int(n_parameters),
        scale=float(k),
        weight_a=float(weight_a),
        weight_b=float(weight_b),
        extinction=float(extinction),
    )


def disagreeable_reflections(hkl: np.ndarray, fo2: np.ndarray, fc2: np.ndarray, weights: np.ndarray,
                             d: np.ndarray, n: int = 10) -> list[dict]:
    """SHELXL's 'most disagreeable reflections': the `n` of largest |Fo² - Fc²| / esd,
    esd = w^-½ with the refinement's weights (Fo² and Fc² on one scale), worst first; each
    as {"hkl", "Fo2", "Fc2", "error_esd", "d"}. error_esd < 0: observed weaker than
    calculated (a beam stop's shadow, an overload, extinction)."""
    err = (fo2 - fc2) * np.sqrt(np.maximum(weights, 0.0))
    worst = np.argsort(-np.abs(err), kind="stable")[:n]
    return [{"hkl": [int(v) for v in hkl[i]], "Fo2": float(fo2[i]), "Fc2": float(fc2[i]),
             "error_esd": float(err[i]), "d": float(d[i])} for i in worst]
