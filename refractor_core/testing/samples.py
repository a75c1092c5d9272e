"""Small sample inputs for the conformance kit, built from a real published structure.

The structure is praseodymium sulfate hydroxide, Pr(OH)SO4, P 1 21/n 1, Z = 4 (COD 2229150,
doi 10.1107/S1600536811000298): cell, coordinates and U(eq) as published. Intensities are
computed from it with gemmi's `StructureFactorCalculatorX` over the Friedel-unique half of
reciprocal space to `d_min` (systematic absences included, as a diffractometer measures
them), with a fixed-seed noise model, so every sample is deterministic and needs no files.
A component author can substitute measured data by overriding the `samples` fixture.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..types import (
    Candidate,
    RefinedCandidate,
    ReflectionData,
    Site,
    SpaceGroupHypothesis,
    SpaceGroupRef,
    Structure,
    UnitCell,
)

SAMPLE_NAME = "pr_sulfate_hydroxide"
SAMPLE_CELL = (4.4891, 12.484, 6.894, 90.0, 106.31, 90.0)
SAMPLE_SPACE_GROUP = "P 1 21/n 1"
SAMPLE_FORMULA = "H O5 Pr S"
SAMPLE_Z = 4.0
SAMPLE_WAVELENGTH = 0.71073
#: label, element, x, y, z, U(eq) (Å²) as published
SAMPLE_SITES = (
    ("Pr", "Pr", 0.14215, 0.93511, 0.30120, 0.0103),
    ("S", "S", 0.4863, 0.85448, -0.1115, 0.0100),
    ("O1", "O", 0.3690, 0.8345, 0.0615, 0.0156),
    ("O2", "O", 0.5908, 0.7551, -0.1798, 0.0189),
    ("O3", "O", 0.2507, 0.9045, -0.2785, 0.0179),
    ("O4", "O", 0.7557, 0.9298, -0.0482, 0.0137),
    ("O5", "O", 0.3035, 1.0859, 0.5390, 0.0141),
    ("H5A", "H", 0.1434, 1.1193, 0.5488, 0.021),
)


@dataclass
class Samples:
    """Inputs the conformance checks feed to a component."""

    reflections: ReflectionData
    structure: Structure  # the true structure behind `reflections`
    hypothesis: SpaceGroupHypothesis  # the true space group, probability 1
    candidate: Candidate  # the true structure with displaced atoms (a refiner's start)
    refined: list[RefinedCandidate]  # a ranker's input: distinct figures of merit
    reader_files: list[Path] = field(default_factory=list)  # files a reader should read


def sample_structure() -> Structure:
    """The published Pr(OH)SO4 structure (isotropic U(eq))."""
    sites = [
        Site(label=lab, element=el, xyz=(x, y, z), u_iso=u, calc=(el == "H"), riding_on="O5" if el == "H" else None)
        for lab, el, x, y, z, u in SAMPLE_SITES
    ]
    return Structure(
        cell=UnitCell(**dict(zip(("a", "b", "c", "alpha", "beta", "gamma"), SAMPLE_CELL))),
        space_group=SpaceGroupRef.from_symbol(SAMPLE_SPACE_GROUP),
        sites=sites,
        name=SAMPLE_NAME,
        wavelength=SAMPLE_WAVELENGTH,
    )


def _gemmi_small_structure(structure: Structure):
    import gemmi

    st = gemmi.SmallStructure()
    st.cell = structure.cell.gemmi()
    st.spacegroup_hall = structure.space_group.hall
    st.spacegroup_hm = structure.space_group.symbol
    st.spacegroup = structure.space_group.gemmi()
    for s in structure.sites:
        site = gemmi.SmallStructure.Site()
        site.label = s.label
        site.type_symbol = s.element
        site.element = gemmi.Element(s.element)
        site.fract = gemmi.Fractional(*s.xyz)
        site.occ = s.occupancy
        site.u_iso = s.u_iso if s.u_iso is not None else float(np.mean(s.u_aniso[:3]))
        st.add_site(site)
    st.setup_cell_images()
    return st


def simulate_intensities(structure: Structure, hkl: np.ndarray) -> np.ndarray:
    """|F|² of `structure` at `hkl` (gemmi, X-ray form factors, no anomalous terms)."""
    import gemmi

    st = _gemmi_small_structure(structure)
    calc = gemmi.StructureFactorCalculatorX(st.cell)
    f = np.array([calc.calculate_sf_from_small_structure(st, [int(h), int(k), int(l)]) for h, k, l in hkl])
    return np.abs(f) ** 2


def sample_reflections(d_min: float = 1.0, seed: int = 0, structure: Structure | None = None) -> ReflectionData:
    """Deterministic noisy F² of the sample structure to `d_min` Å (absences included)."""
    import gemmi

    structure = structure or sample_structure()
    hkl = np.asarray(gemmi.make_miller_array(structure.cell.gemmi(), gemmi.SpaceGroup("P 1"), d_min), dtype=np.int32)
    i_calc = simulate_intensities(structure, hkl)
    i_calc *= 10000.0 / i_calc.max()
    rng = np.random.default_rng(seed)
    sigma = np.sqrt(4.0 + i_calc + (0.02 * i_calc) ** 2)
    i_obs = i_calc + rng.normal(0.0, 1.0, size=i_calc.shape) * sigma
    return ReflectionData(
        hkl=hkl,
        intensity=np.round(i_obs, 2),
        sigma=np.round(sigma, 2),
        cell=structure.cell,
        wavelength=SAMPLE_WAVELENGTH,
        formula=SAMPLE_FORMULA,
        z=SAMPLE_Z,
        source=f"simulated:{SAMPLE_NAME}",
        notes=[f"simulated from the published {SAMPLE_NAME} structure to d_min {d_min} Å, noise seed {seed}"],
    )


def displaced(structure: Structure, shift: float = 0.01, seed: int = 0) -> Structure:
    """A copy with every site moved by up to `shift` (fractional) in each coordinate."""
    rng = np.random.default_rng(seed)
    sites = []
    for s in structure.sites:
        d = rng.uniform(-shift, shift, size=3)
        sites.append(s.model_copy(update={"xyz": tuple(float(v) for v in np.asarray(s.xyz) + d)}))
    return structure.model_copy(update={"sites": sites})


def sample_refined(structure: Structure, n: int = 4) -> list[RefinedCandidate]:
    """`n` refined candidates with distinct figures of merit (the first fits best on all).

    Each carries `meta["conformance_id"]` so a check can follow it through a ranking.
    """
    out = []
    for i in range(n):
        r1 = 0.03 + 0.07 * i
        out.append(
            RefinedCandidate(
                structure=displaced(structure, shift=0.004 * i, seed=i) if i else structure,
                r1=r1,
                wr2=2.3 * r1 + 0.01,
                goof=1.02 + 0.6 * i,
                n_reflections=700,
                n_gt=650,
                n_parameters=35,
                converged=True,
                meta={"conformance_id": i},
            )
        )
    return out


def real_reader_files() -> list[Path]:
    """Reflection and model files of the real cases beside the project (may be empty)."""
    from .real_cases import load_cases

    files: list[Path] = []
    for case in load_cases():
        for p in (case.reflections, case.reference, case.companion):
            if p is not None and p.is_file() and p not in files:
                files.append(p)
    return files


def write_sample_files(data: ReflectionData, folder: str | Path) -> list[Path]:
    """The sample reflections as files readers can be tested on: SHELX HKLF 4 and MTZ.

    The HKLF 4 text comes from the project's own writer when it is installed; the MTZ is
    written by gemmi.
    """
    import gemmi

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    try:
        from ..io.hkl_writer import format_hklf4
    except ImportError:
        format_hklf4 = None
    if format_hklf4 is not None:
        text, _scale = format_hklf4(data)
        p = folder / f"{SAMPLE_NAME}.hkl"
        p.write_text(text)
        files.append(p)
    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup = gemmi.SpaceGroup("P 1")
    mtz.set_cell_for_all(data.cell.gemmi())
    mtz.add_dataset("sample").wavelength = data.wavelength or SAMPLE_WAVELENGTH
    mtz.add_column("I", "J")
    mtz.add_column("SIGI", "Q")
    mtz.set_data(np.column_stack([data.hkl, data.intensity, data.sigma]).astype(np.float32))
    p = folder / f"{SAMPLE_NAME}.mtz"
    mtz.write_to_file(str(p))
    files.append(p)
    return files


@lru_cache(maxsize=1)
def scratch_dir() -> Path:
    """A temporary folder for sample files, removed when the process exits."""
    folder = Path(tempfile.mkdtemp(prefix="refractor-samples-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


@lru_cache(maxsize=4)
def default_samples(d_min: float = 1.0) -> Samples:
    """The sample set the conformance kit uses unless a test overrides it (cached)."""
    structure = sample_structure()
    data = sample_reflections(d_min=d_min, structure=structure)
    hypothesis = SpaceGroupHypothesis(space_group=structure.space_group, probability=1.0, source="conformance")
    candidate = Candidate(structure=displaced(structure, 0.01, seed=1), generator="conformance", hypothesis=hypothesis, seed=0)
    return Samples(
        reflections=data,
        structure=structure,
        hypothesis=hypothesis,
        candidate=candidate,
        refined=sample_refined(structure),
        reader_files=real_reader_files() + write_sample_files(data, scratch_dir() / "files"),
    )
