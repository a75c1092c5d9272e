"""The `r1` and `composite` rankers: orders, reported scores and plausibility penalties."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from refractor_core.crystal.cell import fractional
from refractor_core.plugins import get_registry
from refractor_core.simulation.composition import formula_mismatch
from refractor_core.testing.samples import default_samples
from refractor_core.types import RefinedCandidate, Site, SpaceGroupRef, Structure, UnitCell
from refractor_plugins.rankers.plausibility import short_contacts

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from pseudo_symmetry import in_p1, refine  # noqa: E402


def _refined(structure: Structure, r1: float, tag: int, **kw) -> RefinedCandidate:
    fields = dict(structure=structure, r1=r1, wr2=2.5 * r1, goof=1.05, n_reflections=800, n_gt=700,
                  n_parameters=60, converged=True, meta={"tag": tag})
    fields.update(kw)
    return RefinedCandidate(**fields)


@pytest.fixture(scope="module")
def samples():
    return default_samples()


def _ranker(name: str, **options):
    return get_registry().build("ranker", name, options)


def test_r1_ranker_orders_by_r1_and_reports_it(samples):
    s = samples.structure
    items = [_refined(s, 0.09, 0), _refined(s, 0.03, 1), _refined(s, 0.06, 2)]
    out = _ranker("r1").rank(samples.reflections, items)
    assert [r.meta["tag"] for r in out] == [1, 2, 0]
    assert [r.score for r in out] == [0.03, 0.06, 0.09]
    assert out[0].score_details["R1"] == 0.03 and out[0].score_details["ranker"] == "r1"
    shuffled = _ranker("r1").rank(samples.reflections, [items[2], items[0], items[1]])
    assert [r.meta["tag"] for r in shuffled] == [1, 2, 0]


def test_composite_penalises_short_contacts(samples):
    """An extra atom 0.6 Å from O1 costs more than a slightly higher R1."""
    s = samples.structure
    o1 = next(x for x in s.sites if x.label == "O1")
    offset = fractional(s.cell, np.array([0.6, 0.0, 0.0]))
    crowded = s.model_copy(update={"sites": s.sites + [o1.model_copy(update={"label": "O9", "xyz": tuple(np.array(o1.xyz) + offset)})]})
    contacts = short_contacts(crowded)
    assert any({c.a, c.b} == {"O1", "O9"} for c in contacts)
    assert not short_contacts(s)
    bad, good = _refined(crowded, 0.030, 0), _refined(s, 0.035, 1)
    out = _ranker("composite").rank(samples.reflections, [bad, good])
    assert [r.meta["tag"] for r in out] == [1, 0]
    details = out[1].score_details
    assert details["n_short_contacts"] >= 1 and details["penalties"]["short_contacts"] > 0
    assert out[1].score == pytest.approx(0.030 + details["penalties"]["short_contacts"] + details["penalties"]["formula"])


def test_composite_penalises_formula_mismatch_and_npd_adps(samples):
    s = samples.structure
    data = samples.reflections
    assert formula_mismatch(s, data.formula, data.z) == pytest.approx(0.0, abs=1e-9)
    wrong = s.model_copy(update={"sites": [x.model_copy(update={"element": "O"}) if x.label == "S" else x for x in s.sites]})
    assert formula_mismatch(wrong, data.formula, data.z) > 0.2
    npd = s.model_copy(update={"sites": [
        x.model_copy(update={"u_aniso": (0.01, -0.002, 0.01, 0.0, 0.0, 0.0)}) if x.label == "O2" else x for x in s.sites
    ]})
    items = [_refined(wrong, 0.030, 0), _refined(npd, 0.031, 1), _refined(s, 0.034, 2)]
    out = _ranker("composite").rank(data, items)
    assert out[0].meta["tag"] == 2
    by_tag = {r.meta["tag"]: r for r in out}
    assert by_tag[0].score_details["penalties"]["formula"] > 0
    assert by_tag[1].score_details["non_positive_definite"] == ["O2"]
    assert all(np.isfinite(r.score) for r in out)


def test_composite_penalises_flack_near_one_half(samples):
    """In a non-centrosymmetric group, x = 0.5(5) costs a penalty, x = 0.02(5) does not."""
    cell = UnitCell(a=5.56, b=5.56, c=4.68)
    s = Structure(cell=cell, space_group=SpaceGroupRef.from_symbol("P -4 21 m"), sites=[
        Site(label="C", element="C", xyz=(0.0, 0.5, 0.328), u_iso=0.02),
        Site(label="O", element="O", xyz=(0.0, 0.5, 0.597), u_iso=0.02),
        Site(label="N", element="N", xyz=(0.145, 0.645, 0.179), u_iso=0.02),
    ])
    half = _refined(s, 0.030, 0, flack=0.5, flack_su=0.05)
    zero = _refined(s, 0.032, 1, flack=0.02, flack_su=0.05)
    out = _ranker("composite").rank(samples.reflections, [half, zero])
    assert [r.meta["tag"] for r in out] == [1, 0]
    assert out[1].score_details["penalties"]["flack"] > 0
    assert out[0].score_details["penalties"]["flack"] == 0


def test_composite_options_are_validated():
    from refractor_core.errors import UsageError

    with pytest.raises(UsageError):
        get_registry().validate_options("ranker", "composite", {"no_such_weight": 1})
    cfg = get_registry().validate_options("ranker", "composite", {"short_contact": 0.0})
    assert cfg.short_contact == 0.0


# --------------------------------------------------------------------------------------
# higher symmetry preferred unless the lower fits significantly better (Hamilton)
# --------------------------------------------------------------------------------------


def _one_atom(symbol: str) -> Structure:
    cell = UnitCell(a=9.0, b=10.0, c=11.0, alpha=90, beta=100, gamma=90)
    site = Site(label="Cu1", element="Cu", xyz=(0.1, 0.2, 0.3), u_iso=0.02)
    return Structure(cell=cell, space_group=SpaceGroupRef.from_symbol(symbol), sites=[site])


def test_composite_prefers_the_supergroup_when_the_subgroup_is_not_significantly_better(samples):
    data = samples.reflections.model_copy(update={"formula": None})  # no formula penalty
    low = _refined(_one_atom("P 1"), 0.040, 0, wr2=0.100, n_parameters=120, n_reflections=3000)
    high = _refined(_one_atom("P -1"), 0.041, 1, wr2=0.101, n_parameters=60, n_reflections=3000)
    out = _ranker("composite").rank(data, [low, high])
    assert [r.meta["tag"] for r in out] == [1, 0]
    pref = out[0].score_details["symmetry_preference"]
    assert pref["preferred_over"] == "P 1" and pref["wR2_ratio"] < pref["critical_ratio"]
    assert out[0].score < out[1].score
    # a clearly better fit in the subgroup keeps it first; the r1 ranker never reorders
    # (R1 beyond the missed-symmetry margin: a single atom in P1 trivially obeys P-1)
    worse = high.model_copy(update={"wr2": 0.130, "r1": 0.080})
    assert [r.meta["tag"] for r in _ranker("composite").rank(data, [low, worse])] == [0, 1]
    assert [r.meta["tag"] for r in _ranker("r1").rank(data, [low, high])] == [0, 1]
    off = _ranker("composite", prefer_higher_symmetry=False).rank(data, [low, high])
    assert [r.meta["tag"] for r in off] == [0, 1]


def test_subgroup_relation_is_origin_independent():
    from refractor_core.crystal.symmetry import SymmetryOps

    ops = {s: SymmetryOps.from_space_group(SpaceGroupRef.from_symbol(s)) for s in ("C 1 c 1", "C 1 2/c 1", "P 1", "P -1", "F 4 3 2", "F m -3 m", "P 1 21/c 1")}
    assert ops["C 1 c 1"].is_proper_subgroup_of(ops["C 1 2/c 1"])
    assert ops["P 1"].is_proper_subgroup_of(ops["P -1"]) and ops["P 1"].is_proper_subgroup_of(ops["P 1 21/c 1"])
    assert ops["F 4 3 2"].is_proper_subgroup_of(ops["F m -3 m"])
    assert not ops["C 1 2/c 1"].is_proper_subgroup_of(ops["C 1 c 1"])
    assert not ops["C 1 2/c 1"].is_proper_subgroup_of(ops["P 1 21/c 1"])


# --------------------------------------------------------------------------------------
# pseudo-symmetry: the missed-symmetry check must not overrule the data


def _published(name: str):
    from refractor_core.dataio import load_bundle
    from refractor_core.testing.real_cases import get_case

    case = get_case(name)
    return case, load_bundle(case.reference, block=case.data_block)


def test_a_pseudo_centrosymmetric_structure_keeps_its_lower_group(one_torch_thread):
    """cod1550236 (P-1) made truly P1: five ring atoms of one molecule (with their H) moved
    0.3 Å. Every atom is still within the missed-symmetry tolerance of an image, but the
    moved ones deviate by ~50 su, the P-1 model refines to a clearly worse R1 and Hamilton's
    test finds P1 significantly better: P1 must stay first. With the atoms left in place
    (truly centrosymmetric), P-1 comes first."""
    from refractor_core.crystal.cell import orthogonalization_matrix
    from refractor_core.simulation.simulator import simulate

    published = _published("cod1550236")[1].structure
    p1 = in_p1(published)
    orth = orthogonalization_matrix(published.cell)
    ring = [np.asarray(s.xyz) for s in p1.sites if s.label in {"C9_1", "C10_1", "C12_1", "C13_1", "C14_1"}]
    moved = [s.label for s in p1.sites if s.label.endswith("_1") and s.element in ("C", "H")
             and min(np.linalg.norm(orth @ (np.asarray(s.xyz) - c)) for c in ring) < (0.01 if s.element == "C" else 1.25)]
    assert len(moved) == 9  # five ring C and the four H on them (C9 carries none)
    shift = np.linalg.solve(orth, np.array([0.3, 0.0, 0.0]))
    for truly_p1 in (True, False):
        truth = p1.model_copy(update={"sites": [
            s.model_copy(update={"xyz": tuple(np.asarray(s.xyz) + shift)}) if truly_p1 and s.label in moved else s
            for s in p1.sites]})
        data = simulate(truth, d_min=0.8, seed=1).model_copy(update={"formula": None})
        low, high = refine(data, truth), refine(data, published)
        out = _ranker("composite").rank(data, [low, high])
        chosen = out[0].structure.space_group.symbol
        if truly_p1:
            assert low.r1 < high.r1 - 0.01 and chosen == "P 1", (low.r1, high.r1)
            pseudo = out[0].score_details["pseudo_symmetry"]
            assert pseudo["higher_group"] == "P -1" and pseudo["max_deviation_su"] > 20.0
            from refractor_core.commands.run import _ranking_warnings

            assert "pseudo-symmetry" in _ranking_warnings(out[0])[0]
        else:
            assert chosen == "P -1", (low.r1, high.r1)
            assert all("pseudo_symmetry" not in r.score_details for r in out)


def test_a_model_that_obeys_the_higher_group_is_kept_in_it_despite_hamilton(one_torch_thread):
    """Measured ethylene_oxide (P2_1/n) refined in P1 from its published atoms: Hamilton's
    test calls the P1 fit significantly better (its extra parameters fit the data's
    systematic errors), but its atoms deviate from P2_1/n by less than 20 su: P2_1/n first."""
    from refractor_core.dataio import load_reflections

    case, bundle = _published("ethylene_oxide")
    data = load_reflections(case.reflections).model_copy(update={"formula": None})
    low = refine(data, in_p1(bundle.structure, jitter=0.02), bundle.instructions)
    high = refine(data, bundle.structure, bundle.instructions)
    out = _ranker("composite").rank(data, [low, high])
    assert out[0].structure.space_group.symbol == "P 1 21/n 1"
    pref = out[0].score_details["symmetry_preference"]
    assert pref["hamilton_lower_significantly_better"]
    assert 0.0 < pref["missed_symmetry"]["max_deviation_su"] < 20.0
