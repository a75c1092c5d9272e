"""Missed-symmetry check (ADDSYM-style) on real reference models."""

from __future__ import annotations

import numpy as np
import pytest

from refractor_core.crystal.addsym import find_missed_symmetry
from refractor_core.crystal.symmetry import SymmetryOps
from refractor_core.dataio import load_bundle
from refractor_core.testing.real_cases import get_case
from refractor_core.types import SpaceGroupRef


def _expanded(name: str, lower: str, shift, noise: float, seed: int = 0):
    """The reference's non-H atoms written in `lower` (all images of the published group,
    which is the lower group's asymmetric unit times the cosets), origin moved by `shift`."""
    case = get_case(name)
    ref = load_bundle(case.reference, block=case.data_block).structure
    high = SymmetryOps.from_space_group(ref.space_group)
    low = SymmetryOps.from_space_group(SpaceGroupRef.from_symbol(lower))
    heavy = [s for s in ref.sites if s.element != "H"]
    xyz = np.array([s.xyz for s in heavy])
    images = high.images(xyz).reshape(-1, 3)
    rng = np.random.default_rng(seed)
    images = np.mod(images + np.asarray(shift) + rng.normal(0.0, noise, images.shape), 1.0)
    elements = list(np.repeat([s.element for s in heavy], high.n))
    return images, elements, ref, low, high


@pytest.mark.parametrize(
    "name,lower,shift",
    [("ethylene_oxide", "P 1", (0.13, 0.31, 0.77)), ("ethylene_oxide", "P -1", (0.0, 0.0, 0.0)),
     ("cpna", "P n 21 a", (0.0, 0.0, 0.0)), ("pr_sulfate_hydroxide", "P 1 21 1", (0.0, 0.0, 0.0))],
)
def test_a_model_in_a_subgroup_is_found_to_obey_the_published_group(name, lower, shift):
    images, elements, ref, low, high = _expanded(name, lower, shift, noise=0.003)
    found = find_missed_symmetry(images, elements, ref.cell, low, high)
    assert found is not None and found.fraction == 1.0 and found.max_distance < 0.2


def test_no_symmetry_is_found_where_there_is_none():
    images, elements, ref, low, high = _expanded("ethylene_oxide", "P 1", (0.1, 0.2, 0.3), noise=0.0)
    scrambled = np.random.default_rng(1).random(images.shape)
    assert find_missed_symmetry(scrambled, elements, ref.cell, low, high) is None
    # one atom moved by 1 Å: it and the atoms whose images should land on it no longer match
    moved = images.copy()
    moved[0] += 1.0 / np.array([ref.cell.a, ref.cell.b, ref.cell.c])
    assert find_missed_symmetry(moved, elements, ref.cell, low, high) is None


def test_misassigned_light_elements_and_a_few_misfits_are_seen_through():
    """As PLATON's ADDSYM: C/N/O given wrongly in one image do not hide the symmetry (the
    elements a generated model's swaps trade), a light atom given as the metal does, and up
    to a fifth of the atoms may lack a partner (a solvent void modelled in the subgroup)."""
    images, elements, ref, low, high = _expanded("mn_complex_p21c", "P 1", (0.0, 0.0, 0.0), noise=0.003)
    n_images = high.n
    light = [i for i, e in enumerate(elements) if e in ("C", "N", "O") and i % n_images == 0]
    swapped = list(elements)
    for i in light[:6]:
        swapped[i] = {"C": "N", "N": "O", "O": "C"}[elements[i]]
    found = find_missed_symmetry(images, swapped, ref.cell, low, high)
    assert found is not None and found.fraction == 1.0
    metal = list(elements)
    metal[light[0]] = "Mn"
    found = find_missed_symmetry(images, metal, ref.cell, low, high)
    assert found is not None and found.fraction < 1.0
    # one image of an atom moved away: none of that atom's images has all its partners
    for share, obeyed in ((0.1, True), (0.3, False)):
        moved = images.copy()
        k = int(share * len(images) / n_images)
        moved[:k * n_images:n_images] += 0.15
        found = find_missed_symmetry(moved, elements, ref.cell, low, high)
        assert (found is not None) == obeyed, share


def test_deviation_in_su_measures_how_far_the_matched_atoms_break_the_symmetry():
    """ethylene_oxide written in P1 with coordinate su of 0.003 Å: noise of that size
    deviates by a few su; one atom moved 0.2 Å (still inside the match tolerance) by ~50;
    no su, no figure."""
    from refractor_core.crystal.addsym import deviation_in_su, missed_symmetry
    from refractor_core.types import Site, Structure

    images, elements, ref, low, high = _expanded("ethylene_oxide", "P 1", (0.0, 0.0, 0.0), noise=0.0)
    lengths = np.array([ref.cell.a, ref.cell.b, ref.cell.c])
    rng = np.random.default_rng(3)

    def model(xyz, su=0.003):
        sites = [Site(label=f"{e}{i}", element=e, xyz=tuple(x), u_iso=0.03,
                      xyz_su=None if su is None else tuple(su / lengths)) for i, (e, x) in enumerate(zip(elements, xyz))]
        return Structure(cell=ref.cell, space_group=SpaceGroupRef.from_symbol("P 1"), sites=sites)

    noisy = images + rng.normal(0.0, 0.003, images.shape) / lengths
    structure = model(noisy)
    missed = missed_symmetry(structure, ref.space_group)
    assert missed is not None
    assert deviation_in_su(structure, ref.space_group, missed) < 5.0
    moved = noisy.copy()
    moved[0] += np.array([0.2, 0.0, 0.0]) / lengths  # a is nearly orthogonal to b and c
    structure = model(moved)
    missed = missed_symmetry(structure, ref.space_group)
    assert missed is not None and missed.fraction == 1.0
    assert deviation_in_su(structure, ref.space_group, missed) > 30.0
    assert deviation_in_su(model(moved, su=None), ref.space_group, missed) is None
