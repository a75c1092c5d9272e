"""Cell metrics: orthogonalisation, reciprocal metric, d-spacings and ADP conversions.

Conventions follow gemmi and the PDB: Cartesian x along a, y in the a-b plane. The
orthogonalisation matrix M maps fractional to Cartesian coordinates (r = M x); its inverse
is the fractionalisation matrix. Anisotropic ADPs in CIF order (U11, U22, U33, U12, U13, U23)
are U_cif, defined on the basis scaled by the reciprocal lengths a*, b*, c*; U* (the
dimensionless tensor used in structure factors) is N U_cif N with N = diag(a*, b*, c*).
"""

from __future__ import annotations

import math

import numpy as np

from ..types import UnitCell


def orthogonalization_matrix(cell: UnitCell) -> np.ndarray:
    """3x3 matrix M with r_cart = M @ x_frac."""
    a, b, c = cell.a, cell.b, cell.c
    al, be, ga = (math.radians(x) for x in (cell.alpha, cell.beta, cell.gamma))
    ca, cb, cg, sg = math.cos(al), math.cos(be), math.cos(ga), math.sin(ga)
    v = math.sqrt(cell.volume_squared_factor())
    return np.array(
        [
            [a, b * cg, c * cb],
            [0.0, b * sg, c * (ca - cb * cg) / sg],
            [0.0, 0.0, c * v / sg],
        ]
    )


def fractionalization_matrix(cell: UnitCell) -> np.ndarray:
    """Inverse of the orthogonalisation matrix: x_frac = F @ r_cart."""
    return np.linalg.inv(orthogonalization_matrix(cell))


def metric_tensor(cell: UnitCell) -> np.ndarray:
    """Direct metric tensor G (Å²): |r|² = x^T G x for fractional x."""
    m = orthogonalization_matrix(cell)
    return m.T @ m


def reciprocal_metric(cell: UnitCell) -> np.ndarray:
    """Reciprocal metric G* = G⁻¹ (Å⁻²): 1/d² = h^T G* h."""
    return np.linalg.inv(metric_tensor(cell))


def reciprocal_lengths(cell: UnitCell) -> np.ndarray:
    """(a*, b*, c*) in Å⁻¹."""
    return np.sqrt(np.diag(reciprocal_metric(cell)))


def inv_d_squared(cell: UnitCell, hkl: np.ndarray) -> np.ndarray:
    """1/d² for each Miller index row of `hkl` (N, 3)."""
    h = np.asarray(hkl, dtype=np.float64)
    gs = reciprocal_metric(cell)
    return np.einsum("ni,ij,nj->n", h, gs, h)


def d_spacing(cell: UnitCell, hkl: np.ndarray) -> np.ndarray:
    """Interplanar spacing d (Å); infinite for (0, 0, 0)."""
    q = inv_d_squared(cell, hkl)
    with np.errstate(divide="ignore"):
        return 1.0 / np.sqrt(q)


def stol(cell: UnitCell, hkl: np.ndarray) -> np.ndarray:
    """sin(θ)/λ = 1/(2d) in Å⁻¹."""
    return 0.5 * np.sqrt(inv_d_squared(cell, hkl))


def two_theta(cell: UnitCell, hkl: np.ndarray, wavelength: float) -> np.ndarray:
    """Scattering angle 2θ in degrees (NaN beyond the limiting sphere)."""
    s = np.clip(stol(cell, hkl) * wavelength, 0.0, None)
    with np.errstate(invalid="ignore"):
        return np.degrees(2.0 * np.arcsin(np.where(s <= 1.0, s, np.nan)))


def sym6_to_matrix(u6) -> np.ndarray:
    """(..., 6) in order 11, 22, 33, 12, 13, 23 -> (..., 3, 3) symmetric."""
    u = np.asarray(u6, dtype=np.float64)
    m = np.empty(u.shape[:-1] + (3, 3))
    m[..., 0, 0], m[..., 1, 1], m[..., 2, 2] = u[..., 0], u[..., 1], u[..., 2]
    m[..., 0, 1] = m[..., 1, 0] = u[..., 3]
    m[..., 0, 2] = m[..., 2, 0] = u[..., 4]
    m[..., 1, 2] = m[..., 2, 1] = u[..., 5]
    return m


def matrix_to_sym6(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 6) in order 11, 22, 33, 12, 13, 23."""
    m = np.asarray(m, dtype=np.float64)
    return np.stack(
        [m[..., 0, 0], m[..., 1, 1], m[..., 2, 2], m[..., 0, 1], m[..., 0, 2], m[..., 1, 2]], axis=-1
    )


def u_cif_to_u_star(cell: UnitCell, u6) -> np.ndarray:
    """U_cif (CIF order) -> U* (same order), dimensionless: U*_ij = a*_i a*_j U_ij."""
    n = reciprocal_lengths(cell)
    u = np.asarray(u6, dtype=np.float64)
    scale = np.array([n[0] ** 2, n[1] ** 2, n[2] ** 2, n[0] * n[1], n[0] * n[2], n[1] * n[2]])
    return u * scale


def u_star_to_u_cif(cell: UnitCell, ustar6) -> np.ndarray:
    """Inverse of `u_cif_to_u_star`."""
    n = reciprocal_lengths(cell)
    scale = np.array([n[0] ** 2, n[1] ** 2, n[2] ** 2, n[0] * n[1], n[0] * n[2], n[1] * n[2]])
    return np.asarray(ustar6, dtype=np.float64) / scale


def u_cif_to_u_cart(cell: UnitCell, u6) -> np.ndarray:
    """U_cif -> Cartesian U (..., 3, 3) in Å²: U_cart = M U* Mᵀ."""
    m = orthogonalization_matrix(cell)
    ustar = sym6_to_matrix(u_cif_to_u_star(cell, u6))
    return m @ ustar @ m.T


def u_cart_to_u_cif(cell: UnitCell, ucart: np.ndarray) -> np.ndarray:
    """Cartesian U (..., 3, 3) -> U_cif (..., 6)."""
    f = fractionalization_matrix(cell)
    ustar = f @ np.asarray(ucart, dtype=np.float64) @ f.T
    return u_star_to_u_cif(cell, matrix_to_sym6(ustar))


def u_equiv(cell: UnitCell, u6) -> np.ndarray:
    """U_eq = trace(U_cart)/3 (Å²) for anisotropic U in CIF order."""
    uc = u_cif_to_u_cart(cell, u6)
    return np.trace(uc, axis1=-2, axis2=-1) / 3.0


def u_iso_to_u_cif(cell: UnitCell, u_iso: float) -> np.ndarray:
    """The anisotropic U_cif equivalent to an isotropic U (U* = U G*)."""
    gs = reciprocal_metric(cell)
    ustar = u_iso * gs
    return u_star_to_u_cif(cell, matrix_to_sym6(ustar))


def is_positive_definite(cell: UnitCell, u6) -> np.ndarray:
    """True where the anisotropic U (CIF order) is positive definite."""
    eig = np.linalg.eigvalsh(u_cif_to_u_cart(cell, u6))
    return eig[..., 0] > 0.0


def cartesian(cell: UnitCell, xyz: np.ndarray) -> np.ndarray:
    """Fractional (..., 3) -> Cartesian (..., 3) in Å."""
    return np.asarray(xyz, dtype=np.float64) @ orthogonalization_matrix(cell).T


def fractional(cell: UnitCell, r: np.ndarray) -> np.ndarray:
    """Cartesian (..., 3) in Å -> fractional (..., 3)."""
    return np.asarray(r, dtype=np.float64) @ fractionalization_matrix(cell).T
