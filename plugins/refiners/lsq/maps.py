"""Difference density of a model under refinement, through the kernel's Fourier module.

This is the one place the refiner touches Fourier synthesis: the map coefficients
(|Fo| - |Fc|) exp(iφc) are formed here, on the absolute scale (Fo² divided by the scale
and the extinction factor; for twinned data the observed intensity is shared between
components in the ratio of their calculated intensities), and the synthesis and peak
search are the kernel's `refractor_core.crystal.fourier`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refractor_core.crystal.cell import d_spacing
from refractor_core.crystal.fourier import Peak, difference_map, find_peaks, fourier_map, grid_shape

from .model import WorkingModel


@dataclass
class MapCoefficients:
    hkl: np.ndarray
    f_obs: np.ndarray  # |Fo| of the main twin component, absolute scale
    f_calc: np.ndarray  # complex Fc of the main component


def coefficients(refinement, model: WorkingModel) -> MapCoefficients:
    """|Fo| and complex Fc of the reflections being refined, on the absolute scale."""
    calc = refinement.calc
    f = calc.structure_factors(model)
    fc2c = f.real**2 + f.imag**2
    fr = calc.twin_fractions(model)
    fc2 = fr @ fc2c
    y = calc.extinction(model, fc2)
    fo2_abs = np.maximum(refinement.fo2, 0.0) / (model.scale * y)
    share = np.where(fc2 > 0, fc2c[0] / np.where(fc2 > 0, fc2, 1.0), 1.0)
    fo0 = np.sqrt(fo2_abs * share)
    return MapCoefficients(calc.hkl, fo0, f[0])


def map_shape(refinement, model: WorkingModel, hkl: np.ndarray) -> tuple[int, int, int]:
    d_min = float(np.min(d_spacing(model.cell, hkl))) if len(hkl) else 1.0
    return grid_shape(model.cell, d_min, sampling=1.0 / 3.0, symmetry=model.symmetry, hkl=hkl, max_spacing=0.3)


def difference_density(refinement, model: WorkingModel) -> np.ndarray:
    """The Fo - Fc map (e/Å³) on a grid of about d_min/3 (at most 0.3 Å)."""
    c = coefficients(refinement, model)
    shape = map_shape(refinement, model, c.hkl)
    return difference_map(c.hkl, c.f_obs, c.f_calc, model.cell, shape, model.symmetry)


def difference_peaks(refinement, model: WorkingModel, max_peaks: int = 30, min_distance: float = 0.7) -> tuple[np.ndarray, list[Peak]]:
    """The difference map and its symmetry-unique peaks, highest first."""
    rho = difference_density(refinement, model)
    peaks = find_peaks(rho, model.cell, model.symmetry, max_peaks=max_peaks, min_distance=min_distance,
                       threshold=float(rho.mean() + 2.0 * rho.std()))
    return rho, peaks


def model_density_at(refinement, model: WorkingModel, atoms: np.ndarray) -> np.ndarray:
    """The model's own density (Fc synthesis over the refined reflections, e/Å³ above the
    mean) at the grid point nearest each atom: an atom's peak height at the resolution of
    the data, the yardstick for difference peaks beside it."""
    c = coefficients(refinement, model)
    shape = map_shape(refinement, model, c.hkl)
    rho = fourier_map(c.hkl, c.f_calc, model.cell, shape, model.symmetry)
    idx = np.mod(np.rint(model.xyz[np.asarray(atoms, dtype=np.int64)] * np.array(shape)), np.array(shape)).astype(np.int64)
    return rho[idx[:, 0], idx[:, 1], idx[:, 2]]
