"""Bruker .p4p files: cell (CELL, CELLSD), wavelength (SOURCE) and formula (CHEM).

Bruker writes `CELLSD` as the six s.u.s followed by that of the volume; Olex2 writes Z
first (`CELLSD Z sa sb sc sal sbe sga`) and says so in its FILEID line. Reading stops at
the reflection records (`REF...`).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import ValidationError

from refractor_core.errors import InputError
from refractor_core.interfaces import BuildContext, ComponentConfig, DataBundle, HKLReader
from refractor_core.types import UnitCell

from .register import P4pConfig
from ._common import formula_or_error, guarded, head_text, read_text, to_float, validation_message

#: characteristic Kα wavelengths (Å) for a SOURCE line that names only the target
TARGET_WAVELENGTH = {"MO": 0.71073, "CU": 1.54184, "AG": 0.56087, "GA": 1.34143, "IN": 0.51359, "CR": 2.29100, "FE": 1.93736, "CO": 1.79026}

_KEYS = ("FILEID", "SITEID", "TITLE", "CHEM", "CELL", "CELLSD", "SOURCE", "ORT1", "ORT2", "ORT3", "ZEROS", "MORPH", "CCOLOR", "CSIZE", "BRAVAIS", "MOSAIC", "SYMM", "DIAMETER", "ADCORR", "SG")


def parse_p4p(text: str, path: Path | str | None) -> DataBundle:
    """Cell, wavelength and formula from .p4p text."""
    fields: dict[str, tuple[list[str], int]] = {}
    olex2 = False
    for i, line in enumerate(text.split("\n"), start=1):
        tokens = line.split()
        if not tokens:
            continue
        key = tokens[0].upper()
        if key.startswith("REF"):
            break
        if key == "FILEID" and "OLEX2" in line.upper():
            olex2 = True
        if key in _KEYS and key not in fields:
            fields[key] = (tokens[1:], i)
    if "CELL" not in fields:
        raise InputError("no CELL line in this .p4p file", path=path)
    args, line = fields["CELL"]
    if len(args) < 6:
        raise InputError(f"CELL needs six cell parameters, got {len(args)}", path=path, line=line)
    v = [to_float(t, "CELL", path, line) for t in args[:6]]
    su = None
    z = None
    if "CELLSD" in fields:
        sargs, sline = fields["CELLSD"]
        s = [to_float(t, "CELLSD", path, sline) for t in sargs]
        if olex2 and len(s) >= 7:
            z = s[0] if s[0] > 0 else None
            s = s[1:7]
        if len(s) >= 6:
            if any(x < 0 for x in s[:6]):
                raise InputError("CELLSD: standard uncertainties must not be negative", path=path, line=sline)
            su = tuple(s[:6])
    try:
        cell = UnitCell(a=v[0], b=v[1], c=v[2], alpha=v[3], beta=v[4], gamma=v[5], su=su)
    except ValidationError as exc:
        raise InputError(f"CELL: {validation_message(exc)}", path=path, line=line) from None
    notes: list[str] = []
    wavelength = None
    if "SOURCE" in fields:
        sargs, sline = fields["SOURCE"]
        numbers = []
        for t in sargs[1:]:
            try:
                numbers.append(float(t))
            except ValueError:
                break
        if numbers:
            wavelength = to_float(sargs[1], "SOURCE wavelength", path, sline)
        elif sargs:
            wavelength = TARGET_WAVELENGTH.get(sargs[0].upper()[:2])
            if wavelength is not None:
                notes.append(f"SOURCE {sargs[0]}: Kα wavelength {wavelength} Å assumed")
        if wavelength is not None and not 0.05 < wavelength < 5.0:
            raise InputError(f"SOURCE: wavelength {wavelength:g} Å is outside 0.05-5 Å", path=path, line=sline)
    formula = None
    if "CHEM" in fields:
        cargs, cline = fields["CHEM"]
        text_f = " ".join(cargs).replace("_", " ").strip()
        if text_f and text_f not in ("?", "."):
            from refractor_core.crystal.formula import format_formula

            formula = format_formula(formula_or_error(text_f, path, cline))
    return DataBundle(cell=cell, wavelength=wavelength, formula=formula, z=z, source=str(path), notes=notes)


def sniff_p4p_text(text: str) -> float:
    keys = {ln.split(None, 1)[0].upper() for ln in text.split("\n")[:100] if ln.strip()}
    if "CELL" in keys and ("CELLSD" in keys or "FILEID" in keys or "ORT1" in keys):
        return 0.9
    return 0.0


class P4pReader(HKLReader):
    """Bruker .p4p: cell with s.u.s, wavelength and formula."""

    name: ClassVar[str] = "p4p"
    version: ClassVar[str] = "0.1.0"
    Config: ClassVar[type[ComponentConfig]] = P4pConfig
    suffixes: ClassVar[tuple[str, ...]] = (".p4p",)

    def __init__(self, config: P4pConfig | None = None, context: BuildContext | None = None):
        super().__init__(config, context)

    def sniff(self, path: Path, head: bytes) -> float:
        text = head_text(head)
        if text is None:
            return 0.0
        score = sniff_p4p_text(text)
        if score and Path(path).suffix.lower() in self.suffixes:
            score += 0.05
        return score

    @guarded
    def read(self, path: Path) -> DataBundle:
        path = Path(path)
        return parse_p4p(read_text(path), path)
