"""Turning measured reflections into the observations a refinement uses, as SHELXL does.

`prepare_observations` merges equivalents (Friedel mates only for centrosymmetric groups
unless told otherwise), removes systematic absences, and honours a published refinement's
instructions: the OMIT s 2θ limit (reflections beyond it are ignored), SHEL resolution
limits, and OMIT h k l records (the merged reflection and its equivalents are dropped).
`model_intensities` computes Fc² for a structure at those indices, including twin
components (TWIN/BASF) and SHELXL extinction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputError
from ..types import ReflectionData, RefinementInstructions, SpaceGroupRef, Structure
from .cell import d_spacing, stol as stol_of, two_theta
from .merging import MergedData, merge
from .rfactors import extinction_factor
from .structure_factors import AtomTensors, StructureFactorEngine
from .symmetry import SymmetryOps, canonical_keys

INVERSION_TWIN = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0)


@dataclass
class Observations:
    """Merged, filtered observations ready for R factors or refinement."""

    data: ReflectionData  # merged reflections (F², σ) with the original metadata
    merged: MergedData
    friedel_merged: bool
    n_input: int
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def hkl(self) -> np.ndarray:
        return self.data.hkl

    @property
    def fo2(self) -> np.ndarray:
        return self.data.intensity

    @property
    def sigma(self) -> np.ndarray:
        return self.data.sigma


def require_xray(instructions: RefinementInstructions | None, where: str, source: str | None = None) -> None:
    """InputError when `instructions` say the data are not X-ray data (NEUT in a .ins,
    _diffrn_radiation_probe in a CIF): the form factors here are X-ray ones."""
    if instructions is not None and instructions.radiation != "x-ray":
        raise InputError(f"{instructions.radiation} diffraction data ({where} gives NEUT or _diffrn_radiation_probe) "
                         "are not supported: structure factors are computed with X-ray form factors", path=source)


def prepare_observations(
    data: ReflectionData,
    space_group: SpaceGroupRef | SymmetryOps | str,
    instructions: RefinementInstructions | None = None,
    *,
    friedel: bool | None = None,
    merge_method: str = "shelx",
) -> Observations:
    """Merge and filter `data` for `space_group`, honouring SHELX instructions if given."""
    sym = space_group if isinstance(space_group, SymmetryOps) else SymmetryOps.from_space_group(space_group)
    require_xray(instructions, "the model", data.source)
    require_xray(data.instructions, "the data file", data.source)
    instr = instructions or data.instructions or RefinementInstructions()
    dropped: dict[str, int] = {}
    work = data
    if data.cell is None:
        raise ValueError("reflection data without a unit cell")
    # OMIT s 2theta: reflections beyond the limit are ignored on reading
    if instr.omit_2theta_max is not None and instr.omit_2theta_max < 180.0:
        wl = data.wavelength or 0.71073
        tt = two_theta(data.cell, work.hkl, wl)
        keep = np.isfinite(tt) & (tt <= instr.omit_2theta_max + 1e-9)
        dropped["omit_2theta"] = int((~keep).sum())
        work = work.subset(keep)
    if instr.merg == 0 or data.hklf == 5:
        friedel_merge = False
    else:
        friedel_merge = sym.centrosymmetric if friedel is None else friedel
    merged = merge(work, sym, friedel=friedel_merge, method=merge_method)  # type: ignore[arg-type]
    dropped["systematic_absences"] = merged.n_absences_removed
    keep = np.ones(merged.n, dtype=bool)
    if instr.shel is not None:
        dmax, dmin = instr.shel
        d = d_spacing(data.cell, merged.hkl)
        keep_shel = (d >= dmin - 1e-9) & (d <= dmax + 1e-9)
        dropped["shel"] = int((keep & ~keep_shel).sum())
        keep &= keep_shel
    if instr.omit_hkl:
        rots = sym.point_group_rotations()
        omit_keys = set(canonical_keys(np.array(instr.omit_hkl), rots, friedel_merge).tolist())
        mkeys = canonical_keys(merged.hkl, rots, friedel_merge)
        keep_omit = ~np.isin(mkeys, list(omit_keys))
        dropped["omit_hkl"] = int((keep & ~keep_omit).sum())
        keep &= keep_omit
    mdata = merged.to_reflection_data(data)
    mdata = mdata.subset(keep)
    merged_kept = MergedData(
        hkl=merged.hkl[keep],
        intensity=merged.intensity[keep],
        sigma=merged.sigma[keep],
        multiplicity=merged.multiplicity[keep],
        group=merged.group,
        r_int=merged.r_int,
        r_sigma=merged.r_sigma,
        n_absences_removed=merged.n_absences_removed,
        friedel_merged=friedel_merge,
    )
    return Observations(
        data=mdata, merged=merged_kept, friedel_merged=friedel_merge, n_input=data.n, dropped=dropped
    )


def to_resolution(data: ReflectionData, d_min: float | None, *, min_keep: int) -> ReflectionData:
    """The reflections with d ≥ `d_min`; `data` itself when there is no limit or cell,
    nothing would be cut, fewer than `min_keep` would remain, or for HKLF 5 (whose rows
    form overlap groups)."""
    if d_min is None or data.hklf == 5 or data.cell is None:
        return data
    keep = d_spacing(data.cell, data.hkl) >= d_min
    if keep.all() or keep.sum() < min_keep:
        return data
    return data.subset(keep)


def twin_operators(matrix: tuple[float, ...] | None, n: int | None) -> list[np.ndarray]:
    """Index transformations of the twin components (SHELXL TWIN semantics).

    Component k (k = 0..|n|-1) is M^k; a negative n adds the inverted components -M^k.
    """
    m = np.array(matrix if matrix is not None else INVERSION_TWIN, dtype=np.float64).reshape(3, 3)
    n = 2 if n is None else int(n)
    comps = []
    power = np.eye(3)
    for _ in range(abs(n)):
        comps.append(power.copy())
        power = power @ m
    if n < 0:
        comps += [-c for c in comps]
    return comps


def model_intensities(
    structure: Structure,
    hkl: np.ndarray,
    *,
    wavelength: float | None,
    instructions: RefinementInstructions | None = None,
    extinction: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> np.ndarray:
    """Fc² of `structure` at `hkl` with twin fractions (TWIN/BASF) and extinction (EXTI).

    Without TWIN the BASF list is ignored. `extinction` overrides the instructions' EXTI.
    """
    instr = instructions or RefinementInstructions()
    h = np.asarray(hkl, dtype=np.float64)
    comps = twin_operators(instr.twin_matrix, instr.twin_n) if instr.twin_n or instr.twin_matrix else [np.eye(3)]
    fractions = _twin_fractions(len(comps), instr.basf if len(comps) > 1 else [])
    total = np.zeros(len(h))
    for frac, op in zip(fractions, comps):
        if frac == 0:
            continue
        th = h @ op.T  # row vectors: h' = (M h)
        ih = np.rint(th)
        ok = np.all(np.abs(th - ih) < 1e-4, axis=1)
        fc2 = np.zeros(len(h))
        if ok.any():
            engine = StructureFactorEngine(
                ih[ok].astype(np.int64), structure.cell, structure.space_group, wavelength=wavelength, dtype=dtype
            )
            atoms = AtomTensors.from_structure(structure, symmetry=engine.symmetry, dtype=dtype)
            with torch.no_grad():
                fc2[ok] = engine.fc_squared(atoms).cpu().numpy()
        total += frac * fc2
    x = instr.exti if extinction is None else extinction
    if x:
        s = stol_of(structure.cell, np.asarray(hkl))
        total = total * extinction_factor(total, x, s, wavelength or 0.71073)
    return total


def _twin_fractions(n_components: int, basf: list[float]) -> list[float]:
    fr = list(basf[: max(n_components - 1, 0)])
    fr += [0.0] * (n_components - 1 - len(fr))
    return [1.0 - sum(fr)] + fr
