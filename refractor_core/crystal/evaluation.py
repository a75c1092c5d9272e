"""Evaluate a fixed model against measured data: observations, Fc², agreement figures."""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from ..types import ReflectionData, RefinementInstructions, Structure
from .observations import model_intensities, prepare_observations
from .cell import stol as stol_of
from .rfactors import agreement, fit_extinction
from .symmetry import SymmetryOps

DEFAULT_WEIGHTS = (0.1, 0.0)  # SHELXL's default WGHT


def count_parameters(structure: Structure, symmetry: SymmetryOps | None = None, tol: float = 0.05) -> int:
    """Parameters a standard refinement of this model would have.

    Overall scale, plus for every atom not flagged as riding: free coordinates and free
    ADP components after site-symmetry constraints (1 for an isotropic atom).
    """
    sym = symmetry or SymmetryOps.from_space_group(structure.space_group)
    n = 1
    for site in structure.sites:
        if site.calc:
            continue
        constraint = sym.special_position(structure.cell, site.xyz, tol)
        n += constraint.position_basis.shape[1]
        n += constraint.ustar_basis.shape[1] if site.u_aniso is not None else 1
    return n


def evaluate_model(
    data: ReflectionData,
    structure: Structure,
    *,
    instructions: RefinementInstructions | None = None,
    weights: tuple[float, float] | None = None,
    anomalous: bool = True,
    n_parameters: int | None = None,
) -> dict[str, Any]:
    """R1, wR2, GooF and counts of `structure` against `data` with a fitted scale.

    Honours the instructions (OMIT, SHEL, TWIN/BASF, EXTI, WGHT) when given.
    """
    if data.cell is None:
        raise InputError("the reflection data have no unit cell", path=data.source)
    instr = instructions or RefinementInstructions()
    sym = SymmetryOps.from_space_group(structure.space_group)
    obs = prepare_observations(data, sym, instr)
    if obs.data.n == 0:
        raise InputError("no reflections left after merging and filtering", path=data.source)
    wavelength = data.wavelength or structure.wavelength
    fc2 = model_intensities(
        structure, obs.hkl, wavelength=wavelength if anomalous else None, instructions=instr, extinction=0.0,
        twin_indices=obs.twin_indices,
    )
    if weights is None:
        weights = (instr.wght[0], instr.wght[1] if len(instr.wght) > 1 else 0.0) if instr.wght else DEFAULT_WEIGHTS
    n_par = count_parameters(structure, sym) if n_parameters is None else n_parameters
    n_par += len(instr.basf)
    # Extinction only where the model refined it (EXTI), and then fitted to these data:
    # intensities are often supplied already corrected, in which case x comes out ~0.
    x = 0.0
    s = stol_of(data.cell, obs.hkl)
    wl = wavelength or 0.71073
    if instr.exti is not None:
        n_par += 1
        x = fit_extinction(obs.fo2, obs.sigma, fc2, s, wl, weight_a=weights[0], weight_b=weights[1],
                           x_max=max(1.0, 10.0 * instr.exti))
    ag = agreement(obs.fo2, obs.sigma, fc2, n_parameters=n_par, weight_a=weights[0], weight_b=weights[1],
                   extinction=x, stol=s, wavelength=wl)
    result = ag.as_dict()
    result.update(
        {
            "space_group": structure.space_group.symbol,
            "space_group_number": structure.space_group.number,
            "R_int": obs.merged.r_int,
            "friedel_merged": obs.friedel_merged,
            "n_input": obs.n_input,
            "dropped": obs.dropped,
            "wavelength": wavelength,
            "twin_fractions": list(instr.basf) if (instr.twin_n or instr.twin_matrix) else [],
            "extinction_published": instr.exti,
        }
    )
    return result

