"""Random but realistic experiment parameters for one simulated data set.

The distributions follow laboratory practice and the measured cases in ../shared/data/real
(see docs/datasets.md for the table): Mo Kα most often, Cu for organics and small
crystals, Ag sometimes; d_min 0.6-1.2 Å (most near 0.8, never beyond the 2θ limit of the
wavelength); B 0.5-3 Å² for inorganic, 2-6 Å² for molecular crystals; median I/σ
log-uniform over 3.5-40; most data merged-like, some unmerged with redundancy 2-6.
"""

from __future__ import annotations

import math

import numpy as np

from ..simulation.noise import NoiseModel
from ..simulation.reflections import reachable_d_min
from ..simulation.simulator import WAVELENGTHS, SimulationParams


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def sample_params(
    rng: np.random.Generator,
    *,
    kind: str = "inorganic",
    centrosymmetric: bool = True,
    seed: int = 0,
    unmerged_fraction: float = 0.3,
) -> SimulationParams:
    """Draw one set of simulation parameters (see the module docstring)."""
    organic = kind != "inorganic"
    u = rng.random()
    if organic:
        anode = "Mo" if u < 0.55 else ("Cu" if u < 0.95 else "Ag")
    else:
        anode = "Mo" if u < 0.75 else ("Ag" if u < 0.9 else "Cu")
    wavelength = WAVELENGTHS[anode]
    lo = max(0.6, reachable_d_min(wavelength) + 0.01)
    d_min = float(np.clip(rng.triangular(lo, max(lo, 0.8), 1.2), lo, 1.2))
    b = float(rng.uniform(2.0, 6.0)) if organic else float(rng.uniform(0.5, 3.0))
    noise = NoiseModel(
        median_i_over_sigma=_log_uniform(rng, 3.5, 40.0),
        background=_log_uniform(rng, 0.1, 2.0),
        instability=float(rng.uniform(0.01, 0.06)),
        sigma_scale=float(rng.uniform(0.8, 1.3)),
    )
    completeness = float(rng.uniform(0.97, 1.0)) if rng.random() < 0.7 else float(rng.uniform(0.85, 0.97))
    redundancy = float(rng.uniform(2.0, 6.0)) if rng.random() < unmerged_fraction else 1.0
    outliers = _log_uniform(rng, 0.001, 0.01) if rng.random() < 0.5 else 0.0
    extinction = _log_uniform(rng, 0.001, 0.1) if rng.random() < 0.2 else 0.0
    twin = float(rng.uniform(0.05, 0.5)) if (not centrosymmetric and rng.random() < 0.15) else 0.0
    max_i = float(rng.choice([999.0, 9999.0, 10000.0, float(rng.uniform(15000.0, 90000.0))]))
    return SimulationParams(
        d_min=round(d_min, 3),
        wavelength=wavelength,
        b_wilson=round(b, 3),
        noise=noise,
        completeness=completeness,
        redundancy=redundancy,
        outliers=outliers,
        extinction=extinction,
        twin_fraction=twin,
        max_intensity=max_i,
        seed=seed,
    )
