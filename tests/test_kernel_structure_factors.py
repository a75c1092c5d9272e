"""The torch structure-factor engine against gemmi, and its derivatives against finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from refractor_core.crystal.structure_factors import AtomTensors, StructureFactorEngine, calculate_fc
from refractor_core.crystal.symmetry import SymmetryOps
from refractor_core.types import Site, SpaceGroupRef, Structure, UnitCell

from ._gemmi_models import cif_site_symmetry_orders, gemmi_small_structure, structure_from_gemmi
from .conftest import REAL_CASES

CIF_CASES = [c for c in REAL_CASES if c.reference.suffix == ".cif"]


def _gemmi_fc(st, structure, hkl):
    """gemmi's StructureFactorCalculatorX with our site-symmetry orders as occupancy divisors."""
    import gemmi

    sym = SymmetryOps.from_space_group(structure.space_group)
    for site, ours in zip(st.sites, structure.sites):
        order = ours.site_symmetry_order or sym.site_symmetry_order(structure.cell, ours.xyz, 0.05)
        site.occ = ours.occupancy / order
    calc = gemmi.StructureFactorCalculatorX(st.cell)
    return np.array([calc.calculate_sf_from_small_structure(st, tuple(h)) for h in hkl.tolist()])


@pytest.mark.parametrize("case", CIF_CASES, ids=[c.name for c in CIF_CASES])
def test_fc_matches_gemmi(case):
    import gemmi

    st = gemmi_small_structure(case)
    structure = structure_from_gemmi(st, cif_site_symmetry_orders(case))
    hkl = np.array(gemmi.make_miller_array(st.cell, st.spacegroup, 1.0, unique=False), dtype=np.int64)
    hkl = hkl[:: max(1, len(hkl) // 1500)]
    ref = _gemmi_fc(st, structure, hkl)
    ours = calculate_fc(structure, hkl)  # no wavelength: gemmi's calculator has no f', f''
    rel = np.abs(ours - ref).max() / np.abs(ref).max()
    assert rel <= 1e-5, f"max relative deviation {rel:.2e}"


def _toy_structure(space_group="P 1 21/c 1", aniso=True):
    rng = np.random.default_rng(1)
    cell = UnitCell(a=7.1, b=9.3, c=8.2, beta=101.5)
    sites = []
    for i, el in enumerate(["Fe", "O", "C", "N"]):
        u = (0.02, 0.025, 0.03, 0.002, 0.004, -0.001) if aniso and i % 2 == 0 else None
        sites.append(
            Site(label=f"{el}{i}", element=el, xyz=tuple(rng.random(3)), occupancy=0.9 if i == 3 else 1.0,
                 u_iso=0.03, u_aniso=u)
        )
    return Structure(cell=cell, space_group=SpaceGroupRef.from_symbol(space_group), sites=sites)


@pytest.mark.parametrize("sg", ["P 1 21/c 1", "P 21 21 21", "C 1 2/c 1", "I -4 3 d", "R -3 c:H"])
def test_analytic_derivatives_match_finite_differences(sg):
    s = _toy_structure(sg)
    if sg in ("I -4 3 d",):
        s = s.model_copy(update={"cell": UnitCell(a=11.0, b=11.0, c=11.0)})
    if sg == "R -3 c:H":
        s = s.model_copy(update={"cell": UnitCell(a=9.0, b=9.0, c=20.0, gamma=120.0)})
    hkl = np.array([[1, 2, 3], [2, -1, 4], [0, 3, 1], [3, 1, -2], [4, 4, 1], [-2, 5, 3]])
    eng = StructureFactorEngine(hkl, s.cell, s.space_group, wavelength=0.71073)
    atoms = AtomTensors.from_structure(s, symmetry=eng.symmetry)
    der = eng.with_derivatives(atoms)
    assert torch.allclose(der.fc, eng.fc(atoms), rtol=1e-10, atol=1e-10)
    h = 1e-6
    for a in range(atoms.n):
        for j in range(3):
            xp, xm = atoms.xyz.clone(), atoms.xyz.clone()
            xp[a, j] += h
            xm[a, j] -= h
            fd = (eng.fc(atoms, xyz=xp) - eng.fc(atoms, xyz=xm)) / (2 * h)
            assert torch.allclose(der.d_xyz[:, a, j], fd, rtol=1e-5, atol=1e-5)
        for k in range(6):
            up, um = atoms.u_star.clone(), atoms.u_star.clone()
            up[a, k] += 1e-7
            um[a, k] -= 1e-7
            fd = (eng.fc(atoms, u_star=up) - eng.fc(atoms, u_star=um)) / 2e-7
            assert torch.allclose(der.d_ustar[:, a, k], fd, rtol=1e-4, atol=1e-4)
        op, om = atoms.occupancy.clone(), atoms.occupancy.clone()
        op[a] += h
        om[a] -= h
        fd = (eng.fc(atoms, occupancy=op) - eng.fc(atoms, occupancy=om)) / (2 * h)
        assert torch.allclose(der.d_occ[:, a], fd, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sg", ["P 1 21/c 1", "P 21 21 21"])
def test_intensity_derivatives_are_those_of_the_complex_derivatives(sg):
    """∂|F|²/∂t = 2 Re(F̄ ∂F/∂t), for F of the atoms themselves and for a given total F
    (the whole model's, when the atoms are part of it); an atom of zero occupancy still
    has its occupancy derivative."""
    s = _toy_structure(sg)
    s = s.model_copy(update={"sites": [s.sites[0].model_copy(update={"occupancy": 0.0})] + list(s.sites[1:])})
    hkl = np.array([[1, 2, 3], [2, -1, 4], [0, 3, 1], [3, 1, -2], [4, 4, 1], [-2, 5, 3]])
    eng = StructureFactorEngine(hkl, s.cell, s.space_group, wavelength=0.71073)
    atoms = AtomTensors.from_structure(s, symmetry=eng.symmetry)
    der = eng.with_derivatives(atoms)
    complex_d = torch.cat([der.d_xyz, der.d_ustar, der.d_occ[..., None]], dim=-1)
    other = torch.complex(torch.linspace(-3.0, 5.0, len(hkl), dtype=torch.float64),
                          torch.linspace(2.0, -1.0, len(hkl), dtype=torch.float64))
    for total in (None, other):
        fc, grad = eng.intensity_derivatives(atoms, total)
        assert torch.allclose(fc, der.fc, rtol=1e-12, atol=1e-12)
        f = der.fc if total is None else total
        expected = 2.0 * (f.real[:, None, None] * complex_d.real + f.imag[:, None, None] * complex_d.imag)
        assert torch.allclose(grad, expected, rtol=1e-10, atol=1e-10)
    assert torch.any(grad[:, 0, 9] != 0)


@pytest.mark.parametrize("sg", ["P 21 21 21", "P 1 21/c 1", "C 1 2/c 1"])
def test_autograd_gradients_pass_gradcheck(sg):
    """The fused analytic backward pass against numerical gradients (torch.autograd.gradcheck)."""
    s = _toy_structure(sg)
    hkl = np.array([[1, 2, 3], [2, 1, 4], [0, 3, 1], [3, 1, 2], [5, 2, 2], [1, 1, 1]])
    eng = StructureFactorEngine(hkl, s.cell, s.space_group, wavelength=1.54184)
    atoms = AtomTensors.from_structure(s, symmetry=eng.symmetry)

    def f(xyz, occ, ustar):
        fc = eng.fc(atoms, xyz=xyz, occupancy=occ, u_star=ustar)
        return fc.real, fc.imag, eng.fc_squared(atoms, xyz=xyz, occupancy=occ, u_star=ustar)

    inputs = (
        atoms.xyz.clone().requires_grad_(True),
        atoms.occupancy.clone().requires_grad_(True),
        atoms.u_star.clone().requires_grad_(True),
    )
    assert torch.autograd.gradcheck(f, inputs, eps=1e-7, atol=1e-5, rtol=1e-4)
    # batched candidates with shared occupancies and ADPs
    batch = torch.stack([atoms.xyz, atoms.xyz + 0.013]).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: eng.fc_squared(atoms, xyz=x), (batch,), eps=1e-7, atol=1e-5, rtol=1e-4
    )


def test_batched_candidates_equal_single_evaluations():
    s = _toy_structure("P 1 21/c 1")
    hkl = np.array([[1, 2, 3], [2, -1, 4], [0, 3, 1], [3, 1, -2]])
    eng = StructureFactorEngine(hkl, s.cell, s.space_group)
    atoms = AtomTensors.from_structure(s, symmetry=eng.symmetry)
    batch = torch.stack([atoms.xyz, atoms.xyz + 0.01, atoms.xyz - 0.02])
    fb = eng.fc(atoms, xyz=batch)
    assert fb.shape == (3, 4)
    for i in range(3):
        assert torch.allclose(fb[i], eng.fc(atoms, xyz=batch[i]))


def test_float32_close_to_float64():
    s = _toy_structure("C 1 2/c 1")
    hkl = np.array([[1, 1, 3], [2, 0, 4], [0, 2, 1], [3, 1, -2], [5, 3, 7]])
    f64 = calculate_fc(s, hkl)
    f32 = calculate_fc(s, hkl, dtype=torch.float32)
    assert np.abs(f32 - f64).max() / np.abs(f64).max() < 1e-4


def test_centring_absent_reflections_are_zero():
    s = _toy_structure("C 1 2/c 1")
    hkl = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 0]])
    f = calculate_fc(s, hkl)
    assert abs(f[0]) < 1e-9 and abs(f[1]) < 1e-9 and abs(f[2]) > 1e-3


def test_friedel_pairs_differ_only_with_anomalous_scattering():
    s = _toy_structure("P 21 21 21")
    hkl = np.array([[1, 2, 3], [-1, -2, -3]])
    f_plain = calculate_fc(s, hkl)
    assert abs(abs(f_plain[0]) - abs(f_plain[1])) < 1e-9
    f_anom = calculate_fc(s, hkl, wavelength=1.54184)
    assert abs(abs(f_anom[0]) - abs(f_anom[1])) > 1e-3
