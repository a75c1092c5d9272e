"""SHELXL-style .fcf, LIST 4: h k l Fc² Fo² σ(Fo²) status, with the CIF header SHELXL writes.

Fo² and σ(Fo²) are put on the scale of Fc² (divided by the refined scale k, Fo² ≈ k Fc²),
as SHELXL does; the status flag is 'o' for Fo² > 2σ(Fo²) and '<' otherwise.
"""

from __future__ import annotations

import numpy as np

from ..types import Structure
from .cif_writer import block_name
from .numbers import cif_string, plain


def structure_fcf(
    structure: Structure,
    hkl: np.ndarray,
    fo2: np.ndarray,
    sigma: np.ndarray,
    fc2: np.ndarray,
    *,
    scale: float = 1.0,
    name: str | None = None,
    title: str | None = None,
    wavelength: float | None = None,
) -> str:
    """The .fcf (LIST 4) text for reflections with their calculated Fc²."""
    from ..crystal.cell import d_spacing

    hkl = np.asarray(hkl)
    fc2 = np.asarray(fc2, dtype=np.float64)
    k = scale if scale and scale > 0 else 1.0
    fo2s = np.asarray(fo2, dtype=np.float64) / k
    sig = np.asarray(sigma, dtype=np.float64) / k
    if not (hkl.shape[0] == fc2.shape[0] == fo2s.shape[0] == sig.shape[0]):
        raise ValueError("hkl, Fo², sigma and Fc² lengths differ")
    cell = structure.cell
    out = [
        "#",
        "# h,k,l, Fc-squared, Fo-squared, sigma(Fo-squared), status flag",
        "#",
        f"data_{block_name(name or structure.name)}",
        f"_shelx_title {cif_string(' ' + (title or structure.name))}",
        "_shelx_refln_list_code          4",
        f"_shelx_F_calc_maximum      {np.sqrt(max(float(fc2.max(initial=0.0)), 0.0)):.2f}",
    ]
    f000 = _f000(structure)
    if f000 is not None:
        out.append(f"_exptl_crystal_F_000       {f000:.2f}")
    if hkl.shape[0]:
        d = d_spacing(cell, hkl)
        finite = d[np.isfinite(d)]
        if finite.size:
            out.append(f"_reflns_d_resolution_high  {finite.min():.4f}")
    if wavelength:
        out.append(f"_diffrn_radiation_wavelength {plain(wavelength, 6)}")
    out.append("")
    out.append("loop_")
    out.append(" _space_group_symop_operation_xyz")
    for op in structure.space_group.gemmi().operations():
        out.append(" " + cif_string(", ".join(p.strip() for p in op.triplet().split(","))))
    out.append("")
    for tag, v in zip(
        ("_cell_length_a", "_cell_length_b", "_cell_length_c", "_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma"),
        cell.parameters,
    ):
        out.append(f"{tag:<18}{v:9.4f}" if "length" in tag else f"{tag:<18}{v:8.3f}")
    out.append("")
    out.append("_shelx_F_squared_multiplier     1.000")
    out.append("")
    out.append("loop_")
    for tag in ("index_h", "index_k", "index_l", "F_squared_calc", "F_squared_meas", "F_squared_sigma", "observed_status"):
        out.append(f" _refln_{tag}")
    for i in range(hkl.shape[0]):
        flag = "o" if fo2s[i] > 2.0 * sig[i] else "<"
        out.append(
            f"{int(hkl[i, 0]):4d}{int(hkl[i, 1]):4d}{int(hkl[i, 2]):4d} "
            f"{_num(fc2[i])} {_num(fo2s[i])} {_num(sig[i])} {flag}"
        )
    out.append("")
    return "\n".join(out) + "\n"


def _num(x: float) -> str:
    text = f"{x:13.2f}"
    return text if len(text) <= 13 else f"{x:13.6g}"


def _f000(structure: Structure) -> float | None:
    """F(000): electrons per cell (atomic numbers times cell contents)."""
    from ..crystal.formula import atomic_number
    from ..simulation.composition import cell_contents_of

    try:
        counts = cell_contents_of(structure)
        return float(sum(atomic_number(e) * n for e, n in counts.items()))
    except Exception:  # noqa: BLE001 - a header convenience only
        return None
