"""Structure matching: origin shifts, enantiomorphs, axis permutations, partial solutions."""

from __future__ import annotations

import numpy as np

from refractor_core.benchmarking.matching import _holohedry, match_structures
from refractor_core.types import Site, SpaceGroupRef, Structure, UnitCell


def _p212121() -> Structure:
    sites = [Site(label=f"{e}{i}", element=e, xyz=tuple(x), u_iso=0.03) for i, (e, x) in enumerate([
        ("Br", (0.11, 0.23, 0.31)), ("C", (0.31, 0.12, 0.05)), ("O", (0.45, 0.38, 0.17)),
        ("N", (0.72, 0.05, 0.41)), ("C", (0.61, 0.29, 0.83)), ("H", (0.2, 0.2, 0.2))])]
    return Structure(cell=UnitCell(a=7.1, b=8.3, c=9.2), space_group=SpaceGroupRef.from_symbol("P 21 21 21"), sites=sites)


def _moved(st: Structure, w, t) -> Structure:
    w = np.asarray(w, dtype=float)
    sites = [s.model_copy(update={"xyz": tuple(float(v) for v in (w @ np.array(s.xyz) + np.array(t)))}) for s in st.sites]
    return st.model_copy(update={"sites": sites})


def test_holohedry_sizes():
    assert len(_holohedry((5.0, 6.0, 7.0, 80.0, 85.0, 95.0))) == 2
    assert len(_holohedry((5.0, 6.0, 7.0, 90.0, 100.0, 90.0))) == 4
    assert len(_holohedry((5.0, 6.0, 7.0, 90.0, 90.0, 90.0))) == 8
    assert len(_holohedry((5.0, 5.0, 7.0, 90.0, 90.0, 120.0))) == 24
    assert len(_holohedry((5.0, 5.0, 5.0, 90.0, 90.0, 90.0))) == 48


def test_origin_shift_and_enantiomorph_are_found():
    ref = _p212121()
    # allowed origin shift of P212121 plus inversion (the other hand)
    found = _moved(ref, -np.eye(3), (0.5, 0.0, 0.5))
    m = match_structures(found, ref)
    assert m.fraction_matched == 1.0 and m.element_agreement == 1.0 and m.inverted
    assert m.rms < 1e-6 and m.n_reference == 5  # H ignored


def test_axis_permutation_in_a_tetragonal_cell():
    ref = Structure(cell=UnitCell(a=6.0, b=6.0, c=9.0), space_group=SpaceGroupRef.from_symbol("P 4"),
                    sites=[Site(label="Fe", element="Fe", xyz=(0.13, 0.27, 0.1), u_iso=0.02),
                           Site(label="O", element="O", xyz=(0.31, 0.05, 0.33), u_iso=0.02)])
    found = _moved(ref, [[0, 1, 0], [1, 0, 0], [0, 0, 1]], (0.5, 0.5, 0.37))  # mirror x<->y, polar z shift
    assert match_structures(found, ref).fraction_matched == 1.0


def test_partial_and_wrong_solutions_score_lower():
    ref = _p212121()
    part = ref.model_copy(update={"sites": ref.sites[:3]})
    m = match_structures(_moved(part, np.eye(3), (0.5, 0.5, 0.0)), ref)
    assert m.fraction_matched == 3 / 5 and m.found_correct == 1.0
    wrong_el = ref.model_copy(update={"sites": [s.model_copy(update={"element": "S"}) if s.element == "O" else s for s in ref.sites]})
    m = match_structures(wrong_el, ref)
    assert m.fraction_matched == 1.0 and m.fraction_matched_same_element == 4 / 5 and m.element_agreement == 0.8
    rng = np.random.default_rng(0)
    rand = ref.model_copy(update={"sites": [s.model_copy(update={"xyz": tuple(rng.random(3))}) for s in ref.sites]})
    assert match_structures(rand, ref).fraction_matched < 0.6
    shifted = _moved(ref, np.eye(3), (0.05, 0.0, 0.0))  # 0.355 Å off: beyond 0.3 Å, not an allowed shift
    assert match_structures(shifted, ref).fraction_matched_same_element < 1.0


def test_different_cells_are_not_matched():
    ref = _p212121()
    other = ref.model_copy(update={"cell": UnitCell(a=7.1, b=9.3, c=9.2)})
    m = match_structures(other, ref)
    assert m.fraction_matched == 0.0 and "cells differ" in m.note
