"""Disorder assemblies: the free occupancy of PART 1 / PART 2 and split sites found in the
difference map (measured data: difluoro_6ring_pna21, whose published model has a 0.8/0.2
disordered CH2-CH2 bridge)."""

from __future__ import annotations

import numpy as np
import pytest

from refractor_core.crystal.observations import prepare_observations
from refractor_core.crystal.symmetry import SymmetryOps
from refractor_core.dataio import load_bundle, load_reflections
from refractor_core.testing.real_cases import get_case
from refractor_core.types import Candidate
from refractor_plugins.refiners.configs import LsqConfig
from refractor_plugins.refiners.lsq import hydrogens as hyd
from refractor_plugins.refiners.lsq.least_squares import IntensityCalculator, jacobian
from refractor_plugins.refiners.lsq.model import WorkingModel
from refractor_plugins.refiners.lsq.parameters import Parameterisation, disorder_assemblies
from refractor_plugins.refiners.lsq.refiner import USER_MODEL, LsqRefiner

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def difluoro():
    case = get_case("difluoro_6ring_pna21")
    data = load_reflections(case.reflections)
    bundle = load_bundle(case.reference, block=case.data_block)
    return case, data, bundle.structure


def test_free_variable_derivative_and_sum(difluoro):
    """One free occupancy for PART 1 (p) against PART 2 (1 - p): its Jacobian column equals
    finite differences, riding H follow their parents, and p + (1 - p) stays 1."""
    _, data, published = difluoro
    model = WorkingModel.from_structure(published)
    hyd.attach_existing(model)
    assert [(len(a), len(b)) for a, b in disorder_assemblies(model)] == [(2, 2)]
    params = Parameterisation.build(model, refine_disorder_occupancy=True)
    col = next(j for j, p in enumerate(params.info) if p.kind == "occ")
    obs = prepare_observations(data, model.symmetry)
    calc = IntensityCalculator(obs.hkl[:80], model.cell, model.symmetry, data.wavelength, model.twin_ops)
    jac = jacobian(calc, params)[:, col]
    h = 1e-5
    step = np.zeros(params.n)
    step[col] = h
    up, down = params.apply(step), params.apply(-step)
    num = (calc.model_intensities(up)[0] - calc.model_intensities(down)[0]) / (2 * h)
    assert np.abs(num - jac).max() / np.abs(num).max() < 1e-5
    step[col] = 0.05
    moved = params.apply(step)
    first, second = disorder_assemblies(model)[0]
    assert moved.occupancy[first] == pytest.approx([0.85, 0.85])
    assert moved.occupancy[second] == pytest.approx([0.15, 0.15])
    riders = np.nonzero(moved.riding >= 0)[0]
    for h_atom in riders:
        assert moved.occupancy[h_atom] == pytest.approx(moved.occupancy[moved.riding[h_atom]])
    # without the option the occupancies are not parameters
    assert not any(p.kind == "occ" for p in Parameterisation.build(model).info)


def test_split_sites_found_in_the_difference_map(difluoro):
    """The published model without its minor component, as a generated model: the refiner
    finds both minor atoms in the difference map, gives them riding H, refines their
    occupancy near the published 0.2, and R1 drops to the published value."""
    case, data, published = difluoro
    sites = [s for s in published.sites if s.element != "H" and s.part != 2]
    sites = [s.model_copy(update={"part": 0, "occupancy": 1.0}) for s in sites]
    start = published.model_copy(update={"sites": sites})
    minors = [s for s in published.sites if s.part == 2 and s.element != "H"]
    cand = Candidate(structure=start, generator="test")
    split = LsqRefiner(LsqConfig(split_disorder=True)).refine(data, cand)
    plain = LsqRefiner(LsqConfig(split_disorder=False)).refine(data, cand)
    found = [s for s in split.structure.sites if s.part % 2 == 0 and s.part > 0 and s.element != "H"]
    assert len(found) == 2
    sym = SymmetryOps.from_space_group(split.structure.space_group)
    for m in minors:
        assert min(sym.nearest_image_distance(split.structure.cell, s.xyz, m.xyz) for s in found) < 0.3
    for s in found:
        assert 0.1 <= s.occupancy <= 0.3
        assert s.occupancy_su is not None and s.occupancy_su > 0
    # the minor CH2 groups carry their own riding H, in their part and at their occupancy
    minor_h = [s for s in split.structure.sites if s.element == "H" and s.part == found[0].part]
    assert len(minor_h) == 4
    assert all(h.occupancy == pytest.approx(found[0].occupancy, abs=1e-6) for h in minor_h)
    assert split.r1 < plain.r1 - 0.01
    assert split.r1 <= case.published_r1 + 0.005
    assert any("kept" in line for line in split.log if line.startswith("disorder"))


def test_an_ordered_structure_is_not_split():
    """Ordered pr_sulfate_hydroxide: no split survives the occupancy and F tests."""
    case = get_case("pr_sulfate_hydroxide")
    data = load_reflections(case.reflections)
    published = load_bundle(case.reference, block=case.data_block).structure
    r = LsqRefiner(LsqConfig(split_disorder=True)).refine(data, Candidate(structure=published, generator="test"))
    assert all(s.part == 0 for s in r.structure.sites)
    assert r.r1 <= case.published_r1 + 0.003


def test_user_model_parts_get_one_free_occupancy_on_request(difluoro):
    """`refine_occupancies=True` on a user's model with PART 1/2 at 0.5/0.5: the free
    variable returns to the published 0.8/0.2, and the parts still sum to one."""
    case, data, published = difluoro
    half = [s.model_copy(update={"occupancy": 0.5}) if s.part in (1, 2) else s for s in published.sites]
    start = published.model_copy(update={"sites": half})
    r = LsqRefiner(LsqConfig(refine_occupancies=True)).refine(data, Candidate(structure=start, generator=USER_MODEL))
    major = [s.occupancy for s in r.structure.sites if s.part == 1]
    minor = [s.occupancy for s in r.structure.sites if s.part == 2]
    assert major and minor
    assert max(major) - min(major) < 1e-9 and max(minor) - min(minor) < 1e-9
    assert major[0] + minor[0] == pytest.approx(1.0, abs=1e-9)
    assert major[0] == pytest.approx(0.8, abs=0.05)


def test_a_models_riding_h_come_back_on_their_own_atoms():
    """ni_cubic's solvent is disordered over special positions (PART -1, -2, -3 at 0.25):
    its components overlap, so an H is often nearer an atom of another component than its
    own. Re-placed as riding H, every H of the model comes back on the atom its AFIX group
    names, with its name and its occupancy (a methyl on a general position is not shared
    between symmetry images: that is what the negative PART's 0.25 already says), within
    0.02 Å of where SHELXL had it (rotating and staggered groups keep the model's torsion)."""
    case = get_case("ni_cubic_i43d")
    data = load_reflections(case.reflections)
    bundle = load_bundle(case.reference, block=case.data_block)
    published = bundle.structure
    cand = Candidate(structure=published, generator=USER_MODEL, meta={"instructions": bundle.instructions.model_dump()})
    r = LsqRefiner(LsqConfig(max_cycles=0)).refine(data, cand)
    ours = {s.label: s for s in r.structure.sites if s.element == "H"}
    model = WorkingModel.from_structure(published)
    sym = model.symmetry
    for h in (s for s in published.sites if s.element == "H"):
        if h.label not in ours:  # the methyl on the threefold axis: one H and its images
            assert h.riding_on == "C1"
            continue
        mine = ours[h.label]
        assert mine.riding_on == h.riding_on, h.label
        if h.riding_on != "C1":  # (SHELXL gives its three images 1/3 each, here one H in full)
            assert mine.occupancy == pytest.approx(h.occupancy), h.label
        images = sym.images(np.asarray(h.xyz)) - np.asarray(mine.xyz)
        images -= np.round(images)
        assert np.min(np.linalg.norm(model.cartesian(images), axis=1)) < 0.02, h.label
    assert len(ours) == 31


@pytest.mark.parametrize("name", ["si4_disorder_cc", "thpp"])
def test_kept_h_ride_on_the_atom_the_model_names(name):
    """The model's own H kept as they are (`keep_h`) ride on the atom their AFIX group (or
    the CIF's calc-attached atom) names, not on the nearest non-H atom of any component:
    in si4's and thpp's overlapping disorder components 32 and 3 H were put on an atom of
    the other component before."""
    case = get_case(name)
    published = load_bundle(case.reference, block=case.data_block).structure
    stated = {s.label: s.riding_on for s in published.sites if s.element == "H" and s.riding_on}
    model = WorkingModel.from_structure(published)
    before = model.xyz.copy()
    hyd.attach_existing(model, stated=stated)
    riding = {model.labels[h]: model.labels[model.riding[h]] for h in np.nonzero(model.hydrogen)[0]}
    assert len(riding) == len(stated)
    assert all(riding[h].upper() == parent.upper() for h, parent in stated.items())
    # positions as given (no H of these models sits beside a symmetry image of its parent)
    assert np.abs(model.xyz - before).max() < 1e-12


def test_keep_h_through_the_refiner_keeps_each_h_on_its_own_atom():
    """`refractor refine --model ... --refiner-opt keep_h=true` on ni_cubic's published
    model: every H rides on the atom its AFIX group names (three were on an atom of an
    overlapping solvent component before) and stays where the model had it."""
    case = get_case("ni_cubic_i43d")
    data = load_reflections(case.reflections)
    bundle = load_bundle(case.reference, block=case.data_block)
    published = bundle.structure
    cand = Candidate(structure=published, generator=USER_MODEL, meta={"instructions": bundle.instructions.model_dump()})
    r = LsqRefiner(LsqConfig(max_cycles=0, keep_h=True)).refine(data, cand)
    ours = {s.label: s for s in r.structure.sites if s.element == "H"}
    given = [s for s in published.sites if s.element == "H"]
    assert len(ours) == len(given) == 33
    for h in given:
        assert ours[h.label].riding_on.upper() == h.riding_on.upper(), h.label
        assert np.allclose(ours[h.label].xyz, h.xyz, atol=1e-4), h.label


def test_an_h_given_beside_a_symmetry_image_of_its_parent_comes_back_beside_it():
    """An H listed at a symmetry-equivalent position (beside an image of its parent, as a
    model assembled by hand may give it) rides on its parent from the equivalent position
    beside the parent itself."""
    case = get_case("thpp")
    published = load_bundle(case.reference, block=case.data_block).structure
    stated = {s.label: s.riding_on for s in published.sites if s.element == "H" and s.riding_on}
    model = WorkingModel.from_structure(published)
    h = next(i for i in np.nonzero(model.hydrogen)[0])
    original = model.xyz[h].copy()
    model.xyz[h] = -original + np.array([1.0, 0.0, 2.0])  # the inversion image, shifted
    hyd.attach_existing(model, stated=stated)
    assert model.labels[model.riding[h]].upper() == stated[model.labels[h]].upper()
    assert np.allclose(model.xyz[h], original, atol=1e-9)


def test_two_full_atoms_too_close_become_one_sites_disorder(difluoro):
    """The published model with both components of its disordered bridge as fully occupied
    atoms of PART 0 (a generated model can end with both after completion): each pair is closer than
    the ranker's short contact, is made a split with one free occupancy, and refines to the
    published minor occupancy and R1, with no short contact left."""
    from refractor_plugins.rankers.plausibility import short_contacts
    from refractor_plugins.refiners.lsq.disorder import close_pairs

    case, data, published = difluoro
    sites = [s.model_copy(update={"part": 0, "occupancy": 1.0}) for s in published.sites if s.element != "H"]
    start = published.model_copy(update={"sites": sites})
    assert len(close_pairs(WorkingModel.from_structure(start))) == 2
    # without completion, which would drop the weaker of two atoms closer than 0.85 Å first
    r = LsqRefiner(LsqConfig(split_disorder=True, complete=False)).refine(
        data, Candidate(structure=start, generator="test"))
    assert any(line.startswith("disorder: atoms too close to be both present") for line in r.log)
    minors = [s for s in r.structure.sites if s.part > 0 and s.part % 2 == 0 and s.element != "H"]
    assert len(minors) == 2
    assert all(0.1 <= s.occupancy <= 0.3 for s in minors)
    assert not short_contacts(r.structure)
    assert r.r1 <= case.published_r1 + 0.005


def test_a_close_pair_the_data_hold_is_left_alone():
    """Simulated data of pr_sulfate_hydroxide with a second S 1.2 Å from the first (a pair
    closer than the ranker's short contact, as a random synthetic truth can hold): read as
    one site's disorder it fits far worse, so the refinement leaves both atoms."""
    from refractor_core.simulation import simulate
    from refractor_core.crystal.cell import orthogonalization_matrix

    case = get_case("pr_sulfate_hydroxide")
    published = load_bundle(case.reference, block=case.data_block).structure
    sulfur = next(s for s in published.sites if s.label == "S")
    m = orthogonalization_matrix(published.cell)
    shift = np.linalg.solve(m, np.array([1.2, 0.0, 0.0]))
    extra = sulfur.model_copy(update={"label": "S9", "xyz": tuple(np.array(sulfur.xyz) + shift)})
    truth = published.model_copy(update={"sites": [*published.sites, extra]})
    data = simulate(truth, d_min=0.8, seed=3)
    r = LsqRefiner(LsqConfig(split_disorder=True, complete=False)).refine(
        data, Candidate(structure=truth, generator="test"))
    assert any(line.startswith("disorder: atoms too close to be both present") for line in r.log)
    assert any("the data hold both atoms" in line for line in r.log)
    assert sum(s.element == "S" and s.occupancy > 0.99 for s in r.structure.sites) == 2
    assert r.r1 < 0.05


def test_a_disordered_f_held_as_two_full_c_becomes_one_split_f_site(difluoro):
    """Simulated data of difluoro with one F disordered over two positions 0.8 Å apart
    about its C (0.6/0.4), started with both positions as fully occupied C: the pair becomes one split
    site, its element F by the refined fit, with the two occupancies near the truth's."""
    from refractor_core.crystal.cell import orthogonalization_matrix
    from refractor_core.simulation import simulate
    from refractor_plugins.rankers.plausibility import short_contacts

    _, _, published = difluoro
    fluorine = next(s for s in published.sites if s.element == "F")
    orth = orthogonalization_matrix(published.cell)
    carbon = min((s for s in published.sites if s.element == "C"),
                 key=lambda s: np.linalg.norm(orth @ (np.asarray(s.xyz) - fluorine.xyz)))
    bond = orth @ (np.asarray(fluorine.xyz) - carbon.xyz)
    axis = np.cross(bond, [1.0, 0.0, 0.0])
    axis /= np.linalg.norm(axis)
    theta = 2 * np.arcsin(0.4 / np.linalg.norm(bond))  # the F swings 0.8 Å about its C
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(theta) * k + (1 - np.cos(theta)) * k @ k
    swung = np.asarray(carbon.xyz) + np.linalg.solve(orth, rotation @ bond)
    second = fluorine.model_copy(update={"label": "F9", "xyz": tuple(swung), "occupancy": 0.4, "part": 2})
    others = [s for s in published.sites if s.label != fluorine.label]
    truth = published.model_copy(update={"sites": [*others, fluorine.model_copy(update={"occupancy": 0.6, "part": 1}), second]})
    data = simulate(truth, d_min=0.8, seed=4)
    as_carbon = [s.model_copy(update={"element": "C", "occupancy": 1.0, "part": 0})
                 for s in (fluorine, second)]
    start = published.model_copy(update={"sites": [*others, *as_carbon]})
    r = LsqRefiner(LsqConfig(split_disorder=True, complete=False)).refine(data, Candidate(structure=start, generator="test"))
    assert any(line.startswith("disorder: close pair") and line.endswith(": F") for line in r.log)
    pair = sorted((s for s in r.structure.sites if s.part > 0 and s.element == "F"), key=lambda s: -s.occupancy)
    assert len(pair) == 2
    assert pair[0].occupancy == pytest.approx(0.6, abs=0.1)
    assert not short_contacts(r.structure)
