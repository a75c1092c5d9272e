"""Orbit keys of Miller indices under a set of rotations, Friedel mates included.

Thin names used by space-group determination; the computation lives in the symmetry layer
(`symmetry.canonical_keys`, one matrix product per call).
"""

from __future__ import annotations

import numpy as np

from .symmetry import canonical_hkl, canonical_keys


def orbit_keys(hkl: np.ndarray, rotations: np.ndarray, friedel: bool = True) -> np.ndarray:
    """Canonical key of each reflection's orbit under `rotations` and (when `friedel`)
    Friedel pairing."""
    return canonical_keys(hkl, rotations, friedel=friedel)


def orbit_representatives(hkl: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """The canonical member of each reflection's orbit (the one `orbit_keys` names), (N, 3)."""
    return canonical_hkl(hkl, rotations, friedel=True)
