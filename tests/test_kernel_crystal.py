"""Cell metrics, symmetry layer, formula parsing, merging, R factors and Wilson statistics."""

from __future__ import annotations

import numpy as np
import pytest

from refractor_core.crystal import cell as C
from refractor_core.crystal.formula import format_formula, parse_formula
from refractor_core.crystal.merging import merge_arrays
from refractor_core.crystal.rfactors import agreement, extinction_factor, r1, shelxl_weights
from refractor_core.crystal.symmetry import SymmetryOps, canonical_hkl, hkl_keys, keys_to_hkl
from refractor_core.crystal.wilson import e_statistics, normalized_e, wilson_plot
from refractor_core.errors import InputError
from refractor_core.types import ReflectionData, SpaceGroupRef, UnitCell

CELL = UnitCell(a=10.1, b=12.3, c=8.7, alpha=91.0, beta=104.0, gamma=89.0)


def test_cell_metrics_match_gemmi():
    g = CELL.gemmi()
    assert np.allclose(C.orthogonalization_matrix(CELL), np.array(g.orth.mat.tolist()))
    hkl = np.array([[1, 2, 3], [-2, 0, 5], [4, -1, 0]])
    assert np.allclose(C.d_spacing(CELL, hkl), [g.calculate_d(list(h)) for h in hkl.tolist()])
    assert np.isclose(CELL.volume, g.volume)


def test_adp_conversions_round_trip_and_u_equiv():
    u = np.array([0.02, 0.03, 0.025, 0.001, 0.004, -0.002])
    assert np.allclose(C.u_star_to_u_cif(CELL, C.u_cif_to_u_star(CELL, u)), u)
    assert np.allclose(C.u_cart_to_u_cif(CELL, C.u_cif_to_u_cart(CELL, u)), u)
    iso = C.u_iso_to_u_cif(CELL, 0.04)
    assert np.isclose(C.u_equiv(CELL, iso), 0.04)
    assert C.is_positive_definite(CELL, u)
    assert not C.is_positive_definite(CELL, [0.02, -0.01, 0.02, 0, 0, 0])


def test_impossible_cell_is_rejected():
    with pytest.raises(ValueError):
        UnitCell(a=5, b=5, c=5, alpha=120, beta=120, gamma=120)
    with pytest.raises(ValueError):
        UnitCell(a=-5, b=5, c=5)


def test_site_symmetry_orders_from_gemmi_operators():
    sym = SymmetryOps.from_space_group("C 1 2/c 1")
    cell = UnitCell(a=10, b=12, c=8, beta=105)
    orders = sym.site_symmetry_order(cell, np.array([[0, 0.3, 0.25], [0.1, 0.2, 0.3], [0, 0, 0], [0.25, 0.25, 0]]))
    assert orders.tolist() == [2, 1, 2, 2]
    fm3m = SymmetryOps.from_space_group("F m -3 m")
    assert fm3m.site_symmetry_order(UnitCell(a=5.64, b=5.64, c=5.64), [0, 0, 0]) == 48
    # an atom 0.1 Å off the 2-fold axis is not snapped onto it with the default 0.05 Å tolerance
    assert sym.site_symmetry_order(cell, [0.01, 0.3, 0.25]) == 1


def test_nearest_image_distance_takes_symmetry_and_lattice_translations():
    sym = SymmetryOps.from_space_group("P -1")
    cell = UnitCell(a=10, b=10, c=10)
    # -x of (0.1, 0.2, 0.3), moved by a lattice translation, is 0.1 Å (0.01 in x) from (0.91, 0.8, 0.7)
    assert sym.nearest_image_distance(cell, [0.91, 0.8, 0.7], [0.1, 0.2, 0.3]) == pytest.approx(0.1)
    # identity image through a translation: (1.05, 0.2, 0.3) is 0.5 Å from (0.1, 0.2, 0.3)
    assert sym.nearest_image_distance(cell, [1.05, 0.2, 0.3], [0.1, 0.2, 0.3]) == pytest.approx(0.5)
    # the nearest of several targets, and the per-operation distances
    assert sym.nearest_image_distance(cell, [0.5, 0.5, 0.5], [[0.1, 0.2, 0.3], [0.52, 0.5, 0.5]]) == pytest.approx(0.2)
    assert sym.image_distances(cell, [0.1, 0.2, 0.3], [0.1, 0.2, 0.3]).shape == (2,)


def test_special_position_constraints():
    sym = SymmetryOps.from_space_group("C 1 2/c 1")
    cell = UnitCell(a=10, b=12, c=8, beta=105)
    c = sym.special_position(cell, [0.001, 0.3, 0.2502])
    assert c.order == 2
    assert np.allclose(c.xyz, [0.0, 0.3, 0.25])
    assert c.position_basis.shape == (3, 1) and np.allclose(np.abs(c.position_basis[:, 0]), [0, 1, 0])
    assert c.ustar_basis.shape == (6, 4)  # U11, U22, U33, U13 free on a 2-fold along b
    general = sym.special_position(cell, [0.1, 0.2, 0.3])
    assert general.position_basis.shape == (3, 3) and general.ustar_basis.shape == (6, 6)


def test_absences_epsilon_centric():
    sym = SymmetryOps.from_space_group("P 1 21/c 1")
    hkl = np.array([[0, 1, 0], [0, 2, 0], [1, 0, 1], [1, 0, 2], [1, 2, 3]])
    assert sym.is_absent(hkl).tolist() == [True, False, True, False, False]
    assert sym.is_centric(hkl).all()
    assert sym.epsilon(np.array([[0, 2, 0], [1, 2, 3]])).tolist() == [2, 1]


def test_canonical_hkl_groups_equivalents():
    sym = SymmetryOps.from_space_group("P 1 21/c 1")
    h = np.array([[1, 2, 3], [-1, 2, -3], [-1, -2, -3], [1, -2, 3], [1, 2, -3]])
    rep = canonical_hkl(h, sym.point_group_rotations(), friedel=True)
    assert (rep[:4] == rep[0]).all() and not (rep[4] == rep[0]).all()
    assert (keys_to_hkl(hkl_keys(h)) == h).all()


def test_formula_parsing_and_unknown_elements():
    assert parse_formula("C12 H22 O11") == {"C": 12, "H": 22, "O": 11}
    assert parse_formula("CH4N2O") == {"C": 1, "H": 4, "N": 2, "O": 1}
    assert parse_formula("Ag0.6 Fe Mo2 Na0.4 O8")["Ag"] == pytest.approx(0.6)
    assert format_formula({"O": 11, "C": 12, "H": 22}) == "C12 H22 O11"
    assert parse_formula("Ca3(PO4)2") == {"Ca": 3, "P": 2, "O": 8}
    assert parse_formula("[Fe(H2O)6]Cl3") == {"Fe": 1, "H": 12, "O": 6, "Cl": 3}
    assert parse_formula("K Al2 (Si3 Al) O10 (OH)2")["O"] == 12
    for bad in ("C12 Xx3", "Q2", "", "C-1", "(CH2", "C12)", "C0"):
        with pytest.raises(InputError):
            parse_formula(bad)


def test_merging_shelx_weights_and_r_int():
    sym = SymmetryOps.from_space_group("P 1 21/c 1")
    hkl = np.array([[1, 2, 3], [-1, 2, -3], [-1, -2, -3], [0, 1, 0], [2, 0, 2]])
    i = np.array([100.0, 110.0, 90.0, 5.0, 40.0])
    s = np.array([5.0, 5.0, 5.0, 1.0, 2.0])
    m = merge_arrays(hkl, i, s, sym, friedel=True)
    assert m.n == 2 and m.n_absences_removed == 1
    row = int(np.argmax(m.multiplicity))
    assert m.multiplicity[row] == 3
    assert m.intensity[row] == pytest.approx((100**2 + 110**2 + 90**2) / 300, rel=1e-12)
    assert m.sigma[row] >= 5.0 / np.sqrt(3)
    assert m.r_int == pytest.approx((abs(100 - m.intensity[row]) + abs(110 - m.intensity[row]) + abs(90 - m.intensity[row])) / 300)
    # in a non-centrosymmetric group Friedel mates stay apart when asked
    p21 = SymmetryOps.from_space_group("P 1 21 1")
    assert merge_arrays(hkl, i, s, p21, friedel=False).n == 3  # {123, -12-3} {-1-2-3} {202}
    assert merge_arrays(hkl, i, s, p21, friedel=True).n == 2


@pytest.mark.parametrize("name, expected", [
    # SHELXL's figures in the published CIFs: θ min/max, R_int, R_σ, and the fractions
    # measured (Laue, point group) to θ_max and θ_full
    ("urea", (3.668, 57.401, None, 0.0148, 0.982, 1.000, 0.562)),
    ("cod1979688", (2.387, 78.476, 0.0302, 0.0149, 0.990, 0.999, 0.985)),
    ("sucrose", (2.709, 55.852, 0.0326, 0.0241, 0.998, 0.999, 0.996)),
])
def test_collection_statistics_are_shelxls(real_case, name, expected):
    from refractor_core.crystal.merging import collection_statistics
    from refractor_core.crystal.observations import prepare_observations
    from refractor_core.dataio import load_bundle, load_reflections
    from refractor_core.types import RefinementInstructions

    case = real_case(name)
    data = load_reflections(case.reflections)
    structure = load_bundle(case.reference, block=case.data_block).structure
    sym = SymmetryOps.from_space_group(structure.space_group)
    merged = prepare_observations(data, sym, RefinementInstructions()).merged
    stats = collection_statistics(data, merged, sym, data.wavelength or structure.wavelength)
    theta_min, theta_max, r_int, r_sigma, laue_max, laue_full, point_group_max = expected
    assert stats["theta_min"] == pytest.approx(theta_min, abs=0.002)
    assert stats["theta_max"] == pytest.approx(theta_max, abs=0.002)
    if r_int is not None:  # (urea's data are merged)
        assert stats["r_int"] == pytest.approx(r_int, abs=0.00006)
    assert stats["r_sigma"] == pytest.approx(r_sigma, abs=0.00006)
    assert stats["laue_fraction_theta_max"] == pytest.approx(laue_max, abs=0.0006)
    assert stats["laue_fraction_theta_full"] == pytest.approx(laue_full, abs=0.0006)
    assert stats["point_group_fraction_theta_max"] == pytest.approx(point_group_max, abs=0.0006)


def test_r_factor_definitions():
    fc2 = np.array([100.0, 400.0, 900.0, 4.0])
    fo2 = 2.0 * fc2
    sig = np.array([1.0, 2.0, 3.0, 5.0])
    ag = agreement(fo2, sig, fc2)
    assert ag.scale == pytest.approx(2.0)
    assert ag.R1 == pytest.approx(0.0, abs=1e-12) and ag.wR2 == pytest.approx(0.0, abs=1e-12)
    assert ag.n_gt == 3  # the last reflection is below 2σ
    assert r1(np.array([100.0]), np.array([81.0]), np.array([1.0])) == pytest.approx(0.1)
    w = shelxl_weights(np.array([10.0]), np.array([1.0]), np.array([10.0]), 0.1, 0.5)
    assert w[0] == pytest.approx(1.0 / (1.0 + 1.0 + 5.0))
    assert extinction_factor(np.array([100.0]), 0.0, np.array([0.3]), 0.71)[0] == 1.0
    assert extinction_factor(np.array([1e5]), 0.05, np.array([0.1]), 0.71)[0] < 1.0


def _random_data(space_group, n_atoms=20, seed=0, d_min=0.8):
    import gemmi

    from refractor_core.crystal.structure_factors import calculate_fc
    from refractor_core.types import Site, Structure

    rng = np.random.default_rng(seed)
    cell = UnitCell(a=9.0, b=10.5, c=11.0, beta=98.0) if "21/c" in space_group or "-1" in space_group else UnitCell(a=9.0, b=10.5, c=11.0)
    sg = SpaceGroupRef.from_symbol(space_group)
    sites = [Site(label=f"C{i}", element="C", xyz=tuple(rng.random(3)), u_iso=0.02) for i in range(n_atoms)]
    st = Structure(cell=cell, space_group=sg, sites=sites)
    hkl = np.array(gemmi.make_miller_array(cell.gemmi(), sg.gemmi(), d_min, unique=True))
    i = np.abs(calculate_fc(st, hkl)) ** 2
    return ReflectionData(hkl=hkl, intensity=i, sigma=np.sqrt(i) + 1.0, cell=cell, formula=f"C{n_atoms}", z=1)


def test_wilson_and_e_statistics_on_random_structures():
    centro = _random_data("P -1", n_atoms=30, seed=1)
    acentric = _random_data("P 1", n_atoms=30, seed=2)
    wc = wilson_plot(centro, "P -1", {"C": 30 * 2})
    assert 0.0 < wc.b < 3.5  # U = 0.02 Å² gives B = 8π²U ≈ 1.58 Å²
    ec = e_statistics(normalized_e(centro, "P -1", {"C": 60}))
    ea = e_statistics(normalized_e(acentric, "P 1", {"C": 30}))
    assert ec["mean_abs_e2_minus_1"] == pytest.approx(0.968, abs=0.12)
    assert ea["mean_abs_e2_minus_1"] == pytest.approx(0.736, abs=0.08)
    assert ec["mean_abs_e2_minus_1"] > ea["mean_abs_e2_minus_1"]
