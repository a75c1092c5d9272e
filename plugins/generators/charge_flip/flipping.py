"""The charge-flipping iteration (Oszlányi & Sütő 2004, 2005; Superflip's choices).

One trial starts from random phases on the observed P1 amplitudes (|E| or |F|) and
repeats:

    ρ = FFT⁻¹(F);  g = ρ where ρ ≥ δ, −ρ elsewhere;  G = FFT(g)
    F(h) = A(h)·exp(iφ_G(h))            for observed reflections
    F(h) = |G(h)|·exp(i(φ_G(h) + π/2))  for the weakest fraction of them
    F(000) = G(000)                     (F(000) is left free)

Unobserved reflections inside the resolution sphere stay zero. δ is either a fixed
multiple of the map's σ or chosen "auto" as Superflip does: start so that most of the
map is flipped, then adapt it so that the ratio of total charge to flipped charge stays in
[0.8, 1.0]. Convergence is the phase transition: the R factor between A and k|G| drops
well below its plateau (and the flipped-charge ratio changes with it); after it a few
polishing cycles are run. Work is done on the real-FFT half spectrum of the P1 grid; the
coefficients held are conj(F)·N/V (see `refractor_core.crystal.fourier`), which flipping
treats alike since it is blind to the enantiomorph.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from refractor_core.crystal.fourier import _FFT_KW, _fft, half_grid_index, half_grid_shape


@dataclass
class FlipProblem:
    """P1 amplitudes laid out on the half spectrum of an FFT grid.

    hkl (M, 3): one reflection of each Friedel pair, stored directly (l > 0, or l = 0 with
    its own cell); amp (M,): target amplitudes; weak (M,): reflections treated as weak;
    flat (M,): their cells; mate_rows/mate_flat: rows in the l = 0 plane and the cells of
    their Friedel mates.
    """

    hkl: np.ndarray
    amp: np.ndarray
    weak: np.ndarray
    shape: tuple[int, int, int]
    flat: np.ndarray
    mate_rows: np.ndarray
    mate_flat: np.ndarray

    @property
    def n(self) -> int:
        return int(len(self.amp))

    @classmethod
    def build(
        cls, hkl: np.ndarray, amp: np.ndarray, shape: tuple[int, int, int], weak_fraction: float = 0.2
    ) -> "FlipProblem":
        """From a P1 reflection list (Friedel mates may be present; one of each pair is kept)."""
        h = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
        a = np.asarray(amp, dtype=np.float64)
        # one representative per Friedel pair, in the half spectrum (l > 0, or l = 0 and
        # the first nonzero of (k, h) positive)
        pos = (h[:, 2] > 0) | ((h[:, 2] == 0) & ((h[:, 1] > 0) | ((h[:, 1] == 0) & (h[:, 0] > 0))))
        h, a = h[pos], a[pos]
        flat, neg = half_grid_index(h, shape)
        assert not neg.any()
        mate = np.nonzero(h[:, 2] == 0)[0]
        mate_flat, _ = half_grid_index(-h[mate], shape)
        n_weak = int(round(weak_fraction * len(a)))
        weak = np.zeros(len(a), dtype=bool)
        if n_weak > 0:
            weak[np.argsort(a, kind="stable")[:n_weak]] = True
        return cls(hkl=h, amp=a, weak=weak, shape=tuple(int(s) for s in shape), flat=flat, mate_rows=mate, mate_flat=mate_flat)


@dataclass
class FlipSettings:
    """Settings of one charge-flipping trial."""

    max_cycles: int = 600
    delta: float | str = "auto"  # "auto" or a multiple of the map's sigma
    initial_flipped_fraction: float = 0.8
    delta_adapt_interval: int = 10
    charge_ratio_range: tuple[float, float] = (0.8, 1.0)
    weak_phase_shift: float = math.pi / 2
    polish_cycles: int = 40
    window: int = 15
    min_cycles: int = 40
    time_limit_s: float | None = None


@dataclass
class FlipResult:
    """Outcome of one trial: phases for every reflection of the problem and statistics.

    f (M,) complex: F(h) = A(h)·exp(iφ) in the kernel's convention (for `problem.hkl`);
    f000: the free F(000) on the same scale; r: final R (A vs k|G|); r_start: R of the
    first cycles; converged: a phase transition was detected; cycles; delta (absolute) and
    delta_sigma (δ/σ(ρ)); charge_ratio: c_tot/c_flip at the end; flipped_fraction: of the
    grid points below δ at the end; transition_cycle; seconds.
    """

    f: np.ndarray
    f000: float
    r: float
    r_start: float
    converged: bool
    cycles: int
    delta: float
    delta_sigma: float
    charge_ratio: float
    flipped_fraction: float
    transition_cycle: int | None
    seconds: float
    r_trace: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    normalization: str = ""

    def stats(self) -> dict:
        """JSON-friendly trial statistics."""
        return {
            "r_flip": round(float(self.r), 4),
            "r_start": round(float(self.r_start), 4),
            "converged": bool(self.converged),
            "cycles": int(self.cycles),
            "transition_cycle": self.transition_cycle,
            "delta_sigma": round(float(self.delta_sigma), 3),
            "charge_ratio": round(float(self.charge_ratio), 3),
            "flipped_fraction": round(float(self.flipped_fraction), 3),
            "seconds": round(float(self.seconds), 3),
            "normalization": self.normalization,
        }


def _phase_transition(r: np.ndarray, window: int) -> bool:
    """True when the recent R is far below its earlier plateau (robust statistics)."""
    n = len(r)
    if n < 2 * window + 5:
        return False
    recent = r[n - window :]
    earlier = r[max(3, n - 8 * window) : n - 2 * window] if n - 2 * window > 3 else r[3 : n - window]
    if len(earlier) < 5:
        return False
    level = float(np.median(earlier))
    spread = float(1.4826 * np.median(np.abs(earlier - level))) + 1e-4
    now = float(np.mean(recent))
    # recent values must also be stable: the transition is complete
    stable = float(np.std(recent)) < max(3.0 * spread, 0.01)
    return (level - now) > max(6.0 * spread, 0.04 * level) and stable


def run_trial(
    problem: FlipProblem,
    settings: FlipSettings,
    rng: np.random.Generator | None = None,
    *,
    start: np.ndarray | None = None,
    project=None,
    delta_absolute: float | None = None,
    start_f000: float = 0.0,
) -> FlipResult:
    """One charge-flipping trial from random phases (or from `start`, F in kernel convention).

    `project(c)` is applied to the coefficients after every cycle (e.g. symmetry
    averaging; it receives and returns grid coefficients, conj(F)); `delta_absolute` fixes
    δ in map units (no adaptation).
    """
    t0 = time.perf_counter()
    shape = problem.shape
    half = half_grid_shape(shape)
    n_grid = float(np.prod(shape))
    amp = problem.amp
    weak = problem.weak
    strong = ~weak
    flat, mate_rows, mate_flat = problem.flat, problem.mate_rows, problem.mate_flat
    sum_amp = float(amp.sum()) or 1.0
    weak_rot = np.exp(1j * settings.weak_phase_shift)

    coeff = np.zeros(int(np.prod(half)), dtype=np.complex128)
    if start is not None:
        cur = np.conj(np.asarray(start, dtype=np.complex128))
    else:
        if rng is None:
            raise ValueError("run_trial needs a random generator or start values")
        phases = rng.uniform(0.0, 2.0 * np.pi, size=problem.n)
        cur = amp * np.exp(1j * phases)

    def place(values: np.ndarray, f000: float) -> np.ndarray:
        coeff[:] = 0.0
        coeff[flat] = values
        coeff[mate_flat] = np.conj(values[mate_rows])
        coeff[0] = f000
        return _fft.irfftn(coeff.reshape(half), s=shape, **_FFT_KW)

    rho = place(cur, start_f000 if start is not None else 0.0)
    sigma = float(rho.std()) or 1.0
    if delta_absolute is not None:
        delta = float(delta_absolute)
        adaptive = False
    elif settings.delta == "auto":
        delta = float(np.quantile(rho, settings.initial_flipped_fraction))
        delta = max(delta, 0.05 * sigma)
        adaptive = True
    else:
        delta = float(settings.delta) * sigma
        adaptive = False

    r_trace = np.zeros(settings.max_cycles)
    f000 = start_f000 if start is not None else 0.0
    transition: int | None = None
    stop_at = settings.max_cycles
    g_obs = cur
    n = 0
    lo, hi = settings.charge_ratio_range
    for n in range(settings.max_cycles):
        below = rho < delta
        if adaptive and transition is None and n > 0 and n % settings.delta_adapt_interval == 0:
            # total charge over flipped charge (Superflip's criterion)
            ratio = float(rho.sum()) / float(np.abs(rho[below]).sum() or 1e-30)
            if ratio < lo:
                delta *= 0.9
            elif ratio > hi:
                delta *= 1.07
            below = rho < delta
        g = np.where(below, -rho, rho)
        spectrum = _fft.rfftn(g, **_FFT_KW).reshape(-1)
        g_obs = spectrum[flat] / n_grid
        mod = np.abs(g_obs)
        k = float((amp * mod).sum() / max(float((mod * mod).sum()), 1e-30))
        r_trace[n] = float(np.abs(amp - k * mod).sum() / sum_amp)
        unit = np.where(mod > 0, g_obs / np.where(mod > 0, mod, 1.0), 1.0)
        cur = np.where(strong, amp * unit, g_obs * weak_rot * k)
        if project is not None:
            cur = project(cur)
        f000 = float(spectrum[0].real / n_grid) * k
        rho = place(cur, f000)
        if transition is None and n + 1 >= settings.min_cycles and _phase_transition(r_trace[: n + 1], settings.window):
            transition = n
            stop_at = min(settings.max_cycles, n + 1 + settings.polish_cycles)
        if n + 1 >= stop_at:
            break
        if settings.time_limit_s is not None and time.perf_counter() - t0 > settings.time_limit_s:
            break
    cycles = n + 1
    below = rho < delta
    c_tot = float(rho.sum())
    c_flip = float(np.abs(rho[below]).sum()) or 1e-30
    charge_ratio = c_tot / c_flip
    flipped_fraction = float(below.mean())
    # final phases: those of the last flipped map, on the observed amplitudes
    if project is not None:
        g_obs = project(g_obs)
    mod = np.abs(g_obs)
    unit = np.where(mod > 0, g_obs / np.where(mod > 0, mod, 1.0), 1.0)
    f_grid = amp * unit
    tail = r_trace[max(0, cycles - settings.window) : cycles]
    return FlipResult(
        f=np.conj(f_grid),  # grid coefficients hold conj(F)
        f000=f000,
        r=float(tail.mean()) if len(tail) else float("nan"),
        r_start=float(r_trace[: min(5, cycles)].mean()),
        converged=transition is not None,
        cycles=cycles,
        delta=delta,
        delta_sigma=delta / (float(rho.std()) or 1.0),
        charge_ratio=charge_ratio,
        flipped_fraction=flipped_fraction,
        transition_cycle=transition,
        seconds=time.perf_counter() - t0,
        r_trace=r_trace[:cycles].copy(),
    )


class SymmetryProjector:
    """Averages P1 coefficients over a space group's operations (origin at the group's origin).

    For grid coefficients C = conj(F): C_sym(h) = (1/n) Σ_ops C(hR)·exp(-2πi h·t). Every hR
    must be in the problem's reflection set or be the Friedel mate of one (true for data
    expanded with the group's rotations); missing ones are left out of the average.
    """

    def __init__(self, problem: FlipProblem, rotations: np.ndarray, translations: np.ndarray):
        from refractor_core.crystal.symmetry import hkl_keys

        h = problem.hkl
        keys = hkl_keys(h)
        order = np.argsort(keys)
        sorted_keys = keys[order]
        n_ops = len(rotations)
        self.index = np.zeros((n_ops, len(h)), dtype=np.int64)
        self.conj = np.zeros((n_ops, len(h)), dtype=bool)
        self.valid = np.zeros((n_ops, len(h)), dtype=bool)
        for m in range(n_ops):
            hr = h @ rotations[m]
            for sign, flag in ((1, False), (-1, True)):
                kk = hkl_keys(sign * hr)
                pos = np.clip(np.searchsorted(sorted_keys, kk), 0, len(h) - 1)
                hit = (sorted_keys[pos] == kk) & ~self.valid[m]
                self.index[m, hit] = order[pos[hit]]
                self.conj[m, hit] = flag
                self.valid[m] |= hit
        self.phase = np.exp(-2j * np.pi * (h.astype(np.float64) @ np.asarray(translations).T).T)
        self.count = np.maximum(self.valid.sum(axis=0), 1)

    def __call__(self, c: np.ndarray) -> np.ndarray:
        v = c[self.index]
        v = np.where(self.conj, np.conj(v), v) * self.phase
        v = np.where(self.valid, v, 0.0)
        return v.sum(axis=0) / self.count
