"""Centrosymmetry from the distribution of normalised structure factors |E|.

Random-atom theory: <|E²-1|> = 0.968 for centrosymmetric and 0.736 for
non-centrosymmetric structures (general reflections). The evidence is a bounded, monotone
function of the observed value x, times the probability that x comes from random-atom
statistics at all,

    LLR = clip((x - 0.852) / slope, -cap, cap) · n / (n + 50) · ρ(x),

    ρ(x) = r·q(x) / (r·q(x) + (1 - r)·u),   q = ½ N(x; 0.736, s_a²) + ½ N(x; 0.968, s_c²),

with s² = spread² + var(|E²-1|) / n and u a flat density over 0.2-1.8: a share 1 - r of
structures (atoms on special positions, rational coordinates, pseudo-symmetry) give values
far from both expectations -- hypercentric or below the acentric value -- which then say
nothing about the centre instead of voting for the nearer side. The evidence is further
halved when heavy atoms dominate the scattering, when there are few reflections, or when
the statistics look twinned, and cut further when the cell holds few atoms (the central
limit behind Wilson's distributions fails): the cases where E statistics mislead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from refractor_core.crystal.formula import parse_formula
from refractor_core.crystal.wilson import e_statistics

CENTRIC_VALUE = 0.968
ACENTRIC_VALUE = 0.736
MIDPOINT = 0.5 * (CENTRIC_VALUE + ACENTRIC_VALUE)
#: share of Σ Z² from one element above which the E statistics are flagged
HEAVY_ATOM_SHARE = 0.5
#: fewer general reflections than this: flagged
FEW_REFLECTIONS = 200
#: <|E²-1|> below this (under the acentric value): twinning or pseudo-symmetry suspected
TWIN_SUSPECT = 0.65
#: fewer atoms (H excluded) in the cell than this: Wilson statistics do not hold
FEW_ATOMS = 10
#: variance of |E²-1| of one reflection (acentric: E² exponential; centric: χ²₁)
SINGLE_VARIANCE = (1.0 - ACENTRIC_VALUE**2, 2.0 - CENTRIC_VALUE**2)
#: width of the range of <|E²-1|> over which non-random structures spread (flat density)
BROAD_WIDTH = 1.6


def random_atom_plausibility(x: float, n: int, spread: float, random_share: float) -> float:
    """ρ(x): probability that <|E²-1|> = x over n general reflections comes from random-atom
    (Wilson) statistics, centric or acentric, rather than from a non-random structure."""
    if random_share >= 1.0:
        return 1.0

    def normal(mu, var_one):
        var = spread**2 + var_one / max(n, 1)
        return math.exp(-0.5 * (x - mu) ** 2 / var) / math.sqrt(2.0 * math.pi * var)

    q = 0.5 * normal(ACENTRIC_VALUE, SINGLE_VARIANCE[0]) + 0.5 * normal(CENTRIC_VALUE, SINGLE_VARIANCE[1])
    return random_share * q / (random_share * q + (1.0 - random_share) / BROAD_WIDTH)


def atoms_in_cell(formula: str | None, z: float | None) -> float | None:
    """Non-hydrogen atoms in the cell from the formula and Z, or None."""
    if not formula or not z:
        return None
    try:
        counts = parse_formula(formula)
    except Exception:
        return None
    return float(z) * sum(n for el, n in counts.items() if el.upper() not in ("H", "D"))


@dataclass
class CentroEvidence:
    """E statistics of the general reflections and the centrosymmetry evidence from them."""

    stats: dict
    llr: float  # log p(centrosymmetric) - log p(non-centrosymmetric), already shrunk
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {**{k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.stats.items()}, "centro_llr": round(self.llr, 3)}


def heavy_atom_share(formula: str | None) -> tuple[str, float] | None:
    """(heaviest element, share of Σ Z² from atoms much heavier than average), or None.

    "Much heavier" means Z above twice the mean Z of the formula's atoms (H counted);
    a structure of light atoms has no heavy atoms and gives None.
    """
    if not formula:
        return None
    try:
        counts = parse_formula(formula)
    except Exception:
        return None
    import gemmi

    zs = {}
    for el, n in counts.items():
        try:
            zs[el] = (n, gemmi.Element(el).atomic_number)
        except Exception:
            continue
    n_atoms = sum(n for n, _ in zs.values())
    total = sum(n * z * z for n, z in zs.values())
    if n_atoms <= 0 or total <= 0:
        return None
    mean_z = sum(n * z for n, z in zs.values()) / n_atoms
    heavy = {el: (n, z) for el, (n, z) in zs.items() if z > 2.0 * mean_z}
    if not heavy:
        return None
    share = sum(n * z * z for n, z in heavy.values()) / total
    return max(heavy, key=lambda el: heavy[el][1]), share


def centrosymmetry_evidence(
    e: np.ndarray,
    *,
    formula: str | None = None,
    z: float | None = None,
    slope: float = 0.116,
    cap: float = 2.0,
    spread: float = 0.05,
    random_share: float = 0.9,
) -> CentroEvidence:
    """Evidence for a centre of symmetry from |E| of general (acentric-candidate) reflections."""
    stats = e_statistics(np.asarray(e, dtype=np.float64))
    x = stats["mean_abs_e2_minus_1"]
    n = stats["n"]
    warnings = []
    if not np.isfinite(x) or n < 10:
        return CentroEvidence(stats, 0.0, ["too few general reflections for E statistics"])
    rho = random_atom_plausibility(x, n, spread, random_share)
    stats["random_atom_plausibility"] = rho
    llr = float(np.clip((x - MIDPOINT) / slope, -cap, cap)) * n / (n + 50.0) * rho
    heavy = heavy_atom_share(formula)
    if heavy is not None and heavy[1] > HEAVY_ATOM_SHARE:
        warnings.append(
            f"heavy atoms ({heavy[0]}) give {100 * heavy[1]:.0f} % of the scattering: E statistics are "
            "biased (towards centric for special positions, hypercentric for centrosymmetric pairs)"
        )
    if n < FEW_REFLECTIONS:
        warnings.append(f"only {n} general reflections: E statistics are uncertain")
    if x < TWIN_SUSPECT or stats["mean_e4"] < 1.75:
        warnings.append(
            f"<|E²-1|> = {x:.3f} and <E⁴> = {stats['mean_e4']:.2f} are below acentric values: twinning or "
            "pseudo-symmetry suspected, centrosymmetry test unreliable"
        )
    n_atoms = atoms_in_cell(formula, z)
    if n_atoms is not None and n_atoms < FEW_ATOMS:
        warnings.append(
            f"only {n_atoms:.0f} non-H atoms in the cell: random-atom (Wilson) statistics do not hold, "
            "the centrosymmetry test says little"
        )
        llr *= 0.25
    if warnings:
        llr *= 0.5
    return CentroEvidence(stats, llr, warnings)
