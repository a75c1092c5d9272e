"""The conformance kit itself: it passes good components and catches each kind of fault."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import gemmi
import numpy as np
import pytest
from pydantic import ConfigDict

from refractor_core.hookspecs import hookimpl
from refractor_core.interfaces import ComponentConfig, ComponentSpec, Encoder, Generator, Ranker, SpaceGroupClassifier
from refractor_core.plugins import load_registry
from refractor_core.testing.checks import run_checks
from refractor_core.testing.conformance import (
    ClassifierConformance,
    EncoderConformance,
    GeneratorConformance,
    RankerConformance,
    RefinerConformance,
)
from refractor_core.testing.invariance import (
    apply_friedel,
    point_group_rotations,
    shuffle_reflections,
    to_symmetry_equivalents,
)
from refractor_core.testing.samples import default_samples, simulate_intensities
from refractor_core.types import Candidate, Embedding, SpaceGroupHypothesis, SpaceGroupRef

FIXTURES = Path(__file__).parent / "fixtures"


# --------------------------------------------------------------------------------------
# the kit passes the test-only pipeline components (subclassing, as a third party would)
# --------------------------------------------------------------------------------------


class FixtureRegistry:
    @pytest.fixture
    def registry(self, monkeypatch):
        monkeypatch.syspath_prepend(str(FIXTURES / "pipeline_plugin"))
        return load_registry()


class TestFixtureR1Ranker(FixtureRegistry, RankerConformance):
    component_name = "fixture-r1"


class TestFixtureStatsEncoder(FixtureRegistry, EncoderConformance):
    component_name = "fixture-stats"
    equivalent_invariant = True  # shell statistics do not depend on which equivalent is measured


class TestFixtureFixedClassifier(FixtureRegistry, ClassifierConformance):
    component_name = "fixture-fixed"


class TestFixtureModelGenerator(FixtureRegistry, GeneratorConformance):
    component_name = "fixture-model"
    generate_k = 3


class TestFixtureEvaluateRefiner(FixtureRegistry, RefinerConformance):
    component_name = "fixture-evaluate"
    max_r1_true_model = None  # it evaluates without refining: see the test below


def test_the_kit_notices_a_refiner_that_does_not_refine(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES / "pipeline_plugin"))
    results = {r.name: r for r in run_checks("refiner", "fixture-evaluate", registry=load_registry())}
    assert results["refiner_refines_true_model"].status == "fail"
    assert "R1" in results["refiner_refines_true_model"].message
    assert results["refiner_output"].status == "pass" and results["refiner_order_invariant"].status == "pass"


# --------------------------------------------------------------------------------------
# faulty components (test only) and the checks that must catch them
# --------------------------------------------------------------------------------------


class LooseConfig(ComponentConfig):
    model_config = ConfigDict(extra="allow")


class DescendingRanker(Ranker):
    name: ClassVar[str] = "bad-descending"
    version: ClassVar[str] = "0"

    def rank(self, data, refined):
        return sorted((r.model_copy(update={"score": r.r1}) for r in refined), key=lambda r: -r.score)


class AsGivenRanker(Ranker):
    name: ClassVar[str] = "bad-as-given"
    version: ClassVar[str] = "0"

    def rank(self, data, refined):
        return [r.model_copy(update={"score": float(i)}) for i, r in enumerate(refined)]


class LooseRanker(Ranker):
    name: ClassVar[str] = "bad-loose"
    version: ClassVar[str] = "0"
    Config = LooseConfig

    def rank(self, data, refined):
        return sorted((r.model_copy(update={"score": r.r1}) for r in refined), key=lambda r: r.score)


class FirstRowsEncoder(Encoder):
    name: ClassVar[str] = "bad-first-rows"
    version: ClassVar[str] = "0"

    def encode(self, data):
        return Embedding(vector=np.asarray(data.intensity[:8], dtype=np.float32))


class SignedEncoder(Encoder):
    """Order-invariant but not Friedel-invariant: sums intensities weighted by sign(h)."""

    name: ClassVar[str] = "bad-signed"
    version: ClassVar[str] = "0"

    def encode(self, data):
        return Embedding(vector=np.array([np.sum(np.sign(data.hkl[:, 0]) * data.intensity)], dtype=np.float32))


class FirstReflectionClassifier(SpaceGroupClassifier):
    name: ClassVar[str] = "bad-first-reflection"
    version: ClassVar[str] = "0"

    def classify(self, data, embedding=None):
        first_is_smallest = tuple(data.hkl[0]) == min(map(tuple, data.hkl.tolist()))  # true for sorted input
        symbol = "P 1 21/n 1" if first_is_smallest else "P -1"
        return [SpaceGroupHypothesis(space_group=SpaceGroupRef.from_symbol(symbol), probability=0.9)]


class UnsortedClassifier(SpaceGroupClassifier):
    name: ClassVar[str] = "bad-unsorted"
    version: ClassVar[str] = "0"

    def classify(self, data, embedding=None):
        return [SpaceGroupHypothesis(space_group=SpaceGroupRef.from_symbol(s), probability=p)
                for s, p in (("P -1", 0.2), ("P 1 21/n 1", 0.7))]


class UnseededGenerator(Generator):
    name: ClassVar[str] = "bad-unseeded"
    version: ClassVar[str] = "0"

    def generate(self, data, hypothesis, *, k=1, embedding=None, seed=0):
        from refractor_core.testing.samples import displaced

        st = default_samples().structure
        rng_seed = int(np.random.default_rng().integers(1 << 30))  # ignores `seed`
        return [Candidate(structure=displaced(st, 0.01, rng_seed)) for _ in range(k)]


class WrongGroupGenerator(Generator):
    name: ClassVar[str] = "bad-wrong-group"
    version: ClassVar[str] = "0"

    def generate(self, data, hypothesis, *, k=1, embedding=None, seed=0):
        st = default_samples().structure.model_copy(update={"space_group": SpaceGroupRef.from_symbol("P 1")})
        return [Candidate(structure=st)]


FAULTY = {
    ("ranker", "bad-descending"): DescendingRanker,
    ("ranker", "bad-as-given"): AsGivenRanker,
    ("ranker", "bad-loose"): LooseRanker,
    ("encoder", "bad-first-rows"): FirstRowsEncoder,
    ("encoder", "bad-signed"): SignedEncoder,
    ("classifier", "bad-first-reflection"): FirstReflectionClassifier,
    ("classifier", "bad-unsorted"): UnsortedClassifier,
    ("generator", "bad-unseeded"): UnseededGenerator,
    ("generator", "bad-wrong-group"): WrongGroupGenerator,
}


class FaultyPlugin:
    distribution = "tests-faulty"

    @hookimpl
    def refractor_register(self, register):
        for (kind, name), cls in FAULTY.items():
            register(ComponentSpec(kind=kind, name=name, target=f"{__name__}:{cls.__name__}", config=cls.Config))


@pytest.fixture(scope="module")
def faulty_registry():
    return load_registry(extra_plugins=[FaultyPlugin()], entry_points_enabled=False)


@pytest.mark.parametrize(
    "kind, name, must_fail, must_pass",
    [
        ("ranker", "bad-descending", {"ranker_output", "ranker_prefers_dominant"}, {"config_round_trip"}),
        ("ranker", "bad-as-given", {"ranker_input_order_invariant", "ranker_prefers_dominant"}, {"ranker_output"}),
        ("ranker", "bad-loose", {"config_round_trip", "config_rejects_unknown_keys"}, {"ranker_output"}),
        ("encoder", "bad-first-rows", {"encoder_order_invariant"}, {"encoder_deterministic", "encoder_output"}),
        ("encoder", "bad-signed", {"encoder_friedel_invariant"}, {"encoder_order_invariant", "encoder_output"}),
        ("classifier", "bad-first-reflection", {"classifier_order_invariant"}, {"classifier_output"}),
        ("classifier", "bad-unsorted", {"classifier_output"}, {"classifier_finds_sample"}),
        ("generator", "bad-unseeded", {"generator_deterministic"}, {"generator_output"}),
        ("generator", "bad-wrong-group", {"generator_output"}, {"generator_deterministic"}),
    ],
)
def test_faults_are_caught(faulty_registry, kind, name, must_fail, must_pass):
    results = {r.name: r for r in run_checks(kind, name, registry=faulty_registry)}
    failed = {n for n, r in results.items() if r.status == "fail"}
    assert must_fail <= failed, {n: results[n].message for n in must_fail}
    assert not (must_pass & failed), {n: results[n].message for n in must_pass & failed}
    assert results["light_registration"].status == "skip"  # in-process, no entry point


def test_light_registration_check_fails_a_heavy_plugin(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES / "heavy_plugin"))
    results = {r.name: r for r in run_checks("ranker", "heavy-fixture", registry=load_registry())}
    assert results["light_registration"].status == "fail" and "torch" in results["light_registration"].message
    assert results["ranker_output"].status == "pass"


# --------------------------------------------------------------------------------------
# invariance helpers
# --------------------------------------------------------------------------------------


def test_shuffle_is_a_permutation():
    d = default_samples().reflections
    s = shuffle_reflections(d, 1)
    assert not np.array_equal(s.hkl, d.hkl)
    key = lambda x: np.lexsort(np.column_stack([x.hkl, x.intensity]).T)  # noqa: E731
    assert np.array_equal(s.hkl[key(s)], d.hkl[key(d)]) and np.array_equal(s.intensity[key(s)], d.intensity[key(d)])


def test_friedel_mates_have_the_same_intensity_without_anomalous_scattering():
    samples = default_samples()
    d = samples.reflections.subset(np.arange(60))
    f = apply_friedel(d, 0.5, 2)
    flipped = np.any(f.hkl != d.hkl, axis=1)
    assert 10 < flipped.sum() < 50 and np.array_equal(f.hkl[flipped], -d.hkl[flipped])
    assert np.allclose(simulate_intensities(samples.structure, f.hkl), simulate_intensities(samples.structure, d.hkl), rtol=1e-6)


def test_symmetry_equivalents_agree_with_gemmi():
    samples = default_samples()
    sg = samples.structure.space_group
    d = samples.reflections.subset(np.arange(80))
    e = to_symmetry_equivalents(d, sg, 3)
    assert np.any(e.hkl != d.hkl)
    gsg = sg.gemmi()
    asu = gemmi.ReciprocalAsu(gsg)
    ops = gsg.operations()
    for a, b in zip(d.hkl, e.hkl):
        assert asu.to_asu([int(x) for x in a], ops)[0] == asu.to_asu([int(x) for x in b], ops)[0]
    assert np.allclose(simulate_intensities(samples.structure, e.hkl), simulate_intensities(samples.structure, d.hkl), rtol=1e-5)


def test_point_group_rotations_by_symbol():
    assert point_group_rotations("P 1 21/n 1").shape == (4, 3, 3)
    assert point_group_rotations("F m -3 m").shape == (48, 3, 3)


def test_sample_data_show_the_21_screw_axis_absences():
    d = default_samples().reflections
    h, k, l = d.hkl.T
    absent = (h == 0) & (l == 0) & (k % 2 == 1)
    present = (h == 0) & (l == 0) & (k % 2 == 0) & (k != 0)
    assert absent.sum() >= 3 and present.sum() >= 3
    assert np.all(np.abs(d.intensity[absent]) < 4 * d.sigma[absent])
    assert np.mean(d.intensity[present]) > 20 * np.mean(np.abs(d.intensity[absent]))
