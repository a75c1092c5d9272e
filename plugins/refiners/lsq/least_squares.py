"""Model intensities, their Jacobian, the normal equations and Levenberg-Marquardt steps.

The model intensity of reflection h is

    M(h) = k · y(Fc²) · Fc²,   Fc² = Σ_c f_c |F(M_c h)|²   (twin components c, f_0 = 1 - Σ BASF)

(for HKLF 5 data the sum runs over the members of h's overlap group, each at its own
indices: the kernel's `TwinIndices`; the arrays below have one row per such slot)

with y the SHELXL extinction factor [1 + 0.001 x Fc² λ³ / sin 2θ]^-½ (kernel's
`extinction_factor`). Least squares minimises Σ w (Fo² - M)² with weights fixed during a
cycle. Structure factors and per-atom derivatives come from the kernel's
`StructureFactorEngine`; reflections are processed in chunks to bound memory.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from refractor_core.crystal.cell import stol as stol_of
from refractor_core.crystal.observations import TwinIndices
from refractor_core.crystal.rfactors import extinction_factor
from refractor_core.crystal.structure_factors import StructureFactorEngine
from refractor_core.crystal.symmetry import SymmetryOps
from refractor_core.errors import RefinementError

from .model import WorkingModel
from .parameters import RAW, Parameterisation

CHUNK = 2500
#: parameters per row block of the normal matrix's product (`_add_gram`)
GRAM_BLOCK = 256
#: structure-factor sets kept by the calculator (a cycle evaluates the same model several times)
CACHE_SIZE = 4


@dataclass
class _Component:
    engine: StructureFactorEngine | None
    ok: np.ndarray  # reflections of the chunk whose transformed index is integral


@dataclass
class _Chunk:
    sl: slice
    components: list[_Component]


class IntensityCalculator:
    """Fc² (per twin slot), complex Fc and raw derivatives for a fixed reflection set.

    A slot is a twin component at the indices `twin_indices` give each reflection (from
    the twin law `twin_ops`, or HKLF 5 overlap groups); slot 0 is the main component."""

    def __init__(
        self,
        hkl: np.ndarray,
        cell,
        symmetry: SymmetryOps,
        wavelength: float | None,
        twin_ops: list[np.ndarray],
        *,
        twin_indices: TwinIndices | None = None,
        anomalous: bool = True,
        chunk: int = CHUNK,
        device: str = "cpu",
    ):
        self.hkl = np.asarray(hkl, dtype=np.int64)
        self.n = len(self.hkl)
        self.cell = cell
        self.symmetry = symmetry
        self.wavelength = wavelength
        self.device = device
        self.anomalous = anomalous
        self.chunk = chunk
        if twin_indices is None:
            twin_indices = TwinIndices.from_twin_law(self.hkl, twin_ops)
        self.twin_indices = twin_indices
        self.slot_component = np.asarray(twin_indices.component, dtype=np.int64)
        self.stol = stol_of(cell, self.hkl)
        lam = wavelength or 0.71073
        sin_t = np.clip(self.stol * lam, 1e-8, 1.0)
        sin_2t = np.clip(2.0 * sin_t * np.sqrt(1.0 - sin_t**2), 1e-8, None)
        self.ext_c = 0.001 * lam**3 / sin_2t  # y = (1 + c x Fc²)^-1/2
        self.chunks: list[_Chunk] = []
        for start in range(0, self.n, chunk):
            sl = slice(start, min(start + chunk, self.n))
            comps = []
            for slot_hkl, slot_ok in zip(twin_indices.hkl, twin_indices.ok):
                ih, ok = slot_hkl[sl], slot_ok[sl]
                eng = None
                if ok.any():
                    eng = StructureFactorEngine(
                        ih[ok].astype(np.int64), cell, symmetry,
                        wavelength=wavelength if anomalous else None, device=device,
                    )
                comps.append(_Component(eng, ok))
            self.chunks.append(_Chunk(sl, comps))
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()

    def with_twin_ops(self, twin_ops: list[np.ndarray]) -> "IntensityCalculator":
        """A calculator of the same reflections, cell, symmetry and settings with other twin
        operators (a trial twin law, the mirror image's terms): one slot per operator."""
        return IntensityCalculator(self.hkl, self.cell, self.symmetry, self.wavelength, twin_ops,
                                   anomalous=self.anomalous, chunk=self.chunk, device=self.device)

    # -- cache -------------------------------------------------------------------------
    @staticmethod
    def model_key(model: WorkingModel) -> bytes:
        """A digest of everything the structure factors depend on (atoms only)."""
        h = hashlib.blake2b(digest_size=16)
        for a in (model.xyz, model.u_iso, model.u_star, model.aniso, model.occupancy, model.order):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update("\0".join(model.elements).encode())
        return h.digest()

    def _remember(self, key: bytes, f: np.ndarray) -> None:
        self._cache[key] = f
        self._cache.move_to_end(key)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    @property
    def n_components(self) -> int:
        """Rows of the (C, N) arrays: twin slots (components, or HKLF 5 members)."""
        return len(self.slot_component)

    def component_sums(self, fc2c: np.ndarray) -> np.ndarray:
        """|F|² (K, N) of each twin component, summed over its slots."""
        out = np.zeros((self.twin_indices.n_components, fc2c.shape[1]))
        np.add.at(out, self.slot_component, fc2c)
        return out

    # -- forward -----------------------------------------------------------------------
    def structure_factors(self, model: WorkingModel) -> np.ndarray:
        """Complex F (C, N) of every twin component (0 where the index is not integral).

        The last few results are cached by a digest of the model's atoms: a cycle asks for
        the same model's structure factors several times (weights, objective, record)."""
        key = self.model_key(model)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        out = self.partial_structure_factors(model, None)
        out.setflags(write=False)
        self._remember(key, out)
        return out

    def partial_structure_factors(self, model: WorkingModel, atoms_index: np.ndarray | None) -> np.ndarray:
        """Complex F (C, N) of some of the model's atoms (all for None; not cached): the
        structure factors are sums over atoms, so a few atoms' part can be swapped."""
        atoms = model.atom_tensors(atoms_index, device=self.device)
        out = np.zeros((self.n_components, self.n), dtype=np.complex128)
        with torch.no_grad():
            for ch in self.chunks:
                for c, comp in enumerate(ch.components):
                    if comp.engine is None:
                        continue
                    f = comp.engine.fc(atoms).cpu().numpy()
                    tmp = np.zeros(ch.sl.stop - ch.sl.start, dtype=np.complex128)
                    tmp[comp.ok] = f
                    out[c, ch.sl] = tmp
        return out

    def fc2_components(self, model: WorkingModel) -> np.ndarray:
        """|F|² (C, N) of every twin component."""
        f = self.structure_factors(model)
        return f.real**2 + f.imag**2

    def twin_fractions(self, model: WorkingModel) -> np.ndarray:
        """The fraction of every slot: its component's (the first component's is 1 - Σ BASF)."""
        k = self.twin_indices.n_components
        basf = np.asarray(model.twin_fractions, dtype=np.float64)[: k - 1]
        basf = np.concatenate([basf, np.zeros(k - 1 - len(basf))])
        return np.concatenate([[1.0 - basf.sum()], basf])[self.slot_component]

    def model_intensities(self, model: WorkingModel, fc2c: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(M on the Fo² scale, Fc² with twinning and extinction on the absolute scale)."""
        if fc2c is None:
            fc2c = self.fc2_components(model)
        fc2 = self.twin_fractions(model) @ fc2c
        y = self.extinction(model, fc2)
        return model.scale * y * fc2, y * fc2

    def extinction(self, model: WorkingModel, fc2: np.ndarray) -> np.ndarray:
        """SHELXL extinction factor y (ones when no extinction is applied)."""
        x = model.extinction
        if not x:
            return np.ones_like(fc2)
        return extinction_factor(fc2, x, self.stol, self.wavelength or 0.71073)

    # -- derivatives -------------------------------------------------------------------
    def raw_derivatives(self, model: WorkingModel, atoms_index: np.ndarray):
        """Per chunk: (slice, Fc² components (C, Nc), raw dFc²/dp (C, len(atoms)·RAW, Nc)).

        Raw parameters per atom: x, y, z, U*11, U*22, U*33, U*12, U*13, U*23, occupancy.
        """
        sub = model.atom_tensors(atoms_index, device=self.device)
        # every atom, in any order: F is the sum of the derivative pass's atoms; a subset
        # (a block): F of the whole model from the cache (or computed once for all chunks)
        everything = len(atoms_index) == model.n and len(np.unique(atoms_index)) == model.n
        na = len(atoms_index)
        f_full = np.zeros((self.n_components, self.n), dtype=np.complex128) if everything else None
        f_model = None if everything else self.structure_factors(model)
        with torch.no_grad():
            for ch in self.chunks:
                nc = ch.sl.stop - ch.sl.start
                fc2c = np.zeros((self.n_components, nc))
                raw = np.zeros((self.n_components, na * RAW, nc))
                for c, comp in enumerate(ch.components):
                    if comp.engine is None:
                        continue
                    total = None if everything else torch.from_numpy(
                        np.ascontiguousarray(f_model[c, ch.sl][comp.ok])).to(device=self.device)
                    f, grad = comp.engine.intensity_derivatives(sub, total)
                    if total is not None:
                        f = total
                    g = grad.reshape(f.shape[0], na * RAW).T.contiguous()
                    if comp.ok.all():
                        raw[c] = g.cpu().numpy()
                    else:
                        raw[c][:, comp.ok] = g.cpu().numpy()
                    fc2c[c, comp.ok] = (f.real**2 + f.imag**2).cpu().numpy()
                    if f_full is not None:
                        f_full[c, ch.sl][comp.ok] = f.cpu().numpy()
                yield ch.sl, fc2c, raw
        if f_full is not None:
            f_full.setflags(write=False)
            self._remember(self.model_key(model), f_full)


@dataclass
class NormalEquations:
    """Normal matrix, right-hand side and figures of one linearisation."""

    matrix: np.ndarray  # (p, p)
    rhs: np.ndarray  # (p,)
    chi2: float  # Σ w (Fo² - M)²
    columns: np.ndarray  # which free parameters these are
    fc2c: np.ndarray  # (C, N) at the linearisation point
    extra_rhs: np.ndarray | None = None  # (p, e): JᵀWv of `normal_equations`' extra vectors


def _extinction_terms(cx: np.ndarray | float, fc2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SHELXL's extinction factor y = (1 + c x Fc²)^-½ and d(y Fc²)/dFc² (ones without
    extinction). A twin fraction a little below 0 can make an HKLF 5 component's Fc²
    negative: y is then taken at Fc² = 0, where the square root is defined."""
    if not np.any(cx):
        return np.ones_like(fc2), np.ones_like(fc2)
    t = cx * np.maximum(fc2, 0.0)
    y = 1.0 / np.sqrt(1.0 + t)
    return y, y * (1.0 + 0.5 * t) / (1.0 + t)


def _jacobian_chunks(calc: IntensityCalculator, params: Parameterisation,
                     group_subset: list[int] | None = None):
    """dM/dp of the model intensities for the global parameters plus the groups given:
    (columns, the free-parameter indices of its rows; an iterator over chunks of reflections
    giving (slice, Fc² components (C, Nc), M (Nc,), dM/dp (p, Nc)))."""
    model = params.model
    c_mat, atoms, atom_cols = params.constraint_matrix(group_subset)
    ng = params.n_global
    columns = np.concatenate([np.arange(ng), atom_cols]).astype(np.int64)
    p = len(columns)
    fr = calc.twin_fractions(model)
    ct = c_mat.T.tocsr()
    k = model.scale

    def chunks():
        for sl, fc2c, raw in calc.raw_derivatives(model, atoms):
            fc2 = fr @ fc2c
            y, dyf = _extinction_terms(calc.ext_c[sl] * (model.extinction or 0.0), fc2)
            jt = np.zeros((p, len(fc2)))
            jt[0] = y * fc2
            row = 1
            if params.refine_extinction:
                jt[row] = -0.5 * k * calc.ext_c[sl] * fc2 * np.maximum(fc2, 0.0) * y**3
                row += 1
            if params.refine_twin.any():
                per_component = calc.component_sums(fc2c)
            for j, on in enumerate(params.refine_twin):
                if on:
                    jt[row] = k * dyf * (per_component[j + 1] - per_component[0])
                    row += 1
            if len(atom_cols):
                raw_total = raw[0] if len(fr) == 1 else np.tensordot(fr, raw, axes=(0, 0))  # (R, Nc)
                jt[ng:] = (ct @ raw_total) * (k * dyf)[None, :]
            yield sl, fc2c, k * y * fc2, jt

    return columns, chunks()


def normal_equations(
    calc: IntensityCalculator,
    params: Parameterisation,
    fo2: np.ndarray,
    weights: np.ndarray,
    group_subset: list[int] | None = None,
    extra: np.ndarray | None = None,
) -> NormalEquations:
    """Accumulate JᵀWJ and JᵀW(Fo² - M) for the global parameters plus the groups given;
    `extra` (N, e): vectors v whose JᵀWv are wanted too, from the same pass
    (`NormalEquations.extra_rhs`)."""
    columns, chunks = _jacobian_chunks(calc, params, group_subset)
    p = len(columns)
    nmat = np.zeros((p, p))
    rhs = np.zeros(p)
    extra_rhs = None if extra is None else np.zeros((p, extra.shape[1]))
    chi2 = 0.0
    fc2c_all = np.zeros((calc.n_components, calc.n))
    for sl, fc2c, m, jt in chunks:
        fc2c_all[:, sl] = fc2c
        w = weights[sl]
        r = fo2[sl] - m
        # the products run in torch: its thread setting applies (numpy's BLAS threads
        # oversubscribe shared CPUs)
        jt_t = torch.from_numpy(jt)
        jw_t = jt_t * torch.from_numpy(w)[None, :]
        _add_gram(nmat, jw_t, jt_t)
        rhs += (jw_t @ torch.from_numpy(r)).numpy()
        if extra_rhs is not None:
            extra_rhs += (jw_t @ torch.from_numpy(np.ascontiguousarray(extra[sl]))).numpy()
        chi2 += float(np.sum(w * r * r))
    return NormalEquations(nmat, rhs, chi2, columns, fc2c_all, extra_rhs)


def _add_gram(nmat: np.ndarray, jw: torch.Tensor, jt: torch.Tensor) -> None:
    """nmat += jw · jtᵀ, a symmetric matrix (jw is jt with its columns weighted): only the
    row blocks' parts on and right of the diagonal are multiplied, the rest mirrored
    (about 40 % fewer operations than the whole product for a few hundred parameters)."""
    out = torch.from_numpy(nmat)  # (shares nmat's memory)
    for i in range(0, jt.shape[0], GRAM_BLOCK):
        j = i + GRAM_BLOCK
        block = jw[i:j] @ jt[i:].T
        out[i:j, i:] += block
        out[j:, i:j] += block[:, GRAM_BLOCK:].T


@dataclass
class Solution:
    shift: np.ndarray
    damping: float


def solve_damped(nmat: np.ndarray, rhs: np.ndarray, damping: float) -> np.ndarray:
    """Solve (N + λ diag N) δ = r with Marquardt scaling (Cholesky; raises LinAlgError);
    `rhs` may hold several right-hand sides as columns (p, k)."""
    d = np.sqrt(np.clip(np.diag(nmat), 0.0, None))
    active = d > 1e-300
    shift = np.zeros(rhs.shape)
    if not active.any():
        return shift
    da = d[active]
    ns = nmat[np.ix_(active, active)] / np.outer(da, da)
    ns[np.diag_indices_from(ns)] += damping
    if not np.all(np.isfinite(ns)):
        raise np.linalg.LinAlgError("non-finite normal matrix")
    lower, info = torch.linalg.cholesky_ex(torch.from_numpy(ns))
    if int(info) != 0:
        raise np.linalg.LinAlgError("normal matrix not positive definite")
    scale = da if rhs.ndim == 1 else da[:, None]
    scaled = (rhs[active] / scale).reshape(len(da), -1)
    sol = torch.cholesky_solve(torch.from_numpy(np.ascontiguousarray(scaled)), lower).numpy()
    shift[active] = sol.reshape(shift[active].shape) / scale
    return shift


def solve_damped_constrained(nmat: np.ndarray, rhs: np.ndarray, damping: float, rows: np.ndarray,
                             values: np.ndarray) -> np.ndarray:
    """`solve_damped` subject to the linear equalities rows @ δ = values (k, p): the step
    minimising the damped quadratic model on that subspace (Lagrange multipliers)."""
    free = solve_damped(nmat, rhs, damping)
    if not len(rows):
        return free
    toward = solve_damped(nmat, rows.T, damping)  # A⁻¹ Gᵀ (p, k)
    multipliers = np.linalg.lstsq(rows @ toward, rows @ free - values, rcond=None)[0]
    return free - toward @ multipliers


def covariance(nmat: np.ndarray, scale2: float) -> tuple[np.ndarray, list[int]]:
    """Inverse normal matrix times S² (the parameter covariance) and the indices of
    parameters that are undetermined (singular directions), if any."""
    d = np.sqrt(np.clip(np.diag(nmat), 0.0, None))
    p = len(d)
    cov = np.zeros((p, p))
    active = d > 1e-300
    bad: list[int] = [int(i) for i in np.nonzero(~active)[0]]
    if not active.any():
        return cov, bad
    da = d[active]
    ns = nmat[np.ix_(active, active)] / np.outer(da, da)
    lower, info = torch.linalg.cholesky_ex(torch.from_numpy(ns))
    cond_ok = int(info) == 0
    if cond_ok:
        inv = torch.cholesky_inverse(lower).numpy()
        cond_ok = bool(np.all(np.isfinite(inv)) and np.max(np.abs(np.diag(inv))) < 1e10)
    if not cond_ok:
        wt, vt = torch.linalg.eigh(torch.from_numpy(ns))
        w, v = wt.numpy(), vt.numpy()
        tiny = w < 1e-10 * max(w.max(), 1e-300)
        if tiny.any():
            act_idx = np.nonzero(active)[0]
            for k in np.nonzero(tiny)[0]:
                bad.extend(int(act_idx[i]) for i in np.nonzero(np.abs(v[:, k]) > 0.3)[0])
        winv = np.where(tiny, 0.0, 1.0 / np.where(tiny, 1.0, w))
        inv = (v * winv) @ v.T
    cov[np.ix_(active, active)] = inv / np.outer(da, da) * scale2
    return cov, sorted(set(bad))


def objective(calc: IntensityCalculator, model: WorkingModel, fo2: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray]:
    """(Σ w (Fo² - M)², Fc² components) of a model."""
    fc2c = calc.fc2_components(model)
    m, _ = calc.model_intensities(model, fc2c)
    r = fo2 - m
    val = float(np.sum(weights * r * r))
    if not math.isfinite(val):
        raise RefinementError("the model intensities are not finite (a parameter diverged)")
    return val, fc2c


def jacobian(calc: IntensityCalculator, params: Parameterisation) -> np.ndarray:
    """Dense dM/dp (N, p) of the model intensities w.r.t. all free parameters (for checks)."""
    _, chunks = _jacobian_chunks(calc, params)
    out = np.zeros((calc.n, params.n))
    for sl, _, _, jt in chunks:
        out[sl] = jt.T
    return out
