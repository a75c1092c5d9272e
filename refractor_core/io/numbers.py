"""Number and string formatting shared by the writers (CIF conventions).

`with_su(1.23456, 0.00012)` -> '1.23456(12)': the s.u. keeps two significant digits when
its leading digits are 19 or less, one otherwise (the IUCr "rule of 19"), and the value
is rounded at the same decimal place. Values without an s.u. are written with enough
digits to be read back unchanged at the precision that matters (`plain`).
"""

from __future__ import annotations

import math
import re

_SIMPLE = re.compile(r"^[^\s'\"_#$;\[\]][^\s]*$")
_RESERVED = ("data_", "loop_", "save_", "global_", "stop_")


def plain(value: float, decimals: int = 8) -> str:
    """A float with at most `decimals` decimals, trailing zeros removed ('0.5', '12', '-0.0123')."""
    if value is None or not math.isfinite(value):
        return "?"
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    return text


def with_su(value: float, su: float | None, decimals: int = 8) -> str:
    """value(su) by the rule of 19; `plain(value)` when there is no positive s.u."""
    if value is None or not math.isfinite(value):
        return "?"
    if su is None or not math.isfinite(su) or su <= 0:
        return plain(value, decimals)
    exp = math.floor(math.log10(su))
    lead = su / 10.0**exp  # in [1, 10)
    dec = -(exp - 1) if lead < 1.95 else -exp  # two significant digits below 1.95, else one
    su_int = _half_up(su * 10.0**dec)
    if su_int >= 20 and dec == -(exp - 1):  # 1.95..1.99 rounds to 20: use one digit
        dec -= 1
        su_int = _half_up(su * 10.0**dec)
    dec = min(dec, 12)
    if dec > 0:
        return f"{value:.{dec}f}({su_int})"
    step = 10 ** (-dec)
    return f"{int(round(value / step)) * step}({su_int * step})"


def _half_up(x: float) -> int:
    return int(math.floor(x + 0.5 + 1e-9))


def cif_string(text: str | None) -> str:
    """A CIF value for a string: bare when safe, quoted, or a ;-delimited text field."""
    if text is None:
        return "?"
    s = str(text)
    if s == "":
        return "''"
    if "\n" not in s and _SIMPLE.match(s) and not s.lower().startswith(_RESERVED) and s not in ("?", "."):
        return s
    if "\n" not in s:
        if "' " not in s and not s.endswith("'"):
            return f"'{s}'"
        if '" ' not in s and not s.endswith('"'):
            return f'"{s}"'
    return text_field(s)


def text_field(text: str) -> str:
    """A ;-delimited CIF text field (a line starting with ';' is protected by a blank)."""
    lines = text.split("\n")
    safe = [(" " + ln) if ln.startswith(";") else ln for ln in lines]
    return ";\n" + "\n".join(safe).rstrip("\n") + "\n;"
