"""Wilson statistics: overall scale and B, normalised structure factors |E|, E-statistics.

    <I(s)> = k ε Σ_cell f_j(s)² exp(-2 B s²),   s = sin θ/λ

`wilson_plot` fits ln k and B over resolution shells; `normalized_e` divides each
intensity by its expectation (ε included), with a smooth shell-wise correction so that
<E²> = 1 at every resolution. `e_statistics` gives <|E²-1|> (0.968 centric, 0.736
acentric for random atoms) and related moments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..types import ReflectionData, SpaceGroupRef
from .cell import stol as stol_of
from .formula import cell_contents
from .scattering import form_factors
from .symmetry import SymmetryOps

#: volume per non-hydrogen atom (Å³) used when no formula is known (organic-like)
VOLUME_PER_ATOM = 18.0


@dataclass
class WilsonResult:
    """Result of a Wilson plot: <I> = scale · Σf² · exp(-2 B s²)."""

    scale: float
    b: float
    shell_s2: np.ndarray  # centre of each shell (s²)
    shell_ln_ratio: np.ndarray  # ln(<I/ε>/Σf²) per shell
    n_shells: int


def composition_for(data: ReflectionData, n_sym: int | None = None) -> dict[str, float]:
    """Atoms per cell from the formula and Z; without them, a guess from the volume."""
    if data.formula:
        z = data.z
        if z is None:
            z = float(n_sym or 1)
        return cell_contents(data.formula, z)
    if data.cell is None:
        raise ValueError("no cell")
    n = max(data.cell.volume / VOLUME_PER_ATOM, 1.0)
    return {"C": n}


def sum_f_squared(composition: dict[str, float], s: np.ndarray) -> np.ndarray:
    """Σ_cell f_j(s)² (electrons²) for each sin θ/λ."""
    elements = list(composition)
    counts = np.array([composition[e] for e in elements])
    f = form_factors(elements, s)
    return (counts[:, None] * f**2).sum(axis=0)


def _shells(s2: np.ndarray, n_shells: int) -> np.ndarray:
    """Shell index for each reflection: equal-count shells in s²."""
    order = np.argsort(s2)
    idx = np.empty(len(s2), dtype=np.int64)
    idx[order] = np.minimum((np.arange(len(s2)) * n_shells) // max(len(s2), 1), n_shells - 1)
    return idx


def wilson_plot(
    data: ReflectionData,
    space_group: SpaceGroupRef | SymmetryOps | str | None = None,
    composition: dict[str, float] | None = None,
    *,
    n_shells: int | None = None,
    d_max_fit: float = 4.0,
) -> WilsonResult:
    """Fit the overall scale and isotropic B from shells beyond `d_max_fit` Å."""
    sym = _sym(space_group)
    if data.cell is None:
        raise ValueError("Wilson plot needs a unit cell")
    s = stol_of(data.cell, data.hkl)
    eps = sym.epsilon(data.hkl).astype(np.float64) if sym is not None else np.ones(data.n)
    comp = composition or composition_for(data, sym.n if sym is not None else None)
    sf2 = sum_f_squared(comp, s)
    keep = (s > 0) & (eps > 0)
    s, eps, sf2, i_obs = s[keep], eps[keep], sf2[keep], data.intensity[keep]
    n_shells = n_shells or int(np.clip(len(s) // 150, 4, 30))
    shell = _shells(s**2, n_shells)
    ratio_sum = np.bincount(shell, weights=i_obs / (eps * sf2), minlength=n_shells)
    counts = np.bincount(shell, minlength=n_shells)
    s2c = np.bincount(shell, weights=s**2, minlength=n_shells) / np.maximum(counts, 1)
    mean_ratio = ratio_sum / np.maximum(counts, 1)
    ok = (mean_ratio > 0) & (counts > 5) & (s2c > 1.0 / (4.0 * d_max_fit**2))
    if ok.sum() < 2:
        ok = (mean_ratio > 0) & (counts > 0)
    if ok.sum() >= 2:
        slope, intercept = np.polyfit(s2c[ok], np.log(mean_ratio[ok]), 1, w=np.sqrt(counts[ok]))
    else:
        slope, intercept = 0.0, float(np.log(max(np.mean(i_obs / (eps * sf2)), 1e-12)))
    return WilsonResult(
        scale=float(np.exp(intercept)),
        b=float(-slope / 2.0),
        shell_s2=s2c,
        shell_ln_ratio=np.log(np.where(mean_ratio > 0, mean_ratio, np.nan)),
        n_shells=n_shells,
    )


def normalized_e(
    data: ReflectionData,
    space_group: SpaceGroupRef | SymmetryOps | str | None = None,
    composition: dict[str, float] | None = None,
    *,
    shell_correction: bool = True,
    n_shells: int | None = None,
) -> np.ndarray:
    """|E| for every reflection (negative intensities give E = 0).

    E² = I / (ε k Σf² exp(-2Bs²)); with `shell_correction`, each resolution shell is then
    rescaled so that <E²> = 1 (robust to a non-Wilson fall-off at low resolution).
    """
    sym = _sym(space_group)
    if data.cell is None:
        raise ValueError("|E| needs a unit cell")
    s = stol_of(data.cell, data.hkl)
    eps = sym.epsilon(data.hkl).astype(np.float64) if sym is not None else np.ones(data.n)
    eps = np.where(eps > 0, eps, 1.0)
    comp = composition or composition_for(data, sym.n if sym is not None else None)
    w = wilson_plot(data, sym, comp, n_shells=n_shells)
    expected = eps * w.scale * sum_f_squared(comp, s) * np.exp(-2.0 * w.b * s**2)
    e2 = data.intensity / np.maximum(expected, 1e-30)
    if shell_correction and data.n >= 40:
        ns = n_shells or int(np.clip(data.n // 100, 3, 20))
        shell = _shells(s**2, ns)
        mean = np.bincount(shell, weights=e2, minlength=ns) / np.maximum(np.bincount(shell, minlength=ns), 1)
        mean = np.where(mean > 0, mean, 1.0)
        e2 = e2 / mean[shell]
    return np.sqrt(np.maximum(e2, 0.0))


def e_statistics(e: np.ndarray, centric: np.ndarray | None = None) -> dict[str, float]:
    """Moments of |E| over acentric reflections (all if `centric` is None).

    Theory: <|E²-1|> = 0.968 (centrosymmetric), 0.736 (non-centrosymmetric);
    <|E|> = 0.798 / 0.886; <E⁴> = 3.0 / 2.0.
    """
    e = np.asarray(e, dtype=np.float64)
    sel = np.ones(len(e), dtype=bool) if centric is None else ~np.asarray(centric, dtype=bool)
    if sel.sum() < 10:
        sel = np.ones(len(e), dtype=bool)
    x = e[sel]
    e2 = x**2
    return {
        "mean_abs_e2_minus_1": float(np.mean(np.abs(e2 - 1.0))) if len(x) else float("nan"),
        "mean_abs_e": float(np.mean(x)) if len(x) else float("nan"),
        "mean_e4": float(np.mean(e2**2)) if len(x) else float("nan"),
        "fraction_e_gt_2": float(np.mean(x > 2.0)) if len(x) else float("nan"),
        "n": int(len(x)),
    }


def _sym(space_group) -> SymmetryOps | None:
    if space_group is None:
        return None
    if isinstance(space_group, SymmetryOps):
        return space_group
    return SymmetryOps.from_space_group(space_group)
