"""Helpers shared by the readers: decoding files, numbers, and turning failures into InputError.

Every reader's `read` goes through `guarded`: an `InputError` passes unchanged, the errors
that malformed content raises inside libraries (ValueError from gemmi, pydantic validation,
overflow...) become an `InputError` naming the file. Anything else is still turned into an
`InputError` (users never see a traceback), but flagged `internal=True` so the fuzz tests
can tell a clear message from a bug caught by the safety net.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path
from typing import Callable, TypeVar

from pydantic import ValidationError

from refractor_core.errors import InputError

T = TypeVar("T")

#: at most this many bytes are read from one input file (the largest real HKL files are ~5 MB)
MAX_FILE_BYTES = 512 * 1024 * 1024


def read_bytes(path: Path) -> bytes:
    """The file's bytes; InputError when it is missing, a folder, unreadable or empty."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path=path)
    if path.is_dir():
        raise InputError("is a folder, not a file", path=path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InputError(f"file is too large ({size} bytes)", path=path)
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", path=path) from None
    if not data.strip():
        raise InputError("file is empty", path=path)
    return data


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def looks_binary(data: bytes) -> bool:
    """True for content that is not text (NUL bytes or many control characters)."""
    if data.startswith(_UTF16_BOMS):
        return False
    head = data[:65536]
    if b"\x00" in head:
        return True
    control = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
    return control > max(8, len(head) // 100)


def decode_text(data: bytes, path: Path) -> str:
    """Decode a text file (UTF-8, else Latin-1); InputError for binary content.

    Line endings are normalised to '\\n' (CRLF and lone CR files occur in the wild).
    """
    if looks_binary(data):
        raise InputError("binary content where a text file was expected", path=path)
    if data.startswith(_UTF16_BOMS):  # e.g. written by a Windows shell redirect
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            raise InputError("undecodable UTF-16 text", path=path) from None
        return text.replace("\r\n", "\n").replace("\r", "\n")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def read_text(path: Path) -> str:
    """Read and decode a text input file (see `decode_text`)."""
    return decode_text(read_bytes(path), Path(path))


def head_text(head: bytes) -> str | None:
    """The decoded start of a file for sniffing, or None when it is binary."""
    if not head or looks_binary(head):
        return None
    if head.startswith(_UTF16_BOMS):
        return head[: len(head) // 2 * 2].decode("utf-16", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    return head.decode("latin-1").replace("\r\n", "\n").replace("\r", "\n")


def to_float(token: str, what: str, path: Path | str | None, line: int | None) -> float:
    """A finite float from a token, else InputError naming file, line and what it is."""
    try:
        value = float(token)
    except (TypeError, ValueError):
        raise InputError(f"{what}: {token!r} is not a number", path=path, line=line) from None
    if not math.isfinite(value):
        raise InputError(f"{what}: {token!r} is not a finite number", path=path, line=line)
    return value


def to_int(token: str, what: str, path: Path | str | None, line: int | None) -> int:
    """An integer from a token ('3' or '3.0'), else InputError."""
    try:
        return int(token)
    except (TypeError, ValueError):
        pass
    value = to_float(token, what, path, line)
    if value != int(value):
        raise InputError(f"{what}: {token!r} is not an integer", path=path, line=line)
    return int(value)


_CIF_NUMBER = re.compile(
    r"^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?(?:\((\d+)\))?$"
)


def parse_su_number(text: str) -> tuple[float, float | None] | None:
    """Parse a CIF-style number with optional standard uncertainty: '1.234(5)' -> (1.234, 0.005).

    Returns None for anything that is not such a number (including '?' and '.').
    """
    s = text.strip()
    m = _CIF_NUMBER.match(s)
    if not m or (not m.group(2) and not m.group(3)):
        return None
    sign, whole, frac, exp, su_digits = m.groups()
    value = float(f"{sign}{whole or '0'}.{frac or '0'}e{exp or '0'}")
    su = None
    if su_digits is not None:
        decimals = len(frac or "")
        su = int(su_digits) * 10.0 ** (-decimals + int(exp or 0))
    if not math.isfinite(value):
        return None
    return value, su


def validation_message(exc: ValidationError) -> str:
    """The human part of a pydantic ValidationError ('cell length a must be ...')."""
    parts = []
    for err in exc.errors():
        msg = str(err.get("msg", ""))
        msg = msg.removeprefix("Value error, ")
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        parts.append(f"{loc}: {msg}" if loc and loc not in msg else msg)
    return "; ".join(parts) or str(exc)


def guarded(read: Callable[..., T]) -> Callable[..., T]:
    """Decorate a reader's `read(self, path)` so that only InputError escapes it."""

    @functools.wraps(read)
    def wrapper(self, path, *args, **kwargs):
        try:
            return read(self, path, *args, **kwargs)
        except InputError:
            raise
        except ValidationError as exc:
            raise InputError(validation_message(exc), path=path) from None
        except (ValueError, OverflowError, UnicodeError, RuntimeError) as exc:
            raise InputError(f"cannot read this file: {exc}", path=path) from None
        except (MemoryError, RecursionError):
            raise InputError("file is too large or too deeply nested to read", path=path) from None
        except Exception as exc:  # the safety net: flagged so tests can find the bug behind it
            err = InputError(
                f"cannot read this file ({type(exc).__name__}: {exc})",
                path=path,
                hint="this looks like a bug in refractor's reader; please report it with the file",
            )
            err.internal = True
            raise err from exc

    return wrapper


def element_or_error(symbol: str, path: Path | str | None, line: int | None) -> str:
    """Canonical element symbol, or InputError naming file and line for an unknown one."""
    from refractor_core.crystal.formula import normalize_element

    try:
        return normalize_element(symbol)
    except InputError as exc:
        raise InputError(exc.problem, path=path, line=line) from None


def formula_or_error(text: str, path: Path | str | None, line: int | None) -> dict[str, float]:
    """Parse a chemical formula, or InputError naming file and line."""
    from refractor_core.crystal.formula import parse_formula

    try:
        return parse_formula(text)
    except InputError as exc:
        raise InputError(exc.problem, path=path, line=line, hint=exc.hint) from None


#: the note on a model refined with a solvent mask (its tag or instruction named), which
#: this refiner does not model
SOLVENT_MASK_NOTE = ("the published refinement added a solvent mask's contribution to Fc ({}): it is not "
                     "applied here, so a model refined against these data fits worse than published where the "
                     "voids hold disordered solvent (R1, wR2 and the difference map)")
