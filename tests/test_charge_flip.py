"""The `charge-flip` generator: flipping, origin search, interpretation, candidates."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from refractor_core.crystal.structure_factors import calculate_fc
from refractor_core.crystal.symmetry import SymmetryOps
from refractor_core.testing.conformance import GeneratorConformance
from refractor_core.testing.samples import sample_reflections, sample_structure
from refractor_core.types import SpaceGroupHypothesis, SpaceGroupRef
from refractor_plugins.generators.charge_flip import flipping as fl
from refractor_plugins.generators.charge_flip.generator import ChargeFlipGenerator, patterson_symmetry
from refractor_plugins.generators.charge_flip.interpret import (
    ExpectedContents,
    assign_elements,
    estimate_z,
    expected_contents,
)
from refractor_plugins.generators.charge_flip.origin import find_origin, solution_similarity
from refractor_plugins.generators.configs import ChargeFlipConfig
from refractor_core.crystal.fourier import Peak

ROOT = Path(__file__).resolve().parents[1]


def _matcher():
    """The benchmark's origin/enantiomorph matcher (one implementation for tests and benchmark)."""
    spec = importlib.util.spec_from_file_location("solve_real", ROOT / "benchmarks" / "solve_real.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("solve_real", mod)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def solve_real():
    return _matcher()


@pytest.fixture(scope="module")
def simulated():
    st = sample_structure()
    data = sample_reflections(d_min=0.8)
    return st, data, SpaceGroupHypothesis(space_group=st.space_group, probability=1.0)


@pytest.fixture(scope="module")
def simulated_candidates(simulated):
    st, data, hyp = simulated
    gen = ChargeFlipGenerator(ChargeFlipConfig(max_trials=8))
    return gen, gen.generate(data, hyp, k=3, seed=0)


# --------------------------------------------------------------------------------------
# the flipping iteration
# --------------------------------------------------------------------------------------


def test_flipping_from_random_phases_reaches_the_true_phases(simulated):
    st, data, _ = simulated
    sym = SymmetryOps.from_space_group(st.space_group)
    gen = ChargeFlipGenerator(ChargeFlipConfig(max_trials=1, normalization="F"))
    sol = gen._p1_solutions(data, sym, seed=0, k=1)
    problem = sol.problem
    truth = calculate_fc(st, problem.hkl)
    results = [fl.run_trial(problem, fl.FlipSettings(max_cycles=400), np.random.default_rng(s)) for s in range(3)]
    similar = [solution_similarity(problem.hkl, r.f, truth, problem.shape) for r in results]
    assert max(similar) > 0.6, similar
    best = results[int(np.argmax(similar))]
    assert best.converged and best.r < best.r_start - 0.05
    # a random phase set is not similar to the truth
    rand = np.abs(truth) * np.exp(2j * np.pi * np.random.default_rng(9).uniform(size=len(truth)))
    assert solution_similarity(problem.hkl, rand, truth, problem.shape) < 0.35


def test_trials_are_deterministic_given_the_seed(simulated):
    st, data, _ = simulated
    sym = SymmetryOps.from_space_group(st.space_group)
    problem = ChargeFlipGenerator(ChargeFlipConfig(max_trials=1))._p1_solutions(data, sym, seed=0, k=1).problem
    a = fl.run_trial(problem, fl.FlipSettings(max_cycles=50), np.random.default_rng([3, 1]))
    b = fl.run_trial(problem, fl.FlipSettings(max_cycles=50), np.random.default_rng([3, 1]))
    c = fl.run_trial(problem, fl.FlipSettings(max_cycles=50), np.random.default_rng([3, 2]))
    assert np.array_equal(a.f, b.f)
    assert not np.allclose(a.f, c.f)


def test_symmetry_projector_is_idempotent_and_keeps_symmetric_data(simulated):
    st, data, _ = simulated
    sym = SymmetryOps.from_space_group(st.space_group)
    problem = ChargeFlipGenerator(ChargeFlipConfig(max_trials=1))._p1_solutions(data, sym, seed=0, k=1).problem
    proj = fl.SymmetryProjector(problem, sym.rotations, sym.translations)
    truth = np.conj(calculate_fc(st, problem.hkl))  # grid coefficients hold conj(F)
    assert np.allclose(proj(truth), truth, atol=1e-8 * np.abs(truth).max())
    rand = np.random.default_rng(0).normal(size=problem.n) + 1j * np.random.default_rng(1).normal(size=problem.n)
    once = proj(rand)
    assert np.allclose(proj(once), once)
    assert np.linalg.norm(once) < np.linalg.norm(rand)


# --------------------------------------------------------------------------------------
# origin search
# --------------------------------------------------------------------------------------


def test_origin_search_recovers_a_known_shift_and_scores_symmetry(simulated):
    st, data, _ = simulated
    sym = SymmetryOps.from_space_group(st.space_group)
    problem = ChargeFlipGenerator(ChargeFlipConfig(max_trials=1))._p1_solutions(data, sym, seed=0, k=1).problem
    truth = calculate_fc(st, problem.hkl)
    shift = np.array([0.137, 0.291, 0.412])
    moved = truth * np.exp(2j * np.pi * (problem.hkl @ shift))  # density moved by +shift
    res = find_origin(problem.hkl, moved, st.cell, sym)
    assert res.score > 0.97
    back = moved * np.exp(-2j * np.pi * (problem.hkl @ res.shift))
    # the recovered origin is one the group permits: the shifted solution obeys the symmetry
    assert find_origin(problem.hkl, back, st.cell, sym).score > 0.97
    assert np.abs(find_origin(problem.hkl, back, st.cell, sym).shift - np.round(2 * find_origin(problem.hkl, back, st.cell, sym).shift) / 2).max() < 0.02
    # a group the structure does not have agrees much less
    wrong = SymmetryOps.from_space_group("P 1 2/m 1")
    assert find_origin(problem.hkl, moved, st.cell, wrong).score < res.score - 0.3
    # random phases have no symmetry
    rand = np.abs(truth) * np.exp(2j * np.pi * np.random.default_rng(2).uniform(size=len(truth)))
    assert find_origin(problem.hkl, rand, st.cell, sym).score < 0.3


# --------------------------------------------------------------------------------------
# interpretation
# --------------------------------------------------------------------------------------


def test_expected_contents_and_z_estimate():
    sym = SymmetryOps.from_space_group("P 1 21/c 1")
    st = sample_structure()
    c = expected_contents("H O5 Pr S", 4, st.cell, sym)
    assert c.counts == {"O": 5.0, "Pr": 1.0, "S": 1.0} and not c.z_estimated
    assert c.heaviest_first() == ["Pr", "S", "O"]
    # Z from the volume: 18 Å^3 per non-H atom
    assert estimate_z({"C": 10, "H": 12, "O": 2}, 4 * 12 * 18.0, 4) == 4.0
    assert estimate_z({"C": 10, "O": 2}, 2 * 12 * 18.0, 4) == 2.0
    guessed = expected_contents("C10 H12 O2", None, st.cell.model_copy(update={"a": 4 * 12 * 18.0 / (st.cell.volume / st.cell.a)}), sym)
    assert guessed.z_estimated and guessed.z == 4.0


def test_element_assignment_is_heaviest_first_and_count_constrained():
    contents = ExpectedContents(counts={"Pr": 1.0, "S": 1.0, "O": 2.0}, z=4, z_estimated=False)
    dens = [60.0, 13.0, 6.0, 5.5, 5.0, 1.0]
    peaks = [Peak(xyz=np.array([0.1 * i, 0.2, 0.3]), height=d, integrated=d) for i, d in enumerate(dens)]
    out = assign_elements(list(reversed(peaks)), contents)
    assert [e for _, e in out] == ["Pr", "S", "O", "O"]
    assert [p.integrated for p, _ in out] == [60.0, 13.0, 6.0, 5.5]
    # a peak on a 2-fold site uses half an atom
    special = ExpectedContents(counts={"Cl": 0.5, "C": 1.0}, z=2, z_estimated=False)
    peaks2 = [Peak(xyz=np.zeros(3), height=17, integrated=17, site_order=2), Peak(xyz=np.ones(3) * 0.3, height=6, integrated=6)]
    assert [e for _, e in assign_elements(peaks2, special)] == ["Cl", "C"]


# --------------------------------------------------------------------------------------
# the generator
# --------------------------------------------------------------------------------------


def test_simulated_structure_is_recovered(simulated, simulated_candidates, solve_real):
    st, data, hyp = simulated
    _, cands = simulated_candidates
    assert 1 <= len(cands) <= 3
    best = cands[0]
    assert best.generator == "charge-flip" and best.hypothesis == hyp and best.seed == 0
    assert best.structure.space_group.hall == st.space_group.hall
    m = solve_real.match_structures(best.structure, st)
    assert m["found"] >= 0.9 and m["element"] >= 0.85, m
    for key in ("r_flip", "converged", "cycles", "symmetry_agreement", "seconds", "support", "origin_shift"):
        assert key in best.meta
    assert best.meta["symmetry_agreement"] > 0.6
    scores = [c.score for c in cands]
    assert scores == sorted(scores) and all(np.isfinite(scores))
    assert all(s.u_iso is not None and 0.02 <= s.u_iso <= 0.06 for s in best.structure.sites)
    assert not any(s.element == "H" for s in best.structure.sites)


def test_trials_are_shared_between_hypotheses_of_one_patterson_group(simulated, simulated_candidates):
    st, data, _ = simulated
    gen, _ = simulated_candidates
    n_cached = len(gen._cache)
    other = SpaceGroupHypothesis(space_group=SpaceGroupRef.from_symbol("P 1 21 1"), probability=0.2)
    cands = gen.generate(data, other, k=3, seed=0)
    assert len(gen._cache) == n_cached  # P 1 21 1 has the Patterson group of P 1 21/n 1
    assert cands and all(c.structure.space_group.number == 4 for c in cands)
    assert patterson_symmetry(SymmetryOps.from_space_group("P 1 21 1")).n == 4


def test_no_cell_is_a_clear_error(simulated):
    from refractor_core.errors import InputError

    _, data, hyp = simulated
    with pytest.raises(InputError):
        ChargeFlipGenerator().generate(data.model_copy(update={"cell": None}), hyp)


def test_real_pr_sulfate_with_the_space_group_given(real_case, solve_real):
    case = real_case("pr_sulfate_hydroxide")
    data, reference = solve_real.load_case(case)
    assert data.space_group_hint is None
    hyp = SpaceGroupHypothesis(space_group=reference.space_group, probability=1.0)
    cands = ChargeFlipGenerator().generate(data, hyp, k=2, seed=0)
    m = solve_real.match_structures(cands[0].structure, reference)
    assert m["found"] >= 0.9, m


def test_registered_and_buildable():
    from refractor_core.plugins import get_registry

    reg = get_registry()
    assert "charge-flip" in reg.names("generator")
    comp = reg.build("generator", "charge-flip", {"max_trials": 3, "delta": 1.1})
    assert isinstance(comp, ChargeFlipGenerator)
    assert comp.config.max_trials == 3 and comp.config.delta == 1.1
    from refractor_core.errors import RefractorError

    with pytest.raises(RefractorError):
        reg.build("generator", "charge-flip", {"no_such_option": 1})


class TestChargeFlipConformance(GeneratorConformance):
    component_name = "charge-flip"
