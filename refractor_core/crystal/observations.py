"""Turning measured reflections into the observations a refinement uses, as SHELXL does.

`prepare_observations` merges equivalents (Friedel mates only for centrosymmetric groups
unless told otherwise), removes systematic absences, and honours a published refinement's
instructions: the OMIT s 2θ limit (reflections beyond it are ignored), SHEL resolution
limits, and OMIT h k l records (the merged reflection and its equivalents are dropped).
`model_intensities` computes Fc² for a structure at those indices, including twin
components (TWIN/BASF) and SHELXL extinction.

HKLF 5 data (non-merohedral twins) are not merged: each overlap group is one observation,
its intensity and σ those of the group's last row, and Fc² the sum over its members of
the member's component fraction times |F|² at the member's own indices (`TwinIndices`).
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
class TwinIndices:
    """The indices at which each observation takes each twin component's |F|².

    Slot s holds, per observation, the indices `hkl[s]` (N, 3) where `ok[s]`, and adds
    fraction `component[s]` of |F|² there (component 0 is the main one, 1 - Σ BASF; BASF k
    is component k). A TWIN law has one slot per component; HKLF 5 data may put two
    members of one component into a group, and then have more slots than components.
    """

    hkl: list[np.ndarray]
    ok: list[np.ndarray]
    component: list[int]

    @property
    def n_components(self) -> int:
        return max(self.component) + 1 if self.component else 1

    @classmethod
    def from_twin_law(cls, hkl: np.ndarray, ops: list[np.ndarray]) -> "TwinIndices":
        """Component k of reflection h at M_k h (absent where that is not integral)."""
        h = np.asarray(hkl, dtype=np.float64).reshape(-1, 3)
        out = cls([], [], [])
        for k, op in enumerate(ops):
            th = h @ np.asarray(op, dtype=np.float64).reshape(3, 3).T  # row vectors: h' = (M h)
            ih = np.rint(th)
            out.hkl.append(ih.astype(np.int64))
            out.ok.append(np.all(np.abs(th - ih) < 1e-4, axis=1))
            out.component.append(k)
        return out

    def subset(self, mask: np.ndarray) -> "TwinIndices":
        return TwinIndices([h[mask] for h in self.hkl], [o[mask] for o in self.ok], list(self.component))


@dataclass
class Observations:
    """Merged, filtered observations ready for R factors or refinement."""

    data: ReflectionData  # merged reflections (F², σ) with the original metadata
    merged: MergedData
    friedel_merged: bool
    n_input: int
    dropped: dict[str, int] = field(default_factory=dict)
    #: HKLF 5 data: the members of each observation's overlap group (None otherwise; a
    #: TWIN law's components follow from the instructions, `TwinIndices.from_twin_law`)
    twin_indices: TwinIndices | None = None

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
    if data.hklf == 5:
        return _hklf5_observations(data, sym, instr)
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


def _hklf5_observations(data: ReflectionData, sym: SymmetryOps, instr: RefinementInstructions) -> Observations:
    """One observation per HKLF 5 overlap group (not merged): its last row's F² and σ, at
    the indices of its main-component member (or of its last member when it has none).
    SHEL and OMIT 2θ apply to those indices; groups whose members are all systematically
    absent are dropped."""
    if data.batch is None:
        raise InputError("HKLF 5 data without component numbers", path=data.source)
    batch = np.asarray(data.batch, dtype=np.int64)
    if np.any(batch == 0):
        raise InputError("HKLF 5 data: component number 0 (components are numbered from 1)", path=data.source)
    ends = np.nonzero(batch > 0)[0]
    if not len(ends) or ends[-1] != len(batch) - 1:
        raise InputError("HKLF 5 data: the last overlap group is not closed by a positive component number",
                         path=data.source)
    starts = np.concatenate([[0], ends[:-1] + 1])
    n = len(ends)
    component = np.abs(batch) - 1
    size = ends - starts + 1
    # slots: (component, its k-th member within the group)
    rank = np.zeros(len(batch), dtype=np.int64)
    for g in range(n):
        seen: dict[int, int] = {}
        for i in range(starts[g], ends[g] + 1):
            rank[i] = seen.get(int(component[i]), 0)
            seen[int(component[i])] = rank[i] + 1
    group = np.repeat(np.arange(n), size)
    slots = sorted(set(zip(component.tolist(), rank.tolist())))
    hkl = np.asarray(data.hkl, dtype=np.int64)
    twin = TwinIndices([], [], [])
    for comp, r in slots:
        rows = np.nonzero((component == comp) & (rank == r))[0]
        h = np.zeros((n, 3), dtype=np.int64)
        ok = np.zeros(n, dtype=bool)
        h[group[rows]] = hkl[rows]
        ok[group[rows]] = True
        twin.hkl.append(h)
        twin.ok.append(ok)
        twin.component.append(comp)
    main = next((s for s, (comp, r) in enumerate(slots) if comp == 0 and r == 0), None)
    rep = hkl[ends].copy()  # the last member's indices, or the main component's where it has one
    if main is not None:
        rep[twin.ok[main]] = twin.hkl[main][twin.ok[main]]
    dropped: dict[str, int] = {}
    keep = np.ones(n, dtype=bool)
    absent = np.ones(n, dtype=bool)
    for h, ok in zip(twin.hkl, twin.ok):
        absent &= ~ok | sym.is_absent(h)
    dropped["systematic_absences"] = int(absent.sum())
    keep &= ~absent
    if instr.omit_2theta_max is not None and instr.omit_2theta_max < 180.0:
        tt = two_theta(data.cell, rep, data.wavelength or 0.71073)
        inside = np.isfinite(tt) & (tt <= instr.omit_2theta_max + 1e-9)
        dropped["omit_2theta"] = int((keep & ~inside).sum())
        keep &= inside
    if instr.shel is not None:
        dmax, dmin = instr.shel
        d = d_spacing(data.cell, rep)
        inside = (d >= dmin - 1e-9) & (d <= dmax + 1e-9)
        dropped["shel"] = int((keep & ~inside).sum())
        keep &= inside
    intensity = np.asarray(data.intensity, dtype=np.float64)[ends][keep]
    sigma = np.asarray(data.sigma, dtype=np.float64)[ends][keep]
    merged = MergedData(
        hkl=rep[keep], intensity=intensity, sigma=sigma, multiplicity=size[keep],
        group=np.where(keep[group], np.cumsum(keep)[group] - 1, -1), r_int=float("nan"),
        r_sigma=float(np.sum(sigma) / max(np.sum(np.maximum(intensity, 0.0)), 1e-30)),
        n_absences_removed=dropped["systematic_absences"], friedel_merged=False,
    )
    return Observations(data=merged.to_reflection_data(data), merged=merged, friedel_merged=False,
                        n_input=data.n, dropped=dropped, twin_indices=twin.subset(keep))


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
    twin_indices: TwinIndices | None = None,
    dtype: torch.dtype = torch.float64,
) -> np.ndarray:
    """Fc² of `structure` at `hkl` with twin fractions (TWIN/BASF) and extinction (EXTI).

    Without TWIN (or HKLF 5 `twin_indices`, `Observations.twin_indices`) the BASF list is
    ignored. `extinction` overrides the instructions' EXTI.
    """
    instr = instructions or RefinementInstructions()
    h = np.asarray(hkl, dtype=np.float64)
    if twin_indices is None:
        ops = twin_operators(instr.twin_matrix, instr.twin_n) if instr.twin_n or instr.twin_matrix else [np.eye(3)]
        twin_indices = TwinIndices.from_twin_law(h, ops)
    n_comp = twin_indices.n_components
    fractions = _twin_fractions(n_comp, instr.basf if n_comp > 1 else [])
    total = np.zeros(len(h))
    for ih, ok, comp in zip(twin_indices.hkl, twin_indices.ok, twin_indices.component):
        frac = fractions[comp]
        if frac == 0:
            continue
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
