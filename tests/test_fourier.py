"""The kernel's Fourier module: grids, expansion to P1, maps, back-transforms, peaks."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from refractor_core.crystal import fourier as fo
from refractor_core.crystal.cell import orthogonalization_matrix
from refractor_core.crystal.structure_factors import calculate_fc
from refractor_core.crystal.symmetry import SymmetryOps
from refractor_core.testing.samples import sample_structure
from refractor_core.types import Site, SpaceGroupRef, Structure, UnitCell


@pytest.fixture(scope="module")
def pr():
    """The Pr(OH)SO4 sample structure, its symmetry, unique reflections to 0.8 Å and Fc."""
    st = sample_structure()
    sym = SymmetryOps.from_space_group(st.space_group)
    hkl = np.array(gemmi.make_miller_array(st.cell.gemmi(), st.space_group.gemmi(), 0.8))
    hkl = hkl[~sym.is_absent(hkl)]
    return st, sym, hkl, calculate_fc(st, hkl)


def _p1_copy(st: Structure, sym: SymmetryOps) -> Structure:
    sites = []
    for s in st.sites:
        for i, x in enumerate(sym.images(np.array(s.xyz))):
            sites.append(s.model_copy(update={"xyz": tuple(np.mod(x, 1.0)), "label": f"{s.label}_{i}"}))
    return st.model_copy(update={"space_group": SpaceGroupRef.from_symbol("P 1"), "sites": sites})


def _nearest(cell, sym, xyz, sites):
    m = orthogonalization_matrix(cell)
    best = (np.inf, None)
    for s in sites:
        d = sym.images(np.array(s.xyz)) - xyz
        d -= np.round(d)
        dist = float(np.linalg.norm(d @ m.T, axis=-1).min())
        if dist < best[0]:
            best = (dist, s)
    return best


def test_good_grid_sizes():
    assert fo.good_grid_size(31) == 32
    assert fo.good_grid_size(7) == 8
    assert fo.good_grid_size(61, 4) == 64
    assert fo.good_grid_size(25, 6) == 30


def test_grid_shape_respects_resolution_symmetry_and_indices(pr):
    st, sym, hkl, _ = pr
    p1 = fo.expand_indices_to_p1(hkl, sym).hkl
    shape = fo.grid_shape(st.cell, 0.8, sampling=0.5, symmetry=sym, hkl=p1)
    factors = fo.grid_factors(sym)
    for n, f, hmax in zip(shape, factors, np.abs(p1).max(axis=0)):
        assert n % f == 0
        assert n >= 2 * hmax + 1
        assert n in set(fo._SMOOTH.tolist())
    # spacing between lattice planes no coarser than asked
    from refractor_core.crystal.cell import reciprocal_lengths

    spacing = 1.0 / (reciprocal_lengths(st.cell) * np.array(shape))
    assert np.all(spacing <= 0.4 + 1e-9)
    with pytest.raises(ValueError):
        fo.grid_shape(st.cell, 0.0)


def test_expand_to_p1_matches_structure_factors_in_p1(pr):
    st, sym, hkl, f = pr
    h1, f1 = fo.expand_to_p1(hkl, f, sym)
    keys = set(map(tuple, h1.tolist()))
    assert len(keys) == len(h1)  # each index once
    assert (0, 0, 0) not in keys
    assert all((-a, -b, -c) in keys for a, b, c in h1.tolist())  # Friedel mates present
    direct = calculate_fc(_p1_copy(st, sym), h1)
    assert np.abs(direct - f1).max() < 1e-8 * np.abs(direct).max()
    # real values are copied unchanged
    _, a1 = fo.expand_to_p1(hkl, np.abs(f), sym)
    assert np.allclose(a1, np.abs(f1))


def test_map_and_back_transform_round_trip(pr):
    st, sym, hkl, f = pr
    shape = fo.grid_shape(st.cell, 0.8, sampling=1 / 3, symmetry=sym, hkl=fo.expand_indices_to_p1(hkl, sym).hkl)
    rho = fo.fourier_map(hkl, f, st.cell, shape, sym)
    assert rho.shape == shape and rho.dtype == np.float64
    back = fo.map_to_reflections(rho, hkl, st.cell)
    assert np.abs(back - f).max() < 1e-9 * np.abs(f).max()
    # the map obeys the space group: ρ(Rx + t) = ρ(x) on grid points
    idx = np.array([[3, 7, 5], [10, 20, 11], [1, 1, 1]])
    x = idx / np.array(shape)
    for xi, v in zip(x, rho[idx[:, 0], idx[:, 1], idx[:, 2]]):
        img = np.mod(sym.images(xi), 1.0) * np.array(shape)
        g = np.rint(img).astype(int) % np.array(shape)
        assert np.allclose(rho[g[:, 0], g[:, 1], g[:, 2]], v, atol=1e-8 * np.abs(rho).max())
    # F000 sets the mean density: F000 / V
    rho0 = fo.fourier_map(hkl, f, st.cell, shape, sym, f000=100.0)
    assert np.isclose(rho0.mean() - rho.mean(), 100.0 / st.cell.volume)


def test_peaks_of_a_true_map_are_at_the_atoms(pr):
    st, sym, hkl, f = pr
    shape = fo.grid_shape(st.cell, 0.8, sampling=1 / 3, symmetry=sym, hkl=fo.expand_indices_to_p1(hkl, sym).hkl)
    rho = fo.fourier_map(hkl, f, st.cell, shape, sym)
    peaks = fo.find_peaks(rho, st.cell, sym, max_peaks=7, min_distance=0.7)
    assert len(peaks) == 7
    heights = [p.height for p in peaks]
    assert heights == sorted(heights, reverse=True)
    found = set()
    for p in peaks:
        dist, site = _nearest(st.cell, sym, p.xyz, st.non_hydrogen())
        assert dist < 0.2, (p, dist)
        found.add(site.label)
        assert p.site_order == 1
    assert found == {s.label for s in st.non_hydrogen()}
    # integrated density follows the number of electrons: Pr > S > each O
    by_label = {_nearest(st.cell, sym, p.xyz, st.non_hydrogen())[1].label: p.integrated for p in peaks}
    assert by_label["Pr"] > 3 * by_label["S"] > 0
    assert all(by_label["S"] > by_label[f"O{i}"] for i in range(1, 6))
    assert 40 < by_label["Pr"] < 65


def test_peaks_on_special_positions_and_symmetry_uniqueness():
    cell = UnitCell(a=5.64, b=5.64, c=5.64)
    st = Structure(
        cell=cell,
        space_group=SpaceGroupRef.from_symbol("F m -3 m"),
        sites=[
            Site(label="Na", element="Na", xyz=(0.0, 0.0, 0.0), u_iso=0.01),
            Site(label="Cl", element="Cl", xyz=(0.5, 0.5, 0.5), u_iso=0.01),
        ],
    )
    sym = SymmetryOps.from_space_group(st.space_group)
    hkl = np.array(gemmi.make_miller_array(cell.gemmi(), st.space_group.gemmi(), 0.6))
    hkl = hkl[~sym.is_absent(hkl)]
    f = calculate_fc(st, hkl)
    shape = fo.grid_shape(cell, 0.6, sampling=1 / 3, symmetry=sym, hkl=fo.expand_indices_to_p1(hkl, sym).hkl)
    rho = fo.fourier_map(hkl, f, cell, shape, sym)
    peaks = fo.find_peaks(rho, cell, sym, max_peaks=5, min_distance=1.0)
    # each atom appears once, on its special position with the full site symmetry
    strong = [p for p in peaks if p.height > 0.2 * peaks[0].height]
    assert len(strong) == 2
    assert all(p.site_order == 48 for p in strong)
    assert strong[0].integrated > strong[1].integrated  # Cl (17 e) before Na (11 e)
    assert np.allclose(np.mod(strong[0].xyz * 2, 1.0), 0.0, atol=1e-6)


def test_difference_map_shows_the_missing_atom(pr):
    st, sym, hkl, f = pr
    missing = st.sites[1]  # S
    partial = st.model_copy(update={"sites": [s for s in st.sites if s.label != missing.label]})
    fc = calculate_fc(partial, hkl)
    shape = fo.grid_shape(st.cell, 0.8, sampling=1 / 3, symmetry=sym, hkl=fo.expand_indices_to_p1(hkl, sym).hkl)
    diff = fo.difference_map(hkl, np.abs(f), fc, st.cell, shape, sym)
    peaks = fo.find_peaks(diff, st.cell, sym, max_peaks=3)
    dist, site = _nearest(st.cell, sym, peaks[0].xyz, [missing])
    assert dist < 0.3
    two = fo.difference_map(hkl, np.abs(f), fc, st.cell, shape, sym, kind="2fo-fc")
    assert two.max() > diff.max()
    with pytest.raises(ValueError):
        fo.difference_map(hkl, np.abs(f), fc, st.cell, shape, sym, kind="nonsense")


def test_half_grid_rejects_a_grid_too_small(pr):
    _, _, hkl, _ = pr
    with pytest.raises(ValueError):
        fo.half_grid_index(hkl, (4, 4, 4))
