"""Kernel pieces of space-group determination: metric symmetry, centring, the gemmi setting
table, re-indexing, and the Wilson intensity densities with measurement error."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate

from refractor_core.crystal.intensity_stats import (
    expected_intensity,
    log_acentric_density,
    log_centric_density,
    log_present_density,
)
from refractor_core.crystal.lattice import (
    centring_statistics,
    centring_vectors,
    metric_symmetry,
    transform_cell,
    transform_hkl,
    violates_centring,
)
from refractor_core.crystal.spacegroup_tables import (
    all_settings,
    compatible_settings,
    laue_label,
    setting_for,
    transformed_setting,
)
from refractor_core.types import SpaceGroupRef, UnitCell


@pytest.mark.parametrize(
    "params, n_rot",
    [
        ((5.1, 6.2, 7.3, 81.0, 85.0, 95.0), 1),
        ((5.1, 6.2, 7.3, 90.0, 104.0, 90.0), 2),
        ((5.1, 6.2, 7.3, 90.0, 90.0, 90.0), 4),
        ((5.1, 5.1, 7.3, 90.0, 90.0, 90.0), 8),
        ((5.1, 5.1, 7.3, 90.0, 90.0, 120.0), 12),
        ((6.0, 6.0, 6.0, 80.0, 80.0, 80.0), 6),
        ((6.0, 6.0, 6.0, 90.0, 90.0, 90.0), 24),
    ],
)
def test_metric_symmetry_counts_the_holohedry_rotations(params, n_rot):
    a, b, c, al, be, ga = params
    rots = metric_symmetry(UnitCell(a=a, b=b, c=c, alpha=al, beta=be, gamma=ga))
    assert len(rots) == n_rot
    assert np.array_equal(rots[0], np.eye(3))
    assert all(round(np.linalg.det(r)) == 1 for r in rots)


def test_metric_tolerance_decides_pseudo_orthorhombic_cells():
    cell = UnitCell(a=5.0, b=6.0, c=7.0, beta=90.3)
    assert len(metric_symmetry(cell, tol=0.02)) == 4
    assert len(metric_symmetry(cell, tol=0.001)) == 2


def test_centring_vectors_and_violations():
    assert np.allclose(centring_vectors("I"), [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert len(centring_vectors("F")) == 4
    hkl = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1], [2, 0, 0]])
    assert violates_centring(hkl, centring_vectors("C")).tolist() == [True, False, False, False]
    assert violates_centring(hkl, centring_vectors("I")).tolist() == [True, False, True, False]
    # obverse R: -h+k+l = 3n; reverse R: h-k+l = 3n
    obv = violates_centring(np.array([[1, 0, 1], [0, 1, 1]]), centring_vectors("R"))
    rev = violates_centring(np.array([[1, 0, 1], [0, 1, 1]]), centring_vectors("R(rev)"))
    assert obv.tolist() == [False, True] and rev.tolist() == [True, False]


def test_centring_statistics_separate_forbidden_from_allowed_reflections():
    rng = np.random.default_rng(0)
    h = rng.integers(-8, 9, size=(3000, 3))
    c_viol = violates_centring(h, centring_vectors("C"))
    sigma = np.ones(len(h))
    intensity = np.where(c_viol, rng.normal(0.0, 1.0, len(h)), rng.exponential(50.0, len(h)))
    stats = {s.kind: s for s in centring_statistics(h, intensity, sigma)}
    assert abs(stats["C"].mean_i_over_sigma_violating) < 0.2
    assert stats["C"].fraction_violating_above_3sigma < 0.01
    assert stats["I"].mean_i_over_sigma_violating > 10.0
    assert stats["P"].n_violating == 0


def test_setting_table_is_deduplicated_and_keeps_origin_choice_two():
    settings = all_settings()
    symbols = [s.symbol for s in settings]
    assert len(symbols) == len(set(symbols))
    assert "P n n n:2" in symbols and "P n n n:1" not in symbols
    assert {"P 1 21/c 1", "P 1 21/n 1", "P 1 21/a 1", "C 1 2/c 1", "I 1 2/a 1", "R -3 c:H"} <= set(symbols)


def test_compatible_settings_follow_the_given_axes():
    mono_b = compatible_settings(metric_symmetry(UnitCell(a=5, b=6, c=7, beta=100)))
    names = {s.symbol for s in mono_b}
    assert {"P 1 21/c 1", "P 1 21/n 1", "C 1 2/c 1", "P -1", "P 1"} <= names
    assert "P 1 1 21/a" not in names and "P 21 21 21" not in names
    ortho = {s.symbol for s in compatible_settings(metric_symmetry(UnitCell(a=5, b=6, c=7)))}
    assert {"P n a 21", "P n 21 a", "P 21 n b", "P 1 1 21/a", "P 21/b 1 1"} <= ortho
    labels = {laue_label(s.laue_key) for s in mono_b}
    assert labels == {"-1", "1 2/m 1"}


def test_transformed_setting_and_reindexing_agree():
    ref = SpaceGroupRef.from_symbol("P 1 21/c 1")
    p = np.array([[1, 0, 1], [0, 1, 0], [-1, 0, 0]])
    assert transformed_setting(ref, p).symbol == "P 1 21/n 1"
    # the c-glide absences (h0l, l odd) become n-glide absences (h0l, h+l odd)
    hkl = np.array([[1, 0, 1], [2, 0, 1], [0, 3, 0]])
    absent_c = setting_for(ref).is_absent(hkl)
    absent_n = transformed_setting(ref, p).is_absent(transform_hkl(hkl, p))
    assert absent_c.tolist() == absent_n.tolist()
    cell = UnitCell(a=5.0, b=6.0, c=7.0, beta=100.0)
    new = transform_cell(cell, p)
    assert new.volume == pytest.approx(cell.volume)
    assert new.b == pytest.approx(6.0)
    permuted = transformed_setting(SpaceGroupRef.from_symbol("P n a 21"), np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]]))
    assert permuted.symbol == "P n 21 a"


@pytest.mark.parametrize("intensity, sigma, mean", [(0.0, 1.0, 10.0), (5.0, 1.0, 10.0), (-3.0, 1.0, 10.0), (50.0, 10.0, 1.0), (30.0, 0.5, 1.0), (0.5, 0.01, 1.0)])
def test_wilson_densities_match_numerical_convolution(intensity, sigma, mean):
    def conv(prior):
        f = lambda j: prior(j) * np.exp(-((intensity - j) ** 2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))  # noqa: E731
        lo, hi = max(0.0, intensity - 12 * sigma), max(intensity, 0.0) + 12 * sigma + 40 * mean
        return np.log(integrate.quad(f, lo, hi, points=[max(intensity, lo + 1e-12)], limit=500, epsabs=0, epsrel=1e-10)[0])

    acentric = lambda j: np.exp(-j / mean) / mean  # noqa: E731
    assert float(log_acentric_density(intensity, sigma, mean)) == pytest.approx(conv(acentric), abs=1e-4)

    def centric_u(u):  # J = u², centric density · dJ/du
        return 2.0 * np.exp(-u * u / (2 * mean)) / np.sqrt(2 * np.pi * mean) * np.exp(-((intensity - u * u) ** 2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))

    top = np.sqrt(max(intensity, 0.0) + 40 * sigma + 40 * mean)
    pts = [np.sqrt(intensity)] if intensity > 0 else None
    ref = np.log(integrate.quad(centric_u, 0, top, points=pts, limit=800, epsabs=0, epsrel=1e-10)[0])
    assert float(log_centric_density(intensity, sigma, mean)) == pytest.approx(ref, abs=1e-4)


def test_present_density_is_normalised():
    grid = np.concatenate([np.linspace(-20.0, 20.0, 4001), np.linspace(20.0, 400.0, 3801)[1:]])
    for frac in (0.0, 0.5, 1.0):
        p = np.exp(log_present_density(grid, np.full_like(grid, 2.0), np.full_like(grid, 20.0), centric_fraction=frac))
        assert np.trapezoid(p, grid) == pytest.approx(1.0, abs=2e-3)


def test_expected_intensity_follows_resolution_falloff():
    rng = np.random.default_rng(1)
    s2 = rng.uniform(0.0, 0.4, 5000)
    truth = 100.0 * np.exp(-2.0 * 3.0 * s2)
    i_obs = rng.exponential(truth)
    sig = expected_intensity(s2, i_obs)
    assert np.median(np.abs(sig / truth - 1.0)) < 0.1
    at = expected_intensity(s2, i_obs, at_s2=np.array([0.05, 0.35]), at_epsilon=np.array([1.0, 2.0]))
    assert at[1] / 2.0 < at[0]


@pytest.mark.parametrize("symbol", ["P 1", "P 1 2/m 1", "P m m m", "P 6/m m m", "R -3 m:R", "F m -3 m"])
def test_orbit_keys_equal_the_kernel_canonical_keys(symbol):
    from refractor_core.crystal.orbits import orbit_keys, orbit_representatives
    from refractor_core.crystal.symmetry import SymmetryOps, canonical_hkl, canonical_keys

    rng = np.random.default_rng(2)
    h = rng.integers(-60, 61, size=(3000, 3))
    rots = SymmetryOps.from_space_group(symbol).point_group_rotations()
    assert np.array_equal(orbit_keys(h, rots), canonical_keys(h, rots, friedel=True))
    assert np.array_equal(orbit_representatives(h, rots), canonical_hkl(h, rots, friedel=True))
