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
    """Parse 'C12 H22 O11', 'CH4N2O' or 'Ag0.6 Fe Mo2 Na0.4 O8' into {element: count}.

    Raises InputError for unknown elements, negative or malformed counts, or leftovers.
    """
    if text is None or not str(text).strip():
        raise InputError("empty chemical formula")
    s = str(text).strip().strip("'\"")
    counts: dict[str, float] = {}
    pos = 0
    compact = re.sub(r"\s+", " ", s)
    while pos < len(compact):
        if compact[pos] == " ":
            pos += 1
            continue
        m = _TOKEN.match(compact, pos)
        if not m or m.end() == pos:
            raise InputError(
                f"cannot read chemical formula {text!r} at {compact[pos:]!r}",
                hint='write it like "C12 H22 O11"',
            )
        sym, num = m.group(1), m.group(2)
        element = normalize_element(sym)
        if sym != element and not (sym == "D" and element == "D"):
            # e.g. "Xx" partially matched as "X": reject rather than guess
            if sym.capitalize() != element:
                raise InputError(f"unknown element {sym!r} in formula {text!r}")
        try:
            n = float(num) if num not in ("", ".") else 1.0
        except ValueError:
            raise InputError(f"bad count {num!r} for {sym} in formula {text!r}") from None
        if not n > 0:
            raise InputError(f"count of {sym} must be positive in formula {text!r}")
        counts[element] = counts.get(element, 0.0) + n
        pos = m.end()
    return counts


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
