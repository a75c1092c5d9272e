"""Twin laws the lattice allows and the refinement was not given (`twinning.twin_check`)."""

from __future__ import annotations

import numpy as np
import pytest

from refractor_core.crystal.structure_factors import calculate_fc
from refractor_core.crystal.symmetry import SymmetryOps
from refractor_core.types import Candidate, Site, SpaceGroupRef, Structure, UnitCell
from refractor_plugins.refiners.configs import LsqConfig
from refractor_plugins.refiners.lsq.refiner import USER_MODEL, LsqRefiner
from refractor_plugins.refiners.lsq.twinning import twin_law_candidates


def _laws(cell: UnitCell, symbol: str) -> list[np.ndarray]:
    return twin_law_candidates(cell, SymmetryOps.from_space_group(SpaceGroupRef.from_symbol(symbol)))


def test_twin_laws_are_the_lattice_rotations_outside_the_laue_group():
    mono = dict(a=7.1, b=9.3, c=10.8, alpha=90, gamma=90)
    # β 0.2° from 90: the orthorhombic lattice's two-fold along a (or c, the same coset)
    laws = _laws(UnitCell(**mono, beta=90.2), "P 1 21/c 1")
    assert len(laws) == 1
    law = laws[0]
    assert np.array_equal(law @ law, np.eye(3)) and abs(np.linalg.det(law)) == 1
    assert law[1, 1] == -1 and abs(law[0, 0]) == 1 and abs(law[2, 2]) == 1
    assert _laws(UnitCell(**mono, beta=95.0), "P 1 21/c 1") == []  # a monoclinic lattice: none
    assert _laws(UnitCell(a=7.1, b=9.3, c=10.8, alpha=90, beta=90, gamma=90), "P m m m") == []
    # trigonal P3 on a hexagonal lattice: 6/mmm over -3, four cosets, three laws
    assert len(_laws(UnitCell(a=8.0, b=8.0, c=11.0, alpha=90, beta=90, gamma=120), "P 3")) == 3


def _pseudo_merohedral_twin(fraction: float):
    """(true model, data of it twinned by the two-fold along a with this fraction, the law):
    P2₁/c with β = 90.15°."""
    from refractor_core.simulation import simulate

    rng = np.random.default_rng(5)
    cell = UnitCell(a=7.1, b=9.3, c=10.8, alpha=90, beta=90.15, gamma=90)
    sites = [Site(label=f"{el}{k}", element=el, xyz=tuple(rng.random(3)), u_iso=0.02)
             for k, el in enumerate(["Cl", "S", "O", "O", "N", "C", "C"])]
    truth = Structure(cell=cell, space_group=SpaceGroupRef.from_symbol("P 1 21/c 1"), sites=sites)
    data = simulate(truth, seed=3, anomalous=False)
    law = np.diag([1, -1, -1])  # the two-fold along a, on the indices
    i_main = np.abs(calculate_fc(truth, data.hkl)) ** 2
    i_twin = np.abs(calculate_fc(truth, data.hkl @ law.T)) ** 2
    k = float(np.sum(data.intensity * i_main) / np.sum(i_main**2))  # the simulation's scale
    twinned = k * ((1 - fraction) * i_main + fraction * i_twin)
    noisy = twinned + rng.normal(0.0, 1.0, len(twinned)) * data.sigma
    return truth, data.model_copy(update={"intensity": noisy}), law


@pytest.mark.parametrize("fraction, warned", [(0.25, True), (0.0, False)])
def test_a_pseudo_merohedral_twin_is_reported_with_the_law_that_refines_it(fraction, warned):
    """Data of a twin by the orthorhombic lattice's two-fold (25 %), refined with the true
    model and no TWIN, give a warning naming a law of that coset, a fraction near 0.25 with
    the model held and what refining it gives; the user's model stays untwinned. Untwinned
    data give no warning."""
    truth, data, law = _pseudo_merohedral_twin(fraction)
    r = LsqRefiner(LsqConfig(anisotropic=False, riding_h=False)).refine(data, Candidate(structure=truth, generator=USER_MODEL))
    found = [w for w in r.meta["warnings"] if "look twinned" in w]
    assert bool(found) == warned
    if warned:
        best = r.meta["twin_laws_found"][0]
        matrix = np.array(best["matrix"])
        laue = SymmetryOps.from_space_group(truth.space_group).point_group_rotations()
        # the law reported is the simulated one up to the Laue group (the same twin)
        assert any(np.array_equal(matrix, law @ p.T) or np.array_equal(matrix, -law @ p.T) for p in laue)
        assert best["fraction"] == pytest.approx(fraction, abs=0.05)
        assert best["wR2_with"] < best["wR2_without"]
        assert "TWIN " in found[0] and "BASF" in found[0] and "refined with it" in found[0]
        assert best["refined"]["BASF"] == pytest.approx(fraction, abs=0.03)
        assert best["refined"]["wR2"] < r.wr2
        assert r.meta["twin_fractions"] == []  # a user's model is not changed


def test_a_generated_candidate_takes_the_twin_when_it_fits_better():
    truth, data, _ = _pseudo_merohedral_twin(0.25)
    r = LsqRefiner(LsqConfig(anisotropic=False, riding_h=False, complete=False)).refine(
        data, Candidate(structure=truth, generator="test"))
    assert r.meta["twin_fractions"] == [pytest.approx(0.25, abs=0.03)]
    assert r.meta["twin_laws_found"][0]["refined"]["wR2"] == pytest.approx(r.wr2)


def _chiral_merohedral_twin(fraction: float = 0.3):
    """(true P3₁ model, its anomalous data twinned by the two-fold along [110] with this
    fraction, the law)."""
    from refractor_core.simulation import simulate

    rng = np.random.default_rng(11)
    cell = UnitCell(a=8.4, b=8.4, c=12.6, alpha=90, beta=90, gamma=120)
    sites = [Site(label=f"{el}{k}", element=el, xyz=tuple(rng.random(3)), u_iso=0.02)
             for k, el in enumerate(["Br", "S", "O", "O", "N", "C", "C", "C"])]
    truth = Structure(cell=cell, space_group=SpaceGroupRef.from_symbol("P 31"), sites=sites)
    data = simulate(truth, seed=4, anomalous=True, wavelength=0.71073)
    law = np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1]])
    i_main = np.abs(calculate_fc(truth, data.hkl, wavelength=0.71073)) ** 2
    i_twin = np.abs(calculate_fc(truth, data.hkl @ law.T, wavelength=0.71073)) ** 2
    k = float(np.sum(data.intensity * i_main) / np.sum(i_main**2))
    twinned = k * ((1 - fraction) * i_main + fraction * i_twin) + rng.normal(0.0, 1.0, len(i_main)) * data.sigma
    return truth, data.model_copy(update={"intensity": twinned}), law


@pytest.mark.parametrize("mirrored", [False, True])
def test_the_hand_of_a_twinned_chiral_model_is_checked_with_the_twin_in_place(mirrored):
    """P3₁ data twinned by the two-fold along [110] (30 %, TWIN given), with a Br for
    anomalous signal: the Flack parameter is estimated with the twin law in place. The true
    model gives x ≈ 0; its mirror image (P3₂) gives x ≈ 1, is inverted, and ends at x ≈ 0 in
    P3₁. Without the twin in the estimate, no x was computed at all."""
    from refractor_core.types import RefinementInstructions
    from refractor_plugins.refiners.lsq.absolute import inverted_structure

    truth, data, law = _chiral_merohedral_twin()
    twin = RefinementInstructions(twin_matrix=tuple(float(v) for v in law.reshape(-1)), twin_n=2, basf=[0.3])
    model = inverted_structure(truth)[0] if mirrored else truth
    r = LsqRefiner(LsqConfig(anisotropic=False, riding_h=False)).refine(
        data, Candidate(structure=model, generator=USER_MODEL, meta={"instructions": twin.model_dump(mode="json")}))
    assert r.flack is not None and abs(r.flack) < 0.1
    assert r.structure.space_group.number == 144  # P3₁
    assert ("inverted" in r.meta) == mirrored
    if mirrored:
        assert r.meta["inverted"]["flack_before"] > 0.85
    assert r.meta["twin_fractions"] == [pytest.approx(0.3, abs=0.02)]



def test_a_generated_model_taking_a_twin_has_its_hand_judged_again():
    """The twinned P3₁ data, a generator's candidate of the wrong hand, refined without a
    twin and not inverted (as when the untwinned Flack parameter is ambiguous): the twin
    trial keeps the twinned model and, its Flack parameter now computed with the twin in
    place, inverts it to P3₁ (the hand was judged only before the twin)."""
    from refractor_plugins.refiners.lsq.absolute import inverted_structure
    from refractor_plugins.refiners.lsq.refiner import Refinement

    truth, data, _ = _chiral_merohedral_twin()
    config = LsqConfig(anisotropic=False, riding_h=False, complete=False)
    candidate = Candidate(structure=inverted_structure(truth)[0], generator="test")
    first = Refinement(config, data, candidate).run()  # (refine() would invert it before the twin)
    assert first.structure.space_group.number == 145 and first.meta["twin_laws_found"]
    r = LsqRefiner(config)._twinned(data, candidate, first)
    assert r.meta["twin_fractions"] == [pytest.approx(0.3, abs=0.03)]
    assert r.structure.space_group.number == 144 and abs(r.flack) < 0.1
    assert r.meta["inverted"]["flack_before"] > 0.85
