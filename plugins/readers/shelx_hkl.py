"""SHELX reflection files: HKLF 4 (h k l F² σ [batch]), HKLF 5 (twin components), HKLF 3 (F).

The format is FORMAT(3I4,2F8.2,I4): fixed columns in which neighbouring fields may touch
(`  -2   0   017931.98   97.99`), so a row is never split on whitespace when the fixed
columns apply. A row is read in fixed columns when every field is right-justified in its
columns, as every Fortran writer leaves it; otherwise, and only then, a whitespace-separated
row of 5 or 6 numbers is accepted (free format written by other programs). The data end at
the `0 0 0` row; anything after it (SADABS footers, CIF text) is ignored. Rows with σ <= 0
(Olex2 placeholders) are skipped and counted.

HKLF 5: the batch column is the twin component, negative for all members of an overlap
group but the last; a group is dropped when its last member has σ <= 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from refractor_core.errors import InputError
from refractor_core.interfaces import BuildContext, ComponentConfig, DataBundle, HKLReader
from refractor_core.types import ReflectionData

from .register import ShelxHklConfig
from ._common import guarded, head_text, read_text

_DIGITS = frozenset("0123456789")
_FLOAT_END = frozenset("0123456789.")


@dataclass
class HklfTable:
    """Reflections parsed from HKLF text (before they become ReflectionData)."""

    hkl: np.ndarray
    intensity: np.ndarray
    sigma: np.ndarray
    batch: np.ndarray | None
    hklf: int
    n_rows: int
    n_skipped: int
    source_kind: Literal["F2", "F"] = "F2"
    notes: list[str] = field(default_factory=list)

    def to_reflections(self, source: str | None = None) -> ReflectionData:
        return ReflectionData(
            hkl=self.hkl,
            intensity=self.intensity,
            sigma=self.sigma,
            batch=self.batch,
            hklf=5 if self.hklf == 5 else 4,
            source=source,
            source_kind=self.source_kind,
            n_skipped=self.n_skipped,
            notes=list(self.notes),
        )


def _fixed_fields(line: str) -> tuple[int, int, int, float, float, int | None] | None:
    """Parse a row in FORMAT(3I4,2F8.2,I4), or None when the fixed columns do not apply."""
    n = len(line)
    if n < 28:
        return None
    # right-justified fields end in a digit (integers) or a digit/point (reals)
    if line[3] not in _DIGITS or line[7] not in _DIGITS or line[11] not in _DIGITS:
        return None
    if line[19] not in _FLOAT_END or line[27] not in _FLOAT_END:
        return None
    try:
        h = int(line[0:4])
        k = int(line[4:8])
        l_ = int(line[8:12])
        i = float(line[12:20])
        s = float(line[20:28])
    except ValueError:
        return None
    batch = None
    if n > 28:
        tail = line[28:32]
        if tail.strip():
            if tail[-1] not in _DIGITS and n >= 32:
                return None
            try:
                batch = int(tail)
            except ValueError:
                return None
    return h, k, l_, i, s, batch


def _free_fields(line: str) -> tuple[int, int, int, float, float, int | None] | None:
    """Parse a whitespace-separated row of 5 or 6 numbers, or None."""
    parts = line.split()
    if len(parts) not in (5, 6):
        return None
    try:
        h, k, l_ = int(parts[0]), int(parts[1]), int(parts[2])
        i, s = float(parts[3]), float(parts[4])
        batch = int(parts[5]) if len(parts) == 6 else None
    except ValueError:
        return None
    return h, k, l_, i, s, batch


def parse_hklf(
    text: str,
    path: Path | str | None = None,
    *,
    first_line: int = 1,
    hklf: int | None = None,
) -> HklfTable:
    """Parse SHELX reflection text.

    `first_line` is the file line number of the text's first line (for text embedded in a
    CIF). `hklf` is 3, 4 or 5; None guesses 5 when the batch column holds negative numbers
    and 4 otherwise. Raises InputError naming file and line for a malformed row.
    """
    if hklf not in (None, 3, 4, 5):
        raise InputError(f"HKLF {hklf} files are not supported (only HKLF 3, 4 and 5)", path=path)
    rows_h: list[int] = []
    rows_k: list[int] = []
    rows_l: list[int] = []
    rows_i: list[float] = []
    rows_s: list[float] = []
    rows_b: list[int] = []
    any_batch = False
    n_free = 0
    blank_after_data = False
    terminated = False
    footer_line = None
    lines = text.split("\n")
    for idx, raw in enumerate(lines):
        line = raw.rstrip()
        if not line.strip():
            if rows_h:
                blank_after_data = True
            continue
        fields = _fixed_fields(line)
        if fields is None:
            fields = _free_fields(line)
            if fields is not None:
                n_free += 1
        lineno = first_line + idx
        if fields is None:
            if rows_h and blank_after_data:
                footer_line = lineno  # text after a blank line that ends the data
                break
            if rows_h:
                raise InputError(
                    "not a reflection row (expected h k l F² σ [batch] in FORMAT(3I4,2F8.2,I4)): "
                    f"{line.strip()[:60]!r}",
                    path=path,
                    line=lineno,
                )
            raise InputError(
                "not a SHELX reflection file: the first data line is not "
                f"'h k l F² σ [batch]': {line.strip()[:60]!r}",
                path=path,
                line=lineno,
            )
        h, k, l_, inten, sig, batch = fields
        if h == 0 and k == 0 and l_ == 0:
            terminated = True
            rest = "\n".join(lines[idx + 1 :]).strip()
            if rest:
                footer_line = lineno + 1
            break
        if inten != inten or abs(inten) == float("inf"):
            raise InputError(f"intensity {inten} is not a finite number", path=path, line=lineno)
        if sig != sig or abs(sig) == float("inf"):
            raise InputError(f"sigma {sig} is not a finite number", path=path, line=lineno)
        if max(abs(h), abs(k), abs(l_)) > 999:
            raise InputError(f"Miller index ({h} {k} {l_}) out of range", path=path, line=lineno)
        rows_h.append(h)
        rows_k.append(k)
        rows_l.append(l_)
        rows_i.append(inten)
        rows_s.append(sig)
        if batch is not None:
            any_batch = True
        rows_b.append(0 if batch is None else batch)
    if not rows_h:
        raise InputError("no reflections in the file", path=path)

    hkl = np.column_stack([rows_h, rows_k, rows_l]).astype(np.int32)
    inten = np.asarray(rows_i, dtype=np.float64)
    sig = np.asarray(rows_s, dtype=np.float64)
    batch_arr = np.asarray(rows_b, dtype=np.int32) if any_batch else None
    notes: list[str] = []
    if hklf is None:
        hklf = 5 if (batch_arr is not None and np.any(batch_arr < 0)) else 4
        if hklf == 5:
            notes.append("negative batch numbers: read as HKLF 5 (twin components)")
    if n_free:
        notes.append(f"{n_free} rows read in free (whitespace-separated) format")
    if not terminated:
        notes.append("no '0 0 0' terminator: read to the end of the data")
    if footer_line is not None:
        notes.append(f"text from line {footer_line} on (after the data) ignored")

    n_rows = len(rows_h)
    if hklf == 5:
        if batch_arr is None:
            batch_arr = np.ones(n_rows, dtype=np.int32)
        keep = _hklf5_keep(batch_arr, sig)
    else:
        keep = sig > 0
    n_skipped = int(n_rows - np.count_nonzero(keep))
    if n_skipped:
        notes.append(f"{n_skipped} rows with sigma <= 0 skipped")
    if not np.any(keep):
        raise InputError(f"none of the {n_rows} reflections has a positive sigma", path=path)
    source_kind: Literal["F2", "F"] = "F2"
    hkl, inten, sig = hkl[keep], inten[keep], sig[keep]
    if batch_arr is not None:
        batch_arr = batch_arr[keep]
    if hklf == 3:
        inten, sig = f_to_f2(inten, sig)
        source_kind = "F"
        notes.append("HKLF 3: F and sigma(F) converted to F² with sigma(F²) = 2|F|sigma(F)")
    return HklfTable(
        hkl=hkl,
        intensity=inten,
        sigma=sig,
        batch=batch_arr,
        hklf=hklf,
        n_rows=n_rows,
        n_skipped=n_skipped,
        source_kind=source_kind,
        notes=notes,
    )


def _hklf5_keep(batch: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Rows to keep in HKLF 5 data: whole overlap groups whose last member has σ > 0."""
    keep = np.empty(batch.shape[0], dtype=bool)
    start = 0
    n = batch.shape[0]
    for i in range(n):
        if batch[i] >= 0 or i == n - 1:  # the last member of a group closes it
            keep[start : i + 1] = sigma[i] > 0
            start = i + 1
    return keep


def f_to_f2(f: np.ndarray, sigma_f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Amplitudes F with σ(F) to intensities F² with σ(F²) = 2|F|σ(F) (σ² where F = 0)."""
    f = np.asarray(f, dtype=np.float64)
    s = np.asarray(sigma_f, dtype=np.float64)
    i = f * f
    si = 2.0 * np.abs(f) * s
    si = np.where(si > 0, si, s * s)
    return i, si


def sniff_hklf_text(text: str) -> float:
    """Confidence that text is a SHELX reflection file (its first lines parse as rows)."""
    lines = [ln.rstrip() for ln in text.split("\n") if ln.strip()]
    if lines and len(text) >= 4000:  # the head may end inside a row
        lines = lines[:-1]
    sample = lines[:20]
    if not sample:
        return 0.0
    ok = [_fixed_fields(ln) is not None or _free_fields(ln) is not None for ln in sample]
    frac = sum(ok) / len(sample)
    if ok[0] and frac >= 0.9:
        return 0.8
    if frac >= 0.5:
        return 0.5
    return 0.2 if any(ok) else 0.0


class ShelxHklReader(HKLReader):
    """SHELX HKLF 3/4/5 reflection files (.hkl, or any name with such content)."""

    name: ClassVar[str] = "shelx-hkl"
    version: ClassVar[str] = "0.1.0"
    Config: ClassVar[type[ComponentConfig]] = ShelxHklConfig
    suffixes: ClassVar[tuple[str, ...]] = (".hkl", ".hkl5", ".raw")

    def __init__(self, config: ShelxHklConfig | None = None, context: BuildContext | None = None):
        super().__init__(config, context)

    def sniff(self, path: Path, head: bytes) -> float:
        text = head_text(head)
        if text is None:
            return 0.0
        score = sniff_hklf_text(text)
        if score and Path(path).suffix.lower() in self.suffixes:
            score = max(score + 0.05, 0.35)  # a damaged .hkl is still read, to name the bad line
        return score

    @guarded
    def read(self, path: Path) -> DataBundle:
        path = Path(path)
        table = parse_hklf(read_text(path), path, hklf=self.config.hklf)
        refl = table.to_reflections(source=str(path))
        return DataBundle(reflections=refl, source=str(path), notes=list(table.notes))
