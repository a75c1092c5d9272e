"""The diffraction simulator: reflections, intensities, noise, and the files it writes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from refractor_core.crystal.cell import d_spacing
from refractor_core.crystal.merging import merge
from refractor_core.crystal.symmetry import SymmetryOps, canonical_keys
from refractor_core.crystal.wilson import wilson_plot
from refractor_core.crystal.evaluation import evaluate_model
from refractor_core.dataio import load_reflections
from refractor_core.simulation import (
    NoiseModel,
    SimulationParams,
    formula_and_z,
    simulate,
    simulate_detailed,
    write_dataset_files,
    write_hklf4,
    write_ins,
)
from refractor_core.simulation.reflections import reachable_d_min, unique_reflections
from refractor_core.types import Site, SpaceGroupRef, Structure, UnitCell


def _prso4() -> Structure:
    from refractor_core.testing.samples import SAMPLE_CELL, SAMPLE_SITES, SAMPLE_SPACE_GROUP

    cell = UnitCell(**dict(zip(("a", "b", "c", "alpha", "beta", "gamma"), SAMPLE_CELL)))
    sites = [Site(label=l, element=e, xyz=(x, y, z), u_iso=u) for l, e, x, y, z, u in SAMPLE_SITES]
    return Structure(cell=cell, space_group=SpaceGroupRef.from_symbol(SAMPLE_SPACE_GROUP), sites=sites, name="prso4")


def _acentric() -> Structure:
    """A small P 21 21 21 structure with a heavy atom (strong anomalous signal at Cu Kα)."""
    cell = UnitCell(a=7.1, b=8.3, c=9.2)
    sites = [
        Site(label="Br1", element="Br", xyz=(0.11, 0.23, 0.31), u_iso=0.03),
        Site(label="C1", element="C", xyz=(0.31, 0.12, 0.05), u_iso=0.04),
        Site(label="O1", element="O", xyz=(0.45, 0.38, 0.17), u_iso=0.04),
        Site(label="N1", element="N", xyz=(0.72, 0.05, 0.41), u_iso=0.04),
    ]
    return Structure(cell=cell, space_group=SpaceGroupRef.from_symbol("P 21 21 21"), sites=sites, name="acentric")


def test_unique_set_matches_gemmi_and_kernel_merge():
    import gemmi

    st = _prso4()
    sym = SymmetryOps.from_space_group(st.space_group)
    hkl = unique_reflections(st.cell, sym, 0.8, friedel=True)
    ref = gemmi.make_miller_array(st.cell.gemmi(), st.space_group.gemmi(), 0.8, 0, unique=True)
    assert len(hkl) == len(ref)
    assert d_spacing(st.cell, hkl).min() >= 0.8 - 1e-9
    assert not sym.is_absent(hkl).any()
    # unmerged equivalents merge back onto exactly the unique set
    res = simulate_detailed(st, SimulationParams(d_min=0.8, redundancy=4.0, seed=3))
    assert res.data.n > 2.5 * len(res.unique_hkl)
    merged = merge(res.data, st.space_group)
    assert merged.n == len(res.unique_hkl)
    assert merged.r_int > 0


def test_deterministic_and_seed_dependent():
    st = _prso4()
    a = simulate(st, d_min=1.0, seed=5, redundancy=2.0, outliers=0.01, completeness=0.95)
    b = simulate(st, d_min=1.0, seed=5, redundancy=2.0, outliers=0.01, completeness=0.95)
    c = simulate(st, d_min=1.0, seed=6, redundancy=2.0, outliers=0.01, completeness=0.95)
    assert np.array_equal(a.hkl, b.hkl) and np.array_equal(a.intensity, b.intensity)
    assert not (a.n == c.n and np.array_equal(a.intensity, c.intensity))


def test_median_i_over_sigma_follows_the_noise_model():
    st = _prso4()
    negative = []
    for target in (4.0, 12.0, 30.0):
        d = simulate(st, d_min=0.7, seed=1, noise=NoiseModel(median_i_over_sigma=target, instability=0.02))
        ratio = np.median(d.intensity / d.sigma)
        assert abs(ratio - target) / target < 0.15
        negative.append(np.mean(d.intensity < 0))
    # weak data have more negative rows (real data: 0-10 %)
    assert negative[0] > negative[1] > negative[2] and 0.05 < negative[0] < 0.2 and negative[2] < 0.05


def test_file_scale_rounding_and_metadata():
    st = _prso4()
    d = simulate(st, d_min=0.8, seed=2, max_intensity=1000.0)
    assert abs(d.intensity.max() - 1000.0) < 0.01
    assert np.allclose(d.intensity, np.round(d.intensity, 2)) and d.sigma.min() >= 0.01
    assert d.formula == "H O5 Pr S" and d.z == 4.0
    assert d.space_group_hint is None  # a solve benchmark must not see it
    assert simulate(st, d_min=1.5, reveal_space_group=True).space_group_hint.number == 14


def test_true_model_fits_its_simulated_data():
    st = _prso4()
    d = simulate(st, d_min=0.77, seed=1, noise=NoiseModel(median_i_over_sigma=20.0))
    r = evaluate_model(d, st)
    assert r["R1"] < 0.04
    # a wrong model does not
    wrong = st.model_copy(update={"sites": [s.model_copy(update={"xyz": (s.xyz[1], s.xyz[0], s.xyz[2])}) for s in st.sites]})
    assert evaluate_model(d, wrong)["R1"] > 0.3


def test_wilson_b_is_recovered():
    st = _prso4()
    res = simulate_detailed(st, SimulationParams(d_min=0.7, b_wilson=3.0, b_spread=0.0, seed=4,
                                                 noise=NoiseModel(median_i_over_sigma=30.0)))
    assert all(abs(s.u_iso - 3.0 / (8 * math.pi**2)) < 1e-12 for s in res.structure.sites if s.element != "H")
    w = wilson_plot(res.data, st.space_group, {"Pr": 4, "S": 4, "O": 20, "H": 4})
    assert abs(w.b - 3.0) < 0.8


def _friedel_pairs(res):
    """(F²(h), F²(-h)) for every acentric pair of the unique set (mates found by class key)."""
    rots = SymmetryOps.from_space_group(res.structure.space_group).point_group_rotations()
    keys = canonical_keys(res.unique_hkl, rots, friedel=False)
    mate = canonical_keys(-res.unique_hkl.astype(np.int64), rots, friedel=False)
    where = {k: i for i, k in enumerate(keys.tolist())}
    return np.array([(res.unique_f2[i], res.unique_f2[where[m]]) for i, m in enumerate(mate.tolist())
                     if m in where and where[m] > i])


def test_anomalous_friedel_pairs_and_inversion_twin():
    st = _acentric()
    res = simulate_detailed(st, SimulationParams(d_min=0.9, wavelength="Cu", seed=1))
    pairs = _friedel_pairs(res)
    assert len(pairs) > 50  # Friedel mates kept apart
    strong = pairs.sum(axis=1) > 1.0
    diffs = np.abs(pairs[strong, 0] - pairs[strong, 1]) / pairs[strong].sum(axis=1)
    assert np.median(diffs) > 0.01
    # a 50 % inversion twin makes Friedel mates equal
    tw = simulate_detailed(st, SimulationParams(d_min=0.9, wavelength="Cu", twin_fraction=0.5, seed=1))
    tp = _friedel_pairs(tw)
    assert np.allclose(tp[:, 0], tp[:, 1], rtol=1e-9, atol=1e-9)
    # without anomalous dispersion Friedel mates are merged into one row
    na = simulate_detailed(st, SimulationParams(d_min=0.9, wavelength="Cu", anomalous=False, seed=1))
    assert len(na.unique_hkl) < 0.7 * len(res.unique_hkl)  # centric zones have no mate


def test_extinction_weakens_strong_reflections_most():
    st = _prso4()
    a = simulate_detailed(st, SimulationParams(d_min=0.8, seed=1))
    b = simulate_detailed(st, SimulationParams(d_min=0.8, seed=1, extinction=0.05))
    ratio = b.unique_f2 / a.unique_f2
    strong = a.unique_f2 > np.percentile(a.unique_f2, 99)
    weak = a.unique_f2 < np.percentile(a.unique_f2, 50)
    assert ratio[strong].mean() < 0.95 * ratio[weak].mean()


def test_completeness_outliers_and_reachable_resolution():
    st = _prso4()
    full = simulate_detailed(st, SimulationParams(d_min=0.8, seed=1))
    part = simulate_detailed(st, SimulationParams(d_min=0.8, seed=1, completeness=0.8, outliers=0.02))
    assert abs(len(part.unique_hkl) / len(full.unique_hkl) - 0.8) < 0.01
    assert 0.005 < part.outlier.mean() < 0.04
    cu = simulate_detailed(st, SimulationParams(d_min=0.6, wavelength="Cu", seed=1))
    assert cu.d_min == pytest.approx(reachable_d_min(1.54184))
    assert cu.notes


def test_hklf4_and_ins_round_trip_through_the_readers(tmp_path):
    st = _prso4()
    d = simulate(st, d_min=0.8, seed=1, redundancy=2.0)
    hkl, ins = write_dataset_files(tmp_path, "sim", d)
    text = ins.read_text()
    assert not any(line.startswith("SYMM") for line in text.splitlines())
    assert "LATT -1" in text and "UNIT" in text
    back = load_reflections(hkl)
    assert np.array_equal(back.hkl, d.hkl)
    assert np.allclose(back.intensity, d.intensity) and np.allclose(back.sigma, d.sigma)
    assert back.formula == d.formula and back.z == d.z
    assert back.cell.a == pytest.approx(d.cell.a, abs=1e-4) and back.wavelength == pytest.approx(d.wavelength)
    # with the space group stated, the reader recovers the same setting
    write_ins(tmp_path / "sim.ins", st.cell, d.formula, d.z, d.wavelength, st.space_group)
    back = load_reflections(hkl)
    assert back.space_group_hint.hall == st.space_group.hall
    # and the model, when written, reads back with the same occupancies and coordinates
    from refractor_core.dataio import load_structure

    write_ins(tmp_path / "model.ins", st, d.formula, d.z, d.wavelength, st.space_group, include_atoms=True)
    model = load_structure(tmp_path / "model.ins")
    assert [s.element for s in model.sites] == [s.element for s in st.sites]
    assert np.allclose([s.xyz for s in model.sites], [s.xyz for s in st.sites], atol=1e-6)


@pytest.mark.parametrize("symbol", ["R -3 c:H", "F d -3 m:2", "I -4 3 d", "C 1 2/c 1", "P 63/m"])
def test_ins_symmetry_of_other_settings_reads_back(tmp_path, symbol):
    sg = SpaceGroupRef.from_symbol(symbol)
    cell = UnitCell(a=10.0, b=10.0, c=10.0, gamma=120.0) if sg.crystal_system in ("trigonal", "hexagonal") else (
        UnitCell(a=10.0, b=11.0, c=12.0, beta=100.0) if sg.crystal_system == "monoclinic" else UnitCell(a=10.0, b=10.0, c=10.0)
    )
    write_ins(tmp_path / "x.ins", cell, "C2 O", 4, 0.71073, sg)
    (tmp_path / "x.hkl").write_text("   1   0   0  100.00    1.00\n   0   0   0    0.00    0.00\n")
    back = load_reflections(tmp_path / "x.hkl")
    assert back.space_group_hint.number == sg.number
    assert SymmetryOps.from_space_group(back.space_group_hint).n == SymmetryOps.from_space_group(sg).n


def test_write_hklf4_fits_large_values(tmp_path):
    st = _prso4()
    d = simulate(st, d_min=1.2, seed=1)
    big = d.model_copy(update={"intensity": d.intensity * 100.0, "sigma": d.sigma * 100.0})
    big = big.model_copy(update={"intensity": big.intensity * 1e4, "sigma": big.sigma * 1e4})
    scale = write_hklf4(tmp_path / "big.hkl", big)
    assert scale > 1.0
    lines = (tmp_path / "big.hkl").read_text().splitlines()
    assert all(len(line) == 28 for line in lines)
    assert lines[-1].split() == ["0", "0", "0", "0.00", "0.00"]
    # the .ins carries the scale on its HKLF line, and the readers apply it
    hkl, _ = write_dataset_files(tmp_path, "big", big)
    back = load_reflections(hkl)
    assert np.allclose(back.intensity, big.intensity, rtol=1e-5, atol=scale)


def test_formula_and_z_with_special_positions():
    st = Structure(
        cell=UnitCell(a=5.64, b=5.64, c=5.64),
        space_group=SpaceGroupRef.from_symbol("F m -3 m"),
        sites=[Site(label="Na", element="Na", xyz=(0, 0, 0), u_iso=0.01), Site(label="Cl", element="Cl", xyz=(0.5, 0.5, 0.5), u_iso=0.01)],
    )
    formula, z, contents = formula_and_z(st)
    assert formula == "Cl Na" and z == 4.0 and contents == {"Na": 4.0, "Cl": 4.0}


def test_systematic_absences_can_be_kept_with_their_noise():
    st = _acentric()  # P 21 21 21: h00, 0k0, 00l absent for odd indices
    sym = SymmetryOps.from_space_group(st.space_group)
    kw = dict(d_min=0.9, b_wilson=2.0, seed=5, noise={"median_i_over_sigma": 15.0})
    plain = simulate_detailed(st, SimulationParams(**kw))
    kept = simulate_detailed(st, SimulationParams(**kw, keep_absences=True))
    assert not sym.is_absent(plain.data.hkl).any()  # default: none written
    absent = sym.is_absent(kept.data.hkl)
    assert 5 <= absent.sum() < 0.05 * len(absent)
    # the allowed reflections are the default set; absences are all the extra rows
    assert len(kept.data.hkl) - absent.sum() == len(plain.data.hkl)
    assert np.array_equal(kept.unique_hkl[~sym.is_absent(kept.unique_hkl)], plain.unique_hkl)
    # true F² of an absence is zero; observed values are noise around zero on the file scale
    assert np.all(kept.unique_f2[sym.is_absent(kept.unique_hkl)] == 0.0)
    i_abs, s_abs = kept.data.intensity[absent], kept.data.sigma[absent]
    assert np.all(s_abs > 0) and np.median(np.abs(i_abs / s_abs)) < 2.0
    i_ok, s_ok = kept.data.intensity[~absent], kept.data.sigma[~absent]
    assert np.median(i_ok / s_ok) > 5.0
    # the count level is set on the allowed reflections: it does not move when absences are kept
    assert kept.counts_per_f2 == pytest.approx(plain.counts_per_f2, rel=1e-9)
    assert simulate(st, **kw, keep_absences=True).n == kept.data.n


def test_an_atom_of_a_negative_part_beside_an_axis_is_simulated_as_shelxl_counts_it():
    """A PART -1 atom 0.04 Å from its own 2-fold image is a general position (order 1) for
    SHELXL, for the .res reader and for the refiner: the simulator must count it so too, or
    the true model (as read back) does not fit its own simulated data."""
    cell = UnitCell(a=7.0, b=8.0, c=9.0, beta=100.0)
    sites = [
        Site(label="Br1", element="Br", xyz=(0.21, 0.13, 0.31), u_iso=0.03),
        Site(label="O1", element="O", xyz=(0.41, 0.33, 0.12), u_iso=0.04),
        Site(label="C1", element="C", xyz=(0.003, 0.2, 0.0), u_iso=0.04, occupancy=0.5, part=-1),
    ]
    st = Structure(cell=cell, space_group=SpaceGroupRef.from_symbol("P 1 2 1"), sites=sites, name="part_minus")
    sym = SymmetryOps.from_space_group(st.space_group)
    assert sym.site_symmetry_order(cell, np.array(sites[2].xyz)) == 2  # within the 0.05 Å tolerance
    assert sym.site_orders(cell, [s.xyz for s in sites], [s.part for s in sites]).tolist() == [1, 1, 1]
    quiet = NoiseModel(median_i_over_sigma=500.0, background=0.0, instability=0.0)
    d = simulate(st, d_min=0.8, seed=1, noise=quiet)
    as_read = st.model_copy(update={"sites": [s.model_copy(update={"site_symmetry_order": 1}) for s in sites]})
    assert evaluate_model(d, as_read)["R1"] < 0.005
    halved = st.model_copy(update={"sites": [s.model_copy(update={"site_symmetry_order": 2 if s.part < 0 else 1})
                                             for s in sites]})
    assert evaluate_model(d, halved)["R1"] > 0.01  # the test can tell the two countings apart
