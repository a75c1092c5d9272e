"""Origin search: place a P1 charge-flipping solution in a hypothesised space group.

A P1 solution sits at an arbitrary origin. Shifting the density by s multiplies F(h) by
exp(-2πi h·s); the shifted solution obeys the operation (R, t) when
F_s(h R) = F_s(h)·exp(-2πi h·t). The agreement of all operations as a function of s,

    A(s) = Re Σ_ops Σ_h F(hR) conj(F(h)) exp(2πi h·t) exp(-2πi (hR - h)·s),

is a Fourier series in the integer vectors k = hR - h, so one FFT evaluates it on a grid of
shifts; the best grid point is then refined by local quadratic steps on the exact sum. At
the best shift each operation's normalised agreement (a phase correlation in [-1, 1]) is
the symmetry-agreement score: near 1 when the solution has the hypothesised symmetry, near
0 when it does not, so it also re-checks the classifier's choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from refractor_core.crystal.fourier import _FFT_KW, _fft, good_grid_size
from refractor_core.crystal.symmetry import SymmetryOps
from refractor_core.crystal.cell import reciprocal_lengths
from refractor_core.types import UnitCell


class P1Lookup:
    """Fast F(h) look-up for any index from a P1 solution given on one of each Friedel pair."""

    def __init__(self, hkl: np.ndarray, f: np.ndarray):
        h = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
        self.hmax = np.abs(h).max(axis=0) if len(h) else np.zeros(3, dtype=np.int64)
        self.dims = 2 * self.hmax + 1
        self.table = np.zeros(int(np.prod(self.dims)), dtype=np.complex128)
        f = np.asarray(f, dtype=np.complex128)
        self.table[self._flat(h)] = f
        self.table[self._flat(-h)] = np.conj(f)

    def _flat(self, h: np.ndarray) -> np.ndarray:
        idx = h + self.hmax
        return (idx[..., 0] * self.dims[1] + idx[..., 1]) * self.dims[2] + idx[..., 2]

    def __call__(self, hkl: np.ndarray) -> np.ndarray:
        """F at each index (0 outside the solution's index range or where unobserved)."""
        h = np.asarray(hkl, dtype=np.int64)
        inside = np.all(np.abs(h) <= self.hmax, axis=-1)
        out = np.zeros(h.shape[:-1], dtype=np.complex128)
        out[inside] = self.table[self._flat(h[inside])]
        return out


@dataclass
class OriginResult:
    """Best origin shift (fractional; the solution's density moved by -shift) and agreement.

    score: |F|²-weighted mean phase agreement over the non-translation operations at the
    shift (1 = perfect symmetry); per_operation: the agreement of each such operation;
    n_operations: how many were scored (0 for P1, where the score is 1 by definition).
    """

    shift: np.ndarray
    score: float
    per_operation: list[float] = field(default_factory=list)
    n_operations: int = 0


def _scored_operations(sym: SymmetryOps) -> np.ndarray:
    """Indices of operations whose rotation part is not the identity (translations cannot fix an origin)."""
    eye = np.eye(3, dtype=np.int64)
    return np.array([i for i in range(sym.n) if not np.array_equal(sym.rotations[i], eye)], dtype=np.int64)


def _terms(lookup: P1Lookup, hkl: np.ndarray, f: np.ndarray, sym: SymmetryOps, ops: np.ndarray):
    """Per (op, h): k = hR - h and the complex term F(hR) conj(F(h)) exp(2πi h·t), and |..|."""
    h = np.asarray(hkl, dtype=np.int64)
    hr = np.einsum("ni,mij->mnj", h, sym.rotations[ops])  # (m, M, 3)
    f_hr = lookup(hr)  # (m, M)
    phase_t = np.exp(2j * np.pi * (h.astype(np.float64) @ sym.translations[ops].T).T)  # (m, M)
    term = f_hr * np.conj(f)[None, :] * phase_t
    k = hr - h[None, :, :]
    return k, term, np.abs(f_hr) * np.abs(f)[None, :]


def _agreement(k: np.ndarray, term: np.ndarray, s: np.ndarray) -> float:
    return float(np.real(term * np.exp(-2j * np.pi * (k @ s))).sum())


def find_origin(
    hkl: np.ndarray,
    f: np.ndarray,
    cell: UnitCell,
    symmetry: SymmetryOps,
    *,
    spacing: float = 0.2,
    strong_fraction: float = 0.6,
    n_peaks: int = 6,
) -> OriginResult:
    """The origin shift that makes a P1 solution best obey `symmetry`, and the agreement.

    `hkl`, `f`: one of each Friedel pair of the P1 solution (kernel convention). Only the
    strongest `strong_fraction` of reflections are used (weak ones carry little phase
    information). `spacing` (Å) is the grid of trial shifts before local refinement.
    """
    h = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
    f = np.asarray(f, dtype=np.complex128)
    ops = _scored_operations(symmetry)
    if len(ops) == 0 or len(h) == 0:
        return OriginResult(shift=np.zeros(3), score=1.0, per_operation=[], n_operations=0)
    lookup = P1Lookup(h, f)
    amp = np.abs(f)
    if 0 < strong_fraction < 1 and len(h) > 50:
        keep = amp >= np.quantile(amp, 1.0 - strong_fraction)
        h_use, f_use = h[keep], f[keep]
    else:
        h_use, f_use = h, f
    k, term, norm = _terms(lookup, h_use, f_use, symmetry, ops)
    # A(s) depends on the terms only through their sum per distinct k: combine them once
    # (exact; many (operation, h) pairs share a k, more so in high-symmetry groups)
    k_flat, t_flat = _combine_by_k(k.reshape(-1, 3), term.reshape(-1))
    # Friedel mates contribute the conjugate term at -k: A(s) is real
    shape = tuple(
        good_grid_size(max(int(np.ceil(1.0 / (rl * spacing))), 4)) for rl in reciprocal_lengths(cell)
    )
    grid = np.zeros(shape, dtype=np.complex128)
    idx = np.mod(k_flat, np.array(shape))
    np.add.at(grid, (idx[:, 0], idx[:, 1], idx[:, 2]), t_flat)
    idx_m = np.mod(-k_flat, np.array(shape))
    np.add.at(grid, (idx_m[:, 0], idx_m[:, 1], idx_m[:, 2]), np.conj(t_flat))
    a_map = _fft.fftn(grid, **_FFT_KW).real  # Σ_k W(k) exp(-2πi k·n/N)
    # refine the few highest local maxima of the sampled agreement; keep the best
    s, best_val = np.zeros(3), -np.inf
    for flat in _top_maxima(a_map, n_peaks):
        s0 = np.array(np.unravel_index(int(flat), shape), dtype=np.float64) / np.array(shape)
        s1 = _refine_shift(k_flat, t_flat, s0, step=0.5 / np.array(shape))
        val = _agreement(np.concatenate([k_flat, -k_flat]).astype(np.float64), np.concatenate([t_flat, np.conj(t_flat)]), s1)
        if val > best_val:
            s, best_val = s1, val
    # scores at the best shift, per operation
    ph = np.exp(-2j * np.pi * np.einsum("mnj,j->mn", k.astype(np.float64), s))
    num = np.real(term * ph).sum(axis=1)
    den = norm.sum(axis=1)
    per_op = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    score = float(num.sum() / den.sum()) if den.sum() > 0 else 0.0
    return OriginResult(shift=np.mod(s, 1.0), score=score, per_operation=[float(x) for x in per_op], n_operations=len(ops))


def _combine_by_k(k: np.ndarray, term: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of `k` (n, 3) int and the sum of `term` over each."""
    if len(k) == 0:
        return k, term
    lo = k.min(axis=0)
    span = k.max(axis=0) - lo + 1
    key = ((k[:, 0] - lo[0]) * span[1] + (k[:, 1] - lo[1])) * span[2] + (k[:, 2] - lo[2])
    uniq, inv = np.unique(key, return_inverse=True)
    summed = np.bincount(inv, weights=term.real, minlength=len(uniq)) + 1j * np.bincount(
        inv, weights=term.imag, minlength=len(uniq)
    )
    first = np.zeros(len(uniq), dtype=np.int64)
    first[inv] = np.arange(len(k))
    return k[first], summed


def _top_maxima(a: np.ndarray, n: int) -> np.ndarray:
    """Flat indices of the `n` highest periodic local maxima of a 3-d array."""
    mask = np.ones(a.shape, dtype=bool)
    for ax in range(3):
        for d in (-1, 1):
            mask &= a >= np.roll(a, d, axis=ax)
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return np.array([int(np.argmax(a))])
    return idx[np.argsort(-a.reshape(-1)[idx])[:n]]


def _refine_shift(k: np.ndarray, term: np.ndarray, s0: np.ndarray, step: np.ndarray, iterations: int = 3) -> np.ndarray:
    """Newton steps on the exact agreement A(s) (gradient and Hessian are analytic)."""
    s = s0.astype(np.float64).copy()
    kf = k.astype(np.float64)
    both_k = np.concatenate([kf, -kf])
    both_t = np.concatenate([term, np.conj(term)])
    base = _agreement(both_k, both_t, s)
    for _ in range(iterations):
        e = both_t * np.exp(-2j * np.pi * (both_k @ s))
        # A = Re Σ e;  dA/ds = Re Σ e (-2πi k);  d²A/ds² = Re Σ e (-4π² k kᵀ)
        grad = np.real((e[:, None] * (-2j * np.pi) * both_k).sum(axis=0))
        hess = np.real(np.einsum("n,ni,nj->ij", e * (-4.0 * np.pi**2), both_k, both_k))
        # only directions where A is curved (polar directions leave the origin free)
        w, v = np.linalg.eigh(hess)
        curved = w < -1e-9 * max(1.0, float(np.abs(w).max()))
        if not curved.any():
            break
        g = v.T @ grad
        delta = np.zeros(3)
        delta[curved] = -g[curved] / w[curved]
        step_vec = v @ delta
        step_vec = np.clip(step_vec, -step, step)
        trial = s + step_vec
        val = _agreement(both_k, both_t, trial)
        if val < base:
            break
        s, base = trial, val
    return s


def symmetrize(
    lookup: P1Lookup, hkl: np.ndarray, symmetry: SymmetryOps, shift: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Average the shifted P1 solution over the operations, at the unique reflections `hkl`.

    Returns F_sym (N,) complex and a figure of merit (N,) in [0, 1]: |F_sym| over the mean
    |F| of the equivalents (1 when the equivalents agree in phase).
    """
    h = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
    s = np.asarray(shift, dtype=np.float64)
    hr = np.einsum("ni,mij->mnj", h, symmetry.rotations)  # (n_ops, N, 3)
    f_hr = lookup(hr) * np.exp(-2j * np.pi * (hr.astype(np.float64) @ s))
    f_hr = f_hr * np.exp(2j * np.pi * (h.astype(np.float64) @ symmetry.translations.T).T)
    present = np.abs(f_hr) > 0
    n_present = np.maximum(present.sum(axis=0), 1)
    f_sym = f_hr.sum(axis=0) / n_present
    mean_amp = np.abs(f_hr).sum(axis=0) / n_present
    fom = np.where(mean_amp > 0, np.abs(f_sym) / np.where(mean_amp > 0, mean_amp, 1.0), 0.0)
    return f_sym, fom


def solution_similarity(hkl: np.ndarray, f1: np.ndarray, f2: np.ndarray, shape: tuple[int, int, int]) -> float:
    """Origin- and enantiomorph-free phase correlation of two P1 solutions in [0, 1].

    max over shifts s of Re Σ F1 conj(F2) exp(-2πi h·s) / Σ |F1||F2| (and the same against
    the enantiomorph conj(F2)), evaluated by FFT on `shape`.
    """
    h = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
    a = np.asarray(f1, dtype=np.complex128)
    b = np.asarray(f2, dtype=np.complex128)
    norm = float((np.abs(a) * np.abs(b)).sum()) * 2.0
    if norm <= 0:
        return 0.0
    shp = np.array(shape)
    best = 0.0
    for prod in (a * np.conj(b), a * b):
        grid = np.zeros(tuple(int(s) for s in shape), dtype=np.complex128)
        idx = np.mod(h, shp)
        np.add.at(grid, (idx[:, 0], idx[:, 1], idx[:, 2]), prod)
        idx = np.mod(-h, shp)
        np.add.at(grid, (idx[:, 0], idx[:, 1], idx[:, 2]), np.conj(prod))
        best = max(best, float(_fft.fftn(grid, **_FFT_KW).real.max()) / norm)
    return best
