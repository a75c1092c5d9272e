"""Simulated single-crystal diffraction data from a Structure, through the kernel's engine.

    simulate(structure, d_min=0.8, wavelength="Mo", b_wilson=3.0, seed=1) -> ReflectionData

Steps: the symmetry-unique reflections inside the limiting sphere (systematic absences
removed, or kept with `keep_absences` as a diffractometer measures them: true F² = 0, so
they carry only noise; Friedel mates kept apart when anomalous dispersion makes them differ); F² from the
kernel (`model_intensities`: structure factors with f′/f″ for the wavelength, an optional
inversion twin); optional SHELXL-type extinction; incompleteness (a blind cone plus random
losses); unmerged equivalents when `redundancy` > 1; counting noise (`noise.py`); outliers;
finally a file scale (strongest reflection = `max_intensity`) and rounding to the 0.01 that
an HKLF 4 file keeps, so the data in memory equal the data in the written file.

The returned data carry cell, wavelength, formula and Z, as a user's .ins would, but no
space group unless `reveal_space_group=True`. `simulate_detailed` also returns the truth.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..crystal.cell import reciprocal_metric, stol as stol_of
from ..crystal.observations import model_intensities
from ..crystal.rfactors import extinction_factor
from ..crystal.symmetry import SymmetryOps
from ..types import RefinementInstructions, ReflectionData, Structure
from .composition import formula_and_z
from .noise import NoiseModel, add_outliers, observe
from .reflections import expand_equivalents, reachable_d_min, unique_reflections

#: common laboratory and synchrotron-like wavelengths (Å): Kα1/Kα-weighted values
WAVELENGTHS = {"Mo": 0.71073, "Cu": 1.54184, "Ag": 0.56087}

#: the rows of an HKLF 4 file keep two decimals
HKLF_RESOLUTION = 0.01


def wavelength_value(wavelength: float | str) -> float:
    """Å from a number or an anode name ('Mo', 'Cu', 'Ag')."""
    if isinstance(wavelength, str):
        key = wavelength.strip().capitalize()
        if key in WAVELENGTHS:
            return WAVELENGTHS[key]
        try:
            return float(wavelength)
        except ValueError:
            raise ValueError(f"unknown wavelength {wavelength!r}; use a number or one of {list(WAVELENGTHS)}") from None
    return float(wavelength)


class SimulationParams(BaseModel):
    """Everything that determines a simulated data set (with the structure and the seed)."""

    model_config = ConfigDict(extra="forbid")

    d_min: float = Field(0.8, gt=0.2, le=5.0)
    wavelength: float = 0.71073
    b_wilson: float | None = Field(None, ge=0.0, le=40.0, description="None: keep the structure's ADPs")
    b_spread: float = Field(0.2, ge=0.0, description="log-normal spread of per-atom U around B/8π²")
    anomalous: bool = True
    noise: NoiseModel = Field(default_factory=NoiseModel)
    completeness: float = Field(1.0, gt=0.0, le=1.0)
    redundancy: float = Field(1.0, ge=1.0, le=50.0)
    outliers: float = Field(0.0, ge=0.0, le=0.5)
    extinction: float = Field(0.0, ge=0.0, description="SHELXL EXTI x")
    twin_fraction: float = Field(0.0, ge=0.0, le=0.5, description="inversion-twin fraction (BASF)")
    max_intensity: float = Field(9999.0, gt=1.0, le=99999.0)
    reveal_space_group: bool = False
    keep_absences: bool = Field(False, description="keep systematically absent reflections (F² = 0, noise only)")
    seed: int = 0

    @field_validator("wavelength", mode="before")
    @classmethod
    def _wavelength(cls, v: Any) -> float:
        return wavelength_value(v)


@dataclass
class SimulationResult:
    """Simulated data and the truth behind them."""

    data: ReflectionData
    params: SimulationParams
    structure: Structure  # the structure actually used (ADPs set from b_wilson)
    unique_hkl: np.ndarray  # (N, 3) unique reflections measured
    unique_f2: np.ndarray  # (N,) true F² (absolute scale, twin/extinction applied)
    parent: np.ndarray  # (M,) row of unique_hkl behind each observation
    outlier: np.ndarray  # (M,) bool
    counts_per_f2: float  # c of the noise model
    file_scale: float  # intensities written = counts × file_scale
    d_min: float  # d_min actually used (may be raised by the 2θ limit)
    notes: list[str]


def with_wilson_b(structure: Structure, b: float, rng: np.random.Generator, spread: float = 0.2) -> Structure:
    """The structure with isotropic U_j = B/8π² · exp(spread · ε_j) (H atoms ×1.2)."""
    u0 = b / (8.0 * math.pi**2)
    sites = []
    for s in structure.sites:
        u = u0 * math.exp(spread * float(rng.standard_normal()))
        if s.element.upper() in ("H", "D"):
            u *= 1.2
        sites.append(s.model_copy(update={"u_iso": max(u, 0.001), "u_aniso": None}))
    return structure.model_copy(update={"sites": sites})


def with_detected_site_orders(structure: Structure, symmetry: SymmetryOps) -> Structure:
    """The structure with every site's symmetry order detected by the kernel (0.05 Å; 1 for
    an atom of a negative PART, as SHELXL counts it).

    A stated order is not trusted: SHELXL CIFs give the order under the multiplicity tag.
    """
    if not structure.sites:
        return structure
    xyz = np.array([s.xyz for s in structure.sites], dtype=np.float64)
    order = symmetry.site_orders(structure.cell, xyz, [s.part for s in structure.sites])
    sites = [s.model_copy(update={"site_symmetry_order": int(o)}) for s, o in zip(structure.sites, order)]
    return structure.model_copy(update={"sites": sites})


def _blind_region(hkl: np.ndarray, structure: Structure, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Mask of reflections lost to incompleteness: half a blind cone, half random."""
    n = len(hkl)
    lose = int(round(n * fraction))
    mask = np.zeros(n, dtype=bool)
    if lose <= 0:
        return mask
    # reciprocal-space directions (unnormalised Cartesian via G*)
    g = reciprocal_metric(structure.cell)
    r = hkl.astype(np.float64) @ np.linalg.cholesky(g)
    norm = np.linalg.norm(r, axis=1)
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    cosang = np.abs(r @ axis) / np.maximum(norm, 1e-12)
    n_cone = lose // 2
    cone = np.argsort(-cosang)[:n_cone]  # closest to the rotation axis: the blind cone
    mask[cone] = True
    rest = np.nonzero(~mask)[0]
    mask[rng.choice(rest, size=lose - n_cone, replace=False)] = True
    return mask


def _rng(p: SimulationParams) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([p.seed, 7]))


def _prepare(structure: Structure, p: SimulationParams, sym: SymmetryOps, rng: np.random.Generator) -> Structure:
    structure = with_detected_site_orders(structure, sym)
    if p.b_wilson is not None:
        structure = with_wilson_b(structure, p.b_wilson, rng, p.b_spread)
    return structure


def simulated_structure(structure: Structure, params: SimulationParams | dict) -> Structure:
    """The structure exactly as `simulate` used it (ADPs drawn from `b_wilson` and the seed).

    Lets a benchmark recover the true model of a stored data set from its parameters.
    """
    p = SimulationParams.model_validate({k: v for k, v in dict(params).items() if k in SimulationParams.model_fields}) \
        if isinstance(params, dict) else params
    sym = SymmetryOps.from_space_group(structure.space_group)
    return _prepare(structure, p, sym, _rng(p))


def simulate_detailed(structure: Structure, params: SimulationParams | None = None, **overrides: Any) -> SimulationResult:
    """Simulate a data set; returns the data with the truth (see `simulate`)."""
    p = (params or SimulationParams()).model_copy(update=overrides) if overrides else (params or SimulationParams())
    p = SimulationParams.model_validate(p.model_dump())
    rng = _rng(p)
    notes: list[str] = []
    sym = SymmetryOps.from_space_group(structure.space_group)
    structure = _prepare(structure, p, sym, rng)
    d_min = p.d_min
    reach = reachable_d_min(p.wavelength)
    if d_min < reach:
        notes.append(f"d_min {d_min:.3f} Å is beyond 2θ max at λ={p.wavelength}; using {reach:.3f} Å")
        d_min = reach
    friedel = sym.centrosymmetric or not p.anomalous
    hkl = unique_reflections(structure.cell, sym, d_min, friedel=friedel, keep_absent=p.keep_absences)
    if not len(hkl):
        raise ValueError(f"no reflections inside d_min = {d_min} Å for this cell")
    wl = p.wavelength if p.anomalous else None
    instr = None
    if p.twin_fraction > 0:
        instr = RefinementInstructions(twin_n=2, basf=[p.twin_fraction])
    # absent reflections have F² = 0 exactly (the engine would give rounding residue)
    present = ~sym.is_absent(hkl) if p.keep_absences else np.ones(len(hkl), dtype=bool)
    f2 = np.zeros(len(hkl))
    f2[present] = model_intensities(structure, hkl[present], wavelength=wl, instructions=instr, extinction=0.0)
    if p.extinction > 0:
        f2 = f2 * extinction_factor(f2, p.extinction, stol_of(structure.cell, hkl), p.wavelength)
    if p.completeness < 1.0:
        lost = _blind_region(hkl, structure, 1.0 - p.completeness, rng)
        hkl, f2 = hkl[~lost], f2[~lost]
    obs_hkl, parent = expand_equivalents(hkl, sym, p.redundancy, rng, friedel=friedel)
    i_obs, sigma, c = observe(f2[parent], p.noise, rng, calibrate=present[parent])
    i_obs, outlier = add_outliers(i_obs, sigma, p.outliers, rng)
    top = float(np.max(np.abs(i_obs))) if len(i_obs) else 1.0
    scale = p.max_intensity / max(top, 1e-12)
    i_file = np.round(i_obs * scale / HKLF_RESOLUTION) * HKLF_RESOLUTION
    s_file = np.maximum(np.round(sigma * scale / HKLF_RESOLUTION) * HKLF_RESOLUTION, HKLF_RESOLUTION)
    formula, z, _ = formula_and_z(structure, sym)
    record = p.model_dump(mode="json")
    record["d_min_used"] = d_min
    data = ReflectionData(
        hkl=obs_hkl,
        intensity=i_file,
        sigma=s_file,
        cell=structure.cell,
        wavelength=p.wavelength,
        formula=formula,
        z=z,
        space_group_hint=structure.space_group if p.reveal_space_group else None,
        source=f"simulated:{structure.name}",
        notes=["simulated " + json.dumps(record, sort_keys=True)] + notes,
    )
    return SimulationResult(
        data=data,
        params=p,
        structure=structure,
        unique_hkl=hkl,
        unique_f2=f2,
        parent=parent,
        outlier=outlier,
        counts_per_f2=c,
        file_scale=scale,
        d_min=d_min,
        notes=notes,
    )


def simulate(
    structure: Structure,
    *,
    d_min: float = 0.8,
    wavelength: float | str = 0.71073,
    b_wilson: float | None = None,
    noise: NoiseModel | dict | None = None,
    completeness: float = 1.0,
    redundancy: float = 1.0,
    outliers: float = 0.0,
    extinction: float = 0.0,
    twin_fraction: float = 0.0,
    anomalous: bool = True,
    max_intensity: float = 9999.0,
    reveal_space_group: bool = False,
    keep_absences: bool = False,
    seed: int = 0,
) -> ReflectionData:
    """Simulated F² with σ of `structure`, as a diffractometer and its software would give.

    `redundancy` 1 gives one row per unique reflection (merged-like); above 1, unmerged rows
    of random equivalents. `b_wilson` (Å²) replaces the structure's ADPs by isotropic ones
    around B/8π²; None keeps them. `completeness` < 1 removes a blind cone and random
    reflections. `twin_fraction` adds an inversion twin, `extinction` SHELXL's EXTI x.
    `keep_absences` keeps the systematically absent reflections (true F² = 0: background
    noise only, outliers possible), as measured data have them; the count level is set on
    the allowed reflections, so the noise of those does not change. Deterministic for a
    given seed.
    """
    params = SimulationParams(
        d_min=d_min,
        wavelength=wavelength,
        b_wilson=b_wilson,
        noise=NoiseModel.model_validate(noise) if isinstance(noise, dict) else (noise or NoiseModel()),
        completeness=completeness,
        redundancy=redundancy,
        outliers=outliers,
        extinction=extinction,
        twin_fraction=twin_fraction,
        anomalous=anomalous,
        max_intensity=max_intensity,
        reveal_space_group=reveal_space_group,
        keep_absences=keep_absences,
        seed=seed,
    )
    return simulate_detailed(structure, params).data
