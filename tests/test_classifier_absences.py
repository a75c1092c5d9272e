"""The classical space-group classifier `absences` on simulated and measured data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from refractor_core.crystal.lattice import transform_cell, transform_hkl
from refractor_core.crystal.observations import model_intensities
from refractor_core.crystal.spacegroup_tables import transformed_setting
from refractor_core.errors import InputError
from refractor_core.simulation import simulate
from refractor_core.testing.invariance import apply_friedel, shuffle_reflections, to_symmetry_equivalents
from refractor_core.testing.samples import sample_structure
from refractor_core.types import ReflectionData, Site, SpaceGroupRef, Structure, UnitCell
from refractor_plugins.classifiers.absences import AbsencesClassifier
from refractor_plugins.classifiers.configs import AbsencesConfig

CLASSIFIER = AbsencesClassifier()


def measured_everything(structure: Structure, d_min: float = 0.9, seed: int = 0, i_over_sigma: float = 20.0) -> ReflectionData:
    """Every reflection of the limiting sphere measured once, absences included (raw data)."""
    cell = structure.cell
    lim = [int(x / d_min) for x in (cell.a, cell.b, cell.c)]
    g = np.stack(np.meshgrid(*[np.arange(-m, m + 1) for m in lim], indexing="ij"), axis=-1).reshape(-1, 3)
    from refractor_core.crystal.cell import inv_d_squared

    q = inv_d_squared(cell, g)
    hkl = g[(q > 0) & (q <= 1 / d_min**2)]
    f2 = model_intensities(structure, hkl, wavelength=None)
    rng = np.random.default_rng(seed)
    scale = 100.0 / np.median(f2[f2 > 1e-9 * f2.max()])
    f2 = f2 * scale
    sigma = np.sqrt(f2 * 100.0 / i_over_sigma**2 + 1.0 + (0.02 * f2) ** 2)
    return ReflectionData(hkl=hkl, intensity=f2 + rng.standard_normal(len(f2)) * sigma, sigma=sigma, cell=cell, formula=None)


def pyxtal_structure(number: int, seed: int, counts=(8, 2, 2)) -> Structure:
    import gemmi
    from pyxtal import pyxtal

    mult = len(gemmi.SpaceGroup(number).operations())
    crystal = pyxtal()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crystal.from_random(3, number, ["C", "N", "O"], [mult * c for c in counts], factor=1.1, random_state=seed)
        pm = crystal.to_pymatgen()
    lat = pm.lattice
    cell = UnitCell(a=lat.a, b=lat.b, c=lat.c, alpha=lat.alpha, beta=lat.beta, gamma=lat.gamma)
    sites = [Site(label=f"A{i}", element=str(s.specie), xyz=tuple(s.frac_coords), u_iso=0.02) for i, s in enumerate(pm.sites)]
    return Structure(cell=cell, space_group=SpaceGroupRef.from_symbol("P 1"), sites=sites)


def top(data: ReflectionData, **options):
    cfg = AbsencesConfig(**options) if options else None
    hyps = (AbsencesClassifier(cfg) if cfg else CLASSIFIER).classify(data)
    return hyps


@pytest.fixture(scope="module")
def pr_raw() -> ReflectionData:
    return measured_everything(sample_structure(), d_min=0.8)


def test_p21n_with_measured_absences(pr_raw):
    hyps = top(pr_raw)
    assert hyps[0].space_group.symbol == "P 1 21/n 1"
    assert hyps[0].probability > 0.9
    ev = hyps[0].evidence
    assert ev["laue"] == "1 2/m 1" and ev["centring"] == "P"
    assert ev["n_absent_checked"] > 10 and ev["n_absent_violations"] == 0
    assert ev["absences_llr"] > 10
    for key in ("r_int", "e_statistics", "prior", "laue_llr", "worst_absent_i_over_sigma", "centrosymmetric"):
        assert key in ev
    probs = [h.probability for h in hyps]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-9


def test_reindexed_data_give_the_setting_of_their_axes(pr_raw):
    p = np.array([[0, 0, -1], [0, 1, 0], [1, 0, 1]])  # n-glide cell choice -> c-glide
    want = transformed_setting(SpaceGroupRef.from_symbol("P 1 21/n 1"), p)
    assert want.symbol == "P 1 21/c 1"
    data = pr_raw.model_copy(update={"hkl": transform_hkl(pr_raw.hkl, p), "cell": transform_cell(pr_raw.cell, p)})
    hyps = top(data)
    assert hyps[0].space_group.symbol == "P 1 21/c 1"
    assert hyps[0].space_group.hall == want.hall


def test_order_friedel_and_equivalents_do_not_change_the_answer(pr_raw):
    ref = top(pr_raw)[0]
    for variant in (shuffle_reflections(pr_raw, seed=3), apply_friedel(pr_raw, fraction=0.5, seed=4)):
        h = top(variant)[0]
        assert h.space_group.symbol == ref.space_group.symbol
        assert h.probability == pytest.approx(ref.probability, abs=1e-6)
    moved = to_symmetry_equivalents(pr_raw, "P 1 21/n 1", seed=5)
    assert top(moved)[0].space_group.symbol == ref.space_group.symbol


def test_absences_removed_by_the_processing_are_recognised():
    structure = _in_group(pyxtal_structure(19, seed=5), "P 21 21 21")
    data = simulate(structure, d_min=0.8, redundancy=3.0, seed=1)
    hyps = top(data)
    assert hyps[0].space_group.symbol == "P 21 21 21"
    ev = hyps[0].evidence
    assert ev["n_absent_checked"] == 0 and ev["n_absent_missing"] > 0
    assert ev["removed_absences_bonus"] > 5


def test_merged_files_and_merging_note():
    structure = sample_structure()
    data = simulate(structure, d_min=0.8, redundancy=1.0, seed=2)
    c = AbsencesClassifier()
    analysis = c.analyse(data)
    assert analysis.hypotheses[0].space_group.symbol == "P 1 21/n 1"
    assert any("merged" in n for n in analysis.notes)


def test_c_centring_and_glide_with_lattice_reflections_never_integrated():
    structure = _in_group(pyxtal_structure(15, seed=11), "C 1 2/c 1")
    raw = measured_everything(structure, d_min=0.85, seed=3)
    hyps = top(raw)
    assert hyps[0].space_group.number in (15, 9)
    assert {h.space_group.symbol for h in hyps[:2]} == {"C 1 2/c 1", "C 1 c 1"}
    assert hyps[0].evidence["centring"] == "C"
    # drop the C-forbidden reflections, as integration in a C lattice does
    from refractor_core.crystal.lattice import centring_vectors, violates_centring

    kept = raw.subset(~violates_centring(raw.hkl, centring_vectors("C")))
    hyps2 = top(kept)
    assert hyps2[0].space_group.symbol == hyps[0].space_group.symbol
    assert hyps2[0].evidence["n_absent_checked"] > 0  # the c-glide absences are still measured


def test_orthorhombic_axis_permutation():
    structure = _in_group(pyxtal_structure(33, seed=21), "P n a 21")
    raw = measured_everything(structure, d_min=0.85, seed=4)
    p = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]])
    data = raw.model_copy(update={"hkl": transform_hkl(raw.hkl, p), "cell": transform_cell(raw.cell, p)})
    hyps = top(data)
    names = [h.space_group.symbol for h in hyps[:2]]
    assert "P n 21 a" in names  # Pna21 in these axes (Pnma's setting P n m a is its only rival)
    assert hyps[0].evidence["laue"] == "m m m"


def test_monoclinic_data_in_a_metrically_orthorhombic_cell_are_not_promoted():
    st = _in_group(pyxtal_structure(14, seed=8), "P 1 21/c 1")
    square = st.model_copy(update={"cell": UnitCell(a=st.cell.a, b=st.cell.b, c=st.cell.c, beta=90.0)})
    raw = measured_everything(square, d_min=0.85, seed=5)
    analysis = CLASSIFIER.analyse(raw)
    best = analysis.hypotheses[0]
    assert best.evidence["laue"] == "1 2/m 1"
    assert best.space_group.symbol == "P 1 21/c 1"
    mmm = next(r for r in analysis.laue_groups if r["laue"] == "m m m")
    assert mmm["llr"] < best.evidence["laue_llr"]
    disagree = [o for o in analysis.operators if o["status"] == "disagree"]
    assert {o["operator"] for o in disagree} == {"2 [100]", "2 [001]"}


def test_p21_against_p21m_is_left_to_e_statistics_and_priors():
    st = _in_group(pyxtal_structure(4, seed=31, counts=(10, 3, 3)), "P 1 21 1")
    hyps = top(measured_everything(st, d_min=0.8, seed=6))
    names = [h.space_group.symbol for h in hyps]
    assert names[0] == "P 1 21 1"
    assert "P 1 21/m 1" in names[:3]  # same absences: only E statistics and priors separate them
    assert hyps[0].evidence["e_statistics"]["mean_abs_e2_minus_1"] < 0.85


def test_no_cell_and_too_few_reflections_are_clear_errors(pr_raw):
    with pytest.raises(InputError, match="unit cell"):
        CLASSIFIER.classify(pr_raw.model_copy(update={"cell": None}))
    with pytest.raises(InputError, match="too few"):
        CLASSIFIER.classify(pr_raw.subset(np.arange(10)))


def test_config_trims_the_list(pr_raw):
    hyps = top(pr_raw, max_hypotheses=2, min_probability=0.0)
    assert len(hyps) == 2


def test_registered_component_builds():
    from refractor_core.plugins import get_registry

    registry = get_registry()
    assert "absences" in registry.names("classifier")
    c = registry.build("classifier", "absences", {"metric_tolerance": 0.03})
    assert isinstance(c, AbsencesClassifier) and c.config.metric_tolerance == 0.03
    from refractor_core.errors import RefractorError

    with pytest.raises(RefractorError):
        registry.build("classifier", "absences", {"no_such_option": 1})


def _in_group(p1: Structure, symbol: str) -> Structure:
    """A P1 atom list relabelled with the group it was generated in (asymmetric unit kept)."""
    from refractor_core.crystal.cell import orthogonalization_matrix
    from refractor_core.crystal.symmetry import SymmetryOps

    sg = SpaceGroupRef.from_symbol(symbol)
    sym = SymmetryOps.from_space_group(sg)
    m = orthogonalization_matrix(p1.cell)
    xyz = np.mod(np.array([s.xyz for s in p1.sites]), 1.0)
    el = np.array([s.element for s in p1.sites])
    covered = np.zeros(len(xyz), dtype=bool)
    keep = []
    for i in range(len(xyz)):
        if covered[i]:
            continue
        keep.append(i)
        d = sym.images(xyz[i])[:, None, :] - xyz[None, :, :]
        d -= np.round(d)
        dist = np.linalg.norm(d @ m.T, axis=-1).min(axis=0)
        covered |= (dist < 0.05) & (el == el[i])
    assert len(keep) < len(xyz) or sym.n == 1, "structure lacks the claimed symmetry"
    return p1.model_copy(update={"space_group": sg, "sites": [p1.sites[i] for i in keep]})


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pr_sulfate_hydroxide", "ethylene_oxide", "cu_cod1501469", "agnafe_molybdate", "fe_perchlorate_hydrate", "urea"])
def test_real_cases_have_the_published_group_in_the_top_three(name, real_case):
    from refractor_core.dataio import load_reflections

    case = real_case(name)
    data = load_reflections(case.reflections).model_copy(update={"space_group_hint": None})
    hyps = CLASSIFIER.classify(data)
    assert case.sg_number in [h.space_group.number for h in hyps[:3]]


def test_probability_model_is_normalised_and_keeps_the_order():
    from refractor_plugins.classifiers.analysis import N_TERMS, hypothesis_probabilities

    rng = np.random.default_rng(0)
    terms = rng.normal(size=(12, N_TERMS))
    laue = np.repeat(np.arange(3), 4)
    terms[:, 0] = np.repeat([5.0, 1.0, 0.0], 4)  # one Laue log-likelihood per group
    p0 = hypothesis_probabilities(terms, laue, (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0))
    p1 = hypothesis_probabilities(terms, laue, (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0), robust=0.1)
    assert p0.sum() == pytest.approx(1.0) and p1.sum() == pytest.approx(1.0)
    assert np.array_equal(np.argsort(-p0), np.argsort(-p1))
    assert p1.max() < p0.max()
    # the Laue group with the best agreement carries most of the probability
    assert p0[:4].sum() > p0[4:].sum()


def test_merge_group_is_found_in_merged_files():
    from refractor_core.crystal.lattice import metric_symmetry
    from refractor_core.crystal.spacegroup_tables import compatible_settings, laue_label
    from refractor_core.crystal.lattice import rotation_key
    from refractor_plugins.classifiers.laue import merge_group

    structure = sample_structure()
    merged = simulate(structure, d_min=0.8, redundancy=1.0, anomalous=False, seed=4)
    unmerged = simulate(structure, d_min=0.8, redundancy=3.0, anomalous=False, seed=4)
    groups = [s.laue_rotations for s in compatible_settings(metric_symmetry(structure.cell))]
    found = merge_group(merged.hkl, groups)
    assert found is not None and laue_label(rotation_key(found)) == "1 2/m 1"
    # Friedel-merge the unmerged file first, as the classifier does: equivalents remain
    from refractor_core.crystal.orbits import orbit_representatives

    friedel = np.unique(orbit_representatives(unmerged.hkl, np.eye(3, dtype=np.int64)[None]), axis=0)
    assert merge_group(friedel, groups) is None


def test_merged_file_of_an_acentric_crystal_keeping_bijvoet_mates():
    """P4₁2₁2 merged under 422 with Friedel mates apart (the usual merged file of an
    acentric crystal): the merging is recognised on the file's rows, not promoted to mmm."""
    from refractor_core.crystal.lattice import metric_symmetry, rotation_key
    from refractor_core.crystal.spacegroup_tables import compatible_settings, laue_label
    from refractor_plugins.classifiers.laue import bijvoet_merge_group

    structure = _in_group(pyxtal_structure(92, seed=3, counts=(6, 1, 1)), "P 41 21 2")
    structure = structure.model_copy(update={"sites": [*structure.sites[:-1], structure.sites[-1].model_copy(update={"element": "Br"})]})
    merged = simulate(structure, d_min=0.8, redundancy=1.0, seed=5)
    unmerged = simulate(structure, d_min=0.8, redundancy=3.0, seed=5)
    settings = [s for s in compatible_settings(metric_symmetry(structure.cell)) if not s.centrosymmetric]
    pgs = list({rotation_key(s.point_group): (s.point_group, s.laue_rotations) for s in settings}.values())
    found = bijvoet_merge_group(merged.hkl, pgs)
    assert found is not None and laue_label(rotation_key(found)) == "4/m m m"
    assert bijvoet_merge_group(unmerged.hkl, pgs) is None
    hyps = top(merged)
    assert hyps[0].space_group.number in (92, 96)  # the enantiomorph cannot be told apart
    assert {h.space_group.number for h in hyps[:2]} == {92, 96}


def test_bijvoet_differences_speak_for_a_missing_centre_only_when_predicted():
    """Friedel mates of an acentric crystal with a heavy anomalous scatterer differ; those
    of a centrosymmetric one do not; without a formula nothing is predicted."""
    from refractor_core.crystal.symmetry import SymmetryOps
    from refractor_plugins.classifiers.absence_scoring import _family_codes
    from refractor_plugins.classifiers.bijvoet import bijvoet_evidence, friedel_pairs

    def with_heavy(structure: Structure, element: str) -> Structure:
        sites = [*structure.sites[:-1], structure.sites[-1].model_copy(update={"element": element})]
        return structure.model_copy(update={"sites": sites})

    def evidence(structure: Structure, formula: str | None = "auto"):
        from refractor_core.simulation import NoiseModel

        data = simulate(structure, d_min=0.8, redundancy=3.0, noise=NoiseModel(median_i_over_sigma=40.0), seed=7)
        pairs = friedel_pairs(data.hkl, data.intensity, data.sigma)
        laue = SymmetryOps.from_space_group(structure.space_group).laue_rotations()
        proper = np.array([r if round(np.linalg.det(r)) > 0 else -r for r in laue])
        general = _family_codes(pairs.hkl, np.unique(proper, axis=0)) == 0
        f = data.formula if formula == "auto" else formula
        return bijvoet_evidence(pairs, general, data.cell, f, data.wavelength)

    acentric = with_heavy(_in_group(pyxtal_structure(19, seed=5, counts=(4, 1, 1)), "P 21 21 21"), "Cu")
    centric = with_heavy(_in_group(pyxtal_structure(14, seed=2, counts=(4, 1, 1)), "P 1 21/c 1"), "Cu")
    ev_a, ev_c = evidence(acentric), evidence(centric)
    assert ev_a.stats["predicted_signal"] > 0.5 and ev_a.llr < -2.0, ev_a.as_dict()
    assert ev_c.llr > 0.5, ev_c.as_dict()
    assert evidence(acentric, formula=None).llr == 0.0


def test_special_position_pseudo_centring_is_not_taken_for_a_centred_lattice():
    """Pb on the special positions 2a and 2d of P2₁/c sit on an F-centred sublattice: the
    C-centring-violating reflections come from the light atoms only (a few % of the mean)
    but are clearly measured. Modelled as a systematically weak, present class they stop
    voting for C2/c; without that alternative the per-reflection leak explains them."""
    rng = np.random.default_rng(3)
    sites = [Site(label="Pb1", element="Pb", xyz=(0, 0, 0), u_iso=0.02), Site(label="Pb2", element="Pb", xyz=(0.5, 0, 0.5), u_iso=0.02)]
    sites += [Site(label=f"C{i}", element="C", xyz=tuple(rng.uniform(0, 1, 3)), u_iso=0.03) for i in range(6)]
    structure = Structure(
        cell=UnitCell(a=7.1, b=9.3, c=10.2, alpha=90, beta=101, gamma=90),
        space_group=SpaceGroupRef.from_symbol("P 1 21/c 1"),
        sites=sites,
    )
    data = measured_everything(structure, d_min=0.8, i_over_sigma=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keep_all = {"max_hypotheses": 10_000, "min_probability": 0.0}
        weak = AbsencesClassifier(AbsencesConfig(**keep_all)).analyse(data)
        no_weak = AbsencesClassifier(AbsencesConfig(weak_class_share=0.0, **keep_all)).analyse(data)

    def centring_llr(analysis):
        return next(h for h in analysis.hypotheses if h.space_group.symbol == "C 1 2/c 1").evidence["centring_llr"]

    assert weak.hypotheses[0].space_group.symbol == "P 1 21/c 1"
    assert centring_llr(no_weak) > 100.0  # the per-reflection leak alone takes the class for absent
    assert centring_llr(weak) < 0.0


def test_e_statistics_far_from_both_random_atom_values_say_little_about_the_centre():
    """Centric and acentric Wilson |E| give clear evidence; a hypercentric distribution (a
    product of two centric variables, as special positions and rational coordinates give)
    and a sub-acentric one are far from both random-atom values and count for ~nothing."""
    from refractor_plugins.classifiers.centrosymmetry import centrosymmetry_evidence, random_atom_plausibility

    rng = np.random.default_rng(5)
    n = 3000
    centric = np.abs(rng.standard_normal(n))
    acentric = np.sqrt(rng.exponential(size=n))
    hyper = np.abs(rng.standard_normal(n) * rng.standard_normal(n))
    hyper /= np.sqrt(np.mean(hyper**2))
    flat = np.sqrt(rng.uniform(0.7, 1.3, size=n))
    assert centrosymmetry_evidence(centric).llr > 0.5
    assert centrosymmetry_evidence(acentric).llr < -0.5
    assert abs(centrosymmetry_evidence(hyper).llr) < 0.05
    assert abs(centrosymmetry_evidence(flat).llr) < 0.05
    assert random_atom_plausibility(0.74, 500, 0.05, 0.9) > 0.9
    assert random_atom_plausibility(0.74, 500, 0.05, 1.0) == 1.0


def test_a_row_and_the_zone_perpendicular_to_it_are_different_families():
    """Under 2/m (b unique) 0k0 lies on the 2-fold axis and h0l in the plane it reverses:
    the local completeness of one (a blind cone along b*) must not be judged by the other."""
    from refractor_core.crystal.spacegroup_tables import setting_for
    from refractor_plugins.classifiers.absence_scoring import _family_codes

    rots = setting_for(SpaceGroupRef.from_symbol("P 1 21/c 1")).laue_rotations
    codes = _family_codes(np.array([[0, 3, 0], [2, 0, -1], [1, 2, 3]]), rots)
    assert codes[2] == 0
    assert codes[0] != 0 and codes[1] != 0 and codes[0] != codes[1]


def test_zone_centricity_of_point_groups():
    """h0l is centric under a 2-fold along b (h R = -h), acentric in the mirror plane of m,
    and every reflection is centric with an inversion centre; general reflections never are
    in an acentric group."""
    from refractor_core.crystal.spacegroup_tables import all_settings
    from refractor_plugins.classifiers.zones import centric_in

    pg = {s.symbol: s.point_group for s in all_settings() if s.symbol in ("P 1 2 1", "P 1 m 1", "P 1 2/m 1")}
    hkl = np.array([[1, 0, 2], [2, 0, -3], [1, 2, 3], [0, 3, 0]])
    assert centric_in(pg["P 1 2 1"], hkl).tolist() == [True, True, False, False]
    assert centric_in(pg["P 1 m 1"], hkl).tolist() == [False, False, False, True]
    assert centric_in(pg["P 1 2/m 1"], hkl).all()


def test_zone_statistics_tell_c2_from_cm():
    """C2 and Cm share Laue group and absences; only the centricity of h0l (centric in C2,
    acentric in Cm) and of 0k0 tells them apart: the zone term must favour C2 on C2 data."""
    import gemmi
    from pyxtal import pyxtal
    from pyxtal.symmetry import Group

    general = Group(5)[0]  # every atom on the general position: random-atom zone statistics
    label = f"{general.multiplicity}{general.letter}"
    crystal = pyxtal()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crystal.from_random(3, 5, ["C", "N", "O"], [32, 8, 8], sites=[[label] * 8, [label] * 2, [label] * 2], factor=1.1, random_state=11)
        pm = crystal.to_pymatgen()
    lat = pm.lattice
    cell = UnitCell(a=lat.a, b=lat.b, c=lat.c, alpha=lat.alpha, beta=lat.beta, gamma=lat.gamma)
    sites = [Site(label=f"A{i}", element=str(s.specie), xyz=tuple(s.frac_coords), u_iso=0.02) for i, s in enumerate(pm.sites)]
    structure = Structure(cell=cell, space_group=SpaceGroupRef.from_symbol("P 1"), sites=sites)
    assert gemmi.SpaceGroup(5).hm == "C 1 2 1"
    data = measured_everything(structure, d_min=0.7, i_over_sigma=30.0)
    hyps = top(data, min_probability=0.0, max_hypotheses=1000, zones_always=True)
    zone = {h.space_group.symbol: h.evidence["zone_term"] for h in hyps}
    assert zone["C 1 2 1"] > zone["C 1 m 1"] + 0.3


def test_random_atom_separation_shrinks_with_few_or_dominant_atoms():
    """The centric and acentric expectations of <|E²-1|> stay apart down to ~8 atoms per
    primitive cell, meet for two atoms or one dominating heavy atom, and keep Wilson's
    separation when the composition is unknown or large."""
    from refractor_plugins.classifiers.centrosymmetry import centrosymmetry_evidence, random_atom_separation

    assert random_atom_separation(None, None) == 1.0
    assert random_atom_separation("C20N4O4", 4) == 1.0  # 112 atoms: many-atom limit
    eight = random_atom_separation("C6NO", 1)
    assert 0.8 < eight < 1.1
    assert random_atom_separation("C6NO", 2, n_centring=2) == pytest.approx(eight)
    assert random_atom_separation("Cl", 2) < 0.1
    assert random_atom_separation("TaLi7O6", 1) < 0.6
    # acentric-looking E with two atoms per cell: no evidence either way
    e = np.sqrt(np.random.default_rng(3).exponential(size=2000))
    assert abs(centrosymmetry_evidence(e, formula="Cl", z=2).llr) < 0.1
    assert centrosymmetry_evidence(e, formula="C6NO", z=1).llr < -0.5


def test_too_few_atoms_for_general_positions_say_nothing_about_the_centre():
    """NaCl has two atoms per primitive cell against the 48 operations of m-3m: they sit on
    special positions and the E statistics carry (almost) no evidence; eight atoms in P-1
    (order 2) can all be general."""
    from refractor_plugins.classifiers.centrosymmetry import centrosymmetry_evidence, general_position_share

    assert general_position_share("NaCl", 4, n_centring=4, laue_order=48) == pytest.approx(2 / 48)
    assert general_position_share("C6NO", 1, laue_order=2) == 1.0
    assert general_position_share("C6NO", 1, laue_order=0) == 1.0
    e = np.sqrt(np.random.default_rng(4).exponential(size=2000))
    assert abs(centrosymmetry_evidence(e, formula="NaCl", z=4, n_centring=4, laue_order=48).llr) < 0.1
    assert centrosymmetry_evidence(e, formula="C6NO", z=1, laue_order=2).llr < -0.5
