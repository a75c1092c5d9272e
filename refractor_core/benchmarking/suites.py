"""Benchmark suites: cases with the data a user would give and the reference behind them.

- ``real``: the measured cases (`refractor_core.testing.real_cases.load_cases()`). The
  pipeline gets only the reflections (read with the chosen reader), the cell, the
  wavelength, the formula and Z: never the space group, the model or the refinement
  instructions of the published files.
- ``simulated``: the test split of a dataset built by `refractor data build`. Each data set
  is written as HKLF 4 + .ins (no symmetry stated) and read back through the readers, so
  the pipeline sees exactly the files a user would have; the reference is the structure
  the simulator used.

Cases are loaded lazily inside the executor (a `CaseSpec` is small and picklable).
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..crystal.formula import atomic_number
from ..errors import UsageError
from ..types import ReflectionData, SpaceGroupRef, Structure

LOW_SYMMETRY = ("triclinic", "monoclinic")


@dataclass(frozen=True)
class CaseSpec:
    """Where a case comes from (picklable; `load_case` builds it)."""

    suite: str
    name: str
    locator: tuple[Any, ...]


@dataclass
class BenchmarkCase:
    """Data as a user gives them, and the reference for judging the result."""

    name: str
    suite: str
    data: ReflectionData
    reference: Structure
    true_space_group: SpaceGroupRef
    info: dict[str, Any] = field(default_factory=dict)


def subsets_of(reference: Structure) -> dict[str, bool]:
    """Subset flags: low symmetry (triclinic/monoclinic), light atoms only (Z ≤ 10), heavy atom (Z > 36)."""
    zs = [atomic_number(s.element) for s in reference.sites]
    return {
        "low_symmetry": reference.space_group.crystal_system in LOW_SYMMETRY,
        "light_only": bool(zs) and max(zs) <= 10,
        "heavy_atom": bool(zs) and max(zs) > 36,
    }


def _clean(data: ReflectionData, *, cell, wavelength, formula, z, source: str,
           space_group: SpaceGroupRef | None = None) -> ReflectionData:
    """Only what a user states: reflections, cell, wavelength, formula, Z (and, when asked,
    the space group, as a .ins with SYMM/LATT would state it)."""
    return ReflectionData(
        hkl=data.hkl, intensity=data.intensity, sigma=data.sigma, batch=data.batch, hklf=data.hklf,
        cell=cell, wavelength=wavelength, formula=formula, z=z, source=source,
        source_kind=data.source_kind, n_skipped=data.n_skipped, space_group_hint=space_group,
    )


# -- real ------------------------------------------------------------------------------


def real_specs(names: list[str] | None = None, reader: str | None = None,
               max_atoms: int | None = None) -> list[CaseSpec]:
    """The real cases (all, or `names`), optionally only those with at most `max_atoms`
    non-H sites in the asymmetric unit of the reference."""
    from ..testing.real_cases import load_cases

    cases = load_cases()
    if not cases:
        raise UsageError("the real cases (../shared/data/real) are not available", hint="set REFRACTOR_REAL_DATA")
    if names:
        known = {c.name for c in cases}
        missing = [n for n in names if n not in known]
        if missing:
            import difflib

            hints = [difflib.get_close_matches(m, sorted(known), n=1) for m in missing]
            raise UsageError(f"unknown real case(s) {missing}" + (f"; did you mean {[h[0] for h in hints if h]}?" if any(hints) else ""))
        cases = [c for c in cases if c.name in names]
    if max_atoms is not None:
        cases = [c for c in cases if c.non_h_sites <= max_atoms]
    return [CaseSpec("real", c.name, (c.name, reader)) for c in cases]


def _load_real(spec: CaseSpec, given_space_group: bool = False) -> BenchmarkCase:
    from ..dataio import load_reflections, load_structure
    from ..errors import InputError
    from ..testing.real_cases import get_case

    name, reader = spec.locator
    case = get_case(name)
    ref_path = case.reference if case.data_block is None else Path(f"{case.reference}#{case.data_block}")
    reference = load_structure(ref_path)
    try:
        raw = load_reflections(case.reflections, reader=reader, wavelength=case.wavelength)
    except InputError as exc:
        if "cell" not in str(exc):
            raise
        # the reflection file states no cell: the cell is what a user would type (--cell)
        raw = load_reflections(case.reflections, reader=reader, wavelength=case.wavelength,
                               cell=reference.cell.parameters)
    cell = raw.cell or reference.cell
    data = _clean(raw, cell=cell, wavelength=case.wavelength, formula=case.formula, z=case.z,
                  source=str(case.reflections), space_group=reference.space_group if given_space_group else None)
    info = {"category": case.category, "published_r1": case.published_r1, "d_min": case.d_min,
            "non_h_sites": case.non_h_sites, "heaviest": case.heaviest}
    return BenchmarkCase(name=name, suite="real", data=data, reference=reference,
                         true_space_group=reference.space_group, info=info)


# -- simulated ---------------------------------------------------------------------------


def simulated_specs(dataset: Path, split: str = "test", limit: int | None = None,
                    max_atoms: int | None = None) -> list[CaseSpec]:
    """Data sets of one split; `max_atoms` keeps structures with at most that many non-H
    sites in the asymmetric unit; `limit` then takes a deterministic random sample."""
    from ..datasets.store import open_dataset

    ds = open_dataset(dataset)
    if split not in ds.index.get("splits", {}):
        raise UsageError(f"dataset {dataset} has no split {split!r}; splits: {sorted(ds.index.get('splits', {}))}")
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    ids: list[str] = []
    for shard in ds.shards:
        t = pq.read_table(shard, columns=["dataset_id", "split"])
        ids += t.filter(pc.equal(t.column("split"), split)).column("dataset_id").to_pylist()
    if max_atoms is not None:
        small = {r.id for r in ds.records(split)
                 if sum(s.element.upper() not in ("H", "D") for s in r.structure.sites) <= max_atoms}
        ids = [i for i in ids if i.rsplit("#", 1)[0] in small]
    if limit is not None and limit < len(ids):
        # a deterministic random sample that spans every source, in stored order
        from ..datasets.sources import stable_seed

        keep = set(sorted(ids, key=lambda i: stable_seed("benchmark-sample", i))[:limit])
        ids = [i for i in ids if i in keep]
    folder = str(Path(dataset).resolve())
    return [CaseSpec("simulated", i, (folder, i, split)) for i in ids]


def _load_simulated(spec: CaseSpec, reader: str | None = None, given_space_group: bool = False,
                    keep_absences: bool = False) -> BenchmarkCase:
    from ..dataio import load_reflections
    from ..datasets.store import open_dataset
    from ..simulation import simulated_structure
    from ..simulation.files import write_dataset_files

    folder, dataset_id, split = spec.locator
    ds = open_dataset(folder)
    row = ds.row(dataset_id)
    record = ds.record(row.structure_id)
    truth = simulated_structure(record.structure, row.params)
    if keep_absences:
        # the same experiment again (parameters and seed as stored) with the absent reflections kept
        from ..simulation import SimulationParams, simulate_detailed

        params = {k: v for k, v in row.params.items() if k in SimulationParams.model_fields}
        simulated = simulate_detailed(record.structure, SimulationParams.model_validate({**params, "keep_absences": True}))
        row = dataclasses.replace(row, reflections=simulated.data)
    with tempfile.TemporaryDirectory(prefix="refractor-bench-") as tmp:
        hkl, _ins = write_dataset_files(tmp, "case", row.reflections)  # no space group in the .ins
        raw = load_reflections(hkl, reader=reader)
    d = row.reflections
    data = _clean(raw, cell=raw.cell or d.cell, wavelength=raw.wavelength or d.wavelength, formula=d.formula,
                  z=d.z, source=f"{dataset_id}", space_group=truth.space_group if given_space_group else None)
    info = {"category": record.kind, "source": record.source, "d_min": row.params.get("d_min_used"),
            "non_h_sites": len([s for s in truth.sites if s.element not in ("H", "D")]),
            "median_i_over_sigma": row.params["noise"]["median_i_over_sigma"],
            "twin_fraction": row.params.get("twin_fraction", 0.0), "absences_kept": keep_absences}
    return BenchmarkCase(name=dataset_id, suite="simulated", data=data, reference=truth,
                         true_space_group=truth.space_group, info=info)


def load_case(spec: CaseSpec, reader: str | None = None, *, given_space_group: bool = False,
              keep_absences: bool = False) -> BenchmarkCase:
    """Build the case a spec names (inside the executor).

    `given_space_group`: the data state the true space group (as a .ins would), for runs
    with the classifier off. `keep_absences` (simulated only): re-simulate the stored
    experiment with the systematically absent reflections kept, as measured data have them.
    """
    if spec.suite == "real":
        return _load_real(spec, given_space_group)
    if spec.suite == "simulated":
        return _load_simulated(spec, reader, given_space_group, keep_absences)
    raise UsageError(f"unknown suite {spec.suite!r}; use real or simulated")
