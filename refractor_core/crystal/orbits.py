"""Fast orbit keys of Miller indices under a set of rotations, Friedel mates included.

`orbit_keys(hkl, rotations)` equals `symmetry.canonical_keys(hkl, rotations, friedel=True)`
(the largest `hkl_keys` value over the orbit {±hR}) but needs one matrix product instead
of materialising every equivalent: `hkl_keys` is affine in h, key(h) = h·w + c with
w = (1024², 1024, 1), so key(±hR) = ±h·(R w) + c and the largest is c + max_R |h·(R w)|.
Exact in float64 (|h·Rw| < 2³¹). Used where many reflections meet many rotations (cubic
Laue groups, tens of thousands of rows).
"""

from __future__ import annotations

import numpy as np

from .symmetry import hkl_keys, keys_to_hkl

_W = np.array([1024.0 * 1024.0, 1024.0, 1.0])
_C = int(hkl_keys(np.zeros((1, 3), dtype=np.int64))[0])


def orbit_keys(hkl: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """Canonical key of each reflection's orbit under `rotations` and Friedel pairing."""
    h = np.asarray(hkl, dtype=np.float64).reshape(-1, 3)
    rots = np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3)
    if not len(h):
        return np.zeros(0, dtype=np.int64)
    proj = rots @ _W  # (m, 3): R w for each rotation
    best = np.abs(h @ proj.T).max(axis=1)
    return np.rint(best).astype(np.int64) + _C


def orbit_representatives(hkl: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """The canonical member of each reflection's orbit (the one `orbit_keys` names), (N, 3)."""
    return keys_to_hkl(orbit_keys(hkl, rotations))
