"""Prior probabilities of space groups: how often each type occurs in published structures.

Source and caveat: approximate, rounded frequencies (percent of entries) of space-group
types as published in the Cambridge Structural Database's yearly space-group statistics
(organic and metal-organic structures: P2₁/c ≈ 34 %, P-1 ≈ 25 %, C2/c ≈ 8 %, P2₁2₁2₁ ≈ 7 %,
P2₁ ≈ 5 %, Pbca ≈ 3.4 %, ...) and in surveys of the Inorganic Crystal Structure Database
(e.g. Urusov & Nadezhina, J. Struct. Chem. 50 (2009) S22; Pnma, P2₁/c, Fm-3m, P6₃/mmc,
C2/m, R-3m lead). The numbers below were transcribed by hand to two significant figures
at most; they are meant as a sensible prior, not as an authoritative copy of either
database. Types not listed get a small floor. The mixture weights the small-molecule
(CSD) figures 0.85 and the inorganic ones 0.15.

Within a type, the prior is shared among the settings compatible with the cell (see
`setting_log_shares`): the reference setting and P 1 21/n 1 (as common in practice as
P 1 21/c 1) weigh most.
"""

from __future__ import annotations

import math
from collections import defaultdict
from functools import lru_cache

#: approximate CSD shares (percent) of space-group types
CSD_PERCENT: dict[int, float] = {
    14: 34.5, 2: 25.5, 15: 7.9, 19: 6.8, 4: 5.2, 61: 3.4, 33: 1.4, 62: 1.1, 1: 1.0, 9: 1.0,
    5: 0.65, 60: 0.6, 18: 0.45, 29: 0.45, 12: 0.45, 11: 0.4, 56: 0.35, 148: 0.35, 13: 0.3,
    43: 0.25, 88: 0.25, 146: 0.15, 114: 0.15, 96: 0.14, 64: 0.13, 36: 0.12, 92: 0.1, 152: 0.1,
    154: 0.1, 167: 0.1, 45: 0.1, 20: 0.1, 41: 0.1, 63: 0.1, 169: 0.08, 170: 0.08, 52: 0.08,
    57: 0.08, 86: 0.08, 7: 0.08, 147: 0.08, 161: 0.08, 85: 0.07, 82: 0.06, 173: 0.06, 8: 0.05,
    31: 0.05, 54: 0.05, 58: 0.05, 59: 0.05, 76: 0.05, 78: 0.05, 122: 0.05, 176: 0.05, 198: 0.05,
    205: 0.05, 26: 0.04, 70: 0.04, 144: 0.04, 145: 0.04, 155: 0.04, 165: 0.04, 3: 0.03,
    32: 0.03, 34: 0.03, 40: 0.03, 72: 0.03, 87: 0.03, 113: 0.03, 130: 0.03, 142: 0.03,
    159: 0.03, 163: 0.03, 166: 0.03, 206: 0.03, 6: 0.02, 10: 0.02, 17: 0.02, 65: 0.02,
    74: 0.02, 80: 0.02, 90: 0.02, 110: 0.02, 121: 0.02, 126: 0.02, 137: 0.02, 150: 0.02,
    182: 0.02, 185: 0.02, 194: 0.02, 199: 0.02, 220: 0.02, 225: 0.02, 227: 0.02, 212: 0.01,
    213: 0.01, 218: 0.01, 230: 0.01,
}

#: approximate ICSD shares (percent) of space-group types (inorganic structures)
ICSD_PERCENT: dict[int, float] = {
    62: 7.5, 14: 6.5, 225: 5.0, 194: 4.5, 12: 4.0, 166: 3.8, 15: 3.5, 2: 3.5, 139: 3.2,
    227: 3.0, 221: 2.8, 63: 2.6, 191: 2.0, 216: 1.6, 164: 1.5, 129: 1.2, 140: 1.1, 148: 1.1,
    11: 0.9, 71: 0.9, 186: 0.9, 167: 0.9, 136: 0.8, 141: 0.8, 176: 0.6, 187: 0.6, 189: 0.6,
    65: 0.6, 74: 0.6, 123: 0.6, 59: 0.5, 36: 0.5, 61: 0.5, 19: 0.5, 60: 0.5, 64: 0.5, 55: 0.5,
    58: 0.5, 33: 0.4, 229: 0.4, 4: 0.4, 9: 0.4, 88: 0.4, 160: 0.4, 161: 0.4, 173: 0.4,
    1: 0.3, 5: 0.3, 8: 0.3, 13: 0.3, 70: 0.3, 87: 0.3, 147: 0.3, 152: 0.3, 163: 0.3,
    193: 0.3, 198: 0.3, 204: 0.3, 205: 0.3, 206: 0.3, 220: 0.3, 223: 0.3, 57: 0.2, 121: 0.2,
    122: 0.2, 150: 0.2, 154: 0.2, 155: 0.2, 156: 0.2, 159: 0.2, 162: 0.2, 165: 0.2, 174: 0.2,
    180: 0.2, 185: 0.2, 190: 0.2, 217: 0.2, 230: 0.2, 119: 0.1, 157: 0.1, 181: 0.1, 182: 0.1,
    215: 0.1, 224: 0.1, 226: 0.1,
}

CSD_WEIGHT = 0.85
#: share (percent) given to a type listed in neither table
FLOOR_PERCENT = 0.005
#: settings as common as the ITA reference setting of their type
COMMON_SETTINGS = frozenset({"P 1 21/n 1"})
NONSTANDARD_WEIGHT = 0.1
OTHER_CENTRING_WEIGHT = 0.03


@lru_cache(maxsize=1)
def type_priors() -> dict[int, float]:
    """Prior probability of each of the 230 space-group types (sums to 1)."""
    csd_total = sum(CSD_PERCENT.values())
    icsd_total = sum(ICSD_PERCENT.values())
    raw = {}
    for n in range(1, 231):
        p = CSD_WEIGHT * CSD_PERCENT.get(n, 0.0) / csd_total + (1 - CSD_WEIGHT) * ICSD_PERCENT.get(n, 0.0) / icsd_total
        raw[n] = max(p, FLOOR_PERCENT / 100.0)
    total = sum(raw.values())
    return {n: p / total for n, p in raw.items()}


def setting_log_shares(settings) -> list[float]:
    """log P(setting | type) among the settings in `settings` (SettingInfo list).

    The reference setting and the common alternatives (`COMMON_SETTINGS`) weigh 1, other
    settings with the reference setting's lattice centring 0.1, settings with another
    centring (other cell choices, centred triclinic cells) 0.03: published data use the
    standard settings far more often.
    """
    from refractor_core.crystal.spacegroup_tables import reference_setting

    weights = []
    for s in settings:
        if s.is_reference or s.symbol in COMMON_SETTINGS:
            w = 1.0
        elif s.centring == reference_setting(s.number).centring:
            w = NONSTANDARD_WEIGHT
        else:
            w = OTHER_CENTRING_WEIGHT
        weights.append(w)
    per_type: dict[int, float] = defaultdict(float)
    for s, w in zip(settings, weights):
        per_type[s.number] += w
    return [math.log(w / per_type[s.number]) for s, w in zip(settings, weights)]


def type_log_priors(settings) -> list[float]:
    """log P(type) of each setting's space-group type."""
    types = type_priors()
    return [math.log(types[s.number]) for s in settings]
