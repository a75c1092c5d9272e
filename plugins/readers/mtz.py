"""MTZ files (CCP4 binary reflection files), read through gemmi.

Intensities (column type J with its Q sigma column: IMEAN/SIGIMEAN, I/SIGI, ...) are
preferred; else amplitudes (type F with Q: FP/SIGFP, F/SIGF) converted to F².
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from refractor_core.errors import InputError
from refractor_core.interfaces import BuildContext, ComponentConfig, DataBundle, HKLReader
from refractor_core.types import ReflectionData, SpaceGroupRef, UnitCell

from .register import MtzConfig
from ._common import guarded, read_bytes
from .shelx_hkl import f_to_f2


def _pick_columns(mtz, value: str | None, sigma: str | None):
    """(value column, sigma column, kind) to read."""
    labels = [c.label for c in mtz.columns]
    if value:
        if value not in labels:
            raise InputError(f"no column {value!r} (columns: {', '.join(labels)})")
        col = mtz.column_with_label(value)
        kind = "F" if col.type == "F" else "F2"
        if sigma is None:
            for cand in ("SIG" + value, "SIG" + value.lstrip("I").lstrip("F")):
                if cand in labels:
                    sigma = cand
                    break
        if sigma is None or sigma not in labels:
            raise InputError(f"no sigma column for {value!r}; name it with the 'sigma' option")
        return value, sigma, kind
    cols = list(mtz.columns)
    for want, kind in (("J", "F2"), ("F", "F")):
        for i, c in enumerate(cols):
            if c.type == want and i + 1 < len(cols) and cols[i + 1].type == "Q":
                return c.label, cols[i + 1].label, kind
    raise InputError(
        "no intensity (type J) or amplitude (type F) column followed by its sigma (type Q); "
        f"columns: {', '.join(f'{c.label}:{c.type}' for c in cols)}"
    )


class MtzReader(HKLReader):
    """CCP4 MTZ reflection files through gemmi."""

    name: ClassVar[str] = "mtz"
    version: ClassVar[str] = "0.1.0"
    Config: ClassVar[type[ComponentConfig]] = MtzConfig
    suffixes: ClassVar[tuple[str, ...]] = (".mtz",)

    def __init__(self, config: MtzConfig | None = None, context: BuildContext | None = None):
        super().__init__(config, context)

    def sniff(self, path: Path, head: bytes) -> float:
        return 1.0 if head[:4] == b"MTZ " else 0.0

    @guarded
    def read(self, path: Path) -> DataBundle:
        import gemmi

        path = Path(path)
        data = read_bytes(path)
        if data[:4] != b"MTZ ":
            raise InputError("not an MTZ file (no 'MTZ ' header)", path=path)
        try:
            mtz = gemmi.read_mtz_file(str(path))
        except (RuntimeError, ValueError, IndexError) as exc:
            raise InputError(f"cannot read MTZ: {exc}", path=path) from None
        try:
            vcol, scol, kind = _pick_columns(mtz, self.config.value, self.config.sigma)
        except InputError as exc:
            raise InputError(exc.problem, path=path) from None
        arr = np.asarray(mtz, dtype=np.float64)
        hkl = arr[:, :3]
        labels = [c.label for c in mtz.columns]
        vals = arr[:, labels.index(vcol)]
        sig = arr[:, labels.index(scol)]
        ok = np.isfinite(vals) & np.isfinite(sig) & (sig > 0)
        n_skipped = int(np.count_nonzero(~ok))
        if not np.any(ok):
            raise InputError(f"no reflection with a value in {vcol} and a positive {scol}", path=path)
        hkl, vals, sig = hkl[ok], vals[ok], sig[ok]
        notes = [f"MTZ columns {vcol}/{scol}"]
        if n_skipped:
            notes.append(f"{n_skipped} rows without a value or with sigma <= 0 skipped")
        if kind == "F":
            vals, sig = f_to_f2(vals, sig)
            notes.append("F and sigma(F) converted to F² with sigma(F²) = 2|F|sigma(F)")
        c = mtz.cell
        cell = UnitCell(a=c.a, b=c.b, c=c.c, alpha=c.alpha, beta=c.beta, gamma=c.gamma)
        sg = SpaceGroupRef.from_gemmi(mtz.spacegroup) if mtz.spacegroup is not None else None
        wavelength = None
        for ds in mtz.datasets:
            if ds.wavelength and 0.05 < ds.wavelength < 5.0:
                wavelength = float(ds.wavelength)
        refl = ReflectionData(
            hkl=np.rint(hkl).astype(np.int32),
            intensity=vals,
            sigma=sig,
            source=str(path),
            source_kind=kind,
            n_skipped=n_skipped,
            notes=notes,
        )
        return DataBundle(
            reflections=refl, cell=cell, wavelength=wavelength, space_group=sg, source=str(path), notes=notes
        )
