"""Difference-Fourier completion, element assignment and the blocked normal matrix."""

from __future__ import annotations

import numpy as np
import pytest

from refractor_core.crystal.cell import orthogonalization_matrix
from refractor_core.crystal.symmetry import SymmetryOps
from refractor_core.dataio import load_bundle, load_reflections
from refractor_core.testing.real_cases import get_case
from refractor_core.types import Candidate
from refractor_plugins.refiners.configs import LsqConfig
from refractor_plugins.refiners.lsq.refiner import LsqRefiner


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pr_sulfate():
    case = get_case("pr_sulfate_hydroxide")
    data = load_reflections(case.reflections)
    structure = load_bundle(case.reference, block=case.data_block).structure
    return case, data, structure


def _nearest_image_distance(structure, xyz, target) -> float:
    sym = SymmetryOps.from_space_group(structure.space_group)
    m = orthogonalization_matrix(structure.cell)
    d = sym.images(np.asarray(target)) - np.asarray(xyz)
    d -= np.round(d)
    return float(np.min(np.linalg.norm(d @ m.T, axis=1)))


def test_completion_adds_missing_atoms_and_fixes_elements(pr_sulfate):
    """Two O atoms removed and S given as O: the data put S back and find both O atoms."""
    case, data, published = pr_sulfate
    removed = {s.label: s for s in published.sites if s.label in ("O3", "O4")}
    sites = [
        s.model_copy(update={"element": "O" if s.label == "S" else s.element, "u_iso": 0.05, "u_aniso": None})
        for s in published.sites
        if s.element != "H" and s.label not in removed
    ]
    start = published.model_copy(update={"sites": sites})
    cfg = LsqConfig(anisotropic=False, riding_h=False, max_cycles=40)  # complete="auto": atoms are missing
    r = LsqRefiner(cfg).refine(data, Candidate(structure=start, generator="test"))
    heavy = [s for s in r.structure.sites if s.element != "H"]
    assert sorted(s.element for s in heavy) == sorted(["Pr", "S", "O", "O", "O", "O", "O"])
    assert any("completion round" in line and "added" in line for line in r.log)
    new = [s for s in heavy if s.label not in {x.label for x in sites}]
    assert len(new) == 2
    for s in new:
        assert min(_nearest_image_distance(published, s.xyz, t.xyz) for t in removed.values()) < 0.1
    assert r.r1 < 0.05


def test_completion_leaves_a_complete_model_alone(pr_sulfate):
    """With every atom present and right, 'auto' does no completion rounds."""
    case, data, published = pr_sulfate
    r = LsqRefiner(LsqConfig(max_cycles=6, riding_h=False)).refine(data, Candidate(structure=published))
    assert not any("completion round" in line for line in r.log)
    assert sorted(s.element for s in r.structure.sites if s.element != "H") == sorted(
        s.element for s in published.sites if s.element != "H")


def test_blocked_matrix_reaches_the_full_matrix_result(pr_sulfate):
    """Alternating blocks (SHELXL BLOC-like) converge to the same model as the full matrix."""
    case, data, published = pr_sulfate
    start = published.model_copy(update={"sites": [s for s in published.sites if s.element != "H"]})
    common = dict(anisotropic=True, riding_h=False, extinction=False, weights=(0.04, 2.0), max_cycles=40)
    full = LsqRefiner(LsqConfig(matrix="full", **common)).refine(data, Candidate(structure=start))
    blocked = LsqRefiner(LsqConfig(matrix="blocked", block_size=20, **common)).refine(data, Candidate(structure=start))
    assert blocked.meta["matrix"] == "blocked" and full.meta["matrix"] == "full"
    assert blocked.r1 == pytest.approx(full.r1, abs=2e-4)
    for a, b in zip(full.structure.sites, blocked.structure.sites):
        assert np.allclose(a.xyz, b.xyz, atol=2e-4)


def test_mixed_site_pair_from_complementary_fractional_counts():
    from refractor_plugins.refiners.lsq.completion import mixed_site_pair

    a, b, fa = mixed_site_pair("Ag0.6 Fe Mo2 Na0.4 O8")
    assert (a, b) == ("Ag", "Na") and fa == pytest.approx(0.6)
    a, b, fa = mixed_site_pair("C8 H25 Al0.84 Ga1.16 N3")
    assert (a, b) == ("Ga", "Al") and fa == pytest.approx(0.58)
    assert mixed_site_pair("C10 H8 N2 O4") is None  # whole counts
    assert mixed_site_pair("Ag0.6 Na0.3 O2") is None  # do not add up to a whole site
    assert mixed_site_pair(None) is None


def test_swapped_neighbouring_elements_are_put_back():
    """A generated model of cpna (C5 H14 N3 Na) with one N and one C exchanged (1 electron
    apart, below what the electron count resolves): the data-driven swap test restores both
    elements, and R1 returns to that of the right model."""
    case = get_case("cpna")
    data = load_reflections(case.reflections)
    published = load_bundle(case.reference, block=case.data_block).structure
    heavy = [s for s in published.sites if s.element != "H"]
    n = next(s for s in heavy if s.element == "N")
    c = next(s for s in heavy if s.element == "C" and s.site_symmetry_order == n.site_symmetry_order)
    swapped = [s.model_copy(update={"element": "C" if s is n else "N"}) if s in (n, c) else s for s in heavy]
    start = published.model_copy(update={"sites": swapped})
    r = LsqRefiner(LsqConfig()).refine(data, Candidate(structure=start, generator="test"))
    assert any(line.startswith("elements swapped") for line in r.log)
    found = {}
    for s in r.structure.non_hydrogen():
        found[min(heavy, key=lambda p: _nearest_image_distance(published, s.xyz, p.xyz)).label] = s.element
    assert found[n.label] == "N" and found[c.label] == "C"
    right = LsqRefiner(LsqConfig()).refine(data, Candidate(structure=published.model_copy(update={"sites": heavy}), generator="test"))
    assert r.r1 <= right.r1 + 0.002
