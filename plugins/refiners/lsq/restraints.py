"""Automatic restraints for disordered parts of a model (SHELXL's SAME and RIGU, in spirit).

A published refinement of a disordered structure always carries restraints; a refinement
started from a rough model needs them even more. For atoms in disorder components
(PART > 0) this module generates:

- *similar geometry* (SAME-like): every 1,2 and 1,3 distance inside one component equals
  the corresponding distance of the other components (atoms matched to their nearest
  partner of the same element, within 1.6 Å); σ 0.02 Å (1,2) and 0.04 Å (1,3);
- *rigid bond* (RIGU-like): for bonded pairs involving a disordered atom, both
  anisotropic, the mean-square displacements along the bond are equal; σ 0.004 Å².

Each restraint is a pseudo-observation (target 0, weight 1/σ²) added to the normal
equations and to the sum of squares, exactly as SHELXL adds restraints to Σ w Δ².
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refractor_core.crystal.cell import orthogonalization_matrix

from .model import WorkingModel, is_hydrogen
from .parameters import RAW, Parameterisation

SIGMA_12 = 0.02
SIGMA_13 = 0.04
SIGMA_RIGU = 0.004
PARTNER_DISTANCE = 1.6
#: distances of two components differing more than this (Å) are not taken as equivalent
MAX_MISMATCH = 0.2


@dataclass(frozen=True)
class Image:
    """Atom `atom` moved by operation `op` and lattice `shift` (fractional)."""

    atom: int
    op: int = 0
    shift: tuple[int, int, int] = (0, 0, 0)


@dataclass(frozen=True)
class Restraint:
    kind: str  # "same" (d1 - d2 = 0) or "rigu"
    pair1: tuple[Image, Image]
    pair2: tuple[Image, Image] | None
    sigma: float


def _frac(model: WorkingModel, im: Image) -> np.ndarray:
    sym = model.symmetry
    return sym.rotations[im.op].astype(np.float64) @ model.xyz[im.atom] + sym.translations[im.op] + np.array(im.shift, float)


def _distance_and_gradient(model: WorkingModel, a: Image, b: Image, m: np.ndarray):
    """Distance |M(xa - xb)| and its gradient w.r.t. the fractional xyz of both atoms."""
    d_frac = _frac(model, a) - _frac(model, b)
    v = m @ d_frac
    d = float(np.linalg.norm(v))
    g = m.T @ v / max(d, 1e-9)  # ∂d/∂(xa image)
    ra = model.symmetry.rotations[a.op].astype(np.float64)
    rb = model.symmetry.rotations[b.op].astype(np.float64)
    return d, ra.T @ g, -(rb.T @ g)


def _rigu_terms(model: WorkingModel, a: Image, b: Image, m: np.ndarray):
    """n·U_a·n - n·U_b·n (Cartesian, along a-b) and its gradients w.r.t. U* of a and b."""
    d_frac = _frac(model, a) - _frac(model, b)
    v = m @ d_frac
    n = v / max(np.linalg.norm(v), 1e-9)
    us = model.u_star_all()
    out = []
    for im in (a, b):
        r = model.symmetry.rotations[im.op].astype(np.float64)
        q = r.T @ (m.T @ n)  # n·(M R U* Rᵀ Mᵀ)·n = qᵀ U* q
        coef = np.array([q[0] ** 2, q[1] ** 2, q[2] ** 2, 2 * q[0] * q[1], 2 * q[0] * q[2], 2 * q[1] * q[2]])
        u = us[im.atom]
        out.append((float(coef @ u), coef))
    (va, ga), (vb, gb) = out
    return va - vb, ga, -gb


def generate(model: WorkingModel) -> list[Restraint]:
    """Restraints for the disorder components of a model (empty when there is no disorder)."""
    from .hydrogens import neighbours

    heavy = np.array([i for i in range(model.n) if not is_hydrogen(model.elements[i]) and model.riding[i] < 0])
    disordered = [int(i) for i in heavy if model.part[i] > 0]
    if not disordered:
        return []
    nb = neighbours(model, heavy)
    bonds: dict[int, list[Image]] = {}
    for i, lst in nb.items():
        bonds[i] = [Image(n.atom, n.op, tuple(n.shift)) for n, _, _ in lst if not is_hydrogen(model.elements[n.atom])]
    cart = model.cartesian()
    parts = sorted({int(model.part[i]) for i in disordered})

    def nearest(a: int, q: int) -> int | None:
        cands = [j for j in heavy if model.part[j] == q and model.elements[j] == model.elements[a]]
        if not cands:
            return None
        d = [np.linalg.norm(cart[j] - cart[a]) for j in cands]
        k = int(np.argmin(d))
        return int(cands[k]) if d[k] < PARTNER_DISTANCE else None

    def partner(a: int, q: int) -> int | None:
        """a itself (PART 0) or its mutual nearest atom of the same element in part q."""
        if model.part[a] == 0:
            return a
        b = nearest(a, q)
        return b if b is not None and nearest(b, int(model.part[a])) == a else None

    direct_bonds = {(int(i), b.atom) for i, lst in bonds.items() for b in lst if b.op == 0 and b.shift == (0, 0, 0)}

    def connected(a: int, b: int, sigma: float) -> bool:
        if sigma == SIGMA_12:
            return (a, b) in direct_bonds
        return any((a, j) in direct_bonds and (j, b) in direct_bonds for j in range(model.n))

    out: list[Restraint] = []
    seen: set = set()
    for p in parts:
        members = [i for i in heavy if model.part[i] in (0, p)]
        for q in parts:
            if q <= p:
                continue
            for i in members:
                # 1,2 pairs inside component p (same asymmetric-unit image) and 1,3 pairs
                direct = [b.atom for b in bonds.get(int(i), []) if b.op == 0 and b.shift == (0, 0, 0) and model.part[b.atom] in (0, p)]
                pairs = [(int(i), j, SIGMA_12) for j in direct if j > i]
                for j in direct:
                    for b in bonds.get(j, []):
                        k = b.atom
                        if k != i and k > i and b.op == 0 and b.shift == (0, 0, 0) and model.part[k] in (0, p):
                            pairs.append((int(i), k, SIGMA_13))
                for a, b, sigma in pairs:
                    if model.part[a] == 0 and model.part[b] == 0:
                        continue
                    pa, pb = partner(a, q), partner(b, q)
                    if pa is None or pb is None or pa == pb or not connected(pa, pb, sigma):
                        continue
                    d1 = np.linalg.norm(cart[a] - cart[b])
                    d2 = np.linalg.norm(cart[pa] - cart[pb])
                    if abs(d1 - d2) > MAX_MISMATCH:
                        continue  # not the same chemical bond in the two components
                    key = (min(a, b), max(a, b), min(pa, pb), max(pa, pb))
                    if key in seen or (key[2], key[3], key[0], key[1]) in seen:
                        continue
                    seen.add(key)
                    out.append(Restraint("same", (Image(a), Image(b)), (Image(pa), Image(pb)), sigma))
    # rigid bond for bonds touching disorder
    for i in heavy:
        for b in bonds.get(int(i), []):
            j = b.atom
            if (j, i) in seen or (int(i), j) in seen:
                continue
            if model.part[i] == 0 and model.part[j] == 0:
                continue
            if model.part[i] > 0 and model.part[j] > 0 and model.part[i] != model.part[j]:
                continue
            seen.add((int(i), j))
            out.append(Restraint("rigu", (Image(int(i)), b), None, SIGMA_RIGU))
    return out


def residuals(model: WorkingModel, restraints: list[Restraint]) -> tuple[np.ndarray, np.ndarray]:
    """(value - target, σ) of every restraint (RIGU terms are zero for isotropic atoms)."""
    if not restraints:
        return np.zeros(0), np.zeros(0)
    m = orthogonalization_matrix(model.cell)
    vals, sig = [], []
    for r in restraints:
        if r.kind == "same":
            d1, _, _ = _distance_and_gradient(model, *r.pair1, m)
            d2, _, _ = _distance_and_gradient(model, *r.pair2, m)
            vals.append(d1 - d2)
        else:
            a, b = r.pair1
            if not (model.aniso[a.atom] and model.aniso[b.atom]):
                vals.append(0.0)
            else:
                vals.append(_rigu_terms(model, a, b, m)[0])
        sig.append(r.sigma)
    return np.array(vals), np.array(sig)


def sum_of_squares(model: WorkingModel, restraints: list[Restraint]) -> float:
    """Σ (value/σ)² of the restraints."""
    v, s = residuals(model, restraints)
    return float(np.sum((v / s) ** 2)) if len(v) else 0.0


def add_to_normal_equations(ne, params: Parameterisation, restraints: list[Restraint]) -> None:
    """Add restraint rows (weight 1/σ², target 0) to normal equations over `ne.columns`."""
    if not restraints:
        return
    model = params.model
    m = orthogonalization_matrix(model.cell)
    c_mat, atoms, atom_cols = params.constraint_matrix(None)
    pos = {int(a): k for k, a in enumerate(atoms)}
    c_csr = c_mat.tocsr()
    col_index = {int(c): k for k, c in enumerate(atom_cols)}
    sel = np.array([col_index.get(int(c), -1) for c in ne.columns])
    keep = sel >= 0
    for r in restraints:
        raw = {}
        if r.kind == "same":
            d1, g1a, g1b = _distance_and_gradient(model, *r.pair1, m)
            d2, g2a, g2b = _distance_and_gradient(model, *r.pair2, m)
            value = d1 - d2
            for im, g, sign in ((r.pair1[0], g1a, 1.0), (r.pair1[1], g1b, 1.0), (r.pair2[0], g2a, -1.0), (r.pair2[1], g2b, -1.0)):
                v = raw.setdefault(im.atom, np.zeros(RAW))
                v[:3] += sign * g
        else:
            a, b = r.pair1
            if not (model.aniso[a.atom] and model.aniso[b.atom]):
                continue
            value, ga, gb = _rigu_terms(model, a, b, m)
            raw.setdefault(a.atom, np.zeros(RAW))[3:9] += ga
            raw.setdefault(b.atom, np.zeros(RAW))[3:9] += gb
        grad_cols = np.zeros(len(atom_cols))
        for atom, g in raw.items():
            k = pos.get(atom)
            if k is None:
                continue
            grad_cols += c_csr[k * RAW:(k + 1) * RAW].T @ g
        row = np.zeros(len(ne.columns))
        row[keep] = grad_cols[sel[keep]]
        if not np.any(row):
            continue
        w = 1.0 / r.sigma**2
        ne.matrix += w * np.outer(row, row)
        ne.rhs += w * row * (-value)
        ne.chi2 += w * value * value
