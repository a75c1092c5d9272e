"""A user's own SHELXL restraints: read from a .res (residues, ranges, EQIV), evaluated with
exact gradients, and honoured by the `lsq` refiner on measured data."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from refractor_core.crystal.cell import orthogonalization_matrix
from refractor_core.dataio import load_bundle, load_reflections
from refractor_core.errors import InputError
from refractor_core.testing.real_cases import get_case
from refractor_core.types import Candidate
from refractor_core.union_find import UnionFind
from refractor_plugins.readers.shelx_ins import parse_ins
from refractor_plugins.refiners.configs import LsqConfig
from refractor_plugins.refiners.lsq import restraints, user_restraints
from refractor_plugins.refiners.lsq.model import WorkingModel
from refractor_plugins.refiners.lsq.parameters import Parameterisation
from refractor_plugins.refiners.lsq.refiner import USER_MODEL, LsqRefiner

# the benchmarks' readers of SHELXL's own output (its SADI list, a CIF's embedded .res)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RES = """TITL t
CELL 0.71073 10.0 11.0 12.0 90 100 90
ZERR 4 0.001 0.001 0.001 0 0.01 0
LATT 1
SYMM -X, 0.5+Y, 0.5-Z
SFAC C H O F
UNIT 8 8 4 12
EQIV $1 -x, 1/2+y, 1/2-z
SADI_CF3 0.03 C1 F1 C1 F2 C1 F3
SAME_CF3 C1 > F3
SIMU_* 0.05
DFIX 1.40 O1 C1_1 O1 C1_$1
RIGU $F
FVAR 1.0
O1 3 0.1 0.1 0.1 11.0 0.05
RESI 1 CF3
C1 1 0.2 0.1 0.1 11.0 0.05
F1 4 0.25 0.15 0.1 11.0 0.05
H1 2 0.22 0.05 0.1 11.0 -1.2
F2 4 0.25 0.05 0.1 11.0 0.05
F3 4 0.2 0.1 0.2 11.0 0.05
RESI CF3 2
C1 1 0.5 0.1 0.1 11.0 0.05
F1 4 0.55 0.15 0.1 11.0 0.05
F2 4 0.55 0.05 0.1 11.0 0.05
F3 4 0.5 0.1 0.2 11.0 0.05
RESI 0
FLAT O1 C1_1 F1_1 F2_1
EADP F1_1 F1_2
HKLF 4
END
"""


def _labels(refs):
    return [a.label for a in refs]


def test_reader_resolves_residues_ranges_and_eqiv():
    """Residue classes, numbers, `_*`, `>` ranges (H skipped), `$element` and EQIV."""
    ins = parse_ins(RES, "t.res")
    by_kind: dict[str, list] = {}
    for r in ins.instructions.restraints:
        by_kind.setdefault(r.kind, []).append(r)
    # second residue's atoms take the residue number as suffix (their names repeat)
    assert [a.label for a in ins.atoms][:6] == ["O1", "C1", "F1", "H1", "F2", "F3"]
    assert [a.label for a in ins.atoms][6:] == ["C1_2", "F1_2", "F2_2", "F3_2"]
    sadi = by_kind["SADI"]
    assert len(sadi) == 2 and sadi[0].values == [0.03]
    assert _labels(sadi[1].atoms) == ["C1_2", "F1_2", "C1_2", "F2_2", "C1_2", "F3_2"]
    (same,) = by_kind["SAME"]  # residue 2 made like residue 1, H left out of the range
    assert _labels(same.atoms) == ["C1_2", "F1_2", "F2_2", "F3_2"]
    assert _labels(same.reference) == ["C1", "F1", "F2", "F3"]
    assert same.values == [0.02, 0.04]
    simu = by_kind["SIMU"]  # SIMU_* with no atoms: every non-H atom, residue by residue
    assert sorted(len(r.atoms) for r in simu) == [1, 4, 4] and simu[0].values == [0.05, 0.1, 2.0]
    (dfix,) = by_kind["DFIX"]
    assert _labels(dfix.atoms) == ["O1", "C1", "O1", "C1"]
    assert dfix.atoms[3].symop == "-x,1/2+y,1/2-z" and dfix.values == [1.40, 0.02]
    (rigu,) = by_kind["RIGU"]
    assert _labels(rigu.atoms) == ["F1", "F2", "F3", "F1_2", "F2_2", "F3_2"]
    (flat,) = by_kind["FLAT"]
    assert _labels(flat.atoms) == ["O1", "C1", "F1", "F2"]
    (eadp,) = by_kind["EADP"]
    assert _labels(eadp.atoms) == ["F1", "F1_2"]


def test_a_residue_lacking_an_atom_takes_none_from_elsewhere():
    """A residue-class restraint names each residue's own atoms. Residue 2 without F3, with
    an F3 in residue 0 (after RESI 0, as in real files): its SADI_CF3 pair C1-F3 is left
    out (with a note), not made with residue 0's F3, which gave restraints 10-17 Å off and
    a refinement that tore the model apart. That F3, named like residue 1's, gets a label
    of its own (F3_0; both were F3, and restraints on one acted on the other)."""
    text = RES.replace("F3 4 0.5 0.1 0.2 11.0 0.05\n", "").replace(
        "RESI 0\nFLAT", "RESI 0\nF3 4 0.8 0.8 0.8 11.0 0.05\nFLAT").replace("SAME_CF3 C1 > F3\n", "")
    ins = parse_ins(text, "t.res")
    labels = [a.label for a in ins.atoms]
    assert labels.count("F3") == 1 and "F3_0" in labels and "F3_2" not in labels
    sadi = [r for r in ins.instructions.restraints if r.kind == "SADI"]
    assert _labels(sadi[1].atoms) == ["C1_2", "F1_2", "C1_2", "F2_2"]
    assert any("residue 2 has no F3" in n for n in ins.notes)


def test_same_over_residues_of_unequal_content_compares_the_atoms_both_have():
    """SAME_CF3 naming C1 F1 F2 F3 where residue 2 lacks F3: residue 2 is made like
    residue 1 on C1, F1 and F2 (with a note), not dropped whole."""
    text = RES.replace("F3 4 0.5 0.1 0.2 11.0 0.05\n", "").replace("SAME_CF3 C1 > F3", "SAME_CF3 C1 F1 F2 F3")
    ins = parse_ins(text, "t.res")
    (same,) = [r for r in ins.instructions.restraints if r.kind == "SAME"]
    assert _labels(same.reference) == ["C1", "F1", "F2"] and _labels(same.atoms) == ["C1_2", "F1_2", "F2_2"]
    assert any("SAME_CF3: residue 1 or 2 has no F3; compared on the atoms both have" in n for n in ins.notes)


@pytest.mark.parametrize(
    "line, kind, values",
    [
        ("DELU 0.005 O1 C1", "DELU", [0.005, 0.005]),  # one esd: the 1,3 pairs take it too
        ("RIGU 0.002 O1 C1", "RIGU", [0.002, 0.002]),
        ("DELU O1 C1", "DELU", [0.01, 0.01]),
        ("DELU 0.005 0.02 O1 C1", "DELU", [0.005, 0.02]),
        ("SIMU 0.01 O1 C1", "SIMU", [0.01, 0.02, 2.0]),  # st twice s
        ("ISOR 0.05 O1", "ISOR", [0.05, 0.1]),
    ],
)
def test_second_esd_defaults_as_in_shelxl(line, kind, values):
    """A second esd that is not given: equal to the first for DELU/RIGU, twice it for
    SIMU and ISOR (and SAME), the SHELXL default only when no number is given."""
    ins = parse_ins(RES.replace("FLAT O1 C1_1 F1_1 F2_1", line), "t.res")
    (r,) = [r for r in ins.instructions.restraints if r.kind == kind and r.text.strip() == line]
    assert r.values == pytest.approx(values)


def test_unresolvable_restraint_is_noted_not_fatal():
    ins = parse_ins(RES.replace("FLAT O1 C1_1 F1_1 F2_1", "FLAT O1 C9 F1_1 F2_1"), "t.res")
    assert not any(r.kind == "FLAT" for r in ins.instructions.restraints)
    assert any("FLAT ignored: no atom C9" in n for n in ins.notes)


def test_atoms_on_top_of_each_other_get_no_zero_sigma_restraint():
    """RIGU's esd grows with the bond length: two atoms at one place (a placeholder, a bad
    model) would get σ = 0 and NaN sums of squares. They get no RIGU/DELU pair; whatever
    else is built has a finite, positive σ, and the sums stay finite."""
    text = RES.replace("F2 4 0.25 0.05 0.1 11.0 0.05\nF3", "F2 4 0.25 0.05 0.1 11.0 0.05\nF4 4 0.25 0.15 0.1 11.0 0.05\nF3", 1)
    text = text.replace("UNIT 8 8 4 12", "UNIT 8 8 4 16").replace("RIGU $F", "RIGU C1 F1 F4")
    ins = parse_ins(text, "t.res")
    model = WorkingModel.from_structure(ins.structure())
    result = user_restraints.build(model, ins.instructions)
    built = result.restraints
    assert not any("σ" in note for note in result.skipped)  # none built, none to drop
    rigu = [r for r in built if r.kind == "rigu"]
    pairs = {frozenset((model.labels[r.pair1[0].atom], model.labels[r.pair1[1].atom])) for r in rigu}
    assert rigu and frozenset(("F1", "F4")) not in pairs
    assert all(np.isfinite(r.sigma) and r.sigma > 0 for r in built)
    assert np.isfinite(restraints.sum_of_squares(model, built))


def test_flat_restrains_tetrahedron_volumes_as_shelxl():
    """FLAT over n atoms: n - 3 terms, each the chiral volume (Å³) of the first three atoms
    and one further atom -- zero for coplanar atoms, the triple product otherwise."""
    ins = parse_ins(RES.replace("FLAT O1 C1_1 F1_1 F2_1", "FLAT O1 C1_1 F1_1 F2_1 F3_1"), "t.res")
    model = WorkingModel.from_structure(ins.structure())
    flat = [r for r in user_restraints.build(model, ins.instructions).restraints if r.kind == "flat"]
    assert len(flat) == 2
    m = orthogonalization_matrix(model.cell)
    cart = {model.labels[i]: m @ model.xyz[i] for i in range(model.n)}
    values, sigmas = restraints.residuals(model, flat)
    o, c, f1 = cart["O1"], cart["C1"], cart["F1"]
    for value, fourth in zip(values, ("F2", "F3")):
        expected = (c - o) @ np.cross(f1 - o, cart[fourth] - o)
        assert value == pytest.approx(expected, rel=1e-9)
    # O1, C1, F1, F2 all have z = 0.1: coplanar, volume 0; F3 is 1.2 Å off that plane
    assert abs(values[0]) < 1e-9 and abs(values[1]) > 0.1
    assert np.all(sigmas == 0.1)


def test_equal_distances_form_one_set_as_in_shelxl():
    """SADI and SAME distances with one σ form one set, and a set of n distances gives the
    n(n-1)/2 equations d_i = d_j: here the three C-F bonds of residue 1 (SADI_CF3) and their
    SAME-linked copies in residue 2 are one set of six (15 equations); SAME's other
    distances (F-F, bonded in this toy geometry) pair residue 2 with residue 1 only."""
    ins = parse_ins(RES.replace("SADI_CF3 0.03", "SADI_CF3 0.02"), "t.res")
    model = WorkingModel.from_structure(ins.structure())

    def c_f(built, sigma):
        return sum(r.sigma == sigma and {model.elements[r.pair1[0].atom], model.elements[r.pair2[0].atom]} == {"C"}
                   for r in built if r.kind == "same")

    built = user_restraints.build(model, ins.instructions).restraints
    assert c_f(built, 0.02) == 15
    assert sum(r.kind == "same" and r.sigma == 0.02 for r in built) == 15 + 3
    # with SADI's own σ, its set stays apart from SAME's; SADI_CF3 is one instruction, so
    # its distances in both residues are one set of six (15 equations), SAME's 3 apart
    built = user_restraints.build(model, parse_ins(RES, "t.res").instructions).restraints
    assert c_f(built, 0.03) == 15 and c_f(built, 0.02) == 3


def test_bind_bonds_atoms_of_two_disorder_components():
    """si4_disorder_cc binds Si2A (PART 1) to N3B and N4B (PART 2), and Si2B to N3A and
    N4A: those bonds join the connectivity (terminal atoms for SIMU, the paths of 1,3
    pairs); without BIND atoms of two PARTs are never bonded. (Restraints never join two
    atoms of two PARTs, bonded or not: see the SHELXL listing test below.)"""
    from refractor_plugins.refiners.lsq.hydrogens import neighbours

    bundle = load_bundle(get_case("si4_disorder_cc").reference)
    assert ("SI2A", "N3B") in bundle.instructions.bind and len(bundle.instructions.bind) == 4
    model = WorkingModel.from_structure(bundle.structure)
    si2a = model.label_index()["SI2A"]

    def bonded_to_si2a():
        return {model.labels[n.atom].upper() for n, _, _ in neighbours(model, np.array([si2a]))[si2a]}

    assert not {"N3B", "N4B"} & bonded_to_si2a()
    model.bind = tuple(bundle.instructions.bind)
    assert {"N3B", "N4B"} <= bonded_to_si2a()
    model.bind = (("1", "2"),)  # BIND 1 2: every bond between the two PARTs
    assert {"N3B", "N4B"} <= bonded_to_si2a()


def test_free_takes_a_bond_out_of_the_connectivity():
    """si4_disorder_cc's FREE Si1 Si2A and FREE Si1 Si2B: the two Si, 2.49 Å apart, are
    otherwise bonded; with FREE they are not, as SHELXL's connectivity has it, and the
    written .res keeps the FREE lines."""
    from refractor_core.io.res_writer import structure_res
    from refractor_plugins.refiners.lsq.hydrogens import neighbours

    bundle = load_bundle(get_case("si4_disorder_cc").reference)
    assert bundle.instructions.free == [("SI1", "SI2A"), ("SI1", "SI2B")]
    model = WorkingModel.from_structure(bundle.structure)
    si1 = model.label_index()["SI1"]

    def bonded_to_si1():
        return {model.labels[n.atom].upper() for n, _, _ in neighbours(model, np.array([si1]))[si1]}

    assert {"SI2A", "SI2B"} <= bonded_to_si1()
    model.free = tuple(bundle.instructions.free)
    assert not {"SI2A", "SI2B"} & bonded_to_si1() and "N2" in bonded_to_si1()
    text = structure_res(bundle.structure, instructions=bundle.instructions)
    assert "FREE Si1 Si2A" in text and "FREE Si1 Si2B" in text


def _restraints_of_published_model(case_name: str):
    bundle = load_bundle(get_case(case_name).reference)
    model = WorkingModel.from_structure(bundle.structure)
    model.bind = tuple(bundle.instructions.bind)
    model.free = tuple(bundle.instructions.free)
    return model, user_restraints.build(model, bundle.instructions)


def test_sadi_and_same_sets_are_those_shelxl_lists():
    """SHELXL writes into its .res the SADI sets it made, SAME's included; for
    si4_disorder_cc (SADI naming distances between two PARTs, consecutive SAMEs across a
    disorder, BIND) ours are the same 45 sets. A distance between atoms of two different
    PARTs is in none of them, though SADI names eight and BIND bonds four."""
    from restraint_fidelity import our_same_sets, shelxl_sadi_list

    model, built = _restraints_of_published_model("si4_disorder_cc")
    theirs = set(shelxl_sadi_list(get_case("si4_disorder_cc")))
    assert len(theirs) == 45
    # our equations d_i = d_j, gathered back into sets of equal distances
    assert set(our_same_sets(model, built.restraints)) == theirs


@pytest.mark.parametrize("case_name, published", [
    ("alga_fluoroalkoxide_p21c", 1924),  # SADI_CCF3 over three residues, SAME_CCF3, SIMU, RIGU
    ("ni_cubic_i43d", 194),
    ("alga_amide_inversion_twin", 8),
    ("cpna", 21),
])
def test_restraint_count_is_shelxls(case_name, published):
    """The number of restraints made from a published model's instructions equals the one
    its CIF states (_refine_ls_number_restraints): a residue-class SADI is one set over all
    its residues, a set of n distances counts n(n-1)/2."""
    _, built = _restraints_of_published_model(case_name)
    assert len(built.restraints) == published


def test_restraint_gradients_match_finite_differences():
    """DFIX (with a symmetry image), SADI, SAME, FLAT, RIGU, SIMU and ISOR rows: analytic
    gradients of each restraint w.r.t. the free parameters equal central differences."""
    ins = parse_ins(RES, "t.res")
    structure = ins.structure()
    model = WorkingModel.from_structure(structure)
    rng = np.random.default_rng(3)
    for i in range(model.n):  # anisotropic, non-degenerate ADPs
        model.aniso[i] = True
        model.u_star[i] = model.ustar_basis[i] @ (model.ustar_basis[i].T @ (
            np.array([0.02, 0.02, 0.02, 0, 0, 0]) / np.array([100, 121, 144, 110, 120, 132]) + rng.normal(0, 2e-5, 6)))
    model.update_u_eq()
    built = user_restraints.build(model, ins.instructions)
    kinds = built.counts()
    assert {"distances", "same", "flat", "rigu", "simu"} <= set(kinds)
    params = Parameterisation.build(model)
    geometric = [r for r in built.restraints if r.kind in ("distances", "same", "flat")]
    adp = [r for r in built.restraints if r.kind in ("rigu", "simu")]
    isor = [restraints.Restraint("isor", (restraints.Image(1), restraints.Image(1)), None, 0.01, k) for k in range(6)]
    # ISOR's value: the Cartesian U less its isotropic part (11, 22, 33, 12, 13, 23)
    u = model.u_cart(1)
    expected = np.array([u[0, 0], u[1, 1], u[2, 2], u[0, 1], u[0, 2], u[1, 2]]) - np.r_[np.full(3, np.trace(u) / 3), np.zeros(3)]
    assert np.allclose(restraints.residuals(model, isor)[0], expected, rtol=1e-10, atol=1e-12)
    adp += isor
    xyz_cols = [j for j, p in enumerate(params.info) if p.kind == "xyz"]
    adp_cols = [j for j, p in enumerate(params.info) if p.kind in ("ustar", "uiso")]
    # ADP restraints depend on positions only through their frame, which SHELXL (and this
    # refiner) holds fixed in the derivatives: check them against the ADP parameters
    for rows, cols in ((geometric, xyz_cols), (adp, adp_cols)):
        _check_gradient(params, rows, rng.choice(cols, size=10, replace=False))
    # ... and with the frames held, as a refinement cycle holds them while it tries steps,
    # the sum of squares it tests is the one its normal equations describe, positions too
    frames = restraints.bond_frames(model, adp)
    _check_gradient(params, adp, rng.choice(xyz_cols, size=10, replace=False), frames)
    moved = params.apply(np.where(np.isin(np.arange(params.n), xyz_cols), rng.normal(0.0, 3e-3, params.n), 0.0))
    assert restraints.sum_of_squares(moved, adp, 1.0, frames) != pytest.approx(restraints.sum_of_squares(moved, adp), rel=1e-9)


def _check_gradient(params, rows, cols, frames=None):
    from types import SimpleNamespace

    n = params.n
    ne = SimpleNamespace(columns=np.arange(n), matrix=np.zeros((n, n)), rhs=np.zeros(n), chi2=0.0)
    restraints.add_to_normal_equations(ne, params, rows, 1.0, frames)
    assert ne.chi2 == pytest.approx(restraints.sum_of_squares(params.model, rows, 1.0, frames))
    h = 1e-6
    for j in cols:
        step = np.zeros(n)
        step[j] = h
        up = restraints.sum_of_squares(params.apply(step), rows, 1.0, frames)
        down = restraints.sum_of_squares(params.apply(-step), rows, 1.0, frames)
        num = (up - down) / (2 * h)
        # the gradient of Σ(v/σ)² is -2·rhs
        assert num == pytest.approx(-2 * ne.rhs[j], rel=1e-4, abs=1e-6 * max(1.0, abs(num)))


@pytest.fixture(scope="module")
def perchlorate():
    case = get_case("fe_perchlorate_hydrate")
    data = load_reflections(case.reflections)
    bundle = load_bundle(case.reference, block=case.data_block)
    return data, bundle


def _refine(data, structure, instructions, **options):
    candidate = Candidate(structure=structure, generator=USER_MODEL,
                          meta={"instructions": instructions.model_dump(mode="json")})
    return LsqRefiner(LsqConfig(anisotropic=True, **options)).refine(data, candidate)


def _distance(structure, a: str, b: str) -> float:
    xyz = {s.label.upper(): np.array(s.xyz) for s in structure.sites}
    return float(np.linalg.norm(orthogonalization_matrix(structure.cell) @ (xyz[a.upper()] - xyz[b.upper()])))


def test_user_dfix_and_eadp_are_honoured(perchlorate):
    """On measured data: the published EADP pairs keep one ADP each, and a DFIX added by
    the user (Cl1-O2 at 1.50 Å, σ 0.002) pulls that bond from its free value (≈ 1.44 Å)."""
    from refractor_core.types import AtomRef, RestraintInstruction

    data, bundle = perchlorate
    instr = bundle.instructions
    assert sum(r.kind == "EADP" for r in instr.restraints) == 3
    free = _refine(data, bundle.structure, instr)
    u = {s.label.upper(): s.u_aniso for s in free.structure.sites}
    assert np.allclose(u["CL1"], u["CL1'"]) and np.allclose(u["O2"], u["O2'"])
    d_free = _distance(free.structure, "Cl1", "O2")
    assert abs(d_free - 1.50) > 0.03
    dfix = RestraintInstruction(kind="DFIX", values=[1.50, 0.002], atoms=[AtomRef(label="CL1"), AtomRef(label="O2")])
    pulled = _refine(data, bundle.structure, instr.model_copy(update={"restraints": [*instr.restraints, dfix]}))
    assert _distance(pulled.structure, "Cl1", "O2") == pytest.approx(1.50, abs=0.01)
    assert any("own restraints: 1 target-distance (DFIX/DANG)" in line for line in pulled.log)
    # SHELXL's restrained GooF: the same as the GooF without restraints; with a restraint
    # the data disagree with, the restraint's own χ² (weighted by the data's mean w·Δ²) raises it
    from refractor_core.io.cif_writer import structure_cif

    assert free.meta["restrained_goof"] == pytest.approx(free.goof, rel=1e-6)
    n, p = pulled.n_reflections, pulled.n_parameters
    chi2 = pulled.goof**2 * (n - p)
    d = _distance(pulled.structure, "Cl1", "O2")
    expected = np.sqrt((chi2 + chi2 / n * ((d - 1.50) / 0.002) ** 2) / (n + 1 - p))
    assert pulled.meta["restrained_goof"] == pytest.approx(expected, rel=0.02)
    assert pulled.meta["restrained_goof"] > pulled.goof
    cif = structure_cif(pulled.structure, refined=pulled, data=data)
    assert f"_refine_ls_restrained_S_all {pulled.meta['restrained_goof']:.3f}" in " ".join(cif.split())


def test_res_writer_keeps_restraints():
    """Written back to a .res, the restraints name the written atoms (renamed ones too) and
    read again to the same instructions; SAME stands right before the atoms it applies to."""
    from refractor_core.io.res_writer import structure_res

    ins = parse_ins(RES.replace("FVAR 1.0", "BIND F1_2 O1\nBIND 1 2\nFVAR 1.0"), "t.res")
    text = structure_res(ins.structure(), instructions=ins.instructions)
    again = parse_ins(text, "out.res")
    rename = {a.label: b.label for a, b in zip(ins.atoms, again.atoms)}
    assert again.instructions.bind == [(rename["F1_2"].upper(), "O1"), ("1", "2")]

    def canonical(restraints, names):
        return sorted((r.kind, tuple(r.values), tuple((names(a.label), a.symop) for a in r.atoms + r.reference))
                      for r in restraints)

    assert canonical(again.instructions.restraints, str) == canonical(ins.instructions.restraints, rename.get)
    lines = text.splitlines()
    same = next(k for k, line in enumerate(lines) if line.startswith("SAME"))
    assert lines[same + 1].split()[0] == rename["C1_2"]


def test_disagreeable_restraints_are_reported():
    """A restraint the model is far from is listed with its atoms, deviation and σ; one it
    obeys is not."""
    from refractor_core.types import AtomRef, RestraintInstruction

    ins = parse_ins(RES, "t.res")
    model = WorkingModel.from_structure(ins.structure())
    d = float(np.linalg.norm(orthogonalization_matrix(model.cell) @ (model.xyz[1] - model.xyz[2])))  # C1-F1
    far = RestraintInstruction(kind="DFIX", values=[d + 0.1, 0.01], atoms=[AtomRef(label="C1"), AtomRef(label="F1")])
    near = RestraintInstruction(kind="DFIX", values=[d + 0.001, 0.01], atoms=[AtomRef(label="C1"), AtomRef(label="F1")])
    instr = ins.instructions.model_copy(update={"restraints": [far, near]})
    lines = restraints.disagreeable(model, user_restraints.build(model, instr).restraints)
    assert len(lines) == 1 and lines[0].startswith("DFIX/DANG C1 F1") and "(10.0 σ)" in lines[0]


def test_reader_next_residue_suffix():
    """`_+` names the atom in the next residue (relative to the residue the instruction is in)."""
    text = RES.replace("FLAT O1 C1_1 F1_1 F2_1", "FLAT O1 C1_1 F1_1 F2_1\nRESI 1 CF3\nDFIX 2.5 C1 C1_+\nRESI 0")
    dfix = [r for r in parse_ins(text, "t.res").instructions.restraints if r.kind == "DFIX"]
    assert [a.label for a in dfix[-1].atoms] == ["C1", "C1_2"]


def test_disagreeable_listing_names_every_kind():
    """Every restraint kind can be listed (FLAT's component is an atom index, SIMU's a U
    component): a model far from all of them lists each kind without failing."""
    ins = parse_ins(RES, "t.res")
    model = WorkingModel.from_structure(ins.structure())
    model.xyz[2, 2] += 0.02  # F1 out of the FLAT plane, and residue 1 unlike residue 2 (SAME)
    for i in range(model.n):
        model.aniso[i] = True
        model.u_star[i] = model.ustar_basis[i] @ (model.ustar_basis[i].T @ (np.array([0.05, 0.001, 0.03, 0, 0, 0]) * (1 + i)))
    model.update_u_eq()
    built = user_restraints.build(model, ins.instructions).restraints
    tight = [restraints.Restraint(**{**r.__dict__, "sigma": 1e-6}) for r in built]
    lines = restraints.disagreeable(model, tight, limit=len(tight))
    assert {line.split()[0] for line in lines} >= {"DFIX/DANG", "SAME/SADI", "FLAT", "RIGU/DELU", "SIMU"}


def test_hydrides_are_kept_with_their_restraints():
    """Measured alga_amide (Ga-H and Al-H hydrides refined with SADI): H on C/N/O is re-placed
    as riding H, the hydrides (which riding H cannot place) are kept and refined under the
    model's SADI restraints, and R1 comes close to the published 0.0204."""
    case = get_case("alga_amide_inversion_twin")
    data = load_reflections(case.reflections)
    bundle = load_bundle(case.reference, block=case.data_block)
    r = _refine(data, bundle.structure, bundle.instructions)
    assert any("5 on other atoms (hydrides) kept" in line for line in r.log)
    # SHELXL's count: 3 + 3 pairwise equations for the two three-distance SADI, 1 + 1 for the others
    assert any(line.startswith("the model's own restraints: 8 equal-distance") for line in r.log)
    assert r.r1 < 0.023


FREE_VARIABLES = """TITL fv
CELL 0.71073 10 10 10 90 90 90
LATT 1
SFAC C O
UNIT 4 4
FVAR 1.0 0.6
C1 1 0.1 0.1 0.1 11.0 0.03
PART 1
O1 2 0.2 0.1 0.1 21.0 0.03
PART 2
O2 2 0.2 0.2 0.1 -21.0 0.03
O3 2 0.2 0.3 0.1 -20.5 0.03
PART 0
HKLF 4
END
"""


def test_free_variable_codes_are_read():
    """Occupancies coded 10k + p on a free variable k >= 2 keep their link to it (SHELXL
    refines fv_k); fixed ones (11.0) have none."""
    sites = {s.label: s for s in parse_ins(FREE_VARIABLES, "fv.res").structure().sites}
    assert sites["C1"].occupancy_variable is None and sites["C1"].occupancy == pytest.approx(1.0)
    assert sites["O1"].occupancy_variable == (2, pytest.approx(1.0)) and sites["O1"].occupancy == pytest.approx(0.6)
    assert sites["O2"].occupancy_variable == (2, pytest.approx(-1.0)) and sites["O2"].occupancy == pytest.approx(0.4)
    assert sites["O3"].occupancy_variable == (2, pytest.approx(-0.5)) and sites["O3"].occupancy == pytest.approx(0.2)
    model = WorkingModel.from_structure(parse_ins(FREE_VARIABLES, "fv.res").structure())
    assert sorted(model.free_variables[2]) == [("O1", 1.0), ("O2", -1.0), ("O3", -0.5)]
    params = Parameterisation.build(model, refine_free_variables=True)
    occ = [i for i in params.info if i.kind == "occ"]
    assert len(occ) == 1  # one parameter moves the three occupancies
    step = np.zeros(params.n)
    step[params.info.index(occ[0])] = 0.1
    moved = params.apply(step)
    assert [moved.occupancy[moved.label_index()[k]] for k in ("O1", "O2", "O3")] == pytest.approx([0.7, 0.3, 0.15])


SUMP_MODEL = FREE_VARIABLES.replace("FVAR 1.0 0.6", "FVAR 1.0 0.6 0.3\nSUMP 1.0 0.002 1 2 1 3").replace(
    "O3 2 0.2 0.3 0.1 -20.5 0.03", "O3 2 0.2 0.3 0.1 30.5 0.03")


def test_sump_restrains_a_sum_of_free_variables():
    """SUMP 1.0 0.002 1 2 1 3 becomes one restraint on the occupancies of the variables'
    lead atoms (O1 = fv2, O3 = 0.5·fv3): its value is fv2 + fv3 - 1, its gradient w.r.t.
    the two free-variable parameters equals central differences, and the .res writer
    writes it back; a SUMP naming a variable no occupancy refers to is skipped."""
    from refractor_core.io.res_writer import structure_res

    ins = parse_ins(SUMP_MODEL, "sump.res")
    (sump,) = [r for r in ins.instructions.restraints if r.kind == "SUMP"]
    assert sump.values == [1.0, 0.002, 1.0, 2.0, 1.0, 3.0]
    model = WorkingModel.from_structure(ins.structure())
    built = user_restraints.build(model, ins.instructions)
    (row,) = built.restraints
    value, sigma = restraints.residuals(model, [row])
    assert value[0] == pytest.approx(0.6 + 0.3 - 1.0) and sigma[0] == 0.002
    params = Parameterisation.build(model, refine_free_variables=True)
    cols = [j for j, p in enumerate(params.info) if p.kind == "occ"]
    assert len(cols) == 2
    _check_gradient(params, [row], cols)
    # the step taken is read back in free-variable units (O3's occupancy moves by 0.5·Δfv3)
    step = np.zeros(params.n)
    step[cols] = [0.05, 0.1]
    moved = params.apply(step)
    assert moved.occupancy[moved.label_index()["O3"]] == pytest.approx(0.15 + 0.05)
    assert params.effective_shift(moved)[cols] == pytest.approx([0.05, 0.1])
    text = structure_res(ins.structure(), instructions=ins.instructions)
    assert "SUMP 1 0.002 1 2 1 3" in text
    other = parse_ins(SUMP_MODEL.replace("1 2 1 3", "1 2 1 4"), "sump.res")
    assert not user_restraints.build(WorkingModel.from_structure(other.structure()), other.instructions).restraints
    with pytest.raises(InputError, match="SUMP"):
        parse_ins(SUMP_MODEL.replace("1 2 1 3", "1 2 1"), "sump.res")


def test_free_variable_occupancy_is_refined_as_in_shelxl(perchlorate, tmp_path):
    """On measured data: the perchlorate's disorder is coded 21/-21 (and 20.5/-20.5 on the
    2-fold axis) on free variable 2, published at 0.773. Started at 0.5, the refinement
    finds it again; with refine_occupancies=false it stays at 0.5."""
    data, _ = perchlorate
    case = get_case("fe_perchlorate_hydrate")
    text = case.reference.read_text()
    assert "FVAR       0.31437   0.77327" in text
    start = tmp_path / "half.res"
    start.write_text(text.replace("FVAR       0.31437   0.77327", "FVAR       0.31437   0.50000"))
    bundle = load_bundle(start)
    occ = {s.label: s.occupancy for s in bundle.structure.sites}
    assert occ["CL1"] == pytest.approx(0.5) and occ["O2'"] == pytest.approx(0.5)
    refined = _refine(data, bundle.structure, bundle.instructions)
    sites = {s.label: s for s in refined.structure.sites}
    cl1 = sites["CL1"]
    assert abs(cl1.occupancy - 0.773) < max(3 * cl1.occupancy_su, 0.02)
    assert sites["CL1'"].occupancy == pytest.approx(1.0 - cl1.occupancy, abs=1e-6)
    assert sites["O2"].occupancy == pytest.approx(cl1.occupancy, abs=1e-6)
    assert any(line.startswith("free variables of occupancy (SHELXL FVAR): 2 0.7") for line in refined.log)
    # the written .res keeps the codes, with the refined value on FVAR 2
    from refractor_core.io.res_writer import structure_res

    text = structure_res(refined.structure, refined=refined, instructions=bundle.instructions)
    fvar = next(line for line in text.splitlines() if line.startswith("FVAR")).split()
    assert float(fvar[2]) == pytest.approx(cl1.occupancy, abs=1e-4)
    atoms = {line.split()[0]: line.split()[5] for line in text.splitlines() if line[:4] in ("CL1 ", "CL1'", "O2  ", "O2' ")}
    assert atoms == {"CL1": "20.50000", "CL1'": "-20.50000", "O2": "21.00000", "O2'": "-21.00000"}
    held = _refine(data, bundle.structure, bundle.instructions, refine_occupancies=False)
    assert {s.label: s.occupancy for s in held.structure.sites}["CL1"] == pytest.approx(0.5)
    assert held.r1 > refined.r1 + 0.002


def test_the_models_own_h_atoms_are_kept(perchlorate):
    """The published water H (H1A, H1B, H4) are refined freely in SHELXL (AFIX 0, U of
    their own): by default they are kept and refined freely, as SHELXL does (60 parameters,
    as published; R1 0.0413 as published), and no H is placed beside them; keep_h=true
    keeps them riding on their O as given (12 parameters fewer)."""
    data, bundle = perchlorate
    free = _refine(data, bundle.structure, bundle.instructions)
    assert sorted(s.label for s in free.structure.sites if s.element.upper() == "H") == ["H1A", "H1B", "H4"]
    assert free.n_parameters == 60 and free.r1 < 0.0416
    assert any("3 the model refines freely (AFIX 0) kept" in line for line in free.log)
    riding = _refine(data, bundle.structure, bundle.instructions, keep_h=True)
    assert sorted(s.label for s in riding.structure.sites if s.element.upper() == "H") == ["H1A", "H1B", "H4"]
    assert riding.n_parameters == free.n_parameters - 12


def test_refinement_starts_from_the_models_own_weights(perchlorate):
    """The published .res refines under WGHT 0.0269 23.9134, and SHELXL left Cl1 and Cl1'
    (one ADP, both on the 2-fold axis) 0.004 Å apart. Started from those weights, the
    refinement stays there; started from SHELXL's default weights (0.1, 0), as before
    WGHT was honoured, it ended in a second minimum of equal depth with Cl1' 0.087 Å away."""
    data, bundle = perchlorate
    assert bundle.instructions.wght[:2] == pytest.approx((0.0269, 23.913403))
    refined = _refine(data, bundle.structure, bundle.instructions)
    assert any("weights start from the model's WGHT: a = 0.0269, b = 23.9134" in line for line in refined.log)
    assert _distance(refined.structure, "CL1'", "CL1") < 0.02
    published = {s.label: np.array(s.xyz) for s in bundle.structure.sites}
    m = orthogonalization_matrix(refined.structure.cell)
    moved = {s.label: float(np.linalg.norm(m @ (np.array(s.xyz) - published[s.label])))
             for s in refined.structure.sites if s.label in published and s.element.upper() != "H"}
    assert max(moved.values()) < 0.01
    bad = bundle.instructions.model_copy(update={"wght": (-0.1, 2.0)})
    fallback = _refine(data, bundle.structure, bad, max_cycles=1)
    assert any("WGHT -0.1 2 of the model not used" in line for line in fallback.log)


def test_a_free_h_listed_away_from_its_atom_is_kept(perchlorate, tmp_path):
    """SHELXL refines every AFIX 0 H freely, wherever the atom list puts it. With a riding U
    (-1.5) the H names only the atom its U follows, the atom listed before it: here O3',
    far from H1A, whose atom is O1. H1A is still kept and refined freely (it was taken for
    a calculated H of O3' and re-placed elsewhere)."""
    case = get_case("fe_perchlorate_hydrate")
    text = case.reference.read_text()
    assert "H1A   4    0.129294    0.158128    0.416868    11.00000    0.04654" in text
    text = text.replace("0.416868    11.00000    0.04654", "0.416868    11.00000   -1.50000")
    (tmp_path / "m.res").write_text(text)
    bundle = load_bundle(tmp_path / "m.res")
    assert next(s for s in bundle.structure.sites if s.label == "H1A").riding_on == "O3'"
    data, _ = perchlorate
    refined = _refine(data, bundle.structure, bundle.instructions, max_cycles=10)
    assert any("3 the model refines freely (AFIX 0) kept" in line for line in refined.log)
    start = {s.label: s for s in bundle.structure.sites}
    h1a = next(s for s in refined.structure.sites if s.label == "H1A")
    m = orthogonalization_matrix(refined.structure.cell)
    assert float(np.linalg.norm(m @ (np.array(h1a.xyz) - np.array(start["H1A"].xyz)))) < 0.1
    assert refined.n_parameters == 59 and refined.r1 < 0.0425  # published 60 (H1A's own U) and 0.0413


def test_free_h_with_a_riding_u_keep_both(tmp_path):
    """cpna's published model refines all nine H freely with a riding U (AFIX 0, -1.2 and
    -1.5): they are kept, their position refined and their U following their atom's U_eq,
    so the refinement has the published 72 parameters; the written .res gives them back
    their riding U."""
    from refractor_core.io.res_writer import structure_res

    case = get_case("cpna")
    data = load_reflections(case.reflections)
    bundle = load_bundle(case.reference, block=case.data_block)
    start = {s.label: s for s in bundle.structure.sites}
    refined = _refine(data, bundle.structure, bundle.instructions)
    assert refined.n_parameters == 72 and refined.r1 < 0.030  # published 72 and 0.0286
    sites = {s.label: s for s in refined.structure.sites}
    h = [label for label, s in sites.items() if s.element.upper() == "H"]
    assert sorted(h) == sorted(label for label, s in start.items() if s.element.upper() == "H")
    moved = max(float(np.abs(np.subtract(sites[x].xyz, start[x].xyz)).max()) for x in h)
    assert moved > 1e-4  # positions refined, not held
    text = structure_res(refined.structure, refined=refined, instructions=bundle.instructions)
    u_codes = {line.split()[0]: line.split()[-1] for line in text.splitlines() if line[:1] == "H" and len(line.split()) == 7}
    assert set(u_codes) >= set(h) and all(u_codes[x] in ("-1.2", "-1.5") for x in h)


def test_riding_h_keep_their_names_and_their_own_u():
    """hydroxyquinolinium's published model has eleven H: nine riding (AFIX 43, 147), five
    of those with a U_iso refined on its own (a positive U, not -1.2), and named after the
    order of the ring (H6 on C7 ...). Re-placed as riding H they keep those names, the five
    keep a U of their own, refined, so the refinement has the published 184 parameters
    (179 when every riding U followed its atom); the written .res gives them back their U,
    and reading it back marks them so again."""
    from refractor_core.io.res_writer import structure_res

    case = get_case("hydroxyquinolinium_hmaleate")
    data = load_reflections(case.reflections)
    bundle = load_bundle(case.reference, block=case.data_block)
    start = {s.label: s for s in bundle.structure.sites if s.element.upper() == "H"}
    own = {label for label, s in start.items() if s.own_u}
    assert own == {"H6", "H7", "H8", "H10", "H11"} and not start["H9"].own_u
    refined = _refine(data, bundle.structure, bundle.instructions)
    assert refined.n_parameters == 184 and refined.r1 < 0.0435  # published 184 and 0.0433
    sites = {s.label: s for s in refined.structure.sites if s.element.upper() == "H"}
    assert set(sites) == set(start)
    for label, s in sites.items():  # each name on the atom it was on
        assert s.riding_on == start[label].riding_on or not start[label].calc
    assert {label for label, s in sites.items() if s.own_u} == own
    assert all(s.u_iso_su is not None and abs(s.u_iso - start[label].u_iso) < 0.01
               for label, s in sites.items() if label in own)
    text = structure_res(refined.structure, refined=refined, instructions=bundle.instructions)
    u_written = {line.split()[0]: line.split()[-1] for line in text.splitlines() if line[:1] == "H" and len(line.split()) == 7}
    assert all(not u_written[label].startswith("-") for label in own) and u_written["H9"] == "-1.2"
    again = parse_ins(text).structure()
    assert {s.label for s in again.sites if s.own_u} == own


def test_isotropic_atoms_of_an_anisotropic_model_stay_isotropic():
    """muscovite's published model refines M1 (Al on an inversion centre) isotropically and
    every other non-H atom anisotropically: by default the refiner keeps it so, as SHELXL
    does (95 parameters: the published 97 count two free variables nothing uses);
    anisotropic=true, or ANIS M1 in the model, makes M1 anisotropic too (5 parameters more)."""
    case = get_case("muscovite_ti")
    data = load_reflections(case.reflections)
    bundle = load_bundle(case.reference, block=case.data_block)

    def refine(instructions=bundle.instructions, **options):
        candidate = Candidate(structure=bundle.structure, generator=USER_MODEL,
                              meta={"instructions": instructions.model_dump(mode="json")})
        return LsqRefiner(LsqConfig(**options)).refine(data, candidate)

    as_given = refine()
    m1 = next(s for s in as_given.structure.sites if s.label.upper() == "M1")
    assert m1.u_aniso is None and as_given.n_parameters == 95
    assert refine(anisotropic=True).n_parameters == 100
    # ANIS M1 in the model: M1 is made anisotropic, as SHELXL would
    asked = refine(bundle.instructions.model_copy(update={"anis": ["M1"]}))
    m1 = next(s for s in asked.structure.sites if s.label.upper() == "M1")
    assert m1.u_aniso is not None and asked.n_parameters == 100
    assert any("ANIS: 1 atom refined anisotropically" in line for line in asked.log)


def test_located_h_of_a_cif_model_are_kept_and_its_adps_not_retested():
    """cu_cod1501469's CIF (no SHELXL instructions) gives 16 H as located ("d"), refined
    under DFIX it does not carry: they are kept, riding where they are, and no riding H is
    placed beside them: R1 0.041 (published 0.0416; re-placed, only 8 H could be placed and
    R1 was 0.049). It has 5.6 reflections per anisotropic parameter, where a model is
    refined both ways and kept anisotropic only if significantly better; its model is
    already anisotropic, so there is nothing to decide (before, an "isotropic" run that was
    anisotropic too was compared with itself, F = 0 for 0 parameters)."""
    case = get_case("cu_cod1501469")
    data = load_reflections(case.reflections)
    bundle = load_bundle(case.reference, block=case.data_block)
    located = sorted(s.label for s in bundle.structure.sites if s.element.upper() == "H" and not s.calc)
    assert len(located) == 16
    candidate = Candidate(structure=bundle.structure, generator=USER_MODEL, meta={})
    refined = LsqRefiner(LsqConfig()).refine(data, candidate)
    assert sorted(s.label for s in refined.structure.sites if s.element.upper() == "H") == located
    assert any("16 located (not calculated) kept" in line for line in refined.log)
    assert not any(line.startswith("anisotropic test") for line in refined.log)
    assert refined.r1 < 0.042


def test_afix_m8_refines_the_x_h_distance_as_shelxl():
    """sucrose's eight OH groups are AFIX 148: SHELXL refines their torsion and their O-H
    distance (published 0.82-0.89 Å, 224 parameters). So does the refiner: 224 parameters,
    each O-H within 0.03 Å of the published one, written back as AFIX 148; a code the
    placement does not build is named in the log."""
    from refractor_core.io.res_writer import structure_res
    from refractor_plugins.refiners.lsq import hydrogens as hyd

    case = get_case("sucrose")
    data = load_reflections(case.reflections)
    bundle = load_bundle(case.reference, block=case.data_block)
    m = orthogonalization_matrix(bundle.structure.cell)

    def o_h(structure) -> dict[str, float]:
        xyz = {s.label: np.array(s.xyz) for s in structure.sites}
        return {s.riding_on: float(np.linalg.norm(m @ (xyz[s.label] - xyz[s.riding_on])))
                for s in structure.sites if s.element == "H" and s.riding_on and s.riding_on.startswith("O")}

    refined = _refine(data, bundle.structure, bundle.instructions)
    assert refined.n_parameters == 224
    published, ours = o_h(bundle.structure), o_h(refined.structure)
    assert len(published) == 8 and set(ours) == set(published)
    assert max(abs(ours[o] - published[o]) for o in published) < 0.03
    assert max(published.values()) - min(published.values()) > 0.05  # not one ideal distance
    text = structure_res(refined.structure, refined=refined, instructions=bundle.instructions)
    assert text.count("AFIX 148") == 8
    model = WorkingModel.from_structure(bundle.structure)
    c1 = model.label_index()["C1"]
    assert hyd.approximated_afix(model, {c1: 173}) == ["H groups placed by geometry instead of the model's AFIX code: C1 (AFIX 173)"]


def test_written_free_variable_codes_give_back_every_occupancy():
    """phosphazene: methyls on the 3-fold axis (C1: 30.33333 on fv3) get riding H placed
    here, on general positions with the parent's occupancy. The .res written from the model
    codes every site on its free variable, and reading it back gives every occupancy again
    (an H inheriting its parent's p, not its chemical coefficient, would lose 2/3 of it)."""
    from refractor_core.io.res_writer import _unique_labels, structure_res
    from refractor_plugins.refiners.lsq import hydrogens as hyd

    case = get_case("phosphazene_p31c")
    bundle = load_bundle(case.reference, block=case.data_block)
    model = WorkingModel.from_structure(bundle.structure)
    model.remove_atoms(model.hydrogen)
    index = model.label_index()
    forced = {index[label]: code for label, code in bundle.instructions.hfix.items() if label in index}
    model = hyd.place_hydrogens(model, forced=forced).model
    structure = model.to_structure()
    riding_on_axis = [s for s in structure.sites if s.calc and s.riding_on in ("C1", "C1'")]
    assert riding_on_axis and all(s.occupancy_variable is not None for s in riding_on_axis)
    back = parse_ins(structure_res(structure, instructions=bundle.instructions), "back.res").structure()
    read = {s.label.upper(): s.occupancy for s in back.sites}
    for s, written in zip(structure.sites, _unique_labels(structure.sites)):
        assert read[written.upper()] == pytest.approx(s.occupancy, abs=2e-5), s.label


def test_sadi_sets_weigh_as_shelxl_minimises_them():
    """SHELXL counts and reports a set of n equal distances as n(n-1)/2 pair restraints
    (test above, and benchmarks/restraint_fidelity.py), but the model it converges to is
    stationary for the weight 2/n on each pair. ni_cubic's published model (at full
    precision, from the .res its CIF embeds; SADI/SAME sets of up to six distances over
    its disordered solvent): one Gauss-Newton step of ours moves its disordered parameters
    by 0.02 su r.m.s. (0.43 with every pair at weight 1)."""
    from stationarity import fit_scale, published_bundle

    from refractor_plugins.refiners.lsq.refiner import Refinement

    case = get_case("ni_cubic_i43d")
    bundle, _ = published_bundle(case)
    cand = Candidate(structure=bundle.structure, generator=USER_MODEL, meta={"instructions": bundle.instructions.model_dump()})
    refinement = Refinement(LsqConfig(max_cycles=0, weights=list(bundle.instructions.wght[:2])),
                            load_reflections(case.reflections), cand)
    refinement.run()
    model, driver = refinement.final_model, refinement.driver

    def key(pair):
        return tuple(sorted((im.atom, im.op, im.shift) for im in pair))

    sets = UnionFind()
    for r in driver.restraints:
        if r.kind == "same":
            sets.union(key(r.pair1), key(r.pair2))
    size = {k: len(g) for g in sets.groups() for k in g}
    assert {round(r.weight * size[key(r.pair1)], 12) for r in driver.restraints if r.kind == "same"} == {2.0}
    fit_scale(driver, model)  # the scale, which the model gives in SHELXL's convention, fitted
    params, shift, su = driver.gauss_newton_step(model)
    ratio = [shift[j] / su[j] for j, p in enumerate(params.info)
             if p.kind != "scale" and p.atom >= 0 and model.part[p.atom] != 0 and su[j] > 0]
    assert len(ratio) > 100
    assert float(np.sqrt(np.mean(np.square(ratio)))) < 0.05


def test_rigu_cross_terms_weigh_as_shelxl_minimises_them():
    """RIGU's two cross terms carry 3 times the esd of its along-bond term (an estimate from
    SHELXL's converged models, `user_restraints.RIGU_CROSS_FACTOR`). cod1979688's published
    model (RIGU over its disordered C39): one Gauss-Newton step of ours moves its disordered
    parameters by 0.05 su r.m.s. (0.15 with equal esds)."""
    from stationarity import step_at_published

    case = get_case("cod1979688")
    bundle = load_bundle(case.reference, block=case.data_block)
    model = WorkingModel.from_structure(bundle.structure)
    rigu = [r for r in user_restraints.build(model, bundle.instructions).restraints if r.kind == "rigu"]
    assert rigu and len(rigu) % 3 == 0
    for along, cross1, cross2 in zip(rigu[::3], rigu[1::3], rigu[2::3]):
        assert (along.component, cross1.component, cross2.component) == (0, 1, 2)
        assert cross1.sigma == cross2.sigma == pytest.approx(3.0 * along.sigma)
    assert step_at_published(case)["rms_shift_su_disordered"] < 0.08
