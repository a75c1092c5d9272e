"""Loading user data: sniff the reader, find the files beside a reflection file, apply overrides.

`load_reflections(path, ...)` returns `ReflectionData` with the cell, wavelength, formula,
Z, space-group hint and refinement instructions gathered from the reflection file itself,
a companion file (given, or found beside it) and command-line overrides, in this order of
precedence: options > an explicitly given companion > the reflection file > a companion
found beside it. `load_structure(path)` returns the model of a CIF/.res/.ins;
`load_bundle(path)` everything a file holds.

Readers are chosen by content first, suffix second, over every registered reader
(`refractor_core.plugins.get_registry()`); a file no reader recognises is an `InputError`.
A CIF data block can be named as `file.cif#block`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from .errors import InputError, RefractorError
from .interfaces import DataBundle, HKLReader
from .types import ReflectionData, Structure, UnitCell

log = logging.getLogger("refractor.dataio")

#: bytes handed to `HKLReader.sniff`
SNIFF_BYTES = 8192
#: companion suffixes looked for beside a reflection file, in order of preference
COMPANION_SUFFIXES = (".ins", ".res", ".p4p", ".cif")
#: assumed when no file or option gives the wavelength (Mo Kα)
DEFAULT_WAVELENGTH = 0.71073


# --------------------------------------------------------------------------------------
# choosing a reader
# --------------------------------------------------------------------------------------


def split_block(path: Path) -> tuple[Path, str | None]:
    """'file.cif#block' -> (file.cif, 'block'); a path that exists as given is kept whole
    (block None)."""
    s = str(path)
    if "#" in s and not Path(s).exists():
        base, _, name = s.rpartition("#")
        return Path(base), (name or None)
    return Path(path), None


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(SNIFF_BYTES)
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", path=path) from None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError("file not found", path=path)
    if path.is_dir():
        raise InputError("is a folder, not a file", path=path)


def choose_reader(
    path: str | Path,
    reader: str | None = None,
    options: dict[str, Any] | None = None,
) -> HKLReader:
    """Build the named reader, or the registered reader most confident about `path`."""
    from .plugins import get_registry

    registry = get_registry()
    file_path, _ = split_block(Path(path))
    _check_file(file_path)
    if reader is not None:
        return _build(registry, reader, options)
    head = _head(file_path)
    if not head.strip():
        raise InputError("file is empty", path=file_path)
    best: tuple[float, str] | None = None
    for name in registry.names("reader"):
        try:
            component = _build(registry, name, None)
            score = float(component.sniff(file_path, head))
        except RefractorError as exc:  # a broken third-party reader must not stop us
            log.warning("reader %s could not sniff %s: %s", name, file_path, exc)
            continue
        except Exception as exc:  # noqa: BLE001 - a plugin's sniff bug is reported, not fatal
            log.warning("reader %s failed while sniffing %s: %s: %s", name, file_path, type(exc).__name__, exc)
            continue
        if score > 0 and (best is None or score > best[0]):
            best = (score, name)
    if best is None or best[0] < 0.3:
        raise InputError(
            "cannot recognise the format of this file",
            path=file_path,
            hint="readable: SHELX .hkl/.ins/.res, .p4p, CIF/fcf, MTZ; name the reader with --reader",
        )
    return _build(registry, best[1], options)


def _build(registry, name: str, options: dict[str, Any] | None) -> HKLReader:
    component = registry.build("reader", name, options or {})
    assert isinstance(component, HKLReader)
    return component


def _read(component: HKLReader, path: Path) -> DataBundle:
    """Call a reader; anything but a RefractorError is turned into an InputError."""
    try:
        bundle = component.read(path)
    except RefractorError:
        raise
    except ValidationError as exc:
        raise InputError(f"cannot read this file: {exc.errors()[0].get('msg', exc)}", path=path) from None
    except Exception as exc:  # noqa: BLE001 - third-party readers
        raise InputError(f"reader {component.name!r} failed: {type(exc).__name__}: {exc}", path=path) from None
    if not isinstance(bundle, DataBundle):
        raise InputError(f"reader {component.name!r} returned {type(bundle).__name__}, not a DataBundle", path=path)
    return bundle


def load_bundle(
    path: str | Path,
    *,
    block: str | None = None,
    reader: str | None = None,
    want: Literal["reflections", "model"] = "model",
) -> DataBundle:
    """Everything a file holds (reflections, crystal data, model, instructions)."""
    bundle, _ = _load_bundle(path, block=block, reader=reader, want=want)
    return bundle


def _load_bundle(path, *, block=None, reader=None, want="model") -> tuple[DataBundle, HKLReader]:
    path = Path(path)
    file_path, name_in_path = split_block(path)
    block = block or name_in_path
    component = choose_reader(file_path, reader)
    if block is not None or want != "reflections":
        fields = type(component.config).model_fields
        update = {}
        if block is not None and "block" in fields:
            update["block"] = block
        if "want" in fields:
            update["want"] = want
        if update:
            component = type(component)(component.config.model_copy(update=update), component.context)
        elif block is not None:
            raise InputError(f"a data block ({block!r}) was named, but the {component.name} reader has no blocks", path=file_path)
    return _read(component, file_path), component


def load_structure(path: str | Path, *, block: str | None = None, reader: str | None = None) -> Structure:
    """The model (asymmetric-unit sites) of a CIF, .res or .ins file."""
    bundle = load_bundle(path, block=block, reader=reader, want="model")
    if bundle.structure is None:
        raise InputError("no atom sites in this file", path=split_block(Path(path))[0])
    return bundle.structure


# --------------------------------------------------------------------------------------
# companions
# --------------------------------------------------------------------------------------


def find_companion(data_path: str | Path) -> Path | None:
    """The file describing the crystal beside a reflection file.

    `stem.ins`, `stem.res`, `stem.p4p`, `stem.cif` (case-insensitive, in that order), else
    the single .ins or .res in the folder (if there is exactly one).
    """
    data_path = Path(data_path)
    folder = data_path.parent if str(data_path.parent) else Path(".")
    try:
        entries = [p for p in folder.iterdir() if p.is_file()]
    except OSError:
        return None
    me = data_path.resolve()
    stem = data_path.stem.lower()
    by_suffix: dict[str, list[Path]] = {}
    for p in entries:
        if p.resolve() == me:
            continue
        by_suffix.setdefault(p.suffix.lower(), []).append(p)
    for suffix in COMPANION_SUFFIXES:
        for p in sorted(by_suffix.get(suffix, [])):
            if p.stem.lower() == stem:
                return p
    shelx = sorted(by_suffix.get(".ins", []) + by_suffix.get(".res", []))
    stems = {p.stem.lower() for p in shelx}
    if len(stems) == 1:  # one structure's .ins and/or .res
        ins = [p for p in shelx if p.suffix.lower() == ".ins"]
        return (ins or shelx)[0]
    return None


# --------------------------------------------------------------------------------------
# reflections
# --------------------------------------------------------------------------------------


def _hklf_transform(component: HKLReader, path: Path):
    """The companion's HKLF line, for readers that provide one.

    A reader may offer `reflection_transform(path)` returning an object with `hklf_seen`,
    `instructions.hklf` and `apply_to(reflections)` (the SHELX instruction reader does).
    """
    getter = getattr(component, "reflection_transform", None)
    if getter is None:
        return None
    return getter(path)


def load_reflections(
    path: str | Path,
    *,
    companion: str | Path | None = None,
    cell: UnitCell | tuple[float, ...] | list[float] | None = None,
    wavelength: float | None = None,
    formula: str | None = None,
    z: float | None = None,
    reader: str | None = None,
    fallback_companion: str | Path | None = None,
) -> ReflectionData:
    """Measured reflections with everything known about the crystal.

    `companion` is a .ins/.res/.p4p/CIF describing the crystal (default: found beside
    `path`, else `fallback_companion`, e.g. the model file `refine` was given; neither
    overrides what the data file itself states); `cell`, `wavelength`, `formula` and `z`
    override the files. Raises `InputError` when the file cannot be read or no unit cell
    is known.
    """
    path = Path(path)
    file_path, block = split_block(path)
    _check_file(file_path)
    component = choose_reader(file_path, reader)
    if block is not None and "block" in type(component.config).model_fields:
        component = type(component)(component.config.model_copy(update={"block": block}), component.context)
    own = _read(component, file_path)
    if own.reflections is None:
        raise InputError(
            f"no reflections in this file (read as {component.name})",
            path=file_path,
            hint="give the reflection file (.hkl, .fcf, a CIF with _shelx_hkl_file or _refln loop, .mtz)",
        )
    refl = own.reflections
    notes = list(refl.notes)
    for n in own.notes:
        if n not in notes:
            notes.append(n)

    explicit = companion is not None
    comp_path: Path | None = None
    comp: DataBundle | None = None
    comp_component: HKLReader | None = None
    if explicit:
        comp_path = Path(companion)
        comp, comp_component = _load_bundle(comp_path, want="model")
    else:
        missing = own.cell is None or own.wavelength is None or own.formula is None
        if missing:
            comp_path = find_companion(file_path)
            if comp_path is None and fallback_companion is not None:
                comp_path = Path(fallback_companion)
            if comp_path is not None:
                comp, comp_component = _load_bundle(comp_path, want="model")
    if comp is not None:
        notes.append(f"crystal data from {comp_path}")

    def pick(name: str):
        own_v = getattr(own, name)
        comp_v = getattr(comp, name) if comp is not None else None
        if explicit and comp_v is not None:
            return comp_v
        return own_v if own_v is not None else comp_v

    cell_v = pick("cell")
    wavelength_v = pick("wavelength")
    formula_v = pick("formula")
    z_v = pick("z")
    space_group = pick("space_group")
    instructions = pick("instructions")
    if space_group is None and comp is not None and comp.structure is not None:
        space_group = comp.structure.space_group

    # the companion's HKLF line: format (3/4/5), scale and index matrix
    if comp is not None and comp_component is not None and comp_path is not None and own.instructions is None:
        ins = _hklf_transform(comp_component, comp_path)
        if ins is not None and ins.hklf_seen:
            wanted = ins.instructions.hklf
            if wanted in (3, 4, 5) and component.name == "shelx-hkl" and wanted != refl.hklf and reader is None:
                reread = type(component)(component.config.model_copy(update={"hklf": wanted}), component.context)
                refl = _read(reread, file_path).reflections or refl
                notes.append(f"read as HKLF {wanted} (from {comp_path.name})")
            if component.name == "shelx-hkl":
                refl = ins.apply_to(refl)

    # command-line overrides
    if cell is not None:
        cell_v = _cell_option(cell)
        notes.append("cell from the command line")
    if wavelength is not None:
        if not (0.05 < float(wavelength) < 5.0):
            raise InputError(f"--wavelength {wavelength}: outside 0.05-5 Å")
        wavelength_v = float(wavelength)
    if formula is not None:
        from .crystal.formula import format_formula, parse_formula

        try:
            formula_v = format_formula(parse_formula(formula))
        except InputError as exc:
            raise InputError(f"--formula: {exc.problem}", hint=exc.hint) from None
    if z is not None:
        if not (0 < float(z) <= 1000):
            raise InputError(f"--z {z}: not a plausible number of formula units")
        z_v = float(z)

    if cell_v is None:
        name = file_path.name
        stem = file_path.stem
        raise InputError(
            f"no unit cell: give --cell or put {stem}.ins beside {name}",
            path=file_path,
            hint="a SHELX .ins/.res, a .p4p or a CIF with the same name beside the data also works (--ins FILE to name one)",
        )
    if wavelength_v is None:
        wavelength_v = DEFAULT_WAVELENGTH
        notes.append(f"no wavelength given: Mo Kα {DEFAULT_WAVELENGTH} Å assumed")
    fields = dict(refl)
    fields.update(
        cell=cell_v,
        wavelength=wavelength_v,
        formula=formula_v,
        z=z_v,
        space_group_hint=space_group,
        instructions=instructions,
        source=str(file_path),
        notes=notes,
    )
    try:
        return ReflectionData(**fields)
    except ValidationError as exc:
        msg = "; ".join(str(e.get("msg", "")).removeprefix("Value error, ") for e in exc.errors())
        raise InputError(msg, path=file_path) from None


def _cell_option(cell) -> UnitCell:
    if isinstance(cell, UnitCell):
        return cell
    values = list(cell)
    if len(values) == 3:
        values += [90.0, 90.0, 90.0]
    if len(values) != 6:
        raise InputError(f"--cell needs six numbers (a b c alpha beta gamma), got {len(values)}")
    try:
        return UnitCell(a=values[0], b=values[1], c=values[2], alpha=values[3], beta=values[4], gamma=values[5])
    except ValidationError as exc:
        msg = "; ".join(str(e.get("msg", "")).removeprefix("Value error, ") for e in exc.errors())
        raise InputError(f"--cell: {msg}") from None
