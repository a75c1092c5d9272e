"""Riding H placement: SHELXL AFIX geometry on real published models (no refinement)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from refractor_core.dataio import load_bundle
from refractor_plugins.refiners.lsq import hydrogens as hyd
from refractor_plugins.refiners.lsq.model import WorkingModel


def _heavy_model(real_case, name: str) -> WorkingModel:
    case = real_case(name)
    structure = load_bundle(case.reference, block=case.data_block).structure
    model = WorkingModel.from_structure(structure)
    model.remove_atoms(model.hydrogen)
    return model


def _placed(model: WorkingModel, expected_h=None, distances="low-temperature") -> WorkingModel:
    return hyd.place_hydrogens(model, expected_h=expected_h, distances=distances).model


def _cart(m: WorkingModel, i: int) -> np.ndarray:
    return m.cartesian(m.xyz[i][None])[0]


def _angle(a, b, c) -> float:
    u, v = a - b, c - b
    return math.degrees(math.acos(float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))))


def _groups(m: WorkingModel, kind: str):
    return [g for g in m.h_groups if g.kind == kind]


def test_ch2_in_three_ring_and_distances(real_case):
    """Ethylene oxide: two CH2 (AFIX 23) with C-H 0.99 Å (0.97 at room temperature)."""
    m = _placed(_heavy_model(real_case, "ethylene_oxide"), expected_h=4.0)
    groups = _groups(m, "CH2")
    assert len(groups) == 2 and sum(len(g.atoms) for g in groups) == 4
    for g in groups:
        c = _cart(m, g.parent)
        h1, h2 = (_cart(m, a) for a in g.atoms)
        assert np.linalg.norm(h1 - c) == pytest.approx(0.99, abs=1e-6)
        assert 104.0 <= _angle(h1, c, h2) <= 116.5
        assert m.afix[g.atoms[0]] == 23
        assert m.u_ratio[g.atoms[0]] == pytest.approx(1.2)
    room = _placed(_heavy_model(real_case, "ethylene_oxide"), distances="room-temperature")
    g = _groups(room, "CH2")[0]
    assert np.linalg.norm(_cart(room, g.atoms[0]) - _cart(room, g.parent)) == pytest.approx(0.97, abs=1e-6)


def test_aromatic_ch_lies_in_the_ring_plane(real_case):
    """Cp ring of CpNa: aromatic CH (AFIX 43), 0.95 Å, on the external bisector."""
    m = _placed(_heavy_model(real_case, "cpna"), expected_h=7.0)
    groups = _groups(m, "ArCH")
    assert len(groups) == 3
    for g in groups:
        c = _cart(m, g.parent)
        h = _cart(m, g.atoms[0])
        nbs = [hyd.neighbour_position(m, nb) for nb in g.neighbours]
        assert np.linalg.norm(h - c) == pytest.approx(0.95, abs=1e-6)
        a1, a2 = _angle(h, c, nbs[0]), _angle(h, c, nbs[1])
        assert a1 == pytest.approx(a2, abs=0.5)
        normal = np.cross(nbs[0] - c, nbs[1] - c)
        assert abs((h - c) @ normal) / np.linalg.norm(normal) < 1e-6  # in the plane


def test_methyl_groups_are_tetrahedral_with_1_5_ueq(real_case):
    """alga amide: CH3 (AFIX 137) C-H 0.98 Å, H-C-H 109.5°, U(H) = 1.5 Ueq(C)."""
    m = _placed(_heavy_model(real_case, "alga_amide_inversion_twin"), expected_h=20.0)
    groups = _groups(m, "CH3")
    assert groups
    for g in groups:
        c = _cart(m, g.parent)
        hs = [_cart(m, a) for a in g.atoms]
        assert len(hs) == 3
        for h in hs:
            assert np.linalg.norm(h - c) == pytest.approx(0.98, abs=1e-6)
        assert _angle(hs[0], c, hs[1]) == pytest.approx(109.47, abs=0.1)
        x = hyd.neighbour_position(m, g.neighbours[0])
        assert _angle(x, c, hs[0]) == pytest.approx(109.47, abs=0.1)
        assert m.u_iso[g.atoms[0]] == pytest.approx(1.5 * m.u_iso[g.parent])


def test_nh2_on_a_mirror_keeps_site_symmetry(real_case):
    """Urea (P-421m): the NH2 H atoms lie on the mirror with N, 0.88 Å."""
    m = _placed(_heavy_model(real_case, "urea"), expected_h=1.0)
    (g,) = _groups(m, "NH2")
    for a in g.atoms:
        assert m.order[a] == 2
        assert np.linalg.norm(_cart(m, a) - _cart(m, g.parent)) == pytest.approx(0.88, abs=1e-6)


def test_h_count_follows_the_formula(real_case):
    """Optional groups (NH, OH) are added only while the formula's H count allows."""
    model = _heavy_model(real_case, "cpna")
    full = hyd.place_hydrogens(model, expected_h=7.0)
    assert full.counts["placed_h_asu"] == pytest.approx(7.0, abs=0.01)
    fewer = hyd.place_hydrogens(model, expected_h=2.5)  # room for the Cp H only
    assert fewer.counts["placed_h_asu"] == pytest.approx(2.5, abs=0.01)
    assert "NH3" not in fewer.counts["groups"]


def test_riding_update_follows_the_parent(real_case):
    """After the parent moves, re-placing keeps the AFIX geometry."""
    m = _placed(_heavy_model(real_case, "ethylene_oxide"), expected_h=4.0)
    g = _groups(m, "CH2")[0]
    m.xyz[g.parent] += np.array([0.01, -0.005, 0.002])
    hyd.update_riding(m)
    c = _cart(m, g.parent)
    for a in g.atoms:
        assert np.linalg.norm(_cart(m, a) - c) == pytest.approx(0.99, abs=1e-6)


def test_the_models_own_h_groups_are_placed(real_case):
    """ni_cubic's solvent (a toluene disordered over a special position, refined with
    restraints) has ring bonds of 1.51-1.55 Å and a 1.25 Å C-CH3 bond: by geometry alone
    some ring carbons get CH2, the methyl carbon an acetylenic CH and the nitrile carbon
    C40 an H. The .res says AFIX 43 and 137 (`RefinementInstructions.hfix`), and those
    groups are placed; C40, which the file gives no H, gets none."""
    case = real_case("ni_cubic_i43d")
    bundle = load_bundle(case.reference, block=case.data_block)
    hfix = bundle.instructions.hfix
    assert hfix["C30"] == 43 and hfix["C26"] == 137 and hfix["C41"] == 33 and "C40" not in hfix
    model = WorkingModel.from_structure(bundle.structure)
    model.remove_atoms(model.hydrogen)
    index = model.label_index()
    by_geometry = {model.labels[g.parent]: g.kind for g in _placed(model).h_groups}
    assert by_geometry["C31"] == "CH2" and by_geometry["C26"] == "CH-sp" and "C40" in by_geometry
    forced = {index[label]: code for label, code in hfix.items() if label in index}
    placed = hyd.place_hydrogens(model, forced=forced).model
    kinds = {placed.labels[g.parent]: g.kind for g in placed.h_groups}
    assert kinds["C33"] == "ArCH" and kinds["C26"] == "CH3" and kinds["C41"] == "CH3"
    # AFIX 137 rotates (its torsion is a least-squares parameter), AFIX 33 rides as placed
    groups = {placed.labels[g.parent]: g for g in placed.h_groups}
    assert groups["C26"].refine_torsion and placed.afix[groups["C26"].atoms[0]] == 137
    assert not groups["C41"].refine_torsion and placed.afix[groups["C41"].atoms[0]] == 33
    assert not groups["C33"].refine_torsion
    assert "C40" not in kinds
    assert set(kinds) == set(hfix)  # every group of the file, C25 too (its H is not a duplicate of a symmetry copy's)


def test_free_h_parents_follow_the_disorder_component(real_case):
    """phosphazene's N-H are refined freely (DFIX) in both components of a disordered
    N1/N1' (0.05 Å apart): each H is assigned to the N of its own PART."""
    case = real_case("phosphazene_p31c")
    hfix = load_bundle(case.reference, block=case.data_block).instructions.hfix
    assert hfix["N1"] == 0 and hfix["N1'"] == 0


def test_hfix_instructions_name_riding_groups():
    """HFIX lines of an .ins (before any H exists) become the model's H groups; an unknown
    atom is noted, not fatal."""
    from refractor_plugins.readers.shelx_ins import parse_ins

    text = "\n".join([
        "TITL t", "CELL 0.71073 10 11 12 90 90 90", "ZERR 4 0.001 0.001 0.001 0 0 0", "LATT 1",
        "SFAC C N O H", "UNIT 8 4 4 8", "HFIX 43 C1 C2", "HFIX 137 1.5 C3", "HFIX 23 C9", "FVAR 1.0",
        "C1 1 0.1 0.2 0.3 11.0 0.03", "C2 1 0.2 0.2 0.3 11.0 0.03", "C3 1 0.3 0.2 0.3 11.0 0.03",
        "N1 2 0.3 0.3 0.3 11.0 0.03", "HKLF 4", "END", "",
    ])
    ins = parse_ins(text, "t.ins")
    assert ins.instructions.hfix == {"C1": 43, "C2": 43, "C3": 137}
    assert any("HFIX" in n and "C9" in n for n in ins.notes)


def test_hfix_with_a_residue_suffix_names_each_residues_own_atoms():
    """HFIX_MEA 137 C2: the C2 of every residue of class MEA (not C2 of residue 0);
    HFIX_2 43 C1: residue 2's C1 only."""
    from refractor_plugins.readers.shelx_ins import parse_ins

    text = "\n".join([
        "TITL t", "CELL 0.71073 10 11 12 90 90 90", "ZERR 4 0.001 0.001 0.001 0 0 0", "LATT 1",
        "SFAC C N O H", "UNIT 8 4 4 8", "HFIX_MEA 137 C2", "HFIX_2 43 C1", "FVAR 1.0",
        "C2 1 0.05 0.2 0.3 11.0 0.03",
        "RESI 1 MEA", "C1 1 0.1 0.2 0.3 11.0 0.03", "C2 1 0.2 0.2 0.3 11.0 0.03",
        "RESI 2 MEA", "C1 1 0.3 0.2 0.3 11.0 0.03", "C2 1 0.4 0.2 0.3 11.0 0.03",
        "RESI 0", "HKLF 4", "END", "",
    ])
    ins = parse_ins(text, "t.ins")
    labels = [a.label for a in ins.atoms]
    c2_1, c2_2, c1_2 = labels[2], labels[4], labels[3]
    assert ins.instructions.hfix == {c2_1.upper(): 137, c2_2.upper(): 137, c1_2.upper(): 43}
    assert labels[0].upper() not in ins.instructions.hfix


def test_a_rotating_group_with_an_h_on_a_mirror_keeps_its_torsion(real_case):
    """cpna's ammine N1 sits on a mirror. Placed at a general torsion its NH3 is disordered
    over the mirror (three half H, torsion refined); turned until one H lies on the mirror
    it is ordered (that H on the mirror, the third the image of the second), and then the
    symmetry fixes its torsion: neither refined nor re-fitted (AFIX 33)."""
    from refractor_core.crystal.cell import fractionalization_matrix

    m = _placed(_heavy_model(real_case, "cpna"), expected_h=7.0)
    n1 = m.label_index()["N1"]
    g = next(g for g in m.h_groups if g.parent == n1)
    assert g.kind == "NH3" and len(g.atoms) == 3 and g.refine_torsion and not g.fixed_by_symmetry
    assert all(m.occupancy[a] == pytest.approx(0.5) for a in g.atoms)

    f_m = fractionalization_matrix(m.cell)

    def off_mirror(t: float) -> float:
        g.torsion = t
        y = (hyd.group_positions(m, g) @ f_m.T)[:, 1]
        return float(np.min(np.abs(y - 0.75)))

    g.torsion = min(np.arange(0.0, 120.0, 0.25), key=off_mirror)
    ordered = hyd.HGroup(parent=g.parent, kind=g.kind, neighbours=g.neighbours, reference=g.reference,
                         torsion=g.torsion, distance=g.distance, refine_torsion=True)
    drop = np.zeros(m.n, dtype=bool)
    drop[g.atoms] = True
    m.remove_atoms(drop)
    hyd._materialise(m, ordered)
    assert len(ordered.atoms) == 2 and sorted(int(m.order[a]) for a in ordered.atoms) == [1, 2]
    assert ordered.fixed_by_symmetry and not ordered.refine_torsion
    assert all(m.afix[a] == 33 for a in ordered.atoms)
    m.h_groups.append(ordered)
    assert not hyd._refittable(ordered)


@pytest.mark.parametrize("name, codes, n_min", [
    ("sucrose", {13, 23}, 14),  # SHELXL-2018: CH of a sugar ring, CH2
    ("difluoro_6ring_pna21", {23}, 8),  # SHELXL-97: CH2 of both disorder components
    ("si4_disorder_cc", {33, 43}, 80),  # SHELXL-2018: 24 staggered methyl groups
])
def test_riding_h_are_placed_where_shelxl_placed_them(real_case, name, codes, n_min):
    """The model's own AFIX groups, placed from its non-H atoms alone, put every H within
    0.01 Å of where SHELXL put it: a CH with three equal X-C-H angles (AFIX 13; their
    negative sum of bond vectors is up to 9° off in sucrose), a CH2 whose H-C-H angle
    follows its X-C-Y angle (AFIX 23), a methyl staggered with one H anti to the shortest
    other bond of the next atom (AFIX 33)."""
    case = real_case(name)
    bundle = load_bundle(case.reference, block=case.data_block)
    model = WorkingModel.from_structure(bundle.structure)
    published_h = model.xyz[model.hydrogen].copy()
    model.remove_atoms(model.hydrogen)
    index = model.label_index()
    forced = {index[label]: code for label, code in bundle.instructions.hfix.items() if label in index}
    placed = hyd.place_hydrogens(model, forced=forced, refine_torsions=False).model
    checked = 0
    for g in placed.h_groups:
        if forced.get(g.parent) not in codes:
            continue
        for a in g.atoms:
            assert placed.symmetry.nearest_image_distance(placed.cell, placed.xyz[a], published_h) < 0.01, placed.labels[a]
            checked += 1
    assert checked >= n_min


def test_a_models_refined_oh_distance_is_where_its_afix_148_groups_start(real_case):
    """sucrose's OH groups are AFIX 148: rotating, and their O-H distance refined. Re-placed
    from the published model (0 cycles, as `refractor refine --model`), each takes the
    torsion and the O-H distance of the model's own H, as SHELXL goes on from them: every H
    within 0.005 Å of the published one (0.048 Å with the default O-H distance)."""
    from refractor_core.dataio import load_reflections
    from refractor_core.types import Candidate
    from refractor_plugins.refiners.configs import LsqConfig
    from refractor_plugins.refiners.lsq.refiner import USER_MODEL, LsqRefiner

    case = real_case("sucrose")
    bundle = load_bundle(case.reference, block=case.data_block)
    published = {s.label: s for s in bundle.structure.sites if s.element == "H"}
    cand = Candidate(structure=bundle.structure, generator=USER_MODEL, meta={"instructions": bundle.instructions.model_dump()})
    refined = LsqRefiner(LsqConfig(max_cycles=0)).refine(load_reflections(case.reflections), cand).structure
    model = WorkingModel.from_structure(refined)
    hydroxyl = [s for s in refined.sites if s.element == "H" and published[s.label].afix == 148]
    assert len(hydroxyl) == 8
    for s in hydroxyl:
        assert model.symmetry.nearest_image_distance(model.cell, s.xyz, published[s.label].xyz) < 0.005, s.label



def test_a_model_that_brings_its_h_is_refined_with_them_from_the_first_cycle(real_case):
    """cod1979688's published model (42 riding H): its H are re-placed before the first
    cycle, as SHELXL refines a model with its H. Two cycles leave every non-H atom within
    0.005 Å of the published one and R1 at the published 0.0364 (refined first without
    the H, the same two cycles moved C39 by 0.016 Å, to R1 0.0399)."""
    from refractor_core.dataio import load_reflections
    from refractor_core.types import Candidate
    from refractor_plugins.refiners.configs import LsqConfig
    from refractor_plugins.refiners.lsq.refiner import USER_MODEL, LsqRefiner

    case = real_case("cod1979688")
    bundle = load_bundle(case.reference, block=case.data_block)
    cand = Candidate(structure=bundle.structure, generator=USER_MODEL, meta={"instructions": bundle.instructions.model_dump()})
    result = LsqRefiner(LsqConfig(max_cycles=2)).refine(load_reflections(case.reflections), cand)
    first = next(line for line in result.log if "cycle   1" in line)
    assert "riding H" in "\n".join(result.log[:result.log.index(first)])
    published = {s.label: s for s in bundle.structure.sites if s.element != "H"}
    model = WorkingModel.from_structure(result.structure)
    for s in result.structure.sites:
        if s.label in published:
            assert model.symmetry.nearest_image_distance(model.cell, s.xyz, published[s.label].xyz) < 0.005, s.label
    assert result.r1 == pytest.approx(case.published_r1, abs=0.0005)


def test_terminal_hydride_h_come_from_difference_peaks(real_case):
    """alga_amide's published model refines its five Al-H/Ga-H freely; from a perturbed start
    without H, no geometry places them, so they are found at difference peaks 0.8-1.2 times
    the E-H distance from their Al or Ga atom, away from its bonds. All five come back beside
    the published ones, and R1 with the published (0.0204; 0.0260 without them)."""
    import sys
    import zlib
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from refine_real import SEED, perturbed_start

    from refractor_core.crystal.symmetry import SymmetryOps
    from refractor_core.dataio import load_reflections
    from refractor_core.types import Candidate
    from refractor_plugins.refiners.configs import LsqConfig
    from refractor_plugins.refiners.lsq.refiner import USER_MODEL, LsqRefiner

    case = real_case("alga_amide_inversion_twin")
    bundle = load_bundle(case.reference, block=case.data_block)
    published = bundle.structure
    seed = SEED + zlib.crc32(case.name.encode())
    start = perturbed_start(published, 0.2, seed)
    assert not any(s.element == "H" for s in start.sites)
    cand = Candidate(structure=start, generator=USER_MODEL, seed=seed, meta={"instructions": bundle.instructions.model_dump()})
    result = LsqRefiner(LsqConfig()).refine(load_reflections(case.reflections), cand)
    hydrides = [s for s in result.structure.sites if s.element == "H" and s.riding_on and s.riding_on.upper() in ("AL1", "GA1", "GA2")]
    assert len(hydrides) == 5
    sym = SymmetryOps.from_space_group(published.space_group)
    expected = [s.xyz for s in published.sites if s.element == "H" and (s.riding_on or "").upper() in ("GA1", "GA2")]
    for h in hydrides:
        assert sym.nearest_image_distance(published.cell, h.xyz, expected) < 0.3, h.label
    # the two H of the Al1/Ga1 split site (PARTs 1 and 2, 0.84/0.16) belong to the whole
    # site, as in the published model: PART 0, occupancy 1, not Al1's 0.84
    on_split = [h for h in hydrides if h.riding_on.upper() in ("AL1", "GA1")]
    assert len(on_split) == 2
    assert all(h.part == 0 and h.occupancy == pytest.approx(1.0) for h in on_split)
    assert result.r1 < 0.0215


def test_afix_23_on_an_amine_bonded_to_a_metal_is_tetrahedral():
    """An amine N on a metal (C-NH2-Co) under AFIX 23 carries two H tetrahedrally between its
    two bonds, 0.92 Å away as SHELXL places them at low temperature; they were placed as a
    planar NH2 on the C-N bond alone, the metal ignored (1.0-1.2 Å from SHELXL's H)."""
    from refractor_plugins.readers.shelx_ins import parse_ins

    # Co-N 2.00 Å along x, N-C 1.48 Å at 115° from it, in the xy plane
    text = """TITL amine
CELL 0.71073 10 10 10 90 90 90
LATT -1
SFAC C N CO
UNIT 1 1 1
CO1 3 0.0 0.0 0.0 11.0 0.03
N1 2 0.2 0.0 0.0 11.0 0.03
C1 1 0.26255 0.13413 0.0 11.0 0.03
HKLF 4
END
"""
    model = WorkingModel.from_structure(parse_ins(text, "amine.res").structure())
    index = model.label_index()
    placed = hyd.place_hydrogens(model, forced={index["N1"]: 23}).model
    (group,) = placed.h_groups
    assert group.kind == "NH2-sp3" and len(group.atoms) == 2
    n, c, co = (_cart(placed, index[x]) for x in ("N1", "C1", "CO1"))
    h1, h2 = (_cart(placed, a) for a in group.atoms)
    for h in (h1, h2):
        assert np.linalg.norm(h - n) == pytest.approx(0.92, abs=1e-6)
        assert 100.0 < _angle(h, n, c) < 115.0 and 100.0 < _angle(h, n, co) < 115.0
    assert 100.0 < _angle(h1, n, h2) < 112.0
    assert placed.afix[group.atoms[0]] == 23


def test_an_acid_h_in_a_short_hydrogen_bond_comes_from_its_difference_peak(real_case):
    """hydroxyquinolinium hydrogen maleate's acid H1 sits nearly midway in the short O1...O2
    hydrogen bond (O1-H1 1.22, O2-H1 1.24 Å). Data simulated from the published model; the
    model without H1 refined (its other H kept): the difference peak gives one H, on O1 or
    O2, within 0.1 Å of H1 and at the peak's own distance, not at an ordinary O-H one.
    Asked for one H more than that, none comes: the other O atoms bonded to C (the carbonyl
    O3 and the carboxylate O4) have no peak with the angle and hydrogen bond of an acid H.
    Before, an O bonded to C never took an H from a peak."""
    from refractor_core.simulation import simulate
    from refractor_core.types import Candidate
    from refractor_plugins.refiners.configs import LsqConfig
    from refractor_plugins.refiners.lsq.refiner import USER_MODEL, Refinement

    case = real_case("hydroxyquinolinium_hmaleate")
    published = load_bundle(case.reference, block=case.data_block).structure
    data = simulate(published, d_min=0.7, seed=1).model_copy(update={"formula": "C13 H11 N O5", "z": 4})
    h1 = next(s for s in published.sites if s.label == "H1")
    start = published.model_copy(update={"sites": [s for s in published.sites if s.label != "H1"]})
    refinement = Refinement(LsqConfig(keep_h=True, max_cycles=2, anisotropic=False, weighting="sigma"), data,
                            Candidate(structure=start, generator=USER_MODEL))
    refinement.run()
    model = refinement.final_model
    completed, added = hyd.add_peak_hydrogens(model, refinement, 12.0)
    assert added == 1
    new = completed.n - 1
    parent = completed.labels[completed.riding[new]]
    assert parent in ("O1", "O2")
    assert completed.symmetry.nearest_image_distance(completed.cell, completed.xyz[new], np.array([h1.xyz])) < 0.1
    assert np.linalg.norm(_cart(completed, new) - _cart(completed, int(completed.riding[new]))) > 1.0
