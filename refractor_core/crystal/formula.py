"""Chemical formulae: parsing, validation of element symbols, cell contents.

Element symbols are validated against gemmi's periodic table; an unknown symbol is an
`InputError`. Deuterium is kept as "D" (it scatters X-rays as H).
"""

from __future__ import annotations

import re

from ..errors import InputError

_TOKEN = re.compile(r"([A-Z][a-z]?)\s*([0-9]*\.?[0-9]*)")


def normalize_element(symbol: str) -> str:
    """Canonical capitalisation of an element symbol ('CL' -> 'Cl'); InputError if unknown.

    Labels with charges or digits ('Fe2+', 'O1') are reduced to their element first.
    """
    import gemmi

    text = str(symbol).strip()
    m = re.match(r"[A-Za-z]{1,2}", text)
    if not m:
        raise InputError(f"unknown element {symbol!r}")
    letters = m.group(0)
    for candidate in (letters, letters[:1]) if len(letters) == 2 else (letters,):
        el = gemmi.Element(candidate)
        if el.atomic_number > 0:
            name = el.name
            return "D" if candidate.upper() == "D" else name
    raise InputError(f"unknown element {symbol!r}")


def atomic_number(symbol: str) -> int:
    """Atomic number of an element symbol (D counts as 1)."""
    import gemmi

    return int(gemmi.Element(normalize_element(symbol)).atomic_number)


def parse_formula(text: str) -> dict[str, float]:
    """Parse 'C12 H22 O11', 'CH4N2O', 'Ag0.6 Fe Mo2 Na0.4 O8' or 'Ca3(PO4)2 (H2O)2' into counts.

    Parenthesised or bracketed groups with a multiplier are expanded. Raises InputError
    for unknown elements, negative or malformed counts, unbalanced brackets or leftovers.
    """
    if text is None or not str(text).strip():
        raise InputError("empty chemical formula")
    s = re.sub(r"\s+", " ", str(text).strip().strip("'\""))
    counts, pos = _parse_group(s, 0, text, closing=None)
    if pos != len(s):
        raise InputError(f"cannot read chemical formula {text!r} at {s[pos:]!r}", hint='write it like "C12 H22 O11"')
    if not counts:
        raise InputError(f"no elements in chemical formula {text!r}")
    return counts


_NUMBER = re.compile(r"\s*([0-9]*\.?[0-9]+|[0-9]+\.?)")
_CLOSE = {"(": ")", "[": "]"}


def _parse_group(s: str, pos: int, text: str, closing: str | None) -> tuple[dict[str, float], int]:
    counts: dict[str, float] = {}
    while pos < len(s):
        ch = s[pos]
        if ch == " ":
            pos += 1
            continue
        if closing is not None and ch == closing:
            return counts, pos + 1
        if ch in _CLOSE:
            inner, pos = _parse_group(s, pos + 1, text, _CLOSE[ch])
            n, pos = _count(s, pos, text, "group")
            for e, c in inner.items():
                counts[e] = counts.get(e, 0.0) + c * n
            continue
        m = _TOKEN.match(s, pos)
        if not m or m.end() == pos or not m.group(1):
            raise InputError(f"cannot read chemical formula {text!r} at {s[pos:]!r}", hint='write it like "C12 H22 O11"')
        sym = m.group(1)
        element = normalize_element(sym)
        if sym.capitalize() != element and not (sym == "D" and element == "D"):
            raise InputError(f"unknown element {sym!r} in formula {text!r}")
        n, pos = _count(s, pos + len(sym), text, sym)
        counts[element] = counts.get(element, 0.0) + n
    if closing is not None:
        raise InputError(f"unbalanced brackets in chemical formula {text!r}")
    return counts, pos


def _count(s: str, pos: int, text: str, what: str) -> tuple[float, int]:
    """An optional count after an element or a group (1 when absent)."""
    if pos < len(s) and s[pos] == "-":
        raise InputError(f"count of {what} must be positive in formula {text!r}")
    m = _NUMBER.match(s, pos)
    if not m:
        return 1.0, pos
    try:
        n = float(m.group(1))
    except ValueError:
        raise InputError(f"bad count {m.group(1)!r} for {what} in formula {text!r}") from None
    if not n > 0:
        raise InputError(f"count of {what} must be positive in formula {text!r}")
    return n, m.end()


def format_formula(counts: dict[str, float]) -> str:
    """Hill order (C, H, then alphabetical; alphabetical if no C), counts trimmed."""
    def fmt(n: float) -> str:
        if abs(n - round(n)) < 1e-6:
            n = int(round(n))
            return "" if n == 1 else str(n)
        return f"{n:.2f}".rstrip("0").rstrip(".")

    elements = list(counts)
    if "C" in counts:
        order = ["C"] + (["H"] if "H" in counts else []) + sorted(e for e in elements if e not in ("C", "H"))
    else:
        order = sorted(elements)
    return " ".join(f"{e}{fmt(counts[e])}" for e in order if counts[e] > 0)


def cell_contents(formula: str | dict[str, float], z: float) -> dict[str, float]:
    """Atoms per unit cell: formula counts times Z."""
    counts = parse_formula(formula) if isinstance(formula, str) else dict(formula)
    return {e: n * float(z) for e, n in counts.items()}
