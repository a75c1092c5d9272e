"""SHELXL fixed coordinates and U (value + 10), and U shared through a free variable: read,
held fixed or shared by the lsq refiner, written back."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from refractor_core.crystal.cell import u_equiv
from refractor_core.io.cif_writer import structure_cif
from refractor_core.io.numbers import with_su
from refractor_core.io.res_writer import structure_res
from refractor_core.simulation.simulator import simulate
from refractor_core.types import Candidate
from refractor_plugins.refiners.configs import LsqConfig
from refractor_plugins.refiners.lsq.model import WorkingModel
from refractor_plugins.refiners.lsq.parameters import Parameterisation
from refractor_plugins.refiners.lsq.refiner import LsqRefiner
from refractor_plugins.readers.shelx_ins import ins_bundle, parse_ins

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HEAD = """TITL fixed in P2(1)/c
CELL 0.71073 7.0 8.0 9.0 90 100 90
ZERR 4 0.001 0.001 0.001 0 0.01 0
LATT 1
SYMM -X, 0.5+Y, 0.5-Z
SFAC C N O
UNIT 12 4 8
FVAR 1.0
"""
ATOMS = """O1 3 0.110000 0.210000 0.320000 11.0 0.030
C1 1 {x} 0.150000 0.450000 11.0 0.030
N1 2 0.380000 0.050000 0.520000 11.0 0.030
C2 1 0.300000 0.320000 0.200000 11.0 0.030
O2 3 0.620000 0.420000 0.110000 11.0 0.030
C3 1 0.800000 0.300000 0.350000 11.0 0.030
HKLF 4
END
"""


def _bundle(text: str):
    return ins_bundle(parse_ins(text, "fixed.res"), "fixed.res")


def test_fixed_coordinate_is_read_and_written_back_with_plus_ten():
    s = {x.label: x for x in _bundle(HEAD + ATOMS.format(x="10.250000")).structure.sites}
    assert s["C1"].xyz == pytest.approx((0.25, 0.15, 0.45)) and s["C1"].fixed_xyz == (True, False, False)
    assert s["O1"].fixed_xyz == (False, False, False)
    negative = {x.label: x for x in _bundle(HEAD + ATOMS.format(x="-10.250000")).structure.sites}["C1"]
    assert negative.xyz[0] == pytest.approx(-0.25) and negative.fixed_xyz == (True, False, False)
    structure = _bundle(HEAD + ATOMS.format(x="10.250000")).structure
    text = structure_res(structure)
    c1 = next(line for line in text.splitlines() if line.startswith("C1 "))
    assert c1.split()[2:5] == ["10.250000", "0.150000", "0.450000"]
    back = {x.label: x for x in _bundle(text).structure.sites}
    assert back["C1"].fixed_xyz == (True, False, False) and back["C1"].xyz[0] == pytest.approx(0.25)
    assert "10.25" not in structure_res(structure.model_copy(update={"sites": [
        x.model_copy(update={"fixed_xyz": (False, False, False)}) for x in structure.sites]}))


def test_fixed_coordinate_leaves_the_position_basis():
    structure = _bundle(HEAD + ATOMS.format(x="10.250000")).structure
    model = WorkingModel.from_structure(structure)
    c1 = model.labels.index("C1")
    basis = model.position_basis[c1]
    assert basis.shape == (3, 2) and np.allclose(basis[0], 0.0) and np.allclose(basis.T @ basis, np.eye(2))
    assert all(model.position_basis[i].shape == (3, 3) for i in range(model.n) if i != c1)
    names = [Parameterisation.build(model).describe(j) for j in range(Parameterisation.build(model).n)]
    assert "C1 y" in names and "C1 z" in names and "C1 x" not in names
    copy = model.copy()
    copy.remove_atoms(np.array([label == "O1" for label in copy.labels]))
    assert copy.fixed_xyz.tolist()[copy.labels.index("C1")] == [True, False, False]
    assert copy.to_structure().sites[copy.labels.index("C1")].fixed_xyz == (True, False, False)


def test_fixed_coordinate_pins_a_polar_origin():
    """In P2(1) the origin floats along b unless a coordinate fixes it: then no origin restraint."""
    polar = HEAD.replace("SYMM -X, 0.5+Y, 0.5-Z", "SYMM -X, 0.5+Y, -Z").replace("LATT 1", "LATT -1")
    free = WorkingModel.from_structure(_bundle(polar + ATOMS.format(x="0.250000")).structure)
    assert len(Parameterisation.build(free).origin_restraints()) == 1
    pinned_text = polar + ATOMS.format(x="0.250000").replace("0.150000", "10.150000")
    pinned = WorkingModel.from_structure(_bundle(pinned_text).structure)
    assert Parameterisation.build(pinned).origin_restraints() == []


def test_fixed_coordinate_stays_put_while_the_others_refine():
    """Data simulated from the model; the start has every coordinate moved, but C1 x is
    fixed (at its true value): it does not change, the rest move back towards the truth."""
    truth = _bundle(HEAD + ATOMS.format(x="10.250000")).structure
    data = simulate(truth, d_min=0.8, seed=3)
    rng = np.random.default_rng(5)
    sites = []
    for s in truth.sites:
        shift = rng.normal(0.0, 0.006, 3)
        if s.label == "C1":
            shift[0] = 0.0
        sites.append(s.model_copy(update={"xyz": tuple(np.asarray(s.xyz) + shift)}))
    start = truth.model_copy(update={"sites": sites})
    config = LsqConfig(max_cycles=4, anisotropic=False, riding_h=False, complete=False, restraints=False)
    refined = LsqRefiner(config).refine(data, Candidate(structure=start, generator="test"))
    out = {s.label: s for s in refined.structure.sites}
    before = {s.label: s for s in start.sites}
    true = {s.label: s for s in truth.sites}
    assert out["C1"].xyz[0] == 0.25 and out["C1"].fixed_xyz == (True, False, False)
    for label, s in out.items():
        moved = np.abs(np.subtract(s.xyz, before[label].xyz))
        error_before = np.abs(np.subtract(before[label].xyz, true[label].xyz))
        error_after = np.abs(np.subtract(s.xyz, true[label].xyz))
        for k in range(3):
            if label == "C1" and k == 0:
                continue
            assert moved[k] > 1e-4, (label, k)
            assert error_after[k] < error_before[k], (label, k)
    assert "10.250000" in structure_res(refined.structure)


def test_fixed_u_is_read_and_written_back_with_plus_ten():
    text = HEAD + ATOMS.format(x="0.250000").replace("C2 1 0.300000 0.320000 0.200000 11.0 0.030",
                                                      "C2 1 0.300000 0.320000 0.200000 11.0 10.045")
    text = text.replace("O2 3 0.620000 0.420000 0.110000 11.0 0.030",
                        "O2 3 0.620000 0.420000 0.110000 11.0 0.030 0.031 10.032 0.001 0.002 -10.003")
    s = {x.label: x for x in _bundle(text).structure.sites}
    assert s["C2"].u_iso == pytest.approx(0.045) and s["C2"].fixed_u == (True,)
    assert s["O1"].fixed_u == ()
    # SHELX order U11 U22 U33 U23 U13 U12 -> u_aniso order U11 U22 U33 U12 U13 U23
    assert s["O2"].u_aniso == pytest.approx((0.030, 0.031, 0.032, -0.003, 0.002, 0.001))
    assert s["O2"].fixed_u == (False, False, True, True, False, False)
    lines = structure_res(_bundle(text).structure).splitlines()
    c2 = next(line for line in lines if line.startswith("C2 "))
    assert c2.split()[-1] == "10.04500"
    o2 = lines[next(i for i, line in enumerate(lines) if line.startswith("O2 ")) + 1].split()
    assert o2 == ["10.03200", "0.00100", "0.00200", "-10.00300"]


def test_a_fixed_u_is_not_refined_and_a_fixed_u_iso_stays_isotropic():
    """Data simulated with every U 0.030; the start has every U at 0.050 but C2's, fixed
    at its true 0.030: it is not a parameter and stays isotropic, while the others go
    anisotropic and refine back to 0.030. (A fixed U that is wrong biases the others
    through the scale, as in SHELXL: this six-atom model then ends at U_eq 0.035.)"""
    truth = _bundle(HEAD + ATOMS.format(x="0.250000")).structure
    data = simulate(truth, d_min=0.8, seed=3)
    start = _bundle(HEAD + ATOMS.format(x="0.250000").replace("11.0 0.030", "11.0 0.050").replace(
        "C2 1 0.300000 0.320000 0.200000 11.0 0.050", "C2 1 0.300000 0.320000 0.200000 11.0 10.030")).structure
    model = WorkingModel.from_structure(start)
    names = [Parameterisation.build(model).describe(j) for j in range(Parameterisation.build(model).n)]
    assert "C1 Uiso" in names and "C2 Uiso" not in names
    config = LsqConfig(max_cycles=8, anisotropic=True, riding_h=False, complete=False, restraints=False)
    refined = LsqRefiner(config).refine(data, Candidate(structure=start, generator="test"))
    out = {s.label: s for s in refined.structure.sites}
    assert out["C2"].u_iso == pytest.approx(0.030, abs=1e-12) and out["C2"].u_aniso is None and out["C2"].fixed_u == (True,)
    assert out["C2"].u_iso_su is None
    others = [s for label, s in out.items() if label != "C2"]
    assert all(s.u_aniso is not None for s in others)
    u_eq = [float(u_equiv(refined.structure.cell, np.array(s.u_aniso))) for s in others]
    assert all(abs(u - 0.030) < 0.001 for u in u_eq), u_eq
    assert "10.03000" in structure_res(refined.structure)


def test_a_fixed_coordinate_on_the_polar_axis_stays_put_in_blocked_refinement():
    """Blocked refinement moves the structure back along a polar axis after each cycle (its
    origin floats there); not when a fixed coordinate pins the origin along that axis."""
    polar = HEAD.replace("SYMM -X, 0.5+Y, 0.5-Z", "SYMM -X, 0.5+Y, -Z").replace("LATT 1", "LATT -1")
    truth = _bundle(polar + ATOMS.format(x="0.250000").replace("0.150000", "10.150000")).structure
    data = simulate(truth, d_min=0.8, seed=3)
    rng = np.random.default_rng(7)
    sites = []
    for s in truth.sites:
        shift = rng.normal(0.0, 0.006, 3) + (0.0, 0.01, 0.0)  # all but C1 y also moved along b
        if s.label == "C1":
            shift[1] = 0.0
        sites.append(s.model_copy(update={"xyz": tuple(np.asarray(s.xyz) + shift)}))
    start = truth.model_copy(update={"sites": sites})
    config = LsqConfig(max_cycles=6, anisotropic=False, riding_h=False, complete=False, restraints=False,
                       matrix="blocked", block_size=20)
    refined = LsqRefiner(config).refine(data, Candidate(structure=start, generator="test"))
    out = {s.label: s for s in refined.structure.sites}
    true = {s.label: s for s in truth.sites}
    assert out["C1"].xyz[1] == pytest.approx(0.15, abs=1e-12) and out["C1"].fixed_xyz == (False, True, False)
    for label, s in out.items():  # the others found their way back along b to C1's origin
        assert abs(s.xyz[1] - true[label].xyz[1]) < 0.002, label


def test_u_shared_through_a_free_variable_is_one_parameter():
    """C2 and C3 with U 31.0 (U = fv3 = 0.04 each): one shared U, as SHELXL refines fv3
    (an EADP here); a lone U on a free variable is a U of its own, refined as usual."""
    text = HEAD.replace("FVAR 1.0", "FVAR 1.0 0.5 0.04") + ATOMS.format(x="0.250000").replace(
        "C2 1 0.300000 0.320000 0.200000 11.0 0.030", "C2 1 0.300000 0.320000 0.200000 11.0 31.0").replace(
        "C3 1 0.800000 0.300000 0.350000 11.0 0.030", "C3 1 0.800000 0.300000 0.350000 11.0 31.0").replace(
        "N1 2 0.380000 0.050000 0.520000 11.0 0.030", "N1 2 0.380000 0.050000 0.520000 11.0 20.06")
    bundle = _bundle(text)
    s = {x.label: x for x in bundle.structure.sites}
    assert s["C2"].u_iso == pytest.approx(0.04) and s["C3"].u_iso == pytest.approx(0.04)
    assert s["N1"].u_iso == pytest.approx(0.03)
    (eadp,) = [r for r in bundle.instructions.restraints if r.kind == "EADP"]
    assert [a.label for a in eadp.atoms] == ["C2", "C3"]
    data = simulate(_bundle(HEAD + ATOMS.format(x="0.250000")).structure, d_min=0.8, seed=3)
    config = LsqConfig(max_cycles=6, anisotropic=False, riding_h=False, complete=False)
    refined = LsqRefiner(config).refine(
        data, Candidate(structure=bundle.structure, generator="test", meta={"instructions": bundle.instructions}))
    out = {x.label: x for x in refined.structure.sites}
    assert out["C2"].u_iso == out["C3"].u_iso
    assert abs(out["C2"].u_iso - 0.030) < 0.003 and abs(out["N1"].u_iso - 0.030) < 0.003


def _tert_butyl_bromide_res(fvar: float, h_u: str) -> str:
    """tert-Butyl bromide in P2(1)/c, its three methyl groups riding (AFIX 137) with ideal
    tetrahedral H at 0.96 Å, every H U_iso written `h_u` (21.0: U = fv2 = `fvar`; -1.5)."""
    beta = np.radians(100.0)
    cell = np.array([[8.0, 0.0, 10.0 * np.cos(beta)], [0.0, 9.0, 0.0], [0.0, 0.0, 10.0 * np.sin(beta)]])
    origin = cell @ np.array([0.25, 0.25, 0.25])

    def atom(label: str, sfac: int, r: np.ndarray, u: str) -> str:
        return f"{label} {sfac} " + " ".join(f"{v:.6f}" for v in np.linalg.solve(cell, origin + r)) + f" 11.0 {u}"

    def bond(axis: np.ndarray, theta: float, phi: float) -> np.ndarray:
        """A unit vector at `theta` from `axis`, turned by `phi` about it."""
        v = np.cross(axis, [0.0, 1.0, 0.0] if abs(axis[1]) < 0.9 else [1.0, 0.0, 0.0])
        v /= np.linalg.norm(v)
        return np.cos(theta) * axis + np.sin(theta) * (np.cos(phi) * v + np.sin(phi) * np.cross(axis, v))

    tetrahedral = np.arccos(-1.0 / 3.0)
    z = np.array([0.0, 0.0, 1.0])
    lines = [atom("BR1", 3, 1.94 * z, "0.032"), atom("C1", 1, np.zeros(3), "0.028")]
    for k, u in enumerate(("0.030", "0.031", "0.033")):
        c = 1.53 * bond(z, tetrahedral, 2.0 * np.pi * k / 3.0)
        lines += [atom(f"C{k + 2}", 1, c, u), "AFIX 137"]
        lines += [atom(f"H{k + 2}{name}", 2, c + 0.96 * bond(c / 1.53, np.pi - tetrahedral, 2.0 * np.pi * j / 3.0), h_u)
                  for j, name in enumerate("ABC")]
        lines.append("AFIX 0")
    return ("TITL tbubr in P2(1)/c\nCELL 0.71073 8.0 9.0 10.0 90 100 90\nZERR 4 0.001 0.001 0.001 0 0.01 0\n"
            "LATT 1\nSYMM -X, 0.5+Y, 0.5-Z\nSFAC C H BR\nUNIT 16 36 4\n"
            f"FVAR 1.0 {fvar}\n" + "\n".join(lines) + "\nHKLF 4\nEND\n")


def test_riding_h_on_one_free_variable_share_one_refined_u():
    """Nine riding methyl H with U 21.0 (U = fv2), as SHELXL users code them: one refined U_iso
    shared by the nine (one parameter more than with -1.5, where their U follows C's), its su
    from the normal matrix, the H still riding; data simulated with fv2 = 0.06, the start
    at 0.025 moves to it. The .res keeps the code, FVAR holding the refined value, and no
    EADP beside it; reading it back gives the same shared U."""
    truth = _bundle(_tert_butyl_bromide_res(0.06, "21.0")).structure
    assert all(s.u_iso == pytest.approx(0.06) for s in truth.sites if s.element == "H")
    data = simulate(truth, d_min=0.8, seed=3)
    config = LsqConfig(max_cycles=8, anisotropic=False, complete=False)

    def refine(text: str):
        bundle = _bundle(text)
        candidate = Candidate(structure=bundle.structure, generator="test",
                              meta={"instructions": bundle.instructions.model_dump(mode="json")})
        return bundle, LsqRefiner(config).refine(data, candidate)

    bundle, refined = refine(_tert_butyl_bromide_res(0.025, "21.0"))
    start = {s.label: s for s in bundle.structure.sites if s.element == "H"}
    assert all(s.own_u and s.u_variable == (2, pytest.approx(1.0)) and s.calc for s in start.values())
    _, riding = refine(_tert_butyl_bromide_res(0.025, "-1.5"))
    assert refined.n_parameters == riding.n_parameters + 1
    h = [s for s in refined.structure.sites if s.element == "H"]
    assert sorted(s.label for s in h) == sorted(start) and all(s.calc and s.riding_on in ("C2", "C3", "C4") for s in h)
    u = {s.u_iso for s in h}
    su = {s.u_iso_su for s in h}
    assert len(u) == 1 and len(su) == 1 and None not in su
    (u,), (su,) = u, su
    assert abs(u - 0.06) < 0.25 * (0.06 - 0.025) and 0.0 < su < 0.02, (u, su)
    text = structure_res(refined.structure, refined=refined, instructions=bundle.instructions)
    fvar = next(line for line in text.splitlines() if line.startswith("FVAR")).split()
    assert float(fvar[2]) == pytest.approx(u, abs=1e-5)
    written = {w[0]: w[-1] for w in map(str.split, text.splitlines()) if w and w[0] in start}
    assert written == {label: "21.00000" for label in start}
    assert "EADP" not in text
    again = {s.label: s for s in _bundle(text).structure.sites if s.element == "H"}
    assert all(s.own_u and s.u_iso == pytest.approx(u, abs=1e-5) for s in again.values())
    block = gemmi.cif.read_string(structure_cif(refined.structure, refined=refined)).sole_block()
    table = block.find("_atom_site_", ["label", "U_iso_or_equiv", "calc_flag"])
    cif_h = {row[0]: (row[1], row[2]) for row in table if row[0] in start}
    assert cif_h == {label: (with_su(u, su), "calc") for label in start}


def test_polar_origin_restraint_counts_among_the_restraints():
    """SHELXL counts the floating-origin restraint of a polar space group among its
    restraints (a P2(1) model with no restraints of its own: 1 restraint in the .res REM
    line and the CIF, and n_r = 1 in the restrained GooF); a coordinate that pins the
    origin leaves no origin restraint to count."""
    polar = HEAD.replace("SYMM -X, 0.5+Y, 0.5-Z", "SYMM -X, 0.5+Y, -Z").replace("LATT 1", "LATT -1")
    config = LsqConfig(max_cycles=3, anisotropic=False, riding_h=False, complete=False, restraints=False)
    for text, n_origin in ((polar + ATOMS.format(x="0.250000"), 1),
                           (polar + ATOMS.format(x="0.250000").replace("0.150000", "10.150000"), 0)):
        truth = _bundle(text).structure
        data = simulate(truth, d_min=0.8, seed=3)
        refined = LsqRefiner(config).refine(data, Candidate(structure=truth, generator="test"))
        assert refined.meta["n_restraints"] == n_origin
        n, p = refined.n_reflections, refined.n_parameters
        expected = refined.goof * np.sqrt((n - p) / (n + n_origin - p))
        assert refined.meta["restrained_goof"] == pytest.approx(expected, rel=1e-6)
        cif = " ".join(structure_cif(refined.structure, refined=refined, data=data).split())
        assert f"_refine_ls_number_restraints {n_origin}" in cif
