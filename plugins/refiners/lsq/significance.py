"""Is a richer model really better? The fit to the data and an F-test for nested models.

Used where the refiner decides between two models of the same data: anisotropic against
isotropic ADPs, a disorder split against the unsplit model, swapped elements.
"""

from __future__ import annotations

import math

import numpy as np

from .model import WorkingModel


def data_fit(refinement, model: WorkingModel, weights: np.ndarray | None = None) -> tuple[float, float]:
    """(Σ w (Fo² - M)², R1) of a model against the refined observations; w = 1/σ² unless
    `weights` (e.g. the refinement's own weights, held fixed while models are compared)."""
    from refractor_core.crystal.rfactors import agreement

    fc2c = refinement.calc.fc2_components(model)
    mod, fcabs = refinement.calc.model_intensities(model, fc2c)
    w = 1.0 / refinement.sigma**2 if weights is None else weights
    chi2 = float(np.sum(w * (refinement.fo2 - mod) ** 2))
    ag = agreement(refinement.fo2, refinement.sigma, fcabs, n_parameters=0, scale=model.scale)
    return chi2, float(ag.R1)


def f_test(chi2_simple: float, chi2_rich: float, n_simple: int, n_rich: int, n_obs: int) -> tuple[float, float]:
    """(F, p) for the rich model's drop of χ² with its n_rich - n_simple extra parameters
    (p: the chance of a drop this large if the extra parameters were worthless)."""
    from scipy.stats import f as f_dist

    q = max(n_rich - n_simple, 1)
    dof = max(n_obs - n_rich, 1)
    stat = ((chi2_simple - chi2_rich) / q) / (chi2_rich / dof) if chi2_rich > 0 else math.inf
    p_value = float(f_dist.sf(stat, q, dof)) if stat > 0 else 1.0
    return stat, p_value
