"""The structure-factor engine (torch): one implementation used by every stage.

    F(h) = Σ_atoms w_j (f0_j(s) + f′_j + i f″_j) Σ_ops T_j(h R) exp(2πi (h R · x_j + h · t))

with w_j = occupancy_j / (site-symmetry order of j), T_j = exp(-2π² (hR)ᵀ U*_j (hR)) (an
isotropic U is expressed as U* = U_iso G*, which gives exp(-8π² U s²)).

Symmetry is exploited: centring translations are summed analytically (a real factor per
reflection, 0 for centring-absent reflections), and in centrosymmetric groups whose inversion
centre is at the origin only half of the operators are evaluated (the pair sums to 2 cos).
Everything is differentiable by autograd with respect to coordinates, occupancies and ADPs,
in float32 or float64, on CPU or CUDA, and batched over candidate structures. For least
squares, `StructureFactorEngine.with_derivatives` returns analytic per-atom derivatives,
which are much cheaper than a Jacobian by autograd.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..types import SpaceGroupRef, Structure, UnitCell
from .cell import reciprocal_metric, u_cif_to_u_star
from .formula import normalize_element
from .scattering import anomalous_terms, form_factor_table
from .symmetry import SymmetryOps

TWO_PI = 2.0 * math.pi
TWO_PI_SQ = 2.0 * math.pi**2

#: tolerance (Å) for detecting special positions when a site does not state its order
SPECIAL_POSITION_TOLERANCE = 0.05


def _metric6(cell: UnitCell) -> np.ndarray:
    """G* as a 6-vector (11, 22, 33, 12, 13, 23): U* of an isotropic U of 1 Å²."""
    g = reciprocal_metric(cell)
    return np.array([g[0, 0], g[1, 1], g[2, 2], g[0, 1], g[0, 2], g[1, 2]])


@dataclass
class AtomTensors:
    """Atoms of an asymmetric unit as tensors, ready for the engine.

    xyz (n, 3) fractional; occupancy (n,) chemical occupancy; weight (n,) = 1/site order;
    u_star (n, 6) in CIF component order (isotropic atoms carry U_iso·G*); aniso (n,) bool;
    u_iso (n,) (the isotropic U of isotropic atoms, U_eq-like for anisotropic ones);
    elements: the element of each atom.
    """

    xyz: torch.Tensor
    occupancy: torch.Tensor
    weight: torch.Tensor
    u_star: torch.Tensor
    aniso: torch.Tensor
    u_iso: torch.Tensor
    elements: list[str]
    labels: list[str]

    @property
    def n(self) -> int:
        return len(self.elements)

    @classmethod
    def from_structure(
        cls,
        structure: Structure,
        *,
        symmetry: SymmetryOps | None = None,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
        tolerance: float = SPECIAL_POSITION_TOLERANCE,
    ) -> "AtomTensors":
        """Convert a Structure; site-symmetry orders come from the sites or are detected."""
        sym = symmetry or SymmetryOps.from_space_group(structure.space_group)
        cell = structure.cell
        sites = structure.sites
        xyz = np.array([s.xyz for s in sites], dtype=np.float64).reshape(-1, 3)
        order = sym.structure_site_orders(structure, tolerance).astype(np.float64)
        g6 = _metric6(cell)
        u_star = np.zeros((len(sites), 6))
        u_iso = np.zeros(len(sites))
        aniso = np.zeros(len(sites), dtype=bool)
        for i, s in enumerate(sites):
            if s.u_aniso is not None:
                u_star[i] = u_cif_to_u_star(cell, s.u_aniso)
                aniso[i] = True
                u_iso[i] = float(np.mean(s.u_aniso[:3]))
            else:
                u_iso[i] = float(s.u_iso)
                u_star[i] = u_iso[i] * g6
        t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
        return cls(
            xyz=t(xyz),
            occupancy=t([s.occupancy for s in sites]),
            weight=1.0 / t(np.maximum(order, 1.0)),
            u_star=t(u_star),
            aniso=torch.as_tensor(aniso, device=device),
            u_iso=t(u_iso),
            elements=[normalize_element(s.element) for s in sites],
            labels=[s.label for s in sites],
        )


@dataclass
class StructureFactorDerivatives:
    """F and its analytic derivatives with respect to each atom's parameters.

    fc (N,) complex; d_xyz (N, n, 3); d_ustar (N, n, 6) (w.r.t. U* components in CIF
    order); d_occ (N, n) w.r.t. chemical occupancy. All complex.
    """

    fc: torch.Tensor
    d_xyz: torch.Tensor
    d_ustar: torch.Tensor
    d_occ: torch.Tensor


class StructureFactorEngine:
    """Structure factors for a fixed set of reflections, cell, space group and wavelength.

    The reflection-dependent work (symmetry-transformed indices, centring factors, form
    factors) is done once; `fc` can then be called for many models or candidate batches.
    """

    def __init__(
        self,
        hkl: np.ndarray,
        cell: UnitCell,
        space_group: SpaceGroupRef | SymmetryOps | str,
        *,
        wavelength: float | None = None,
        anomalous: bool = True,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
        chunk_elements: int = 4_000_000,
    ):
        self.cell = cell
        self.symmetry = (
            space_group if isinstance(space_group, SymmetryOps) else SymmetryOps.from_space_group(space_group)
        )
        self.wavelength = wavelength
        self.anomalous = anomalous and wavelength is not None
        self.dtype = dtype
        self.device = torch.device(device)
        self.chunk_elements = chunk_elements
        self.metric6 = _metric6(cell)

        h = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
        self.hkl = h
        rots, trans, self.centro_pairs = _reduced_operators(self.symmetry)
        cen = _centring_vectors(self.symmetry)
        cen_factor = np.cos(TWO_PI * (h.astype(np.float64) @ cen.T)).sum(axis=1)  # real, n_cen or 0
        if self.centro_pairs:
            cen_factor = 2.0 * cen_factor
        hop = np.einsum("ni,mij->mnj", h.astype(np.float64), rots.astype(np.float64))  # (m, N, 3)
        hh = np.stack(
            [
                hop[..., 0] ** 2,
                hop[..., 1] ** 2,
                hop[..., 2] ** 2,
                2 * hop[..., 0] * hop[..., 1],
                2 * hop[..., 0] * hop[..., 2],
                2 * hop[..., 1] * hop[..., 2],
            ],
            axis=-1,
        )  # (m, N, 6)
        q = np.einsum("ni,ij,nj->n", h.astype(np.float64), reciprocal_metric(cell), h.astype(np.float64))
        self.stol = 0.5 * np.sqrt(q)
        t = lambda a: torch.as_tensor(a, dtype=dtype, device=self.device)  # noqa: E731
        self._hop = t(hop)
        self._hh = t(hh)
        self._phase_t = t(np.mod((h.astype(np.float64) @ trans.T).T, 1.0))  # (m, N) in cycles
        self._cen = t(cen_factor)
        self._f0_cache: dict[str, torch.Tensor] = {}
        self._fp_cache: dict[str, tuple[float, float]] = {}

    @property
    def n_reflections(self) -> int:
        return int(self.hkl.shape[0])

    @property
    def n_operators(self) -> int:
        """Operators evaluated explicitly (after centring and inversion reduction)."""
        return int(self._hop.shape[0])

    # -- scattering factors ------------------------------------------------------------
    def _scattering(self, elements: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(f0 + f′) (N, n) and f″ (n,) for the atoms' elements."""
        missing = [e for e in dict.fromkeys(elements) if e not in self._f0_cache]
        if missing:
            table = form_factor_table(missing)
            s2 = self.stol**2
            f0 = np.einsum("ek,ekn->en", table[:, :4], np.exp(-table[:, 4:8, None] * s2[None, None, :])) + table[:, 8:9]
            fp, fpp = anomalous_terms(missing, self.wavelength if self.anomalous else None)
            for i, e in enumerate(missing):
                self._f0_cache[e] = torch.as_tensor(f0[i] + fp[i], dtype=self.dtype, device=self.device)
                self._fp_cache[e] = (float(fp[i]), float(fpp[i]))
        f = torch.stack([self._f0_cache[e] for e in elements], dim=1) if elements else torch.zeros(
            (self.n_reflections, 0), dtype=self.dtype, device=self.device
        )
        fpp = torch.as_tensor([self._fp_cache[e][1] for e in elements], dtype=self.dtype, device=self.device)
        return f, fpp

    def _chunks(self, n_atoms: int, batch: int = 1):
        per_refl = max(1, self.n_operators * max(n_atoms, 1) * batch)
        size = max(256, self.chunk_elements // per_refl)
        for start in range(0, self.n_reflections, size):
            yield slice(start, min(start + size, self.n_reflections))

    def _trig(self, sl: slice, xyz: torch.Tensor, ustar: torch.Tensor, need_sin: bool = True):
        """cos, sin (None unless needed) of the phases and Debye-Waller factors: (B, m, N, n)."""
        hop, hh, pt = self._hop[:, sl], self._hh[:, sl], self._phase_t[:, sl]
        arg = _phase(torch.einsum("mnj,baj->bmna", hop, xyz) + pt[None, :, :, None])
        dw = _debye_waller(torch.einsum("mnk,bak->bmna", hh, ustar))
        return torch.cos(arg), (torch.sin(arg) if need_sin else None), dw

    # -- forward -----------------------------------------------------------------------
    def fc(
        self,
        atoms: AtomTensors,
        *,
        xyz: torch.Tensor | None = None,
        occupancy: torch.Tensor | None = None,
        u_star: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Complex F for every reflection; differentiable.

        `xyz`, `occupancy`, `u_star` override the atoms' tensors and may carry a leading
        batch dimension (B, n, ...) to evaluate B candidate models at once -> (B, N).
        """
        xyz = atoms.xyz if xyz is None else xyz
        occ = atoms.occupancy if occupancy is None else occupancy
        ustar = atoms.u_star if u_star is None else u_star
        batched = xyz.dim() == 3
        if not batched:
            xyz, occ, ustar = xyz[None], occ[None], ustar[None]
        b = xyz.shape[0]
        occ = occ.expand(b, -1) if occ.dim() == 2 else occ[None].expand(b, -1)
        ustar = ustar.expand(b, -1, -1) if ustar.dim() == 3 else ustar[None].expand(b, -1, -1)
        f, fpp = self._scattering(atoms.elements)
        re, im = _FcFunction.apply(xyz, occ, ustar, atoms.weight, f, fpp, self, atoms.n)
        fc = torch.complex(re, im)
        return fc if batched else fc[0]

    def fc_squared(self, atoms: AtomTensors, **overrides) -> torch.Tensor:
        """|F|² (differentiable)."""
        fc = self.fc(atoms, **overrides)
        return fc.real**2 + fc.imag**2

    # -- analytic derivatives for least squares ----------------------------------------
    def _derivative_terms(self, atoms: AtomTensors, f: torch.Tensor, fpp: torch.Tensor):
        """Per chunk of reflections: (slice, a, b, ∂a/∂x, ∂b/∂x, ∂a/∂U*, ∂b/∂U*, g0r, g0i)
        with a, b (N, n) the atoms' symmetry sums of dw·cos and dw·sin of the phases and
        g0 = weight (f + i f'') centring (N, n): an atom's F is occupancy · g0 (a + i b)."""
        for sl in self._chunks(atoms.n * 6):
            hop, hh, pt = self._hop[:, sl], self._hh[:, sl], self._phase_t[:, sl]
            arg = _phase(torch.einsum("mnj,aj->mna", hop, atoms.xyz) + pt[:, :, None])
            dw = _debye_waller(torch.einsum("mnk,ak->mna", hh, atoms.u_star))
            c, s = dw * torch.cos(arg), dw * torch.sin(arg)
            a = c.sum(0)  # (N, n)
            da_dx = -TWO_PI * torch.einsum("mna,mnj->naj", s, hop)
            da_du = -TWO_PI_SQ * torch.einsum("mna,mnk->nak", c, hh)
            if self.centro_pairs:  # inversion pairs: the sine sum and its derivatives vanish
                b, db_dx, db_du = torch.zeros_like(a), torch.zeros_like(da_dx), torch.zeros_like(da_du)
            else:
                b = s.sum(0)
                db_dx = TWO_PI * torch.einsum("mna,mnj->naj", c, hop)
                db_du = -TWO_PI_SQ * torch.einsum("mna,mnk->nak", s, hh)
            cen = self._cen[sl][:, None]
            g0r = atoms.weight[None, :] * f[sl] * cen
            g0i = atoms.weight[None, :] * fpp[None, :] * cen
            yield sl, a, b, da_dx, db_dx, da_du, db_du, g0r, g0i

    def with_derivatives(self, atoms: AtomTensors) -> StructureFactorDerivatives:
        """F and analytic per-atom derivatives (no autograd graph is built)."""
        with torch.no_grad():
            f, fpp = self._scattering(atoms.elements)
            occ = atoms.occupancy[None, :]
            fcs, dxs, dus, dos = [], [], [], []
            for _, a, b, da_dx, db_dx, da_du, db_du, g0r, g0i in self._derivative_terms(atoms, f, fpp):
                # an atom's F is occupancy · g0 (a + i b)
                d_re, d_im = g0r * a - g0i * b, g0r * b + g0i * a  # ∂F/∂occupancy
                fcs.append(torch.complex((occ * d_re).sum(-1), (occ * d_im).sum(-1)))
                gr, gi = (occ * g0r)[..., None], (occ * g0i)[..., None]
                dxs.append(torch.complex(gr * da_dx - gi * db_dx, gr * db_dx + gi * da_dx))
                dus.append(torch.complex(gr * da_du - gi * db_du, gr * db_du + gi * da_du))
                dos.append(torch.complex(d_re, d_im))
            return StructureFactorDerivatives(
                fc=torch.cat(fcs),
                d_xyz=torch.cat(dxs),
                d_ustar=torch.cat(dus),
                d_occ=torch.cat(dos),
            )

    def intensity_derivatives(self, atoms: AtomTensors,
                              f_total: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(F of these atoms (N,) complex, ∂|F_total|²/∂(x, y, z, U*11..U*23, occupancy) of
        each atom (N, n, 10) real), F_total being `f_total` (the whole model's F, when
        these atoms are part of it) or these atoms' F: what least squares on F² needs,
        without the complex derivatives of `with_derivatives` (2 Re(F̄ ∂F) directly)."""
        with torch.no_grad():
            f, fpp = self._scattering(atoms.elements)
            occ = atoms.occupancy[None, :]
            fcs, grads = [], []
            for sl, a, b, da_dx, db_dx, da_du, db_du, g0r, g0i in self._derivative_terms(atoms, f, fpp):
                d_re, d_im = g0r * a - g0i * b, g0r * b + g0i * a
                fc = torch.complex((occ * d_re).sum(-1), (occ * d_im).sum(-1))
                fcs.append(fc)
                total = fc if f_total is None else f_total[sl]
                fr, fi = total.real[:, None], total.imag[:, None]
                # ∂|F|²/∂t = 2 (Fr ∂Re/∂t + Fi ∂Im/∂t) = 2 occupancy (p ∂a/∂t + q ∂b/∂t)
                p, q = fr * g0r + fi * g0i, fi * g0r - fr * g0i
                po, qo = (2.0 * occ * p)[..., None], (2.0 * occ * q)[..., None]
                grads.append(torch.cat([po * da_dx + qo * db_dx, po * da_du + qo * db_du,
                                        (2.0 * (p * a + q * b))[..., None]], dim=-1))
            return torch.cat(fcs), torch.cat(grads)

    def u_iso_direction(self) -> torch.Tensor:
        """dU*/dU_iso (6,): chain rule from U* derivatives to an isotropic U."""
        return torch.as_tensor(self.metric6, dtype=self.dtype, device=self.device)


class _FcFunction(torch.autograd.Function):
    """Structure factors with a fused analytic backward pass.

    Forward keeps no graph; backward recomputes the per-chunk trigonometric terms and
    accumulates gradients for coordinates, U* and occupancies directly (cheaper in time and
    memory than autograd through the broadcasted intermediates).
    """

    @staticmethod
    def forward(ctx, xyz, occ, ustar, weight, f, fpp, engine, n_atoms):  # noqa: D401
        b = xyz.shape[0]
        w = occ * weight  # (B, n)
        out_re, out_im = [], []
        with torch.no_grad():
            for sl in engine._chunks(n_atoms, b):
                c, s_, dw = engine._trig(sl, xyz, ustar, need_sin=not engine.centro_pairs)
                a = (dw * c).sum(dim=1)  # (B, N, n)
                bb = None if engine.centro_pairs else (dw * s_).sum(dim=1)
                fr, fi = f[sl][None], fpp[None, None, :]
                wr = w[:, None, :]
                if bb is None:
                    re = (wr * fr * a).sum(-1)
                    im = (wr * fi * a).sum(-1)
                else:
                    re = (wr * (fr * a - fi * bb)).sum(-1)
                    im = (wr * (fr * bb + fi * a)).sum(-1)
                cen = engine._cen[sl][None]
                out_re.append(re * cen)
                out_im.append(im * cen)
        ctx.save_for_backward(xyz, occ, ustar, weight, f, fpp)
        ctx.engine, ctx.n_atoms = engine, n_atoms
        re = torch.cat(out_re, dim=1) if out_re else xyz.new_zeros((b, 0))
        im = torch.cat(out_im, dim=1) if out_im else xyz.new_zeros((b, 0))
        return re, im

    @staticmethod
    def backward(ctx, g_re, g_im):
        xyz, occ, ustar, weight, f, fpp = ctx.saved_tensors
        engine, n_atoms = ctx.engine, ctx.n_atoms
        b = xyz.shape[0]
        w = occ * weight
        need_x, need_o, need_u = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        gx = torch.zeros_like(xyz) if need_x else None
        gu = torch.zeros_like(ustar) if need_u else None
        gw = torch.zeros_like(w) if need_o else None
        if g_re is None:
            g_re = torch.zeros((b, engine.n_reflections), dtype=xyz.dtype, device=xyz.device)
        if g_im is None:
            g_im = torch.zeros_like(g_re)
        with torch.no_grad():
            for sl in engine._chunks(n_atoms, b):
                c, s_, dw = engine._trig(sl, xyz, ustar, need_sin=need_x or not engine.centro_pairs)
                cen = engine._cen[sl][None]
                gr = (g_re[:, sl] * cen)[..., None]  # (B, N, 1)
                gi = (g_im[:, sl] * cen)[..., None]
                fr, fi = f[sl][None], fpp[None, None, :]
                p = w[:, None, :] * (gr * fr + gi * fi)  # dL/dA  (B, N, n)
                q = None if engine.centro_pairs else w[:, None, :] * (gi * fr - gr * fi)  # dL/dB
                dwc = dw * c
                dws = dw * s_ if s_ is not None else None
                if need_x:
                    x_terms = -p[:, None] * dws if q is None else q[:, None] * dwc - p[:, None] * dws
                    gx += TWO_PI * torch.einsum("bmna,mnj->baj", x_terms, engine._hop[:, sl])
                if need_u:
                    u_terms = p[:, None] * dwc if q is None else p[:, None] * dwc + q[:, None] * dws
                    gu -= TWO_PI_SQ * torch.einsum("bmna,mnk->bak", u_terms, engine._hh[:, sl])
                if need_o:
                    a = dwc.sum(dim=1)
                    if q is None:
                        gw += ((gr * fr + gi * fi) * a).sum(dim=1)
                    else:
                        bb = dws.sum(dim=1)
                        gw += (gr * (fr * a - fi * bb) + gi * (fr * bb + fi * a)).sum(dim=1)
        g_occ = gw * weight if need_o else None
        return gx, g_occ, gu, None, None, None, None, None


def _phase(cycles: torch.Tensor) -> torch.Tensor:
    """2π × (cycles reduced to [-½, ½]): keeps sin/cos on their fast path and exact in float32."""
    return TWO_PI * (cycles - torch.round(cycles))


#: smallest exponent used in Debye-Waller factors (exp(-60) ~ 1e-26: negligible, no denormals)
_MIN_EXPONENT = -60.0


def _debye_waller(quadratic: torch.Tensor) -> torch.Tensor:
    """exp(-2π² hᵀU*h), with the exponent clamped away from the denormal range."""
    return torch.exp(torch.clamp(-TWO_PI_SQ * quadratic, min=_MIN_EXPONENT))


def _centring_vectors(sym: SymmetryOps) -> np.ndarray:
    return np.array(sym.gemmi_ops.cen_ops, dtype=np.float64).reshape(-1, 3) / 24.0


def _reduced_operators(sym: SymmetryOps) -> tuple[np.ndarray, np.ndarray, bool]:
    """Coset representatives after removing centring and, if possible, the inversion.

    Returns rotations (m, 3, 3), translations (m, 3) and whether each represents an
    inversion pair (only when the inversion centre is at the origin).
    """
    ops = sym.gemmi_ops
    rots = np.array([op.rot for op in ops.sym_ops], dtype=np.int64) // 24
    trans = np.array([op.tran for op in ops.sym_ops], dtype=np.float64) / 24.0
    inversion_at_origin = False
    if sym.centrosymmetric:
        for r, t in zip(rots, trans):
            if np.array_equal(r, -np.eye(3, dtype=np.int64)) and np.allclose(np.mod(t, 1.0), 0.0):
                inversion_at_origin = True
                break
    if not inversion_at_origin:
        return rots, trans, False
    keep_r, keep_t, seen = [], [], set()
    for r, t in zip(rots, trans):
        key_neg = (-r).tobytes()
        if key_neg in seen:
            continue
        seen.add(r.tobytes())
        keep_r.append(r)
        keep_t.append(t)
    return np.array(keep_r), np.array(keep_t), True


def calculate_fc(
    structure: Structure,
    hkl: np.ndarray,
    *,
    wavelength: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> np.ndarray:
    """Complex structure factors of a Structure at the given Miller indices (numpy)."""
    engine = StructureFactorEngine(
        hkl, structure.cell, structure.space_group, wavelength=wavelength, dtype=dtype
    )
    atoms = AtomTensors.from_structure(structure, symmetry=engine.symmetry, dtype=dtype)
    with torch.no_grad():
        return engine.fc(atoms).cpu().numpy()
