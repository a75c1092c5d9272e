"""SHELXL weighting: w = 1/[σ²(Fo²) + (aP)² + bP] and the optimisation of a and b.

SHELXL suggests a and b that make the goodness of fit flat across the data: reflections
are sorted by Fc² into ten groups of equal size, and a, b are chosen so that the mean
w(Fo² - Fc²)² of every group is as close as possible to one (the overall GooF then
comes out near 1). All quantities are on the Fc² scale (Fo² divided by the scale k).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from refractor_core.crystal.rfactors import shelxl_weights

N_GROUPS = 10
A_MAX = 0.5
B_MAX = 1e4


@dataclass
class WeightFit:
    """Optimised a, b and the group GooF values before and after."""

    a: float
    b: float
    goof_groups_before: list[float]
    goof_groups_after: list[float]
    goof_after: float


def _group_labels(fc2: np.ndarray) -> np.ndarray:
    """Index (0..9) of the Fc²-ordered group of equal size each reflection falls in."""
    n = len(fc2)
    order = np.argsort(fc2, kind="stable")
    labels = np.empty(n, dtype=np.int64)
    for k, g in enumerate(np.array_split(order, min(N_GROUPS, max(n, 1)))):
        labels[g] = k
    return labels


def group_goof(fo2: np.ndarray, sigma: np.ndarray, fc2: np.ndarray, a: float, b: float, n_parameters: int,
               labels: np.ndarray | None = None) -> np.ndarray:
    """GooF of each of ten Fc²-ordered groups of equal size (degrees of freedom shared)."""
    labels = _group_labels(fc2) if labels is None else labels
    w = shelxl_weights(fo2, sigma, fc2, a, b)
    d2 = w * (fo2 - fc2) ** 2
    n = len(fo2)
    k = int(labels.max()) + 1 if n else 1
    sums = np.bincount(labels, weights=d2, minlength=k)
    counts = np.maximum(np.bincount(labels, minlength=k), 1)
    frac = max(1.0 - n_parameters / max(n, 1), 0.05)
    return np.sqrt(sums / (counts * frac))


def _loss(fo2, sigma, fc2, a, b, n_parameters, labels=None) -> float:
    s = group_goof(fo2, sigma, fc2, a, b, n_parameters, labels)
    return float(np.mean(np.log(np.maximum(s, 1e-6)) ** 2))


def optimise_weights(
    fo2: np.ndarray,
    sigma: np.ndarray,
    fc2: np.ndarray,
    n_parameters: int,
    *,
    start: tuple[float, float] = (0.1, 0.0),
) -> WeightFit:
    """a, b making the GooF of Fc²-ordered groups flat and close to one.

    `fo2`, `sigma` on the Fc² scale (divided by the scale factor).
    """
    fo2 = np.asarray(fo2, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    fc2 = np.asarray(fc2, dtype=np.float64)
    labels = _group_labels(fc2)
    before = group_goof(fo2, sigma, fc2, *start, n_parameters, labels)
    p_mean = float(np.mean((np.maximum(fo2, 0) + 2 * fc2) / 3.0)) or 1.0
    # coarse grid in (a, b), b scaled to the data (b P comparable to σ²)
    a_grid = np.concatenate([[0.0], np.geomspace(0.005, A_MAX, 30)])
    s2 = float(np.median(sigma**2))
    b_scale = max(s2 / p_mean, 1e-6)
    b_grid = np.concatenate([[0.0], b_scale * np.geomspace(0.01, 1e3, 30)])
    b_grid = b_grid[b_grid <= B_MAX]
    best = (np.inf, start[0], start[1])
    for a in a_grid:
        for b in b_grid:
            v = _loss(fo2, sigma, fc2, a, b, n_parameters, labels)
            if v < best[0]:
                best = (v, a, b)
    _, a0, b0 = best

    def f(z):
        a, b = z[0] ** 2, z[1] ** 2
        if a > A_MAX or b > B_MAX:
            return 1e6
        return _loss(fo2, sigma, fc2, a, b, n_parameters, labels)

    res = minimize(f, x0=[np.sqrt(a0), np.sqrt(b0)], method="Nelder-Mead", options={"xatol": 1e-5, "fatol": 1e-9, "maxiter": 400})
    a, b = float(res.x[0] ** 2), float(res.x[1] ** 2)
    if not (np.isfinite(a) and np.isfinite(b)) or f(res.x) > best[0]:
        a, b = float(a0), float(b0)
    after = group_goof(fo2, sigma, fc2, a, b, n_parameters, labels)
    w = shelxl_weights(fo2, sigma, fc2, a, b)
    dof = max(len(fo2) - n_parameters, 1)
    goof = float(np.sqrt(np.sum(w * (fo2 - fc2) ** 2) / dof))
    return WeightFit(
        a=round(a, 4),
        b=round(b, 4),
        goof_groups_before=[float(x) for x in before],
        goof_groups_after=[float(x) for x in after],
        goof_after=goof,
    )


def weights_for(
    fo2: np.ndarray,
    sigma: np.ndarray,
    model_fo_scale: np.ndarray,
    scale: float,
    a: float,
    b: float,
    scheme: str = "shelxl",
) -> np.ndarray:
    """Weights for residuals Fo² - M on the Fo² scale (SHELXL weights on the Fc² scale / k²)."""
    k = scale if scale > 0 else 1.0
    if scheme == "sigma":
        return 1.0 / sigma**2
    w = shelxl_weights(fo2 / k, sigma / k, model_fo_scale / k, a, b)
    return w / k**2
