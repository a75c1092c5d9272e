"""HKLF 5 data (a non-merohedral twin): overlap groups as observations, refined with BASF.

The data are written as an HKLF 5 file and read back by the reader. Each group's
intensity is built here by hand from single-component |F|² (the kernel without any twin
handling): (1 - f)|F(h)|² + f|F(h')|² for an overlap, f|F(h')|² for a group of the second
component alone, (1 - f)|F(h)|² otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest

from refractor_core.crystal.evaluation import evaluate_model
from refractor_core.crystal.observations import model_intensities, prepare_observations
from refractor_core.crystal.symmetry import SymmetryOps
from refractor_core.dataio import load_reflections
from refractor_core.simulation.reflections import unique_reflections
from refractor_core.types import Candidate
from refractor_plugins.readers.shelx_ins import ins_bundle, parse_ins
from refractor_plugins.refiners.configs import LsqConfig
from refractor_plugins.refiners.lsq.refiner import LsqRefiner

pytestmark = pytest.mark.usefixtures("one_torch_thread")

INS = """TITL twin in P2(1)/c
CELL 0.71073 7.0 8.0 9.0 90 100 90
ZERR 4 0.001 0.001 0.001 0 0.01 0
LATT 1
SYMM -X, 0.5+Y, 0.5-Z
SFAC C N O
UNIT 12 4 8
FVAR 1.0
BASF {basf}
O1 3 0.110000 0.210000 0.320000 11.0 0.030
C1 1 0.250000 0.150000 0.450000 11.0 0.030
N1 2 0.380000 0.050000 0.520000 11.0 0.030
C2 1 0.300000 0.320000 0.200000 11.0 0.030
O2 3 0.620000 0.420000 0.110000 11.0 0.030
C3 1 0.800000 0.300000 0.350000 11.0 0.030
HKLF 5
END
"""
FRACTION = 0.3


def _hklf5(tmp_path):
    """Write twin.hkl (HKLF 5) and twin.ins beside it; the true structure."""
    truth = ins_bundle(parse_ins(INS.format(basf=FRACTION), "twin.ins"), "twin.ins").structure
    sym = SymmetryOps.from_space_group(truth.space_group)
    h = unique_reflections(truth.cell, sym, 0.8)
    partner = h * np.array([-1, 1, 1])  # the second domain's indices: not an equivalent in 2/m
    f2 = model_intensities(truth, h, wavelength=0.71073)
    f2p = model_intensities(truth, partner, wavelength=0.71073)
    rng = np.random.default_rng(11)
    rows = []
    scale = 50.0 / np.median(f2)
    for i in range(len(h)):
        if h[i, 2] % 2 == 0:  # overlapped: the partner first (negative component), then the main
            members = [(partner[i], -2), (h[i], 1)]
            f = (1 - FRACTION) * f2[i] + FRACTION * f2p[i]
        elif h[i, 1] == 1:  # the second domain alone
            members = [(partner[i], 2)]
            f = FRACTION * f2p[i]
        else:
            members = [(h[i], 1)]
            f = (1 - FRACTION) * f2[i]
        sigma = 0.02 * f * scale + 0.5
        intensity = f * scale + rng.normal(0.0, sigma)
        for (hh, comp) in members:
            rows.append(f"{hh[0]:4d}{hh[1]:4d}{hh[2]:4d}{intensity:8.2f}{sigma:8.2f}{comp:4d}")
    (tmp_path / "twin.hkl").write_text("\n".join(rows) + "\n   0   0   0    0.00    0.00   0\n")
    (tmp_path / "twin.ins").write_text(INS.format(basf=FRACTION))
    return truth, len(h)


def test_hklf5_groups_are_observations_with_their_members(tmp_path):
    truth, n = _hklf5(tmp_path)
    data = load_reflections(tmp_path / "twin.hkl")
    assert data.hklf == 5
    obs = prepare_observations(data, truth.space_group, data.instructions)
    assert obs.data.n == n  # one observation per group, nothing merged
    twin = obs.twin_indices
    assert twin is not None and twin.n_components == 2
    overlapped = np.sum(twin.ok, axis=0) == 2
    assert overlapped.sum() == int(np.sum(obs.hkl[:, 2] % 2 == 0))
    # the true model with the true fraction fits; without the twin it does not
    good = evaluate_model(data, truth, instructions=data.instructions)
    untwinned = evaluate_model(data, truth, instructions=data.instructions.model_copy(update={"basf": [0.0]}))
    assert good["R1"] < 0.03 and untwinned["R1"] > 0.1


def test_hklf5_refinement_recovers_the_fraction_and_the_atoms(tmp_path):
    truth, _ = _hklf5(tmp_path)
    data = load_reflections(tmp_path / "twin.hkl")
    start_text = INS.format(basf=0.5).replace("BASF", "TWIN -1 0 0 0 1 0 0 0 1 2\nBASF")  # no place with HKLF 5
    start = ins_bundle(parse_ins(start_text, "start.ins"), "start.ins")
    rng = np.random.default_rng(2)
    sites = [s.model_copy(update={"xyz": tuple(np.asarray(s.xyz) + rng.normal(0.0, 0.008, 3))})
             for s in start.structure.sites]
    candidate = Candidate(structure=start.structure.model_copy(update={"sites": sites}), generator="test",
                          meta={"instructions": start.instructions})
    config = LsqConfig(max_cycles=20, anisotropic=False, riding_h=False, complete=False)
    refined = LsqRefiner(config).refine(data, candidate)
    assert refined.meta["twin_fractions"][0] == pytest.approx(FRACTION, abs=0.01)
    assert refined.r1 < 0.03
    true = {s.label: np.asarray(s.xyz) for s in truth.sites}
    for s in refined.structure.sites:
        d = (np.asarray(s.xyz) - true[s.label]) @ np.diag([7.0, 8.0, 9.0])
        assert np.linalg.norm(d) < 0.01, s.label
    assert any("HKLF 5: 2 twin components" in line for line in refined.log)
    assert any("TWIN ignored" in line for line in refined.log)


def test_a_twin_fraction_below_zero_with_extinction_gives_finite_intensities(tmp_path):
    """A second-component-only group has Fc² = BASF·|F|², negative while a refined BASF is
    a little below 0; the extinction factor is then taken at Fc² = 0 (no NaN, no warning)."""
    from refractor_plugins.refiners.lsq.least_squares import _extinction_terms

    truth, _ = _hklf5(tmp_path)
    data = load_reflections(tmp_path / "twin.hkl")
    instructions = data.instructions.model_copy(update={"basf": [-0.1], "exti": 0.5})
    with np.errstate(invalid="raise"):
        figures = evaluate_model(data, truth, instructions=instructions)
    assert np.isfinite(figures["R1"]) and np.isfinite(figures["wR2"])
    y, dyf = _extinction_terms(np.array([0.01, 0.01]), np.array([-50.0, 50.0]))
    assert y[0] == 1.0 and dyf[0] == 1.0  # as at Fc² = 0
    assert 0.0 < y[1] < 1.0 and np.all(np.isfinite(dyf))
