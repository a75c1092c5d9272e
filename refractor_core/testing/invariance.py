"""Transformations of a data set that must not change what a component concludes.

- `shuffle_reflections`: the order of reflections carries no information;
- `apply_friedel`: replace some reflections by their Friedel mates (-h -k -l), which have
  the same intensity without anomalous scattering;
- `to_symmetry_equivalents`: replace reflections by symmetry-equivalent indices under the
  point group of a space group (gemmi operators), which have the same intensity.

Each returns a new `ReflectionData`; comparison helpers raise `AssertionError` with a
message that says what differed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..types import Embedding, ReflectionData, SpaceGroupRef


def shuffle_reflections(data: ReflectionData, seed: int = 0) -> ReflectionData:
    """The same reflections in a random order."""
    order = np.random.default_rng(seed).permutation(data.n)
    return data.subset(order)


def apply_friedel(data: ReflectionData, fraction: float = 0.5, seed: int = 0) -> ReflectionData:
    """Replace a random `fraction` of the reflections by their Friedel mates."""
    rng = np.random.default_rng(seed)
    flip = rng.random(data.n) < fraction
    hkl = data.hkl.copy()
    hkl[flip] *= -1
    return data.model_copy(update={"hkl": hkl})


def point_group_rotations(space_group: SpaceGroupRef | str) -> np.ndarray:
    """Integer rotation matrices (n, 3, 3) of the space group's point group (gemmi)."""
    sg = space_group if isinstance(space_group, SpaceGroupRef) else SpaceGroupRef.from_symbol(space_group)
    ops = sg.gemmi().operations()
    rots = {tuple(np.asarray(op.rot).ravel() // op.DEN) for op in ops.sym_ops}
    return np.array(sorted(rots), dtype=np.int64).reshape(-1, 3, 3)


def to_symmetry_equivalents(data: ReflectionData, space_group: SpaceGroupRef | str, seed: int = 0) -> ReflectionData:
    """Replace every reflection by a randomly chosen symmetry equivalent (h' = h·R)."""
    rots = point_group_rotations(space_group)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(rots), size=data.n)
    hkl = np.einsum("ni,nij->nj", data.hkl.astype(np.int64), rots[pick]).astype(np.int32)
    return data.model_copy(update={"hkl": hkl})


def assert_embeddings_close(a: Embedding, b: Embedding, atol: float = 1e-4, rtol: float = 1e-4, what: str = "") -> None:
    """Two embeddings agree elementwise within tolerance."""
    va, vb = np.asarray(a.vector, dtype=np.float64), np.asarray(b.vector, dtype=np.float64)
    if va.shape != vb.shape:
        raise AssertionError(f"{what}embedding length changed: {va.shape} vs {vb.shape}")
    if not np.allclose(va, vb, atol=atol, rtol=rtol):
        worst = float(np.max(np.abs(va - vb)))
        raise AssertionError(f"{what}embedding changed by up to {worst:.3g} (atol {atol}, rtol {rtol})")


def hypothesis_numbers(hypotheses: list[Any], top: int | None = None) -> list[int]:
    """Space-group numbers of a hypothesis list (the first `top`)."""
    return [h.space_group.number for h in hypotheses[:top]]


def assert_same_top_hypothesis(a: list[Any], b: list[Any], what: str = "") -> None:
    """Both lists name the same most probable space group (same setting)."""
    if not a or not b:
        raise AssertionError(f"{what}empty hypothesis list")
    ha, hb = a[0].space_group, b[0].space_group
    if (ha.number, ha.hall) != (hb.number, hb.hall):
        raise AssertionError(f"{what}top space group changed: {ha.symbol} vs {hb.symbol}")


def structure_coordinates(structure: Any) -> np.ndarray:
    """Fractional coordinates of a structure's sites as an (n, 3) array."""
    return np.array([s.xyz for s in structure.sites], dtype=np.float64).reshape(-1, 3)
