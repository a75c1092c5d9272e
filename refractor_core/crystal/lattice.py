"""Lattice symmetry in the axes of a given cell: metric symmetry and lattice centring.

`metric_symmetry(cell)` finds the proper rotations (integer matrices acting on fractional
coordinates, x' = R x, entries in {-1, 0, 1}) that map the lattice basis onto itself
within a tolerance: the rotation part of the lattice's holohedry *in the given setting*.
Every Laue group compatible with the cell metric is a subgroup of it (plus inversion).

Centring is described by translation vectors (from gemmi's Hall symbols, nothing written
by hand). A reflection h violates a centring when h·t is not an integer for some
centring vector t; `centring_statistics` summarises the I/σ of the violating class of
every centring type, which is the classical evidence for the lattice type.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import product

import numpy as np

from ..types import UnitCell
from .cell import metric_tensor

#: centring types tested, in the given axes: letter -> Hall symbol of the centred lattice
#: (the reverse rhombohedral setting is the obverse one turned by 180° about c)
CENTRING_HALL: dict[str, str] = {
    "P": "P 1",
    "A": "A 1",
    "B": "B 1",
    "C": "C 1",
    "I": "I 1",
    "F": "F 1",
    "R": "R 1",  # rhombohedral, obverse, hexagonal axes
    "R(rev)": " R 1 (-x,-y,z)",  # rhombohedral, reverse, hexagonal axes
}

#: default tolerance of `metric_symmetry`: |ΔG_ij| / sqrt(G_ii G_jj) (≈ 1 % on lengths,
#: ≈ 0.6° on a 90° angle)
METRIC_TOLERANCE = 0.02


@lru_cache(maxsize=1)
def _candidate_rotations() -> np.ndarray:
    """All 3x3 matrices with entries in {-1, 0, 1} and determinant +1."""
    mats = np.array(list(product((-1, 0, 1), repeat=9)), dtype=np.int64).reshape(-1, 3, 3)
    det = np.rint(np.linalg.det(mats.astype(np.float64))).astype(np.int64)
    return mats[det == 1]


def metric_deviation(cell: UnitCell, rotations: np.ndarray) -> np.ndarray:
    """Largest normalised change of the metric, max |RᵀGR - G|_ij / sqrt(G_ii G_jj), per rotation."""
    g = metric_tensor(cell)
    r = np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3)
    gr = np.einsum("nji,jk,nkl->nil", r, g, r)
    norm = np.sqrt(np.outer(np.diag(g), np.diag(g)))
    return np.abs((gr - g) / norm).reshape(len(r), -1).max(axis=1)


def metric_symmetry(cell: UnitCell, tol: float = METRIC_TOLERANCE) -> np.ndarray:
    """Proper rotations (m, 3, 3) preserving the cell metric within `tol`, identity first.

    The set is closed into a group: rotations whose products fall outside the tolerance
    (possible near the tolerance edge) are dropped until the set is closed.
    """
    cand = _candidate_rotations()
    ok = cand[metric_deviation(cell, cand) <= tol]
    return _largest_closed_subset(ok)


def _rot_keys(rots: np.ndarray) -> list[bytes]:
    return [np.ascontiguousarray(r, dtype=np.int64).tobytes() for r in rots]


def _largest_closed_subset(rots: np.ndarray) -> np.ndarray:
    """Drop rotations until the set is closed under multiplication (identity first)."""
    eye = np.eye(3, dtype=np.int64)
    rots = np.asarray(rots, dtype=np.int64)
    while True:
        keys = set(_rot_keys(rots))
        closed = np.ones(len(rots), dtype=bool)
        for i, a in enumerate(rots):
            prods = np.einsum("ij,njk->nik", a, rots)
            if not all(k in keys for k in _rot_keys(prods)):
                closed[i] = False
        if closed.all():
            break
        rots = rots[closed]
    order = sorted(range(len(rots)), key=lambda i: (not np.array_equal(rots[i], eye), i))
    return rots[order]


def rotation_key(rotations: np.ndarray) -> frozenset[bytes]:
    """A hashable key for a set of rotation matrices."""
    return frozenset(_rot_keys(np.asarray(rotations, dtype=np.int64).reshape(-1, 3, 3)))


# --------------------------------------------------------------------------------------
# centring
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def centring_vectors(kind: str) -> np.ndarray:
    """Centring translations (k, 3) of a lattice type (see `CENTRING_HALL`), zero vector first."""
    import gemmi

    try:
        hall = CENTRING_HALL[kind]
    except KeyError:
        raise ValueError(f"unknown centring {kind!r}; known: {', '.join(CENTRING_HALL)}") from None
    ops = gemmi.symops_from_hall(hall)
    vecs = np.array(ops.cen_ops, dtype=np.float64).reshape(-1, 3) / 24.0
    order = np.argsort(np.abs(vecs).sum(axis=1), kind="stable")
    return vecs[order]


def violates_centring(hkl: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """True where h·t is not an integer for some centring vector t (the reflection is absent)."""
    h = np.asarray(hkl, dtype=np.float64).reshape(-1, 3)
    v = np.asarray(vectors, dtype=np.float64).reshape(-1, 3)
    if len(v) <= 1:
        return np.zeros(len(h), dtype=bool)
    phase = h @ v.T
    return np.any(np.abs(phase - np.rint(phase)) > 1e-6, axis=1)


@dataclass(frozen=True)
class CentringStatistics:
    """I/σ of the reflections a centring type forbids, against those it allows."""

    kind: str
    n_violating: int
    n_allowed: int
    mean_i_over_sigma_violating: float
    mean_i_over_sigma_allowed: float
    fraction_violating_above_3sigma: float
    mean_intensity_ratio: float  # <I> violating / <I> allowed

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "kind": self.kind,
            "n_violating": self.n_violating,
            "n_allowed": self.n_allowed,
            "mean_i_over_sigma_violating": self.mean_i_over_sigma_violating,
            "mean_i_over_sigma_allowed": self.mean_i_over_sigma_allowed,
            "fraction_violating_above_3sigma": self.fraction_violating_above_3sigma,
            "mean_intensity_ratio": self.mean_intensity_ratio,
        }


def centring_statistics(
    hkl: np.ndarray,
    intensity: np.ndarray,
    sigma: np.ndarray,
    kinds: tuple[str, ...] = tuple(CENTRING_HALL),
) -> list[CentringStatistics]:
    """Summary statistics of the centring-violating class of each lattice type."""
    h = np.asarray(hkl)
    i_obs = np.asarray(intensity, dtype=np.float64)
    s_obs = np.asarray(sigma, dtype=np.float64)
    z = i_obs / s_obs
    out = []
    for kind in kinds:
        bad = violates_centring(h, centring_vectors(kind))
        good = ~bad
        nb, ng = int(bad.sum()), int(good.sum())

        def mean(x: np.ndarray, m: np.ndarray) -> float:
            return float(x[m].mean()) if m.any() else float("nan")

        mi_good = mean(i_obs, good)
        out.append(
            CentringStatistics(
                kind=kind,
                n_violating=nb,
                n_allowed=ng,
                mean_i_over_sigma_violating=mean(z, bad),
                mean_i_over_sigma_allowed=mean(z, good),
                fraction_violating_above_3sigma=float((z[bad] > 3.0).mean()) if nb else float("nan"),
                mean_intensity_ratio=(mean(i_obs, bad) / mi_good) if nb and mi_good > 0 else float("nan"),
            )
        )
    return out


# --------------------------------------------------------------------------------------
# re-indexing
# --------------------------------------------------------------------------------------


def transform_cell(cell: UnitCell, p: np.ndarray) -> UnitCell:
    """The cell after a change of basis: new basis vectors = old basis · P (columns)."""
    import math

    p = np.asarray(p, dtype=np.float64)
    g = p.T @ metric_tensor(cell) @ p
    a, b, c = np.sqrt(np.diag(g))
    return UnitCell(
        a=float(a),
        b=float(b),
        c=float(c),
        alpha=math.degrees(math.acos(np.clip(g[1, 2] / (b * c), -1, 1))),
        beta=math.degrees(math.acos(np.clip(g[0, 2] / (a * c), -1, 1))),
        gamma=math.degrees(math.acos(np.clip(g[0, 1] / (a * b), -1, 1))),
    )


def transform_hkl(hkl: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Miller indices after the change of basis P (h' = h · P); P must be integral."""
    p = np.asarray(p)
    if not np.allclose(p, np.rint(p)):
        raise ValueError("re-indexing needs an integer basis change")
    return (np.asarray(hkl, dtype=np.int64) @ np.rint(p).astype(np.int64)).astype(np.int32)
