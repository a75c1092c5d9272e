"""The measured real cases beside the project (`../shared/data/real`), for tests and benchmarks.

`real_data_dir()` finds the folder (environment variable ``REFRACTOR_REAL_DATA`` first,
then ``../shared/data/real`` relative to the repository); `load_cases()` returns one
`RealCase` per sub-folder from its ``case.json``. These data are evaluation data: never
train on them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


def real_data_dir() -> Path | None:
    """The folder holding the real cases, or None when it is not available."""
    env = os.environ.get("REFRACTOR_REAL_DATA")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidates.append(parent.parent / "shared" / "data" / "real")
    candidates.append(Path.cwd().parent / "shared" / "data" / "real")
    for c in candidates:
        if (c / "INDEX.md").is_file():
            return c
    return None


@dataclass(frozen=True)
class RealCase:
    """One measured data set with its published reference structure."""

    name: str
    folder: Path
    reflections: Path  # the reflection file as found (HKLF 4 file, CIF or fcf)
    reflections_format: str
    extracted_hklf4: Path | None  # verbatim HKLF 4 text extracted from a CIF, if any
    reference: Path  # the reference model (CIF or .res)
    data_block: str | None
    formula: str
    space_group: str
    sg_number: int
    z: float
    centrosymmetric: bool
    non_h_sites: int
    heaviest: str
    published_r1: float | None
    d_min: float
    wavelength: float
    category: str

    @property
    def companion(self) -> Path | None:
        """A SHELX .res/.ins beside the reflections, if the case has one."""
        for suffix in (".res", ".ins"):
            p = self.reflections.with_suffix(suffix)
            if p.is_file():
                return p
        return None


def _float_or_none(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def load_cases(folder: Path | None = None) -> list[RealCase]:
    """All real cases, sorted by name (empty when the data are not available)."""
    folder = folder or real_data_dir()
    if folder is None:
        return []
    cases = []
    for case_json in sorted(folder.glob("*/case.json")):
        d = json.loads(case_json.read_text())
        refl, ref = d["reflections"], d["reference"]
        base = case_json.parent
        cases.append(
            RealCase(
                name=d["name"],
                folder=base,
                reflections=base / refl["file"],
                reflections_format=refl["format"],
                extracted_hklf4=(base / refl["extracted_hklf4"]) if refl.get("extracted_hklf4") else None,
                reference=base / ref["file"],
                data_block=ref.get("data_block"),
                formula=ref["formula"],
                space_group=ref["space_group"],
                sg_number=int(ref["sg_number"]),
                z=float(ref["Z"]),
                centrosymmetric=bool(ref["centrosymmetric"]),
                non_h_sites=int(ref["non_H_sites_in_asu"]),
                heaviest=ref["heaviest_element"],
                published_r1=_float_or_none(ref.get("published_R1_gt")),
                d_min=float(refl["d_min_A"]),
                wavelength=float(refl["wavelength_A"]),
                category=d.get("category", ""),
            )
        )
    return cases


def get_case(name: str) -> RealCase:
    """One case by name; KeyError if absent."""
    for case in load_cases():
        if case.name == name:
            return case
    raise KeyError(name)
