"""Zone-wise centricity: which reflection zones and rows are centric in each candidate.

In a non-centrosymmetric point group some special reflections are still centric: those
that an operation of the point group sends to their Friedel mate (h R = -h; the zone h0l
perpendicular to the 2-fold axis of P2₁, the zone hk0 of Pna2₁ whose 2₁ axis runs along
c), while the others keep acentric statistics (h0l in the mirror plane of Pm). A
centrosymmetric group makes every reflection centric. Candidates of one Laue group and
one lattice centring thus predict different distributions of |E| for each family of
special reflections (`absence_scoring._family_codes`: the rotations that fix or reverse
h), and the observed distribution of each family tells them apart: C2 from Cm, Ama2 from
Cmc2₁ in the same axes, and adds the zones to the general reflections in telling Pna2₁
from Pnma.

Per family f of special reflections, with E² normalised over the family itself (so that
the ε of the candidate does not matter) and x_f = <|E²-1|>, the value

    v_f = clip((x_f - 0.852) / slope, -cap, cap) · n_f / (n_f + 50)

times ρ(x_f), the probability that x_f comes from random-atom statistics at all
(`centrosymmetry.random_atom_plausibility`: atoms on special positions make zones and
rows hypercentric or flat), is positive for centric-looking and negative for
acentric-looking families, and a
candidate G collects Σ_f ±½ v_f (+ where f is centric in G). Only reflections that no
candidate of the Laue group and centring requires to be absent are used, so that every
candidate is judged on the same reflections. The weight of this term is fitted with the
others (`AbsencesConfig.w_zones`).
"""

from __future__ import annotations

import numpy as np

from refractor_core.crystal.lattice import violates_centring
from refractor_core.crystal.spacegroup_tables import SettingInfo
from refractor_core.crystal.wilson import normalized_e
from refractor_core.types import ReflectionData

from .absence_scoring import LaueMerged
from .centrosymmetry import MIDPOINT, random_atom_plausibility

#: a family needs this many reflections to count
MIN_FAMILY = 10


def centric_in(point_group: np.ndarray, hkl: np.ndarray) -> np.ndarray:
    """Reflections that some operation of the point group sends to their Friedel mate."""
    h = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
    out = np.zeros(len(h), dtype=bool)
    for r in np.asarray(point_group, dtype=np.int64):
        out |= np.all(h @ r == -h, axis=1)
    return out


def family_values(
    e: np.ndarray, family: np.ndarray, slope: float, cap: float, spread: float = 0.05, random_share: float = 0.9
) -> dict[int, float]:
    """v_f of each family of special reflections (see the module doc)."""
    out: dict[int, float] = {}
    for f in np.unique(family):
        if f == 0:
            continue
        sel = family == f
        n = int(sel.sum())
        if n < MIN_FAMILY:
            continue
        e2 = e[sel] ** 2
        mean = float(e2.mean())
        if mean <= 0:
            continue
        x = float(np.mean(np.abs(e2 / mean - 1.0)))
        rho = random_atom_plausibility(x, n, spread, random_share)
        out[int(f)] = float(np.clip((x - MIDPOINT) / slope, -cap, cap)) * n / (n + 50.0) * rho
    return out


def zone_terms(
    ld: LaueMerged,
    members: list[SettingInfo],
    data: ReflectionData,
    *,
    slope: float,
    cap: float,
    spread: float = 0.05,
    random_share: float = 0.9,
) -> list[float]:
    """Σ_f ±½ v_f for each candidate setting in `members` (all of one Laue group)."""
    terms = [0.0] * len(members)
    by_centring: dict[bytes, list[int]] = {}
    for i, g in enumerate(members):
        by_centring.setdefault(np.round(g.centring_vectors, 6).tobytes(), []).append(i)
    for idx in by_centring.values():
        vectors = members[idx[0]].centring_vectors
        use = ld.special & ~violates_centring(ld.hkl, vectors)
        if use.sum() < MIN_FAMILY:
            continue
        for i in idx:
            use &= ~members[i].is_absent(ld.hkl)
        if use.sum() < MIN_FAMILY:
            continue
        sub = ReflectionData(
            hkl=ld.hkl[use], intensity=ld.intensity[use], sigma=ld.sigma[use], cell=ld.cell,
            formula=data.formula, z=data.z,
        )
        try:
            e = normalized_e(sub, ld.symmetry)
        except Exception:  # unusable formula: the volume-based composition
            e = normalized_e(sub.model_copy(update={"formula": None, "z": None}), ld.symmetry)
        family = ld.family[use]
        values = family_values(e, family, slope, cap, spread, random_share)
        if not values:
            continue
        first = {f: int(np.argmax(family == f)) for f in values}
        reps = ld.hkl[use][[first[f] for f in values]]
        for i in idx:
            centric = centric_in(members[i].point_group, reps)
            terms[i] = float(sum(v * (0.5 if c else -0.5) for v, c in zip(values.values(), centric)))
    return terms
