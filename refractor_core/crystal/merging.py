"""Merging of symmetry-equivalent reflections, R_int, and removal of systematic absences.

Default behaviour follows SHELXL (MERG 2): equivalents under the point group are merged;
Friedel mates are merged only when the space group is centrosymmetric (or when asked).
The merged intensity is a weighted mean with Sheldrick's weights (I/σ² for I > 3σ, 3/σ
otherwise); its σ is the larger of the propagated σ, (Σ 1/σ²)^-½, and the spread-based
estimate Σ|I - <I>| / (n √(n-1)). A plain inverse-variance ("gaussian") mean is available.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..types import ReflectionData, SpaceGroupRef
from .symmetry import SymmetryOps, canonical_hkl, canonical_keys


@dataclass
class MergedData:
    """Merged reflections and merging statistics.

    `group` maps each input reflection to its merged row (-1 when it was dropped as a
    systematic absence).
    """

    hkl: np.ndarray  # (M, 3) int
    intensity: np.ndarray  # (M,)
    sigma: np.ndarray  # (M,)
    multiplicity: np.ndarray  # (M,) int
    group: np.ndarray  # (N,) int
    r_int: float
    r_sigma: float
    n_absences_removed: int
    friedel_merged: bool

    @property
    def n(self) -> int:
        return int(self.hkl.shape[0])

    def to_reflection_data(self, template: ReflectionData) -> ReflectionData:
        """The merged reflections as ReflectionData, other fields copied from `template`."""
        return template.model_copy(
            update={
                "hkl": self.hkl.astype(np.int32),
                "intensity": self.intensity,
                "sigma": self.sigma,
                "batch": None,
            }
        )


def merge(
    data: ReflectionData,
    space_group: SpaceGroupRef | SymmetryOps | str,
    *,
    friedel: bool | None = None,
    method: Literal["shelx", "gaussian"] = "shelx",
    remove_absences: bool = True,
) -> MergedData:
    """Merge equivalent reflections of `data` under the point group of `space_group`.

    `friedel=None` merges Friedel mates only for centrosymmetric groups (SHELXL default).
    """
    sym = space_group if isinstance(space_group, SymmetryOps) else SymmetryOps.from_space_group(space_group)
    return merge_arrays(
        data.hkl,
        data.intensity,
        data.sigma,
        sym,
        friedel=sym.centrosymmetric if friedel is None else friedel,
        method=method,
        remove_absences=remove_absences,
    )


def merge_arrays(
    hkl: np.ndarray,
    intensity: np.ndarray,
    sigma: np.ndarray,
    sym: SymmetryOps,
    *,
    friedel: bool,
    method: Literal["shelx", "gaussian"] = "shelx",
    remove_absences: bool = True,
) -> MergedData:
    """Array version of `merge` (see there)."""
    h = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
    i_obs = np.asarray(intensity, dtype=np.float64)
    s_obs = np.asarray(sigma, dtype=np.float64)
    n = len(h)
    keep = np.ones(n, dtype=bool)
    if remove_absences and n:
        keep &= ~sym.is_absent(h)
    keep &= ~np.all(h == 0, axis=1)
    n_abs = int(n - keep.sum())
    rots = sym.point_group_rotations()
    idx_keep = np.nonzero(keep)[0]
    keys = canonical_keys(h[idx_keep], rots, friedel)
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    m = len(uniq)
    group = np.full(n, -1, dtype=np.int64)
    group[idx_keep] = inverse

    ii, ss = i_obs[idx_keep], np.where(s_obs[idx_keep] > 0, s_obs[idx_keep], 1e-3)
    inv_var = 1.0 / ss**2
    if method == "shelx":
        w = np.where(ii > 3.0 * ss, ii * inv_var, 3.0 / ss)
    elif method == "gaussian":
        w = inv_var
    else:
        raise ValueError(f"unknown merging method {method!r}")
    sum_w = np.bincount(inverse, weights=w, minlength=m)
    mean = np.bincount(inverse, weights=w * ii, minlength=m) / sum_w
    sig_prop = 1.0 / np.sqrt(np.bincount(inverse, weights=inv_var, minlength=m))
    abs_dev = np.abs(ii - mean[inverse])
    sum_dev = np.bincount(inverse, weights=abs_dev, minlength=m)
    sum_i = np.bincount(inverse, weights=ii, minlength=m)
    multi = counts > 1
    sig_spread = np.zeros(m)
    sig_spread[multi] = sum_dev[multi] / (counts[multi] * np.sqrt(counts[multi] - 1.0))
    sigma_m = np.maximum(sig_prop, sig_spread)

    r_int = float(sum_dev[multi].sum() / sum_i[multi].sum()) if multi.any() and sum_i[multi].sum() > 0 else 0.0
    r_sigma = float(sigma_m.sum() / mean.sum()) if m and mean.sum() > 0 else 0.0

    # representative index: the canonical member of each class
    first = np.zeros(m, dtype=np.int64)
    first[inverse[::-1]] = np.arange(len(inverse))[::-1]
    rep = canonical_hkl(h[idx_keep][first], rots, friedel)
    return MergedData(
        hkl=rep.astype(np.int32),
        intensity=mean,
        sigma=sigma_m,
        multiplicity=counts.astype(np.int64),
        group=group,
        r_int=r_int,
        r_sigma=r_sigma,
        n_absences_removed=n_abs,
        friedel_merged=friedel,
    )


def r_int(data: ReflectionData, space_group: SpaceGroupRef | SymmetryOps | str, *, friedel: bool | None = None) -> float:
    """R_int = Σ|I - <I>| / Σ I over reflections measured more than once."""
    return merge(data, space_group, friedel=friedel).r_int


#: sin θ/λ (Å⁻¹) of the IUCr's θ_full, to which the data should be complete (25.24° for Mo Kα)
STOL_FULL = 0.6


def collection_statistics(data: ReflectionData, merged: MergedData, symmetry: SymmetryOps, wavelength: float) -> dict:
    """What a SHELXL CIF states of the data (the `_diffrn_reflns_*` items): rows measured,
    index limits, θ range, R_int, R_σ, and the fraction of the unique reflections measured
    to θ_max and to θ_full, Friedel mates counted as one (Laue) and, for a space group
    without a centre, apart (point group); systematic absences are left out."""
    from ..simulation.reflections import unique_reflections
    from .cell import stol

    s_raw = stol(data.cell, data.hkl)
    s_raw = s_raw[s_raw > 0]
    s_merged = stol(data.cell, merged.hkl)  # (systematic absences removed)
    rotations = symmetry.point_group_rotations()
    out: dict = {
        "n_measured": int(data.n),
        "limits": [[int(data.hkl[:, k].min()), int(data.hkl[:, k].max())] for k in range(3)],
        "theta_min": math.degrees(math.asin(min(float(s_merged.min() if merged.n else s_raw.min()) * wavelength, 1.0))),
        "theta_max": math.degrees(math.asin(min(float(s_raw.max()) * wavelength, 1.0))),
        "r_int": float(merged.r_int),
        "r_sigma": float(merged.r_sigma),
    }

    def fraction(s_limit: float, friedel: bool) -> float:
        inside = merged.hkl[s_merged <= s_limit * (1 + 1e-9)]
        measured = len(np.unique(canonical_keys(inside, rotations, friedel)))
        possible = unique_reflections(data.cell, symmetry, 0.5 / s_limit, friedel=friedel)
        return measured / max(len(possible), 1)

    s_max = float(s_merged.max()) if merged.n else 0.0
    limits = {"theta_max": s_max} if s_max > 0 else {}
    if STOL_FULL * wavelength < 1.0 and s_max >= STOL_FULL:
        out["theta_full"] = math.degrees(math.asin(STOL_FULL * wavelength))
        limits["theta_full"] = STOL_FULL
    for name, s_limit in limits.items():
        out[f"laue_fraction_{name}"] = fraction(s_limit, True)
        if not symmetry.centrosymmetric:
            out[f"point_group_fraction_{name}"] = fraction(s_limit, False)
    return out


def friedel_pairs(hkl: np.ndarray, space_group: SpaceGroupRef | SymmetryOps | str) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (i, j), i < j, of the Friedel pairs among `hkl` (already merged under
    the point group): h_j is equivalent to -h_i. Merged data hold each class by its
    canonical member, which for -h is rarely -h itself, so opposites are matched by class."""
    sym = space_group if isinstance(space_group, SymmetryOps) else SymmetryOps.from_space_group(space_group)
    h = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
    if sym.centrosymmetric or not len(h):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rots = sym.point_group_rotations()
    index = {int(k): i for i, k in enumerate(canonical_keys(h, rots, False))}
    mates = np.array([index.get(int(k), -1) for k in canonical_keys(-h, rots, False)], dtype=np.int64)
    first = np.nonzero(mates > np.arange(len(h)))[0]
    return first, mates[first]


def friedel_merged_count(hkl: np.ndarray, space_group: SpaceGroupRef | SymmetryOps | str) -> int:
    """The number of distinct reflections among `hkl` (already merged under the point
    group) once Friedel opposites are merged too: equal to len(hkl) for centrosymmetric
    groups or Friedel-merged data, n - (number of Friedel pairs with both opposites
    present) otherwise."""
    return int(len(np.asarray(hkl).reshape(-1, 3)) - len(friedel_pairs(hkl, space_group)[0]))
