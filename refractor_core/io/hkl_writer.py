"""SHELX HKLF 4 text (FORMAT(3I4,2F8.2,I4), as many decimals as fit) for reflection data, e.g. to embed in a CIF.

Values that do not fit F8.2 are written with fewer decimals ('123456.8', '1234567.'),
as SHELX programs do; when even that is too wide the whole data set is scaled down by a
power of ten and the factor is returned (to go on the HKLF line: `HKLF 4 <scale>`).
"""

from __future__ import annotations

import numpy as np

from ..types import ReflectionData


def _f8(x: float) -> str:
    """x in 8 columns with as many decimals (up to 5) as fit, a blank in front when possible."""
    for dec in (5, 4, 3, 2):
        text = f"{x:.{dec}f}"
        if len(text) <= 7:
            return text.rjust(8)
    for dec in (2, 1):
        text = f"{x:.{dec}f}"
        if len(text) <= 8:
            return text.rjust(8)
    text = f"{x:.0f}."
    if len(text) <= 8:
        return text.rjust(8)
    raise ValueError(f"{x} does not fit in 8 columns")


def _fits(values: np.ndarray) -> bool:
    if values.size == 0:
        return True
    return bool(np.max(values) < 9999999.5 and np.min(values) > -999999.5)


def format_hklf4(data: ReflectionData, *, batch: bool | None = None) -> tuple[str, float]:
    """(HKLF 4 text ending with the 0 0 0 row, scale to put on the HKLF line).

    `batch` writes the batch column (default: when the data have one).
    """
    inten = np.asarray(data.intensity, dtype=np.float64)
    sigma = np.asarray(data.sigma, dtype=np.float64)
    scale = 1.0
    while not (_fits(inten / scale) and _fits(sigma / scale)):
        scale *= 10.0
    inten = inten / scale
    sigma = sigma / scale
    with_batch = (data.batch is not None) if batch is None else (batch and data.batch is not None)
    hkl = np.asarray(data.hkl)
    if np.any(np.abs(hkl) > 999):
        raise ValueError("Miller indices beyond 999 cannot be written in HKLF 4")
    lines = []
    b = data.batch if with_batch else None
    for idx in range(hkl.shape[0]):
        h, k, l_ = int(hkl[idx, 0]), int(hkl[idx, 1]), int(hkl[idx, 2])
        row = f"{h:4d}{k:4d}{l_:4d}{_f8(float(inten[idx]))}{_f8(float(sigma[idx]))}"
        if b is not None:
            row += f"{int(b[idx]):4d}"
        lines.append(row)
    lines.append(f"{0:4d}{0:4d}{0:4d}{0.0:8.2f}{0.0:8.2f}" + (f"{0:4d}" if b is not None else ""))
    return "\n".join(lines) + "\n", scale
