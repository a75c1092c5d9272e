"""Bond lengths and angles with su (SHELXL's ACTA tables) from the refiner and in the CIF."""

from __future__ import annotations

import re

import gemmi
import numpy as np
import pytest

from refractor_core.dataio import load_bundle, load_reflections
from refractor_core.io.outputs import write_structure_outputs
from refractor_core.types import Candidate
from refractor_plugins.refiners.configs import LsqConfig
from refractor_plugins.refiners.lsq.refiner import USER_MODEL, LsqRefiner

_NUMBER = re.compile(r"^(-?[0-9.]+)(?:\(([0-9]+)\))?$")


def _value_su(text: str) -> tuple[float, float | None]:
    m = _NUMBER.match(text)
    value = float(m.group(1))
    if m.group(2) is None:
        return value, None
    decimals = len(m.group(1).split(".")[1]) if "." in m.group(1) else 0
    return value, int(m.group(2)) * 10.0 ** -decimals


def _refined(real_case, name: str, cycles: int):
    case = real_case(name)
    bundle = load_bundle(case.reference, block=case.data_block)
    data = load_reflections(case.reflections)
    meta = {"instructions": bundle.instructions.model_dump()} if bundle.instructions is not None else {}
    result = LsqRefiner(LsqConfig(max_cycles=cycles)).refine(
        data, Candidate(structure=bundle.structure, generator=USER_MODEL, meta=meta))
    return case, data, result


def test_bonds_and_angles_are_shelxls(real_case):
    """sucrose's published model refined on: every bond and angle between non-H atoms that
    SHELXL tabulated comes out within 0.001 Å / 0.05° of its value, with an su of the same
    size (0.6-1.5 times SHELXL's); bonds to riding H are given without su."""
    case, _, result = _refined(real_case, "sucrose", 3)
    block = gemmi.cif.read(str(case.reference)).sole_block()
    ours = {}
    for kind in ("bonds", "angles"):
        for rec in result.meta["geometry"][kind]:
            if all(np.allclose(rot, np.eye(3).reshape(-1)) and not any(t) for rot, t in rec["operations"]):
                ours[tuple(rec["atoms"])] = rec
                ours[tuple(reversed(rec["atoms"]))] = rec
    compared = {"bond": 0, "angle": 0}
    for kind, tags in (("bond", ["_geom_bond_atom_site_label_1", "_geom_bond_atom_site_label_2", "_geom_bond_distance"]),
                       ("angle", ["_geom_angle_atom_site_label_1", "_geom_angle_atom_site_label_2",
                                  "_geom_angle_atom_site_label_3", "_geom_angle"])):
        for row in block.find(tags):
            labels = tuple(row[i] for i in range(len(tags) - 1))
            if any(label.startswith("H") for label in labels):
                continue
            value, su = _value_su(row[len(tags) - 1])
            rec = ours[labels]
            assert rec["value"] == pytest.approx(value, abs=0.001 if kind == "bond" else 0.05), labels
            assert rec["su"] is not None and 0.6 * su <= rec["su"] <= 1.5 * su, (labels, rec["su"], su)
            compared[kind] += 1
    assert compared["bond"] >= 23 and compared["angle"] >= 30
    riding = [rec for rec in result.meta["geometry"]["bonds"] if rec["atoms"][1].startswith("H")]
    assert riding and all(rec["su"] is None for rec in riding)


def test_cif_geometry_codes_give_the_written_distances(real_case, tmp_path):
    """cpna (Na on a mirror, bonds across it): each _geom_bond row's site symmetry code,
    applied through the CIF's own symop loop to the CIF's own coordinates, gives the
    distance written (bonds between non-H atoms); the straight O-Mn-O angles of mn_complex (Mn on an inversion
    centre) are 180.0 without su."""
    case, data, result = _refined(real_case, "cpna", 2)
    cif = write_structure_outputs(result, data, tmp_path, "cpna")["cif"]
    block = gemmi.cif.read(str(cif)).sole_block()
    cell = gemmi.UnitCell(*[float(_value_su(block.find_value(f"_cell_{t}"))[0]) for t in
                            ("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma")])
    ops = [gemmi.Op(gemmi.cif.as_string(t)) for t in block.find_loop("_space_group_symop_operation_xyz")]
    xyz = {row[0]: gemmi.Fractional(*[_value_su(row[i])[0] for i in (1, 2, 3)])
           for row in block.find(["_atom_site_label", "_atom_site_fract_x", "_atom_site_fract_y", "_atom_site_fract_z"])}
    rows = list(block.find(["_geom_bond_atom_site_label_1", "_geom_bond_atom_site_label_2", "_geom_bond_distance",
                            "_geom_bond_site_symmetry_2"]))
    assert sum(row[3] != "." for row in rows) >= 4
    for row in rows:
        if row[1].startswith("H"):
            continue  # (an H's coordinates are written to fewer decimals than the distance)
        p2 = xyz[row[1]]
        if row[3] != ".":
            n, shift = row[3].split("_")
            p2 = ops[int(n) - 1].apply_to_xyz(p2.tolist())
            p2 = gemmi.Fractional(*[v + int(c) - 5 for v, c in zip(p2, shift)])
        distance = cell.orthogonalize(xyz[row[0]]).dist(cell.orthogonalize(p2))
        written = row[2].split("(")[0]
        rounding = 0.5 * 10.0 ** -len(written.split(".")[1])  # (the coordinates' rounding adds 1e-4)
        assert distance == pytest.approx(float(written), abs=rounding + 1e-4), row

    _, data, result = _refined(real_case, "mn_complex_p21c", 1)
    straight = [rec for rec in result.meta["geometry"]["angles"] if rec["atoms"][1] == "Mn1" and rec["value"] > 179.99]
    assert len(straight) == 3 and all(rec["su"] is None for rec in straight)
    text = write_structure_outputs(result, data, tmp_path / "mn", "mn")["cif"].read_text()
    assert re.search(r"^O5 Mn1 O5 180\.0 \. 3_\d{3} \?$", text, re.M)
