"""SHELXL rigid groups (AFIX 66, continued by AFIX 65 after an H group): read, refined as
one body by the lsq refiner (geometry kept exactly), written back."""

from __future__ import annotations

import math

import numpy as np
import pytest

from refractor_core.crystal.cell import orthogonalization_matrix
from refractor_core.io.res_writer import structure_res
from refractor_core.simulation.simulator import simulate
from refractor_core.types import Candidate, UnitCell
from refractor_plugins.readers.shelx_ins import ins_bundle, parse_ins
from refractor_plugins.refiners.configs import LsqConfig
from refractor_plugins.refiners.lsq.model import WorkingModel
from refractor_plugins.refiners.lsq.parameters import Parameterisation

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CELL = (9.0, 10.0, 11.0, 90.0, 100.0, 90.0)


def _rotation(axis, degrees: float) -> np.ndarray:
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    a = math.radians(degrees)
    return np.eye(3) + math.sin(a) * kx + (1 - math.cos(a)) * kx @ kx


def _res(turn: np.ndarray = np.eye(3), shift=(0.0, 0.0, 0.0)) -> str:
    """A phenyl ring (AFIX 66, each C with an AFIX 43 H, AFIX 65 in between), a Br on C1
    and an O: the ring turned by `turn` about its centre and moved by `shift` (Å)."""
    cell = UnitCell(**dict(zip(("a", "b", "c", "alpha", "beta", "gamma"), CELL)))
    to_frac = np.linalg.inv(orthogonalization_matrix(cell))
    centre = np.array([3.0, 4.0, 5.0])
    plane = _rotation((1, 1, 0), 30.0)
    ring = [centre + plane @ (1.39 * np.array([math.cos(t), math.sin(t), 0.0])) for t in np.arange(6) * math.pi / 3]
    ring = [centre + np.asarray(shift) + turn @ (r - centre) for r in ring]
    lines = ["TITL rigid in P2(1)/c", "CELL 0.71073 " + " ".join(f"{x:g}" for x in CELL), "ZERR 4 0 0 0 0 0 0",
             "LATT 1", "SYMM -X, 0.5+Y, 0.5-Z", "SFAC C H O BR", "UNIT 24 20 4 4", "FVAR 1.0"]
    br = centre + plane @ (3.29 * np.array([1.0, 0.0, 0.0]))
    lines.append("BR1 4 " + " ".join(f"{x:.6f}" for x in to_frac @ br) + " 11.0 0.030")
    lines.append("O1 3 " + " ".join(f"{x:.6f}" for x in to_frac @ (centre + np.array([0.0, 0.0, 3.2]))) + " 11.0 0.040")
    for k, r in enumerate(ring):
        lines.append("AFIX 66" if k == 0 else "AFIX 65")
        lines.append(f"C{k + 1} 1 " + " ".join(f"{x:.6f}" for x in to_frac @ r) + " 11.0 0.035")
        if k > 0:
            h = centre + (r - centre) * (1.39 + 0.95) / 1.39
            lines += ["AFIX 43", f"H{k + 1} 2 " + " ".join(f"{x:.6f}" for x in to_frac @ h) + " 11.0 -1.2"]
    lines += ["AFIX 0", "HKLF 4", "END", ""]
    return "\n".join(lines)


def _bundle(text: str):
    return ins_bundle(parse_ins(text, "rigid.res"), "rigid.res")


def _ring_distances(structure) -> np.ndarray:
    m = WorkingModel.from_structure(structure)
    ring = [m.labels.index(f"C{k}") for k in range(1, 7)]
    r = m.cartesian()[ring]
    return np.linalg.norm(r[:, None] - r[None], axis=-1)


def test_rigid_group_is_read_and_written_back():
    structure = _bundle(_res()).structure
    groups = {s.label: s.rigid_group for s in structure.sites}
    assert all(groups[f"C{k}"] == 1 for k in range(1, 7))
    assert groups["BR1"] is None and groups["O1"] is None and groups["H2"] is None
    h2 = next(s for s in structure.sites if s.label == "H2")
    assert h2.riding_on == "C2"  # an H group inside the rigid group hangs on the atom before it
    text = structure_res(structure)
    afix = [line for line in text.splitlines() if line.startswith("AFIX")]
    assert afix.count("AFIX 66") == 1 and afix.count("AFIX 65") == 4  # after each of H2-H5
    back = {s.label: s.rigid_group for s in _bundle(text).structure.sites}
    assert back == groups


def test_rigid_group_has_six_parameters_and_keeps_its_geometry():
    """Data from the true model; the start has the ring turned by 4 degrees and moved
    0.1 Å: the body turns and moves back, its distances exactly as given."""
    truth = _bundle(_res()).structure
    data = simulate(truth, d_min=0.8, seed=5)
    start = _bundle(_res(_rotation((0.3, -1.0, 0.5), 4.0), (0.06, -0.05, 0.06))).structure
    model = WorkingModel.from_structure(start)
    params = Parameterisation.build(model)
    names = [params.describe(j) for j in range(params.n)]
    assert sum("rigid group" in n for n in names) == 6
    assert not any(n.startswith("C3 ") and "rigid" not in n and n[3:] in ("x", "y", "z") for n in names)
    config = LsqConfig(max_cycles=15, anisotropic=False, complete=False)
    from refractor_plugins.refiners.lsq.refiner import LsqRefiner

    refined = LsqRefiner(config).refine(data, Candidate(structure=start, generator="test"))
    assert np.allclose(_ring_distances(refined.structure), _ring_distances(start), atol=1e-6)
    out, true = WorkingModel.from_structure(refined.structure), WorkingModel.from_structure(truth)
    for k in range(1, 7):
        i, j = out.labels.index(f"C{k}"), true.labels.index(f"C{k}")
        assert np.linalg.norm(out.cartesian()[i] - true.cartesian()[j]) < 0.01, f"C{k}"
        assert refined.structure.sites[i].xyz_su is not None and max(refined.structure.sites[i].xyz_su) > 0
    assert refined.r1 < 0.05


def test_a_cif_with_an_embedded_res_keeps_its_rigid_groups_and_fixed_values(tmp_path):
    """A CIF has no tags for rigid groups or fixed values: they come from its embedded .res
    (matched by label), so refining from the CIF refines what SHELXL refined."""
    from refractor_core.dataio import load_bundle
    from refractor_core.io.cif_writer import structure_cif

    text = _res().replace("O1 3 ", "O1 3 1").replace(" 11.0 0.040", " 11.0 10.040")  # x + 10, U + 10
    structure = _bundle(text).structure
    o1 = next(s for s in structure.sites if s.label == "O1")
    assert o1.fixed_xyz == (True, False, False) and o1.fixed_u == (True,)
    cif = tmp_path / "rigid.cif"
    cif.write_text(structure_cif(structure, name="rigid", res_text=text))
    bundle = load_bundle(cif)
    sites = {s.label: s for s in bundle.structure.sites}
    assert all(sites[f"C{k}"].rigid_group == 1 for k in range(1, 7))
    assert sites["BR1"].rigid_group is None
    assert sites["O1"].fixed_xyz == (True, False, False) and sites["O1"].fixed_u == (True,)
    assert any("rigid groups of 7 sites taken from the embedded .res" in n for n in bundle.notes)
