"""Writers: CIF, SHELX .res, .fcf and HKLF 4 text; round trips through refractor, gemmi,
pymatgen, ASE and shelxfile on every real case's reference model."""

from __future__ import annotations

import os
import re
import warnings

import numpy as np
import pytest

from refractor_core.dataio import load_reflections, load_structure
from refractor_core.io.cif_writer import structure_cif
from refractor_core.io.fcf_writer import structure_fcf
from refractor_core.io.hkl_writer import format_hklf4
from refractor_core.io.numbers import cif_string, plain, with_su
from refractor_core.io.outputs import write_structure_outputs
from refractor_core.io.res_writer import _unique_labels, shelx_symmetry, structure_res
from refractor_core.simulation.composition import cell_contents_of
from refractor_core.types import RefinedCandidate, ReflectionData, SpaceGroupRef, Structure
from refractor_plugins.readers.cif_reader import read_cif_bundle
from refractor_plugins.readers.shelx_hkl import parse_hklf
from refractor_plugins.readers.shelx_ins import parse_ins

from .conftest import REAL_CASES, REAL_CASE_NAMES

XYZ_TOL = 1e-4
U_TOL = 1e-5
OCC_TOL = 1e-4


def _reference(case) -> Structure:
    return load_structure(str(case.reference) + (f"#{case.data_block}" if case.data_block else ""))


def _rounding(su, floor: float) -> np.ndarray | float:
    """Tolerance on a written number: a CIF gives it rounded to its su (rule of 19), up to
    half a unit of the su's last digit, so a model read at a .res's full precision (five or
    six decimals) comes back within su/2 (`floor` where no su is given)."""
    return np.maximum(floor, 0.5 * np.asarray(su if su is not None else 0.0, dtype=float))


def _u_tol(site) -> np.ndarray | float:
    return _rounding(site.u_aniso_su if site.u_aniso is not None else site.u_iso_su, U_TOL)


def _close(x, y, tol) -> bool:
    return bool(np.all(np.abs(np.subtract(x, y)) <= tol))


def _assert_same_sites(a: Structure, b: Structure, what: str) -> None:
    assert b.n_sites == a.n_sites, what
    for x, y in zip(a.sites, b.sites):
        assert y.element == x.element, (what, x.label)
        assert _close(x.xyz, y.xyz, _rounding(x.xyz_su, XYZ_TOL)), (what, x.label, x.xyz, y.xyz)
        # occupancies on one free variable are written as that variable's one value: a CIF's
        # occupancies rounded to their su (0.852(4), 0.2838) agree with it only to ~1e-3
        tol = OCC_TOL if x.occupancy_variable is None else 1e-3
        assert _close(y.occupancy, x.occupancy, _rounding(x.occupancy_su, tol)), (what, x.label)
        if x.u_aniso is not None:
            assert y.u_aniso is not None and _close(x.u_aniso, y.u_aniso, _u_tol(x)), (what, x.label)
        else:
            assert y.u_aniso is None and _close(y.u_iso, x.u_iso, _u_tol(x)), (what, x.label)
        assert y.part == x.part and y.calc == x.calc, (what, x.label)


# --------------------------------------------------------------------------------------
# round trips on the real reference models
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", REAL_CASES, ids=REAL_CASE_NAMES)
def test_cif_round_trip(case, tmp_path):
    import ase.io
    import gemmi
    from pymatgen.io.cif import CifParser

    model = _reference(case)
    path = tmp_path / f"{case.name}.cif"
    path.write_text(structure_cif(model, name=case.name, formula=case.formula, z=case.z))

    back = load_structure(path)
    _assert_same_sites(model, back, "refractor")
    assert back.space_group.hall == model.space_group.hall
    assert np.allclose(back.cell.parameters, model.cell.parameters, atol=1e-6)
    for x, y in zip(model.sites, back.sites):
        assert y.label == x.label
        if x.xyz_su is not None:  # s.u.s survive, to the rounding of the rule of 19
            assert np.allclose(x.xyz_su, y.xyz_su, rtol=0.1, atol=1e-9)

    small = gemmi.read_small_structure(str(path))
    assert len(small.sites) == model.n_sites
    for x, y in zip(model.sites, small.sites):
        assert y.label == x.label
        assert _close(x.xyz, y.fract.tolist(), _rounding(x.xyz_su, XYZ_TOL))
        assert _close(y.occ, x.occupancy, _rounding(x.occupancy_su, OCC_TOL))
        if x.u_aniso is not None:
            a = y.aniso
            assert _close(x.u_aniso, [a.u11, a.u22, a.u33, a.u12, a.u13, a.u23], _u_tol(x))
        else:
            assert _close(y.u_iso, x.u_iso, _u_tol(x))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = CifParser(str(path)).parse_structures(primitive=False)[0]
        atoms = ase.io.read(str(path))
    contents = cell_contents_of(model)
    composition = pm.composition.as_dict()
    for element, n in contents.items():
        # (occupancies written rounded to their su: up to 1e-4 of the count)
        assert composition.get("H" if element == "D" else element, 0.0) == pytest.approx(n, abs=1e-2, rel=1e-4)

    # ASE: every site has an image at its position carrying its element and occupancy
    # (ASE merges sites sharing a position, e.g. a mixed Ag/Na site, into one kind)
    occupancy = atoms.info["occupancy"]
    kinds = atoms.arrays["spacegroup_kinds"]
    frac = atoms.get_scaled_positions(wrap=False)

    def kinds_at(xyz, tol: float = 1e-3) -> set[int]:  # 1e-3: ASE's merging tolerance
        d = frac - np.array(xyz)
        d -= np.round(d)
        return {int(k) for k in kinds[np.abs(d).max(axis=1) < tol]}

    for site in model.sites:
        here = kinds_at(site.xyz)
        assert here, site.label
        found = sum(occupancy[str(k)].get(site.element, 0.0) for k in here)
        # sites of one element closer than ASE's merging tolerance become one ASE site
        # that keeps one of their occupancies (fe_perchlorate's Cl1/Cl1', 0.0002 apart)
        cluster = [
            o.occupancy for o in model.sites
            if o.element == site.element and np.allclose(o.xyz, site.xyz, atol=1e-3)
        ]
        tol = float(_rounding(site.occupancy_su, OCC_TOL))
        assert any(found == pytest.approx(v, abs=tol) for v in [sum(cluster), *cluster]), site.label


@pytest.mark.parametrize("case", REAL_CASES, ids=REAL_CASE_NAMES)
def test_res_round_trip(case, tmp_path):
    from shelxfile import Shelxfile

    model = _reference(case)
    text = structure_res(model, formula=case.formula, z=case.z, wavelength=case.wavelength)
    path = tmp_path / f"{case.name}.res"
    path.write_text(text)

    back = load_structure(path)
    by_label = {s.label.upper(): s for s in back.sites}
    labels = _unique_labels(model.sites)
    reordered = back.model_copy(update={"sites": [by_label[lab.upper()] for lab in labels]})
    _assert_same_sites(model, reordered, "refractor .res")
    assert back.space_group.hall == model.space_group.hall
    for x, y in zip(model.sites, reordered.sites):  # SHELXL free-variable codes kept (21.0, -20.5 ...)
        if x.occupancy_variable is not None:
            assert y.occupancy_variable is not None and y.occupancy_variable[0] == x.occupancy_variable[0], x.label
            assert y.occupancy_variable[1] == pytest.approx(x.occupancy_variable[1], abs=1e-5)
    for x, y in zip(model.sites, reordered.sites):
        if x.calc and x.riding_on:  # riding H stay riding on the same parent
            assert y.riding_on is not None and y.riding_on.upper() == labels[[s.label for s in model.sites].index(x.riding_on)].upper()

    shx = Shelxfile()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shx.read_file(str(path))
    atoms = {a.name.upper(): a for a in shx.atoms.all_atoms}
    assert len(atoms) == model.n_sites
    orders = [s.site_symmetry_order for s in reordered.sites]
    for lab, x, order in zip(labels, model.sites, orders):
        a = atoms[lab.upper()]
        assert a.element.capitalize() == x.element.capitalize() or x.element == "D"
        assert np.allclose(a.frac_coords, x.xyz, atol=XYZ_TOL)
        assert a.occupancy * order == pytest.approx(x.occupancy, abs=OCC_TOL if x.occupancy_variable is None else 1e-3)
        if x.u_aniso is not None:
            u11, u22, u33, u23, u13, u12 = a.uvals
            assert np.allclose(x.u_aniso, [u11, u22, u33, u12, u13, u23], atol=U_TOL)
        elif a.uvals[0] > 0:
            assert a.uvals[0] == pytest.approx(x.u_iso, abs=U_TOL)
    assert [float(v) for v in shx.cell[:6]] == pytest.approx(list(model.cell.parameters), abs=1e-5)


# --------------------------------------------------------------------------------------
# symmetry encoding
# --------------------------------------------------------------------------------------


def _settings() -> list[str]:
    import gemmi

    halls = {gemmi.find_spacegroup_by_number(n).hall for n in range(1, 231)}
    extra = ["P 1 2/n 1", "P 1 1 21/a", "A 1 2/a 1", "R 3 :R", "R -3 c :R", "P n n n :1", "F d d d :1", "I 41/a :1", "C 1 2/m 1", "B 1 1 2/b"]
    for name in extra:
        halls.add(gemmi.SpaceGroup(name).hall)
    return sorted(halls)


def test_shelx_latt_symm_round_trip_all_space_groups():
    """Encoding as LATT/SYMM and reading back gives the same group, for 230 + extra settings."""
    failures = []
    for hall in _settings():
        sg = SpaceGroupRef.from_symbol(hall)
        latt, symm = shelx_symmetry(sg)
        text = "CELL 0.71 10 11 12 90 95 90\nLATT {}\n{}".format(latt, "".join(f"SYMM {t}\n" for t in symm))
        back = parse_ins(text, "x.ins").space_group()
        if back.hall != sg.hall and back.gemmi().operations() != sg.gemmi().operations():
            failures.append((sg.symbol, latt, symm))
    assert not failures, failures[:3]


def test_shelx_latt_conventions():
    assert shelx_symmetry(SpaceGroupRef.from_symbol("P 1 21/c 1")) == (1, ["-X, Y+1/2, -Z+1/2"])
    assert shelx_symmetry(SpaceGroupRef.from_symbol("P 21 21 21"))[0] == -1
    assert shelx_symmetry(SpaceGroupRef.from_symbol("F m -3 m"))[0] == 4
    assert shelx_symmetry(SpaceGroupRef.from_symbol("C 1 c 1"))[0] == -7
    assert len(shelx_symmetry(SpaceGroupRef.from_symbol("F m -3 m"))[1]) == 23


# --------------------------------------------------------------------------------------
# numbers, HKLF text, fcf
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, su, text",
    [
        (0.12345, 0.00012, "0.12345(12)"),
        (6.2256, 0.0008, "6.2256(8)"),
        (0.1, 0.0196, "0.10(2)"),
        (102.982, 0.009, "102.982(9)"),
        (1234.5, 25.0, "1230(30)"),
        (0.5, None, "0.5"),
        (0.5, 0.0, "0.5"),
        (-0.000000001, None, "0"),
    ],
)
def test_with_su(value, su, text):
    assert with_su(value, su) == text


def test_cif_strings():
    assert cif_string("x,y,z") == "x,y,z"
    assert cif_string("P 1 21/c 1") == "'P 1 21/c 1'"
    assert cif_string("_looks_like_a_tag") == "'_looks_like_a_tag'"
    assert cif_string("two\nlines").startswith(";\n")
    assert plain(1.0) == "1" and plain(float("nan")) == "?"


def test_hklf4_text_round_trip_is_exact():
    rng = np.random.default_rng(1)
    hkl = rng.integers(-40, 40, size=(500, 3))
    hkl[np.all(hkl == 0, axis=1)] = (1, 0, 0)
    # everything F8.2 can hold: -9999.99 .. 99999.99
    inten = np.round(rng.uniform(-9999.99, 99999.99, 500) / 10.0 ** rng.integers(0, 5, 500), 2)
    sigma = np.round(rng.uniform(0.01, 9999.0, 500) / 10.0 ** rng.integers(0, 4, 500) + 0.01, 2)
    data = ReflectionData(hkl=hkl, intensity=inten, sigma=sigma, batch=rng.integers(1, 30, 500))
    text, scale = format_hklf4(data)
    assert scale == 1.0
    t = parse_hklf(text)
    assert t.hkl.tolist() == hkl.tolist()
    assert np.array_equal(t.intensity, inten) and np.array_equal(t.sigma, sigma)
    assert t.batch.tolist() == data.batch.tolist()


def test_hklf4_text_scales_values_that_do_not_fit():
    data = ReflectionData(hkl=[[1, 0, 0]], intensity=[123456789.0], sigma=[1234.0])
    text, scale = format_hklf4(data)
    assert scale == 100.0
    t = parse_hklf(text)
    assert t.intensity[0] * scale == pytest.approx(123456789.0, rel=1e-6)


def test_fcf_is_read_back_as_reflections(tmp_path):
    case = next(c for c in REAL_CASES if c.name == "urea")
    model = _reference(case)
    hkl = np.array([[1, 0, 0], [1, 1, 0], [2, 0, 1]])
    text = structure_fcf(model, hkl, [100.0, 50.0, 2.0], [1.0, 2.0, 1.5], [49.0, 26.0, 1.0], scale=2.0, name="urea")
    assert "_shelx_refln_list_code          4" in text
    b = read_cif_bundle(text, tmp_path / "u.fcf")
    r = b.reflections
    assert r.hkl.tolist() == hkl.tolist()
    assert r.intensity.tolist() == [50.0, 25.0, 1.0] and r.sigma.tolist() == [0.5, 1.0, 0.75]
    assert b.space_group.number == case.sg_number


# --------------------------------------------------------------------------------------
# write_structure_outputs
# --------------------------------------------------------------------------------------


def test_write_structure_outputs_complete_and_readable(tmp_path):
    case = next(c for c in REAL_CASES if c.name == "ethylene_oxide")
    data = load_reflections(case.reflections)
    model = _reference(case)
    refined = RefinedCandidate(
        structure=model, r1=0.0345, wr2=0.0901, goof=1.042, n_reflections=1010, n_gt=900,
        n_parameters=44, weight_a=0.05, weight_b=0.12, max_shift_su=0.001, diff_peak=0.21, diff_hole=-0.18,
        scale=1.7, flack=None,
    )
    paths = write_structure_outputs(refined, data, tmp_path / "out", "epoxide")
    assert set(paths) == {"cif", "res", "fcf"}
    assert sorted(os.listdir(tmp_path / "out")) == ["epoxide.cif", "epoxide.fcf", "epoxide.res"]  # no temp files
    cif = paths["cif"].read_text()
    for tag in (
        "_refine_ls_R_factor_gt", "_refine_ls_R_factor_all", "_refine_ls_wR_factor_ref",
        "_refine_ls_goodness_of_fit_ref", "_refine_ls_number_reflns", "_refine_ls_number_parameters",
        "_refine_ls_weighting_details", "_refine_diff_density_max", "_refine_diff_density_min",
        "_refine_ls_shift/su_max", "_atom_site_aniso_U_11", "_shelx_res_file", "_shelx_hkl_file",
        "_space_group_name_Hall", "_atom_site_calc_flag",
    ):
        assert tag in cif, tag
    assert "_refine_ls_R_factor_gt                  0.0345" in cif
    # the CIF is a complete archive: reflections, model and instructions read back
    again = load_reflections(paths["cif"])
    assert again.n == data.n and np.array_equal(again.hkl, data.hkl)
    assert np.allclose(again.intensity, data.intensity) and np.allclose(again.sigma, data.sigma)
    assert again.formula == data.formula and again.wavelength == data.wavelength
    _assert_same_sites(model, load_structure(paths["cif"]), "outputs cif")
    _assert_same_sites(model, load_structure(paths["res"]), "outputs res")
    fcf = read_cif_bundle(paths["fcf"].read_text(), paths["fcf"])
    assert 0 < fcf.reflections.n <= data.n


@pytest.mark.parametrize("name, density, f000", [("sucrose", "1.614", "364"), ("agnafe_molybdate", "4.230", "826.4")])
def test_cif_gives_the_crystal_density_and_f000_as_shelxl(name, density, f000):
    """Density from the formula, Z and the cell, and F(000) as SHELXL counts it (the cell's
    electrons, no f′), as in the published CIFs (agnafe's Ag0.6/Na0.4 site: 826)."""
    case = next(c for c in REAL_CASES if c.name == name)
    data = load_reflections(case.reflections)
    text = structure_cif(_reference(case), data=data)
    assert re.search(rf"^_exptl_crystal_density_diffrn\s+{re.escape(density)}$", text, re.M)
    assert re.search(rf"^_exptl_crystal_F_000\s+{re.escape(f000)}$", text, re.M)


def test_cif_names_the_programs_and_the_solution_method():
    """A generated model names its generator and the CIF's code of its method (charge
    flipping: iterative); a user's model names only the refinement."""
    from refractor_core.types import USER_MODEL, Candidate

    case = next(c for c in REAL_CASES if c.name == "ethylene_oxide")
    model = _reference(case)
    texts = {}
    for generator, meta in (("charge-flip", {"solution_method": "iterative"}), (USER_MODEL, {})):
        refined = RefinedCandidate(structure=model, r1=0.03, wr2=0.08, goof=1.0, n_reflections=10, n_gt=9,
                                   n_parameters=4, candidate=Candidate(structure=model, generator=generator, meta=meta))
        texts[generator] = structure_cif(model, refined=refined)
    assert re.search(r"^_atom_sites_solution_primary\s+iterative$", texts["charge-flip"], re.M)
    assert re.search(r"^_computing_structure_solution\s+'refractor \S+ \(charge-flip\)'$", texts["charge-flip"], re.M)
    assert "_atom_sites_solution_primary" not in texts[USER_MODEL]
    assert all("_computing_structure_refinement" in text for text in texts.values())


def test_refined_extinction_is_written_with_its_su_and_expression(tmp_path):
    """A refined EXTI goes into the CIF with its su and SHELXL's expression, as SHELXL
    writes it, and reads back as EXTI (the su was left out before)."""
    import gemmi

    from refractor_plugins.readers.cif_reader import instructions_from_tags

    case = next(c for c in REAL_CASES if c.name == "ethylene_oxide")
    refined = RefinedCandidate(
        structure=_reference(case), r1=0.03, wr2=0.08, goof=1.0, n_reflections=1010, n_gt=900, n_parameters=44,
        extinction=0.01831, meta={"extinction_su": 0.00072},
    )
    paths = write_structure_outputs(refined, load_reflections(case.reflections), tmp_path, "ext")
    cif = paths["cif"].read_text()
    assert re.search(r"^_refine_ls_extinction_coef\s+0\.0183\(7\)$", cif, re.M)
    assert r"Fc^*^=kFc[1+0.001xFc^2^\l^3^/sin(2\q)]^-1/4^" in cif
    block = gemmi.cif.read_string(cif).sole_block()
    assert instructions_from_tags(block).exti == pytest.approx(0.0183)


def test_write_structure_outputs_with_given_fc2(tmp_path):
    case = next(c for c in REAL_CASES if c.name == "nacl")
    data = load_reflections(case.reflections).subset(np.arange(50))
    model = _reference(case)
    refined = RefinedCandidate(structure=model, r1=0.01, wr2=0.03, goof=1.1, n_reflections=50, n_gt=50, n_parameters=3)
    fc2 = np.full(50, 100.0)
    paths = write_structure_outputs(refined, data, tmp_path, "nacl", fc2=fc2)
    b = read_cif_bundle(paths["fcf"].read_text(), paths["fcf"])
    assert b.reflections.n == 50
    with pytest.raises(ValueError):
        write_structure_outputs(refined, data, tmp_path / "x", "nacl", fc2=np.ones(3))
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_hklf5_data_round_trip_through_the_cif(tmp_path):
    case = next(c for c in REAL_CASES if c.name == "urea")
    model = _reference(case)
    data = ReflectionData(
        hkl=[[1, 0, 0], [1, 0, 0], [2, 0, 0]], intensity=[10.0, 10.0, 5.0], sigma=[1.0, 1.0, 0.5],
        batch=[-2, 1, 1], hklf=5, cell=model.cell, wavelength=case.wavelength, formula=case.formula, z=case.z,
    )
    refined = RefinedCandidate(structure=model, r1=0.1, wr2=0.2, goof=1.0, n_reflections=2, n_gt=2, n_parameters=10)
    paths = write_structure_outputs(refined, data, tmp_path, "twin", fc2=np.ones(3))
    assert "\nHKLF 5\n" in paths["res"].read_text()
    again = load_reflections(paths["cif"])
    assert again.hklf == 5 and again.batch.tolist() == [-2, 1, 1]


def test_a_best_attempt_that_is_not_a_solution_is_marked(tmp_path):
    """`refractor run` flags its best candidate with meta["solved"]; an unsolved one is marked
    in the CIF (comment and _refine_special_details) and the .res (REM), and stays readable."""
    import gemmi

    case = next(c for c in REAL_CASES if c.name == "pr_sulfate_hydroxide")
    structure = load_structure(case.reference)
    refined = RefinedCandidate(structure=structure, r1=0.41, wr2=0.8, goof=3.0, n_reflections=800, n_gt=700,
                               n_parameters=30, meta={"solved": False})
    cif = structure_cif(structure, refined=refined, name="attempt")
    assert cif.startswith("# NOT SOLVED") and "R1 = 0.4100" in cif
    block = gemmi.cif.read_string(cif).sole_block()
    assert "NOT SOLVED" in block.find_value("_refine_special_details")
    assert "REM NOT SOLVED" in structure_res(structure, refined=refined)
    solved = refined.model_copy(update={"r1": 0.03, "meta": {"solved": True}})
    assert "NOT SOLVED" not in structure_cif(structure, refined=solved, name="x")
    assert "NOT SOLVED" not in structure_res(structure, refined=solved)


def test_res_writes_disorder_as_a_free_variable():
    """A PART 1 / PART 2 assembly at p / 1 - p is written with one free variable (21 / -21,
    FVAR value p) and reads back to the same occupancies (measured difluoro model, 0.8/0.2)."""
    from refractor_core.dataio import load_bundle
    from refractor_core.io.res_writer import structure_res
    from refractor_core.testing.real_cases import get_case
    from refractor_plugins.readers.shelx_ins import parse_ins

    case = get_case("difluoro_6ring_pna21")
    structure = load_bundle(case.reference, block=case.data_block).structure
    text = structure_res(structure)
    fvar = next(line for line in text.splitlines() if line.startswith("FVAR")).split()
    assert float(fvar[2]) == pytest.approx(0.8, abs=1e-4)
    atoms = {line.split()[0]: line.split()[5] for line in text.splitlines() if line[:3] in ("C2 ", "C2A")}
    assert atoms == {"C2": "21.00000", "C2A": "-21.00000"}
    again = parse_ins(text, "out.res").structure()
    assert [round(s.occupancy, 4) for s in again.sites] == [round(s.occupancy, 4) for s in structure.sites]


U_ON_FREE_VARIABLE = """TITL u
CELL 0.71073 10 11 12 90 90 90
LATT 1
SFAC C O
UNIT 3 2
FVAR 1.0 0.05
C1 1 0.1 0.1 0.1 11.0 0.03
C2 1 0.2 0.1 0.1 11.0 21.0
C3 1 0.3 0.1 0.1 11.0 21.0
PART 1
O1 2 0.4 0.1 0.1 10.6 0.03
PART 2
O2 2 0.4 0.2 0.1 10.4 0.03
PART 0
HKLF 4
END
"""


def test_res_keeps_u_coded_on_a_free_variable():
    """U_iso coded 21.0 (U = fv2) are written so again, FVAR 2 holding their value, without
    the EADP the reader made of them; a disorder assembly written as a free variable takes
    the next number (31 / -31). When the coded atoms' U differ, they are written as values,
    with the EADP."""
    structure = parse_ins(U_ON_FREE_VARIABLE, "u.res")
    text = structure_res(structure.structure(), instructions=structure.instructions)
    assert next(line for line in text.splitlines() if line.startswith("FVAR")).split()[1:] == ["1.00000", "0.05000", "0.60000"]
    written = {w[0]: w[-1] for w in map(str.split, text.splitlines()) if w and w[0] in ("C1", "C2", "C3")}
    assert written == {"C1": "0.03000", "C2": "21.00000", "C3": "21.00000"}
    assert {w[0]: w[5] for w in map(str.split, text.splitlines()) if w and w[0] in ("O1", "O2")} == {
        "O1": "31.00000", "O2": "-31.00000"}
    assert "EADP" not in text
    sites = {s.label: s for s in parse_ins(text, "again.res").structure().sites}
    assert sites["C2"].u_iso == pytest.approx(0.05) and sites["O2"].occupancy == pytest.approx(0.4)
    apart = structure.structure()
    apart = apart.model_copy(update={"sites": [s.model_copy(update={"u_iso": 0.06}) if s.label == "C3" else s
                                               for s in apart.sites]})
    text = structure_res(apart, instructions=structure.instructions)
    written = {w[0]: w[-1] for w in map(str.split, text.splitlines()) if w and w[0] in ("C2", "C3")}
    assert written == {"C2": "0.05000", "C3": "0.06000"} and "EADP C2 C3" in text
