"""Inversion of a model of the wrong hand: the symmetry of the mirror image, and the lsq
refiner's automatic inversion on measured data."""

from __future__ import annotations

import numpy as np
import pytest

from refractor_core.crystal.spacegroup_tables import inverted_operator, inverted_setting
from refractor_core.crystal.structure_factors import calculate_fc
from refractor_core.types import Site, SpaceGroupRef, Structure, UnitCell
from refractor_plugins.refiners.lsq.absolute import intermediate_flack, inverted_structure, wrong_hand


@pytest.mark.parametrize(
    "symbol, mirror, centre",
    [
        ("P 41 21 2", "P 43 21 2", (0, 0, 0)),
        ("P 31 2 1", "P 32 2 1", (0, 0, 0)),
        ("P 61", "P 65", (0, 0, 0)),
        ("P 21 21 21", "P 21 21 21", (0, 0, 0)),
        ("F d d 2", "F d d 2", (0.25, 0.25, 0)),
        ("I 41", "I 41", (0, 0.5, 0)),
        ("I -4 2 d", "I -4 2 d", (0, 0.5, 0.25)),
    ],
)
def test_inverted_setting(symbol, mirror, centre):
    """Enantiomorphic groups become their partner; groups whose normaliser has its inversion
    centre off the origin (Fdd2 at 1/8,1/8,0; I4₁ at 0,1/4,0; I-42d at 0,1/4,1/8) keep
    their group with x -> c - x."""
    c, group = inverted_setting(SpaceGroupRef.from_symbol(symbol))
    assert group.number == SpaceGroupRef.from_symbol(mirror).number
    assert np.allclose(c, centre)


@pytest.mark.parametrize("symbol", ["P 41 21 2", "F d d 2", "I 41", "I -4 2 d", "P 31 2 1"])
def test_mirror_image_gives_the_friedel_mates(symbol):
    """With anomalous scattering, the mirror image written in its own group (`inverted_structure`)
    has F(h) = F(-h) of the original, up to a phase: the intensities of a Friedel mate."""
    rng = np.random.default_rng(7)
    group = SpaceGroupRef.from_symbol(symbol)
    hexagonal = symbol.startswith("P 3") or symbol.startswith("P 6")
    cell = UnitCell(a=9.1, b=9.1, c=11.3, alpha=90, beta=90, gamma=120) if hexagonal else (
        UnitCell(a=9.1, b=10.4, c=11.3, alpha=90, beta=90, gamma=90) if symbol.startswith("F") else
        UnitCell(a=9.1, b=9.1, c=11.3, alpha=90, beta=90, gamma=90))
    sites = [Site(label=f"{el}{k}", element=el, xyz=tuple(rng.random(3)), u_iso=0.02)
             for k, el in enumerate(["Br", "S", "O", "N", "C"])]
    original = Structure(cell=cell, space_group=group, sites=sites)
    mirror, _ = inverted_structure(original)
    hkl = rng.integers(-6, 7, size=(200, 3))
    hkl = hkl[np.any(hkl != 0, axis=1)]
    i_mirror = np.abs(calculate_fc(mirror, hkl, wavelength=0.71073)) ** 2
    i_friedel = np.abs(calculate_fc(original, -hkl, wavelength=0.71073)) ** 2
    i_same = np.abs(calculate_fc(original, hkl, wavelength=0.71073)) ** 2
    assert np.allclose(i_mirror, i_friedel, rtol=1e-8, atol=1e-8 * i_friedel.max())
    assert not np.allclose(i_mirror, i_same, rtol=1e-3)  # the anomalous signal is there


def test_eqiv_operators_follow_the_inversion():
    """An operator of the structure, rewritten for its mirror image about c/2."""
    assert inverted_operator("-x+1/2,-y,z+1/2", np.array([0.25, 0.25, 0.25])) == "-x,-y+1/2,z+1/2"
    assert inverted_operator("-y,x,z+1/4", np.zeros(3)) == "-y,x,z+3/4"


def test_wrong_hand_needs_a_significant_flack_parameter():
    assert wrong_hand(0.97, 0.05)
    assert not wrong_hand(0.6, 0.1)  # within 2 s.u. of one half: an inversion twin, not inverted
    assert not wrong_hand(1.7, 0.9)  # no anomalous signal to speak of
    assert not wrong_hand(None, None)


def test_intermediate_flack_needs_three_su_from_both_ends():
    assert intermediate_flack(0.215, 0.024)  # COD 2013004, P2₁: published 0.22(3), no twin modelled
    assert not intermediate_flack(0.05, 0.02)
    assert not intermediate_flack(0.013, 0.004)  # COD 2108989 (JANA: 0.028(4)): too small to matter
    assert not intermediate_flack(0.93, 0.03)
    assert not intermediate_flack(0.4, 0.2)  # no anomalous signal to speak of
    assert not intermediate_flack(None, None)


@pytest.mark.parametrize("twin_fraction, warned", [(0.3, True), (0.0, False)])
def test_refiner_warns_of_an_inversion_twin_it_was_not_asked_to_refine(twin_fraction, warned):
    """Simulated data of an inversion twin (30 %) refined without a TWIN: the estimated Flack
    parameter is near 0.3, and the user is told; untwinned data give no warning."""
    from refractor_core.simulation import simulate
    from refractor_core.types import Candidate
    from refractor_plugins.refiners.configs import LsqConfig
    from refractor_plugins.refiners.lsq.refiner import USER_MODEL, LsqRefiner

    rng = np.random.default_rng(11)
    cell = UnitCell(a=7.9, b=9.4, c=11.2, alpha=90, beta=90, gamma=90)
    sites = [Site(label=f"{el}{k}", element=el, xyz=tuple(rng.random(3)), u_iso=0.02)
             for k, el in enumerate(["Br", "S", "O", "N", "C", "C"])]
    truth = Structure(cell=cell, space_group=SpaceGroupRef.from_symbol("P 21 21 21"), sites=sites)
    data = simulate(truth, seed=4, twin_fraction=twin_fraction)
    r = LsqRefiner(LsqConfig(anisotropic=False, riding_h=False)).refine(
        data, Candidate(structure=truth, generator=USER_MODEL))
    assert r.flack == pytest.approx(twin_fraction, abs=0.05)
    assert any("inversion twin" in w for w in r.meta["warnings"]) == warned


@pytest.mark.parametrize("name, published", [("ni_cubic_i43d", (0.006, 0.007)), ("phosphazene_p31c", (0.01, 0.03))])
def test_flack_from_parsons_quotients_as_shelxl(name, published):
    """The published models of two measured non-centrosymmetric data sets, not refined:
    Flack x from the quotients of every Friedel pair, as SHELXL gives it (x within one of
    its su, su within 25 %). The pairs are found by class: merged data hold -h as another
    member of its class (30 of phosphazene's 5353 merged reflections had -h itself, and
    without quotients x was fitted to the intensities: su 0.023 and 0.044)."""
    from refractor_core.dataio import load_bundle, load_reflections
    from refractor_core.testing.real_cases import get_case
    from refractor_core.types import Candidate
    from refractor_plugins.refiners.configs import LsqConfig
    from refractor_plugins.refiners.lsq.refiner import USER_MODEL, LsqRefiner

    case = get_case(name)
    bundle = load_bundle(case.reference, block=case.data_block)
    meta = {"instructions": bundle.instructions.model_dump(mode="json")} if bundle.instructions else {}
    r = LsqRefiner(LsqConfig(max_cycles=0)).refine(load_reflections(case.reflections),
                                                   Candidate(structure=bundle.structure, generator=USER_MODEL, meta=meta))
    x, su = published
    assert abs(r.flack - x) < su
    assert "quotients" in r.meta["flack_details"]  # (the CIF's _refine_ls_abs_structure_details)
    assert r.flack_su == pytest.approx(su, rel=0.25)


def test_friedel_pairs_are_found_by_class():
    """In mm2, -h of (1, 2, 3) is held as (1, 2, -3); centric reflections have no mate."""
    from refractor_core.crystal.merging import friedel_merged_count, friedel_pairs

    hkl = np.array([[1, 2, 3], [2, 0, 0], [1, 2, -3], [1, 1, 1], [0, 2, 1], [0, 2, -1]])
    i, j = friedel_pairs(hkl, "P m m 2")
    assert list(zip(i.tolist(), j.tolist())) == [(0, 2), (4, 5)]
    assert friedel_merged_count(hkl, "P m m 2") == 4
    assert len(friedel_pairs(hkl, "P m m m")[0]) == 0


def test_flack_without_friedel_pairs_carries_its_correlations():
    """Data of a polar group (Pna2₁, Cu Kα) without Friedel pairs: no Parsons quotients, so
    x is fitted to the intensities. Its su is the one refining x as an inversion-twin
    fraction gives (a fit with the model held ignores x's correlation with the positions:
    on measured one-hemisphere Pca2₁ data it moved by 24 of its su between two starts
    0.02 Å apart), and starts whose S and Cl are 0.03 Å off along the polar axis, not
    refined, give x within 2.5 su of it (one linear step from there, not the minimum)."""
    from refractor_core.crystal.merging import friedel_pairs
    from refractor_core.simulation import simulate
    from refractor_core.types import Candidate
    from refractor_plugins.refiners.configs import LsqConfig
    from refractor_plugins.refiners.lsq.refiner import USER_MODEL, LsqRefiner

    rng = np.random.default_rng(3)
    cell = UnitCell(a=9.1, b=10.3, c=7.4, alpha=90, beta=90, gamma=90)
    sites = [Site(label=f"{el}{k}", element=el, xyz=tuple(rng.random(3)), u_iso=0.03)
             for k, el in enumerate(["S", "Cl", "O", "O", "N", "C", "C", "C", "C"])]
    truth = Structure(cell=cell, space_group=SpaceGroupRef.from_symbol("P n a 21"), sites=sites)
    data = simulate(truth, seed=5, wavelength=1.54178)
    one = np.ones(data.n, dtype=bool)
    one[friedel_pairs(data.hkl, truth.space_group)[1]] = False  # one member of each pair
    data = data.model_copy(update={"hkl": data.hkl[one], "intensity": data.intensity[one], "sigma": data.sigma[one]})

    def refine(start, **options):
        config = LsqConfig(anisotropic=False, riding_h=False, invert_wrong_hand=False, **options)
        return LsqRefiner(config).refine(data, Candidate(structure=start, generator=USER_MODEL))

    refined_x = refine(truth, flack=True)
    estimated = refine(truth)
    assert estimated.flack_su == pytest.approx(refined_x.flack_su, rel=0.1)
    assert estimated.meta["flack_details"].startswith("no Friedel pairs")
    assert "BASF" in refined_x.meta["flack_details"]
    assert abs(estimated.flack) < 2 * estimated.flack_su
    for dz in (0.03, -0.03):
        moved = [s.model_copy(update={"xyz": (s.xyz[0], s.xyz[1], s.xyz[2] + dz / cell.c)})
                 if s.element in ("S", "Cl") else s for s in sites]
        held = refine(truth.model_copy(update={"sites": moved}), max_cycles=0)
        assert abs(held.flack - estimated.flack) < 2.5 * estimated.flack_su, dz


def test_the_mirror_image_takes_the_instructions_that_came_with_the_data():
    """A model whose restraints came with the data (not with the candidate) is mirrored with
    those restraints, their EQIV operators rewritten for the mirror image (x+1 -> x-1)."""
    from refractor_core.simulation import simulate
    from refractor_core.types import AtomRef, Candidate, RefinementInstructions, RestraintInstruction
    from refractor_plugins.refiners.configs import LsqConfig
    from refractor_plugins.refiners.lsq.refiner import USER_MODEL, mirror_candidate

    cell = UnitCell(a=6.1, b=7.2, c=8.3, alpha=90, beta=90, gamma=90)
    sites = [Site(label="C1", element="C", xyz=(0.9, 0.2, 0.3), u_iso=0.02),
             Site(label="O1", element="O", xyz=(0.1, 0.25, 0.35), u_iso=0.02)]
    structure = Structure(cell=cell, space_group=SpaceGroupRef.from_symbol("P 21 21 21"), sites=sites)
    dfix = RestraintInstruction(kind="DFIX", values=[1.4, 0.02],
                                atoms=[AtomRef(label="C1"), AtomRef(label="O1", symop="x+1,y,z")])
    data = simulate(structure, seed=1).model_copy(update={"instructions": RefinementInstructions(restraints=[dfix])})
    candidate = Candidate(structure=structure, generator=USER_MODEL)
    mirror = mirror_candidate(LsqConfig(), data, candidate, structure)
    (restraint,) = RefinementInstructions.model_validate(mirror.meta["instructions"]).restraints
    assert restraint.atoms[1].symop == inverted_operator("x+1,y,z", np.zeros(3))
    assert restraint.atoms[1].symop != "x+1,y,z"
    assert np.allclose(mirror.structure.sites[0].xyz, (-0.9, -0.2, -0.3))
    ignored = mirror_candidate(LsqConfig(ignore_instructions=True), data, candidate, structure)
    assert not RefinementInstructions.model_validate(ignored.meta["instructions"]).restraints


@pytest.mark.slow
def test_refiner_inverts_a_model_of_the_wrong_hand():
    """Measured phosphazene (P31c, Flack -0.01(5) published): started from the mirror image of
    the published model, the refinement finds Flack ≈ 1, refines the inverted model and ends
    at Flack ≈ 0 with the published atoms."""
    from refractor_core.dataio import load_bundle, load_reflections
    from refractor_core.testing.real_cases import get_case
    from refractor_core.types import Candidate
    from refractor_plugins.refiners.configs import LsqConfig
    from refractor_plugins.refiners.lsq.refiner import USER_MODEL, LsqRefiner

    case = get_case("phosphazene_p31c")
    data = load_reflections(case.reflections)
    bundle = load_bundle(case.reference, block=case.data_block)
    mirror, instructions = inverted_structure(bundle.structure, bundle.instructions)
    candidate = Candidate(structure=mirror, generator=USER_MODEL, meta={"instructions": instructions.model_dump(mode="json")})
    r = LsqRefiner(LsqConfig()).refine(data, candidate)
    assert r.meta["inverted"]["flack_before"] > 0.8
    assert abs(r.flack) < 0.15
    published = {s.label.upper(): np.array(s.xyz) for s in bundle.structure.sites if s.element != "H"}
    from refractor_core.crystal.cell import orthogonalization_matrix

    m = orthogonalization_matrix(bundle.structure.cell)
    for s in r.structure.sites:
        if s.label.upper() in published:
            d = np.asarray(s.xyz) - published[s.label.upper()]
            assert np.linalg.norm(m @ (d - np.round(d))) < 0.1, s.label
    assert any("the model has the wrong hand" in line for line in r.log)


def test_classifier_names_an_enantiomorphic_pair():
    """Simulated data of a P4₁2₁2 structure: the classifier cannot choose between P4₁2₁2 and
    P4₃2₁2 and says why, pointing at the Flack parameter."""
    from refractor_core.simulation import simulate
    from refractor_plugins.classifiers.analysis import analyse

    rng = np.random.default_rng(3)
    cell = UnitCell(a=8.3, b=8.3, c=15.1, alpha=90, beta=90, gamma=90)
    sites = [Site(label=f"{el}{k}", element=el, xyz=tuple(rng.random(3)), u_iso=0.025)
             for k, el in enumerate(["Br", "C", "C", "C", "N", "O"])]
    data = simulate(Structure(cell=cell, space_group=SpaceGroupRef.from_symbol("P 41 21 2"), sites=sites), seed=2)
    res = analyse(data)
    top = {h.space_group.number for h in res.hypotheses[:2]}
    assert top == {92, 96}
    assert any("are enantiomorphs" in w and "Flack" in w for w in res.warnings)


def test_run_summary_reports_an_inverted_model(capsys):
    """`refractor run` says when the result is the mirror image of the refined model."""
    from refractor_core.commands.run import print_summary

    summary = {"solved": True, "space_group": "P 41 21 2", "space_group_number": 92, "R1": 0.03, "wR2": 0.08,
               "GooF": 1.0, "seconds": 1.0, "seed": 1, "flack": 0.02, "flack_su": 0.05,
               "inverted": {"flack_before": 0.97, "flack_su_before": 0.05, "space_group_before": "P 43 21 2"},
               "formula_found": None, "cif": "x.cif", "output": "out"}
    print_summary(summary, 0)
    out = capsys.readouterr().out
    assert "Flack x = 0.020(0.050)" in out and "wrong hand" in out and "P 41 21 2" in out


def test_run_summary_says_when_the_data_do_not_determine_the_hand(capsys):
    """L-alanine (C, H, N, O with Mo radiation) refines to Flack x = 0.74(47): the summary
    says these data do not determine the absolute structure, and says nothing for 0.02(5)."""
    from refractor_core.commands.run import print_summary

    summary = {"solved": True, "space_group": "P 21 21 21", "space_group_number": 19, "R1": 0.03, "wR2": 0.08,
               "GooF": 1.0, "seconds": 1.0, "seed": 1, "flack": 0.74, "flack_su": 0.47, "inverted": None,
               "formula_found": None, "cif": "x.cif", "output": "out"}
    print_summary(summary, 0)
    assert "do not determine the absolute structure" in capsys.readouterr().out
    print_summary({**summary, "flack": 0.02, "flack_su": 0.05}, 0)
    out = capsys.readouterr().out
    assert "Flack x = 0.020(0.050)" in out and "absolute structure" not in out
