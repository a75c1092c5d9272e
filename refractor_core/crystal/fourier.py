"""Fourier maps: FFT grids, expansion of reflections to P1, maps, back-transforms, peaks.

Conventions (the kernel's): F(h) = Σ_j f_j exp(+2πi h·x_j) and the density is

    ρ(x) = (1/V) Σ_h F(h) exp(-2πi h·x)   (e/Å³ when F is in electrons).

A map is a real numpy array of shape (n0, n1, n2) sampling the unit cell at x = i/n.
Grids are held on the half spectrum of a real FFT (`numpy.fft.rfftn` layout: l = 0..n2//2);
the coefficient stored at h is conj(F(h))·N/V, so that `irfftn` gives ρ directly. Everything
is vectorised: no Python loop runs over grid points or reflections.

Peak search (`find_peaks`) returns symmetry-unique peaks: local maxima of the map with a
quadratic sub-grid position, the interpolated height, the density integrated over a small
sphere, and the site-symmetry order; an image of an accepted (higher) peak suppresses later
peaks within `min_distance`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..types import UnitCell
from .cell import orthogonalization_matrix, reciprocal_lengths
from .symmetry import SymmetryOps, hkl_keys

try:  # scipy's pocketfft accepts a workers argument; numpy's is the fallback
    import scipy.fft as _fft

    _FFT_KW = {"workers": 1}
except ImportError:  # pragma: no cover - scipy is a dependency of the kernel's users
    _fft = np.fft
    _FFT_KW = {}


# --------------------------------------------------------------------------------------
# grids
# --------------------------------------------------------------------------------------


def _smooth_numbers(limit: int) -> np.ndarray:
    """All numbers ≤ limit whose prime factors are 2, 3 and 5 (FFT-friendly), sorted."""
    out = []
    p2 = 1
    while p2 <= limit:
        p3 = p2
        while p3 <= limit:
            p5 = p3
            while p5 <= limit:
                out.append(p5)
                p5 *= 5
            p3 *= 3
        p2 *= 2
    return np.array(sorted(out), dtype=np.int64)


_SMOOTH = _smooth_numbers(4096)


def good_grid_size(minimum: int, factor: int = 1) -> int:
    """The smallest FFT-friendly size ≥ `minimum` that is a multiple of `factor`."""
    minimum = max(int(minimum), 1)
    factor = max(int(factor), 1)
    ok = _SMOOTH[(_SMOOTH >= minimum) & (_SMOOTH % factor == 0)]
    if len(ok):
        return int(ok[0])
    return int(math.ceil(minimum / factor) * factor)


def grid_factors(symmetry: SymmetryOps | None) -> tuple[int, int, int]:
    """Divisors each grid dimension must have so that the symmetry maps grid points to grid points."""
    if symmetry is None:
        return (1, 1, 1)
    return tuple(int(v) for v in symmetry.gemmi_ops.find_grid_factors())  # type: ignore[return-value]


def grid_shape(
    cell: UnitCell,
    d_min: float,
    *,
    sampling: float = 0.5,
    symmetry: SymmetryOps | None = None,
    hkl: np.ndarray | None = None,
    max_spacing: float | None = None,
) -> tuple[int, int, int]:
    """FFT grid for a map to resolution `d_min`: spacing ≈ `sampling`·d_min along each axis.

    The spacing is measured between lattice planes (1/(n a*)). Each size is FFT-friendly,
    a multiple of the symmetry's grid factors, and (if `hkl` is given) ≥ 2|h|max + 1 so that
    every reflection has its own grid point. `max_spacing` (Å) caps the spacing.
    """
    if not d_min > 0:
        raise ValueError(f"d_min must be positive, got {d_min}")
    spacing = sampling * d_min
    if max_spacing is not None:
        spacing = min(spacing, max_spacing)
    rl = reciprocal_lengths(cell)
    need = np.ceil(1.0 / (rl * spacing)).astype(np.int64)
    if hkl is not None and len(hkl):
        need = np.maximum(need, 2 * np.abs(np.asarray(hkl)).max(axis=0) + 1)
    factors = grid_factors(symmetry)
    return tuple(good_grid_size(int(n), f) for n, f in zip(need, factors))  # type: ignore[return-value]


# --------------------------------------------------------------------------------------
# expansion to P1
# --------------------------------------------------------------------------------------


@dataclass
class P1Expansion:
    """Where each P1 reflection came from.

    hkl (M, 3): the expanded indices (each once, 000 excluded); source (M,): row of the
    input reflection it is equivalent to; shift (M,): phase shift in cycles to apply to the
    source's F (F(h') = F(h)·exp(2πi·shift)); friedel (M,): True where h' is the Friedel
    mate of an equivalent (the source's F is conjugated before the shift).
    """

    hkl: np.ndarray
    source: np.ndarray
    shift: np.ndarray
    friedel: np.ndarray

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Values of the source reflections carried to the P1 reflections."""
        v = np.asarray(values)[self.source]
        if np.iscomplexobj(v):
            v = np.where(self.friedel, np.conj(v), v) * np.exp(2j * np.pi * self.shift)
        return v


def expand_indices_to_p1(hkl: np.ndarray, symmetry: SymmetryOps, *, friedel: bool = True) -> P1Expansion:
    """All distinct symmetry equivalents (and Friedel mates) of `hkl`, with phase shifts.

    Under operation (R, t) the reflection h R carries F(h R) = F(h)·exp(-2πi h·t); its Friedel
    mate carries the conjugate. Equivalents generated twice (special reflections) are kept
    once; where the input itself lists two equivalents, the first listed wins.
    """
    h = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
    n, m = len(h), symmetry.n
    eq = np.einsum("ni,mij->nmj", h, symmetry.rotations)  # (n, m, 3)
    shift = -(h.astype(np.float64) @ symmetry.translations.T)  # (n, m) cycles
    src = np.broadcast_to(np.arange(n)[:, None], (n, m))
    fr = np.zeros((n, m), dtype=bool)
    if friedel:
        eq = np.concatenate([eq, -eq], axis=1)
        shift = np.concatenate([shift, -shift], axis=1)
        src = np.concatenate([src, src], axis=1)
        fr = np.concatenate([fr, ~fr], axis=1)
    eq = eq.reshape(-1, 3)
    shift, src, fr = shift.reshape(-1), src.reshape(-1), fr.reshape(-1)
    keep = np.any(eq != 0, axis=1)
    eq, shift, src, fr = eq[keep], shift[keep], src[keep], fr[keep]
    _, first = np.unique(hkl_keys(eq), return_index=True)
    first = np.sort(first)
    return P1Expansion(hkl=eq[first], source=src[first], shift=np.mod(shift[first], 1.0), friedel=fr[first])


def expand_to_p1(
    hkl: np.ndarray, values: np.ndarray, symmetry: SymmetryOps, friedel: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Expand reflections to P1: (hkl_p1 (M, 3), values_p1 (M,)).

    Complex values get the phase shifts of the symmetry operations (and conjugation for
    Friedel mates); real values (amplitudes, intensities) are copied.
    """
    exp = expand_indices_to_p1(hkl, symmetry, friedel=friedel)
    return exp.hkl, exp.apply(values)


# --------------------------------------------------------------------------------------
# half-spectrum grids
# --------------------------------------------------------------------------------------


def half_grid_shape(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Shape of the real-FFT half spectrum of a map of `shape`."""
    return (int(shape[0]), int(shape[1]), int(shape[2]) // 2 + 1)


def half_grid_index(hkl: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Flat index into the half spectrum for each reflection, and whether it is stored conjugated.

    Reflections with l < 0 are represented by their Friedel mate (conjugated); both h and -h
    of the l = 0 plane have their own cells.
    """
    h = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
    neg = h[:, 2] < 0
    hh = np.where(neg[:, None], -h, h)
    n0, n1, n2 = shape
    if np.any(np.abs(h) * 2 >= np.array(shape)):
        raise ValueError(f"grid {shape} too small for indices up to {np.abs(h).max(axis=0).tolist()}")
    half = half_grid_shape(shape)
    flat = (np.mod(hh[:, 0], n0) * half[1] + np.mod(hh[:, 1], n1)) * half[2] + hh[:, 2]
    return flat, neg


def coefficients_to_grid(
    hkl: np.ndarray, f: np.ndarray, shape: tuple[int, int, int], *, friedel_fill: bool = True
) -> np.ndarray:
    """Half-spectrum array holding conj(F(h)) at h (and F(h) at -h in the l = 0 plane)."""
    half = half_grid_shape(shape)
    grid = np.zeros(int(np.prod(half)), dtype=np.complex128)
    h = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
    f = np.asarray(f, dtype=np.complex128)
    flat, neg = half_grid_index(h, shape)
    grid[flat] = np.where(neg, f, np.conj(f))
    if friedel_fill:
        # the Friedel mates in the l = 0 plane (and of l < 0 reflections, already stored)
        zero = h[:, 2] == 0
        if zero.any():
            flat_m, _ = half_grid_index(-h[zero], shape)
            grid[flat_m] = f[zero]
    return grid.reshape(half)


def grid_to_coefficients(grid: np.ndarray, hkl: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Inverse of `coefficients_to_grid`: F(h) read from a half-spectrum array."""
    flat, neg = half_grid_index(hkl, shape)
    v = grid.reshape(-1)[flat]
    return np.where(neg, v, np.conj(v))


# --------------------------------------------------------------------------------------
# maps
# --------------------------------------------------------------------------------------


def fourier_map(
    hkl: np.ndarray,
    f_complex: np.ndarray,
    cell: UnitCell | None,
    shape: tuple[int, int, int],
    symmetry: SymmetryOps | None = None,
    *,
    f000: float = 0.0,
) -> np.ndarray:
    """Real map ρ(x) = (1/V) Σ F(h) exp(-2πi h·x) on a grid of `shape`.

    With `symmetry`, `hkl` are unique reflections and are expanded to P1 first (Friedel
    mates included); without it they must already be a P1 set (Friedel mates are added
    where missing). `cell=None` gives the unscaled sum (V = 1).
    """
    h = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
    f = np.asarray(f_complex, dtype=np.complex128)
    if symmetry is not None:
        h, f = expand_to_p1(h, f, symmetry, friedel=True)
    else:
        keep = np.any(h != 0, axis=1)
        h, f = h[keep], f[keep]
    grid = coefficients_to_grid(h, f, shape)
    grid.reshape(-1)[0] = f000
    n = float(np.prod(shape))
    volume = cell.volume if cell is not None else 1.0
    return _fft.irfftn(grid, s=shape, **_FFT_KW) * (n / volume)


def map_to_reflections(rho: np.ndarray, hkl: np.ndarray, cell: UnitCell | None = None) -> np.ndarray:
    """Structure factors of a map: F(h) = (V/N) Σ_x ρ(x) exp(2πi h·x) (V = 1 without a cell)."""
    shape = rho.shape
    spectrum = _fft.rfftn(rho, **_FFT_KW)
    n = float(np.prod(shape))
    volume = cell.volume if cell is not None else 1.0
    return grid_to_coefficients(spectrum, hkl, shape) * (volume / n)


def difference_map(
    hkl: np.ndarray,
    f_obs: np.ndarray,
    f_calc: np.ndarray,
    cell: UnitCell,
    shape: tuple[int, int, int],
    symmetry: SymmetryOps | None = None,
    *,
    weights: np.ndarray | None = None,
    kind: str = "fo-fc",
) -> np.ndarray:
    """Difference (`kind="fo-fc"`) or `2fo-fc` map with the phases of `f_calc`.

    `f_obs` are scaled amplitudes on the scale of `f_calc`; `weights` (e.g. sigma-A or
    figure-of-merit weights) multiply the coefficients.
    """
    fc = np.asarray(f_calc, dtype=np.complex128)
    fo = np.asarray(f_obs, dtype=np.float64)
    amp_c = np.abs(fc)
    phase = np.where(amp_c > 0, fc / np.where(amp_c > 0, amp_c, 1.0), 1.0)
    if kind == "fo-fc":
        coef = (fo - amp_c) * phase
    elif kind == "2fo-fc":
        coef = (2.0 * fo - amp_c) * phase
    else:
        raise ValueError(f"unknown difference map kind {kind!r}")
    if weights is not None:
        coef = coef * np.asarray(weights, dtype=np.float64)
    return fourier_map(hkl, coef, cell, shape, symmetry)


# --------------------------------------------------------------------------------------
# peak search
# --------------------------------------------------------------------------------------


@dataclass
class Peak:
    """A symmetry-unique map peak.

    xyz: fractional position (sub-grid); height: interpolated map value; integrated:
    density summed over a sphere (electrons when the map is in e/Å³); site_order:
    operations mapping the position onto itself (1 = general position).
    """

    xyz: np.ndarray
    height: float
    integrated: float
    site_order: int = 1


def _local_maxima(rho: np.ndarray, threshold: float) -> np.ndarray:
    """Flat indices of grid points ≥ all 26 periodic neighbours and above `threshold`."""
    mask = rho > threshold
    if not mask.any():
        return np.zeros(0, dtype=np.int64)
    for d0 in (-1, 0, 1):
        for d1 in (-1, 0, 1):
            for d2 in (-1, 0, 1):
                if d0 == d1 == d2 == 0:
                    continue
                mask &= rho >= np.roll(rho, (d0, d1, d2), axis=(0, 1, 2))
    return np.flatnonzero(mask)


_OFFSETS27 = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=np.int64)


def _quadratic_design() -> np.ndarray:
    """Pseudo-inverse of the 27-point design matrix of a full 3-d quadratic (10 terms)."""
    x = _OFFSETS27.astype(np.float64)
    cols = [np.ones(27), x[:, 0], x[:, 1], x[:, 2],
            x[:, 0] ** 2, x[:, 1] ** 2, x[:, 2] ** 2, x[:, 0] * x[:, 1], x[:, 0] * x[:, 2], x[:, 1] * x[:, 2]]
    return np.linalg.pinv(np.stack(cols, axis=1))


_QUAD_PINV = _quadratic_design()


def _subgrid(rho: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-grid peak position (grid units) and height from a 3-d quadratic fit to the 27 neighbours.

    A full quadratic (with cross terms) follows peaks that are elongated along oblique
    directions of a non-orthogonal grid; where the fit is not a maximum, or its maximum
    lies more than one grid step away, the grid point itself is kept.
    """
    shape = np.array(rho.shape)
    ijk = np.stack(np.unravel_index(idx, rho.shape), axis=-1)
    pts = (ijk[:, None, :] + _OFFSETS27[None, :, :]) % shape
    vals = rho[pts[..., 0], pts[..., 1], pts[..., 2]]  # (P, 27)
    c = vals @ _QUAD_PINV.T  # (P, 10)
    g = c[:, 1:4]
    h = np.empty((len(idx), 3, 3))
    h[:, 0, 0], h[:, 1, 1], h[:, 2, 2] = 2 * c[:, 4], 2 * c[:, 5], 2 * c[:, 6]
    h[:, 0, 1] = h[:, 1, 0] = c[:, 7]
    h[:, 0, 2] = h[:, 2, 0] = c[:, 8]
    h[:, 1, 2] = h[:, 2, 1] = c[:, 9]
    offset = np.zeros((len(idx), 3))
    height = vals[:, 13].copy()  # the centre point
    eig = np.linalg.eigvalsh(h)
    ok = eig[:, -1] < 0  # negative definite: a maximum
    if ok.any():
        d = -np.linalg.solve(h[ok], g[ok][..., None])[..., 0]
        inside = np.all(np.abs(d) <= 1.0, axis=1)
        sel = np.nonzero(ok)[0][inside]
        d = d[inside]
        offset[sel] = d
        height[sel] = c[sel, 0] + 0.5 * np.einsum("pi,pi->p", g[sel], d)
    return ijk + offset, height


def sphere_offsets(cell: UnitCell, shape: tuple[int, int, int], radius: float) -> np.ndarray:
    """Integer grid offsets (K, 3) within `radius` Å of a grid point."""
    m = orthogonalization_matrix(cell)
    shape_a = np.asarray(shape, dtype=np.float64)
    rl = reciprocal_lengths(cell)
    reach = np.ceil(radius * rl * shape_a).astype(np.int64) + 1
    rng = [np.arange(-r, r + 1) for r in reach]
    g = np.stack(np.meshgrid(*rng, indexing="ij"), axis=-1).reshape(-1, 3)
    cart = (g / shape_a) @ m.T
    return g[np.linalg.norm(cart, axis=1) <= radius]


def integrate_spheres(rho: np.ndarray, cell: UnitCell, xyz: np.ndarray, radius: float) -> np.ndarray:
    """Positive density within `radius` Å of each fractional position, times voxel volume."""
    shape = rho.shape
    x = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    if len(x) == 0:
        return np.zeros(0)
    offs = sphere_offsets(cell, shape, radius)
    centre = np.rint(x * np.array(shape)).astype(np.int64)
    pts = centre[:, None, :] + offs[None, :, :]
    pts %= np.array(shape)
    vals = rho[pts[..., 0], pts[..., 1], pts[..., 2]]
    voxel = cell.volume / float(np.prod(shape))
    return np.clip(vals, 0.0, None).sum(axis=1) * voxel


def _min_image_distance(cell_m: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Shortest distances (Å) between fractional points a (..., 3) and b (..., 3) over lattice shifts."""
    d = a - b
    d -= np.round(d)
    return np.linalg.norm(d @ cell_m.T, axis=-1)


def find_peaks(
    rho: np.ndarray,
    cell: UnitCell,
    symmetry: SymmetryOps | None = None,
    *,
    max_peaks: int = 100,
    min_distance: float = 0.7,
    integrate: bool = True,
    integration_radius: float = 0.7,
    threshold: float | None = None,
    special_tolerance: float = 0.3,
) -> list[Peak]:
    """Symmetry-unique peaks of a map, highest first.

    Local maxima above `threshold` (default: mean + 1 σ of the map) are refined to sub-grid
    positions; going down in height, a peak is accepted unless it lies within `min_distance`
    Å of an image of an accepted peak. A peak within `special_tolerance` Å of its own images
    is moved onto the special position. Integration sums positive density within
    `integration_radius` Å. Stops after `max_peaks`.
    """
    sym = symmetry or SymmetryOps.from_space_group("P 1")
    shape = np.array(rho.shape)
    if threshold is None:
        threshold = float(rho.mean() + rho.std())
    idx = _local_maxima(rho, threshold)
    if len(idx) == 0:
        return []
    pos, height = _subgrid(rho, idx)
    order = np.argsort(-height, kind="stable")
    pos, height = pos[order], height[order]
    # the map repeats each peak once per operation: keep a generous number of candidates
    limit = max_peaks * sym.n * 3 + 50
    pos, height = pos[:limit], height[:limit]
    frac = np.mod(pos / shape, 1.0)
    m = orthogonalization_matrix(cell)

    accepted_xyz: list[np.ndarray] = []
    accepted_h: list[float] = []
    accepted_order: list[int] = []
    images_acc = np.zeros((0, 3))
    for x, h in zip(frac, height):
        if len(images_acc):
            if _min_image_distance(m, images_acc, x[None, :]).min() < min_distance:
                continue
        own = sym.images(x)
        d_own = _min_image_distance(m, own, x[None, :])
        order_here = int(max((d_own < special_tolerance).sum(), 1))
        if order_here > 1:
            try:
                x = np.mod(sym.special_position(cell, x, special_tolerance).xyz, 1.0)
            except Exception:  # pragma: no cover - degenerate geometry: keep the raw position
                pass
            order_here = int(sym.site_symmetry_order(cell, x, 0.05))
        accepted_xyz.append(x)
        accepted_h.append(float(h))
        accepted_order.append(order_here)
        images_acc = np.concatenate([images_acc, sym.images(x)], axis=0)
        if len(accepted_xyz) >= max_peaks:
            break
    xyz = np.array(accepted_xyz).reshape(-1, 3)
    integ = integrate_spheres(rho, cell, xyz, integration_radius) if integrate else np.zeros(len(xyz))
    return [
        Peak(xyz=xyz[i], height=accepted_h[i], integrated=float(integ[i]), site_order=accepted_order[i])
        for i in range(len(xyz))
    ]
