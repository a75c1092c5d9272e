"""The files a user of a diffractometer has: SHELX HKLF 4 reflections and an .ins.

`write_hklf4(path, data)` writes FORMAT(3I4,2F8.2[,I4]) rows ended by the `0 0 0` row (the
text is `io.hkl_writer.format_hklf4`'s, which the CIF writer embeds too).
`write_ins(path, structure_or_cell, formula, z, wavelength, space_group=None)` writes TITL,
CELL, ZERR, LATT, SYMM, SFAC, UNIT (and the atoms, if asked), then HKLF 4 and END. Without a
space group, the file states no symmetry (LATT -1 and no SYMM, i.e. P1 to SHELX, with a REM
saying the space group is not given), so a solve benchmark does not reveal it.

Both write to a temporary file and rename it, so a failure never leaves a partial file.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np

from ..crystal.formula import format_formula, parse_formula
from ..crystal.symmetry import SymmetryOps
from ..io.hkl_writer import format_hklf4
from ..types import ReflectionData, SpaceGroupRef, Structure, UnitCell


def _atomic_write(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_hklf4(path: str | Path, data: ReflectionData, *, batch: bool | None = None) -> float:
    """Write `data` as a SHELX HKLF 4 file (`io.hkl_writer.format_hklf4`); returns the
    scale for the HKLF line (the file's values times it are the data; usually 1)."""
    text, scale = format_hklf4(data, batch=batch)
    _atomic_write(Path(path), text)
    return scale


def _latt_and_symm(space_group: SpaceGroupRef) -> tuple[int, list[str]]:
    """SHELX LATT number and the SYMM operators (identity, centring and inversion implied)."""
    import gemmi

    sg = space_group.gemmi()
    ops = sg.operations()
    cen = [tuple(round(v / 24.0, 4) % 1.0 for v in c) for c in ops.cen_ops]
    cen_set = {c for c in cen if any(x != 0 for x in c)}
    table = {
        frozenset(): 1,
        frozenset({(0.5, 0.5, 0.5)}): 2,
        frozenset({(round(2 / 3, 4), round(1 / 3, 4), round(1 / 3, 4)), (round(1 / 3, 4), round(2 / 3, 4), round(2 / 3, 4))}): 3,
        frozenset({(0.0, 0.5, 0.5), (0.5, 0.0, 0.5), (0.5, 0.5, 0.0)}): 4,
        frozenset({(0.0, 0.5, 0.5)}): 5,
        frozenset({(0.5, 0.0, 0.5)}): 6,
        frozenset({(0.5, 0.5, 0.0)}): 7,
    }
    latt = table.get(frozenset(cen_set))
    if latt is None:
        raise ValueError(f"space group {space_group.symbol} has a centring SHELX LATT cannot state")
    centro = ops.is_centrosymmetric()
    inversion_at_origin = any(
        op.rot == [[-24, 0, 0], [0, -24, 0], [0, 0, -24]] and all(t % 24 == 0 for t in op.tran) for op in ops.sym_ops
    )
    symm: list[str] = []
    seen: set[str] = set()
    if centro and inversion_at_origin:
        # only one of each ±R pair; LATT > 0 adds the inversion
        for op in ops.sym_ops:
            neg = gemmi.Op("-x,-y,-z") * op
            key, key_neg = op.wrap().triplet(), neg.wrap().triplet()
            if key_neg in seen:
                continue
            seen.add(key)
            if key != "x,y,z":
                symm.append(key)
        return latt, symm
    for op in ops.sym_ops:
        key = op.wrap().triplet()
        if key != "x,y,z":
            symm.append(key)
    return -latt, symm


def _shelx_symm(triplet: str) -> str:
    return ", ".join(part.strip().upper() for part in triplet.split(","))


def format_ins(
    cell_or_structure: UnitCell | Structure,
    formula: str | dict[str, float],
    z: float,
    wavelength: float,
    space_group: SpaceGroupRef | str | None = None,
    *,
    title: str = "refractor simulated data",
    include_atoms: bool = False,
    cell_su: tuple[float, ...] | None = None,
    hklf_scale: float = 1.0,
) -> str:
    """The text of a SHELX .ins (see `write_ins`); `hklf_scale`: the .hkl's scale
    (`write_hklf4`), written on the HKLF line when not 1."""
    structure = cell_or_structure if isinstance(cell_or_structure, Structure) else None
    cell = structure.cell if structure is not None else cell_or_structure
    if isinstance(space_group, str):
        space_group = SpaceGroupRef.from_symbol(space_group)
    counts = parse_formula(formula) if isinstance(formula, str) else dict(formula)
    elements = list(counts)
    if include_atoms:
        if structure is None or space_group is None:
            raise ValueError("include_atoms needs a Structure and its space group")
        for s in structure.sites:
            from ..crystal.formula import normalize_element

            el = normalize_element(s.element)
            if el not in elements:
                elements.append(el)
                counts[el] = 0.0
    elements = sorted(elements, key=lambda e: (e != "C", e != "H", e)) if "C" in elements else sorted(elements)
    su = cell_su or tuple(
        [round(max(x * 2e-4, 0.0001), 4) for x in cell.parameters[:3]]
        + [0.0 if abs(x - 90.0) < 1e-6 or abs(x - 120.0) < 1e-6 else 0.01 for x in cell.parameters[3:]]
    )
    lines = [f"TITL {title}"[:80]]
    lines.append(
        f"CELL {wavelength:.5f} {cell.a:.4f} {cell.b:.4f} {cell.c:.4f} {cell.alpha:.3f} {cell.beta:.3f} {cell.gamma:.3f}"
    )
    lines.append(f"ZERR {z:g} " + " ".join(f"{x:.4f}" for x in su))
    if space_group is None:
        lines.append("REM space group not given: LATT -1 without SYMM states no symmetry")
        lines.append("LATT -1")
    else:
        latt, symm = _latt_and_symm(space_group)
        lines.append(f"REM space group {space_group.symbol} (No. {space_group.number})")
        lines.append(f"LATT {latt}")
        lines += [f"SYMM {_shelx_symm(t)}" for t in symm]
    lines.append("SFAC " + " ".join(elements))

    def unit(n: float) -> str:
        return f"{int(round(n))}" if abs(n - round(n)) < 1e-6 else f"{n:.2f}"

    lines.append("UNIT " + " ".join(unit(counts[e] * z) for e in elements))
    if include_atoms and structure is not None:
        orders = SymmetryOps.from_space_group(space_group).structure_site_orders(structure)
        lines.append("L.S. 10")
        lines.append("FVAR 1.00000")
        from ..crystal.formula import normalize_element

        for i, s in enumerate(structure.sites):
            sof = 10.0 + s.occupancy / orders[i]
            sfac = elements.index(normalize_element(s.element)) + 1
            head = f"{s.label[:4]:<5s}{sfac:d} {s.xyz[0]:10.6f} {s.xyz[1]:10.6f} {s.xyz[2]:10.6f} {sof:11.5f}"
            if s.u_aniso is not None:
                u11, u22, u33, u12, u13, u23 = s.u_aniso
                lines.append(f"{head} {u11:10.5f} {u22:10.5f} =")
                lines.append(f"    {u33:10.5f} {u23:10.5f} {u13:10.5f} {u12:10.5f}")
            else:
                lines.append(f"{head} {float(s.u_iso):10.5f}")
    lines.append("HKLF 4" if hklf_scale == 1.0 else f"HKLF 4 {hklf_scale:g}")
    lines.append("END")
    return "\n".join(lines) + "\n"


def write_ins(
    path: str | Path,
    cell_or_structure: UnitCell | Structure,
    formula: str | dict[str, float],
    z: float,
    wavelength: float,
    space_group: SpaceGroupRef | str | None = None,
    **kwargs,
) -> None:
    """Write a SHELX .ins: CELL, ZERR, LATT/SYMM (only when `space_group` is given), SFAC, UNIT.

    `include_atoms=True` (with a Structure and its space group) adds FVAR and the atoms.
    """
    if not (math.isfinite(z) and z > 0):
        raise ValueError(f"Z must be positive, got {z}")
    _atomic_write(Path(path), format_ins(cell_or_structure, formula, z, wavelength, space_group, **kwargs))


def write_dataset_files(
    folder: str | Path,
    name: str,
    data: ReflectionData,
    *,
    space_group: SpaceGroupRef | None = None,
) -> tuple[Path, Path]:
    """`name.hkl` and `name.ins` in `folder`, as a user would hold them; returns both paths."""
    folder = Path(folder)
    if data.cell is None or data.formula is None or data.z is None:
        raise ValueError("the data need a cell, a formula and Z to write an .ins")
    hkl = folder / f"{name}.hkl"
    ins = folder / f"{name}.ins"
    scale = write_hklf4(hkl, data)
    write_ins(ins, data.cell, data.formula, data.z, data.wavelength or 0.71073, space_group, title=name,
              hklf_scale=scale)
    return hkl, ins


__all__ = ["write_hklf4", "write_ins", "format_hklf4", "format_ins", "write_dataset_files", "format_formula"]
