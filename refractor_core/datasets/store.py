"""The dataset format on disk: Parquet tables plus a JSON index.

    DIR/index.json             schema version, command, seed, sources, counts, splits,
                               simulation-parameter distributions, timings, failures
    DIR/structures.parquet     one row per structure (id, source, group, formula, Z, kind,
                               split, space group, crystal system, elements, sizes, and the
                               full record as JSON: asymmetric unit, Wyckoff letters,
                               site-symmetry orders, multiplicities)
    DIR/data-NNNNN.parquet     one row per simulated data set, sharded: ids, split, the
                               simulation parameters (JSON), cell, wavelength, formula, Z,
                               and the reflections: h, k, l (int16 lists), F² and σ as
                               int32 lists in units of 0.01 (exactly the HKLF 4 values)

`open_dataset(DIR)` reads it back: records, and each data set as `ReflectionData`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import InputError
from ..types import ReflectionData, UnitCell
from .sources import StructureRecord

SCHEMA_VERSION = 1
INDEX = "index.json"
STRUCTURES = "structures.parquet"
SHARD = "data-{:05d}.parquet"
CENTI = 100.0


@dataclass
class DataRow:
    """One simulated data set as stored."""

    dataset_id: str
    structure_id: str
    split: str
    params: dict[str, Any]
    reflections: ReflectionData


def _atomic_write_bytes(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_structures(folder: Path, records: list[StructureRecord]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: dict[str, list] = {k: [] for k in (
        "id", "source", "group", "formula", "z", "kind", "split", "space_group_number", "space_group",
        "hall", "crystal_system", "n_sites", "n_atoms_cell", "elements", "origin", "record_json")}
    for r in records:
        sg = r.structure.space_group
        cols["id"].append(r.id)
        cols["source"].append(r.source)
        cols["group"].append(r.group)
        cols["formula"].append(r.formula)
        cols["z"].append(float(r.z))
        cols["kind"].append(r.kind)
        cols["split"].append(r.split or "")
        cols["space_group_number"].append(sg.number)
        cols["space_group"].append(sg.symbol)
        cols["hall"].append(sg.hall)
        cols["crystal_system"].append(sg.crystal_system)
        cols["n_sites"].append(r.structure.n_sites)
        cols["n_atoms_cell"].append(float(r.n_atoms_cell))
        cols["elements"].append(r.elements)
        cols["origin"].append(r.origin)
        cols["record_json"].append(r.model_dump_json())
    table = pa.table(cols)
    _atomic_write_bytes(Path(folder) / STRUCTURES, lambda p: pq.write_table(table, p, compression="zstd"))


def data_table(rows: list[DataRow]):
    """A pyarrow table of data sets (see the module docstring for the columns)."""
    import pyarrow as pa

    hkl_t = pa.list_(pa.int16())
    i_t = pa.list_(pa.int32())
    cols: dict[str, list] = {k: [] for k in (
        "dataset_id", "structure_id", "split", "params_json", "cell", "wavelength", "formula", "z",
        "n", "h", "k", "l", "intensity_centi", "sigma_centi")}
    for row in rows:
        d = row.reflections
        cols["dataset_id"].append(row.dataset_id)
        cols["structure_id"].append(row.structure_id)
        cols["split"].append(row.split)
        cols["params_json"].append(json.dumps(row.params, sort_keys=True))
        cols["cell"].append(list(d.cell.parameters))
        cols["wavelength"].append(float(d.wavelength))
        cols["formula"].append(d.formula)
        cols["z"].append(float(d.z))
        cols["n"].append(d.n)
        cols["h"].append(d.hkl[:, 0].astype(np.int16))
        cols["k"].append(d.hkl[:, 1].astype(np.int16))
        cols["l"].append(d.hkl[:, 2].astype(np.int16))
        cols["intensity_centi"].append(np.rint(d.intensity * CENTI).astype(np.int32))
        cols["sigma_centi"].append(np.rint(d.sigma * CENTI).astype(np.int32))
    types = {"h": hkl_t, "k": hkl_t, "l": hkl_t, "intensity_centi": i_t, "sigma_centi": i_t}
    arrays = {k: pa.array(v, type=types.get(k)) for k, v in cols.items()}
    return pa.table(arrays)


def write_shard(folder: Path, index: int, rows: list[DataRow]) -> str:
    import pyarrow.parquet as pq

    name = SHARD.format(index)
    table = data_table(rows)
    _atomic_write_bytes(Path(folder) / name, lambda p: pq.write_table(table, p, compression="zstd"))
    return name


def write_index(folder: Path, index: dict[str, Any]) -> None:
    text = json.dumps(index, indent=1, sort_keys=False, default=str)
    _atomic_write_bytes(Path(folder) / INDEX, lambda p: Path(p).write_text(text + "\n"))


class Dataset:
    """A built dataset folder, read lazily."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / INDEX
        if not path.is_file():
            raise InputError("not a refractor dataset (no index.json)", path=self.folder)
        self.index = json.loads(path.read_text())
        if self.index.get("schema_version") != SCHEMA_VERSION:
            raise InputError(
                f"dataset schema {self.index.get('schema_version')} is not {SCHEMA_VERSION}", path=path
            )
        self._structures = None

    # -- structures ----------------------------------------------------------------------
    def structure_table(self):
        import pyarrow.parquet as pq

        if self._structures is None:
            self._structures = pq.read_table(self.folder / STRUCTURES)
        return self._structures

    def records(self, split: str | None = None) -> list[StructureRecord]:
        """Structure records, optionally of one split."""
        t = self.structure_table()
        js = t.column("record_json").to_pylist()
        splits = t.column("split").to_pylist()
        return [StructureRecord.model_validate_json(j) for j, s in zip(js, splits) if split is None or s == split]

    def record(self, structure_id: str) -> StructureRecord:
        t = self.structure_table()
        ids = t.column("id").to_pylist()
        try:
            i = ids.index(structure_id)
        except ValueError:
            raise KeyError(structure_id) from None
        return StructureRecord.model_validate_json(t.column("record_json")[i].as_py())

    # -- data sets -------------------------------------------------------------------------
    @property
    def shards(self) -> list[Path]:
        return [self.folder / s["file"] for s in self.index.get("shards", [])]

    def rows(self, split: str | None = None, limit: int | None = None) -> Iterator[DataRow]:
        """Data sets in stored order, optionally of one split."""
        import pyarrow.parquet as pq

        n = 0
        for shard in self.shards:
            t = pq.read_table(shard)
            if split is not None:
                import pyarrow.compute as pc

                t = t.filter(pc.equal(t.column("split"), split))
            for row in t.to_pylist():
                if limit is not None and n >= limit:
                    return
                yield _row_from_dict(row)
                n += 1

    def row(self, dataset_id: str) -> DataRow:
        """One data set by id (KeyError if absent)."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        for shard in self.shards:
            t = pq.read_table(shard, filters=[("dataset_id", "=", dataset_id)])
            if t.num_rows:
                return _row_from_dict(t.to_pylist()[0])
        raise KeyError(dataset_id)

    def __len__(self) -> int:
        return int(self.index.get("counts", {}).get("datasets", 0))


def _row_from_dict(row: dict[str, Any]) -> DataRow:
    hkl = np.stack([np.asarray(row["h"]), np.asarray(row["k"]), np.asarray(row["l"])], axis=1).astype(np.int32)
    cell = UnitCell(**dict(zip(("a", "b", "c", "alpha", "beta", "gamma"), row["cell"])))
    data = ReflectionData(
        hkl=hkl,
        intensity=np.asarray(row["intensity_centi"], dtype=np.float64) / CENTI,
        sigma=np.asarray(row["sigma_centi"], dtype=np.float64) / CENTI,
        cell=cell,
        wavelength=row["wavelength"],
        formula=row["formula"],
        z=row["z"],
        source=f"dataset:{row['dataset_id']}",
    )
    return DataRow(
        dataset_id=row["dataset_id"],
        structure_id=row["structure_id"],
        split=row["split"],
        params=json.loads(row["params_json"]),
        reflections=data,
    )


def open_dataset(folder: str | Path) -> Dataset:
    """Open a dataset folder written by `refractor data build`."""
    return Dataset(folder)
