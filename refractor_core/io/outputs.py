"""The structure files of a refined candidate: `<stem>.cif`, `<stem>.res`, `<stem>.fcf`.

All texts are built first and then each file is written atomically (temporary file in
the same folder, then rename), so a failure never leaves a half-written file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..types import RefinedCandidate, ReflectionData
from .cif_writer import structure_cif
from .fcf_writer import structure_fcf
from .hkl_writer import format_hklf4
from .res_writer import structure_res

log = logging.getLogger("refractor.io")


def _fcf_arrays(refined: RefinedCandidate, data: ReflectionData, fc2):
    """(hkl, Fo², σ, Fc²) for the .fcf: the given Fc² for `data`, else merged observations."""
    if fc2 is not None:
        fc2 = np.asarray(fc2, dtype=np.float64)
        if fc2.shape != (data.n,):
            raise ValueError(f"fc2 has {fc2.shape[0]} values for {data.n} reflections")
        return data.hkl, data.intensity, data.sigma, fc2
    from ..crystal.observations import model_intensities, prepare_observations

    structure = refined.structure
    obs = prepare_observations(data, structure.space_group, data.instructions)
    fc2 = model_intensities(
        structure,
        obs.hkl,
        wavelength=data.wavelength or structure.wavelength,
        instructions=data.instructions,
        extinction=refined.extinction,
        twin_indices=obs.twin_indices,
    )
    return obs.hkl, obs.fo2, obs.sigma, fc2


def write_structure_outputs(
    refined: RefinedCandidate,
    data: ReflectionData,
    folder: Path,
    stem: str,
    fc2: np.ndarray | None = None,
) -> dict[str, Path]:
    """Write `<stem>.cif`, `<stem>.res` and `<stem>.fcf` into `folder`; return their paths.

    `fc2`, when given, holds Fc² (absolute scale) for each reflection of `data`; otherwise
    Fc² is computed for the merged observations of `data` (as SHELXL's LIST 4).
    The CIF embeds the .res and the reflections as `_shelx_res_file`/`_shelx_hkl_file`.
    """
    folder = Path(folder)
    structure = refined.structure
    hkl_text, hklf_scale = format_hklf4(data)
    res_text = structure_res(
        structure,
        wavelength=data.wavelength,
        z=data.z,
        formula=data.formula,
        refined=refined,
        instructions=data.instructions,
        title=stem,
        hklf_scale=hklf_scale,
        hklf=data.hklf,
    )
    fcf_text = None
    r1_all = refined.meta.get("r1_all") if refined.meta else None
    try:
        hkl, fo2, sigma, fc2_used = _fcf_arrays(refined, data, fc2)
        from ..crystal.rfactors import agreement

        ag = agreement(fo2, sigma, fc2_used, weight_a=refined.weight_a, weight_b=refined.weight_b)
        if r1_all is None:
            r1_all = ag.R1_all
        fcf_text = structure_fcf(
            structure, hkl, fo2, sigma, fc2_used, scale=ag.scale, name=stem, title=stem, wavelength=data.wavelength
        )
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - the CIF and .res are still worth writing
        log.warning("no .fcf written: Fc² could not be computed (%s: %s)", type(exc).__name__, exc)
    cif_text = structure_cif(
        structure,
        refined=refined,
        data=data,
        name=stem,
        res_text=res_text,
        hkl_text=hkl_text,
        r1_all=r1_all,
    )
    texts = {"cif": cif_text, "res": res_text}
    if fcf_text is not None:
        texts["fcf"] = fcf_text
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for kind, text in texts.items():
        written[kind] = atomic_write_text(folder / f"{stem}.{kind}", text)
    return written
