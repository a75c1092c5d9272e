"""Lattice centring and systematic absences as one likelihood per space-group setting.

Each observed unique reflection h is, under a setting G, either

- present: its intensity follows Wilson's distribution (a 50/50 centric/acentric mixture,
  so that this test does not pre-empt the centrosymmetry test) with mean
  Σ(h) = ε(h)·<I/ε> of the reflections G allows at that resolution, convolved with the
  measurement error σ; or
- absent: its true intensity is zero (80 %) or a small leak (κ·Σ: multiple diffraction,
  λ/2, neighbouring peaks), measured with σ; a small share are outliers.

LLR_kept(G) = Σ_h w_h [log p(I_h | G) - log p(I_h | P lattice, no absences)].

"Present" is judged per class of reflections, not per reflection: heavy atoms on special
positions or a pseudo-symmetric arrangement make a whole class (say h+k odd, or 0k0 with k
odd) systematically weak -- a few percent of Σ, but measured -- without any space-group
operation behind it. Per reflection the absent model's small leak explains such values
better than Wilson's density at the full Σ, so every weak reflection would vote for the
glide or centring. So a class is present with all its reflections at Σ, or (prior share
`weak_share`) all at one common fraction κΣ (κ from 0.03 to 0.5), and the absent model
must beat that. The classes are the reflections no candidate tells apart (the same
absence signature over all candidates), so every candidate's absent set is a union of
whole classes and the candidates are compared on the same likelihood.

The centring term is computed once, on the Friedel-merged data, for every candidate; the
zone and row terms on the data merged under G's Laue group. Every term is counted per
orbit of the *metric holohedry* (weight w_h = 1 / number of the reflections used that fall
in h's orbit under all rotations the cell admits), so that hypotheses of different Laue
groups are judged on the same number of independent observations: a lower Laue group
splits an orbit into several reflections, which must not multiply its evidence.

Many files carry no absent reflections at all: the processing removed them (or the file is
a merged, absence-free list). So a second explanation is weighed: the absent reflections of
G were removed. It is possible only if none is in the file; its extra evidence is the
improbability of all of them missing by chance, judged against the completeness of the
reflections G allows *in the same zone or row* (a blind region along an axis removes both
kinds and then proves nothing):

    LLR(G) = LLR_kept(G) + log(π_kept + π_removed · exp(bonus))   if no absent h is observed
    LLR(G) = LLR_kept(G) + log π_kept                            otherwise,

separately for the centring-forbidden reflections (integration programs often never
integrate them) and for the zone and row absences (often measured, sometimes removed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from refractor_core.crystal.cell import reciprocal_metric, stol
from refractor_core.crystal.intensity_stats import (
    expected_intensity,
    log_acentric_density,
    log_present_density,
)
from refractor_core.crystal.lattice import violates_centring
from refractor_core.crystal.merging import merge_arrays
from refractor_core.crystal.spacegroup_tables import SettingInfo
from refractor_core.crystal.orbits import orbit_keys, orbit_representatives
from refractor_core.crystal.symmetry import SymmetryOps, hkl_keys, keys_to_hkl
from refractor_core.types import UnitCell

#: a missing absent reflection counts at most log(1 / (1 - this)) nats for "removed"
MAX_LOCAL_COMPLETENESS = 0.98
#: grid points per chunk when enumerating the limiting sphere
_CHUNK = 400_000
_IDENTITY = np.eye(3, dtype=np.int64)[None]
_P1 = SymmetryOps.from_space_group("P 1")


def missing_reflections(
    hkl: np.ndarray, rotations: np.ndarray, cell: UnitCell, d_range: tuple[float, float]
) -> np.ndarray:
    """Reflections (canonical under `rotations` with Friedel mates) with d in `d_range`
    that `hkl` lacks, (M, 3)."""
    d_min, d_max = d_range
    lim = (int(math.floor(cell.a / d_min)), int(math.floor(cell.b / d_min)), int(math.floor(cell.c / d_min)))
    gs = reciprocal_metric(cell)
    q_hi = 1.0 / d_min**2 * (1 + 1e-9)
    q_lo = 1.0 / d_max**2 * (1 - 1e-9)
    have = np.unique(orbit_keys(np.asarray(hkl, dtype=np.int64), rotations))
    hs = np.arange(0, lim[0] + 1)  # Friedel: the h >= 0 half is enough before canonicalising
    ks = np.arange(-lim[1], lim[1] + 1)
    ls = np.arange(-lim[2], lim[2] + 1)
    per_h = len(ks) * len(ls)
    step = max(1, _CHUNK // max(per_h, 1))
    found = []
    for start in range(0, len(hs), step):
        hh = hs[start : start + step]
        grid = np.stack(np.meshgrid(hh, ks, ls, indexing="ij"), axis=-1).reshape(-1, 3)
        q = np.einsum("ni,ij,nj->n", grid.astype(np.float64), gs, grid.astype(np.float64))
        grid = grid[(q <= q_hi) & (q >= q_lo)]
        if not len(grid):
            continue
        keys = orbit_keys(grid, rotations)
        found.append(np.unique(keys[keys == hkl_keys(grid)]))
    if not found:
        return np.zeros((0, 3), dtype=np.int64)
    expected = np.unique(np.concatenate(found))
    return keys_to_hkl(expected[~np.isin(expected, have)])


def _family_codes(hkl: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """Bit mask per reflection: which non-identity rotations fix it, and which reverse it
    (two bits per rotation; 0: general). A row along a rotation axis (h R = h) and the zone
    perpendicular to it (h R = -h) are different families: they lie in different regions of
    reciprocal space, so a blind region can empty one and not the other."""
    h = np.asarray(hkl, dtype=np.int64)
    code = np.zeros(len(h), dtype=np.int64)
    bit = 0
    eye = np.eye(3, dtype=np.int64)
    for r in rotations:
        if np.array_equal(r, eye):
            continue
        hr = h @ r
        code |= np.all(hr == h, axis=1).astype(np.int64) << bit
        code |= np.all(hr == -h, axis=1).astype(np.int64) << (bit + 1)
        bit += 2
    return code


@dataclass
class LaueMerged:
    """Reflections merged under one candidate Laue group, with what the tests need."""

    rotations: np.ndarray  # proper rotations of the Laue group
    holohedry: np.ndarray  # proper rotations the cell metric admits (orbit weights)
    symmetry: SymmetryOps  # a centrosymmetric setting with these rotations (ε)
    cell: UnitCell
    hkl: np.ndarray
    intensity: np.ndarray
    sigma: np.ndarray
    s2: np.ndarray
    eps: np.ndarray
    family: np.ndarray  # int64 bit mask: which rotations fix or reverse h (0: general)
    holohedry_keys: np.ndarray  # canonical key of each reflection's orbit under the holohedry
    d_range: tuple[float, float]
    r_int: float | None = None  # from the raw rows; None: not computed or nothing to merge
    _missing: tuple | None = field(default=None, repr=False)

    @property
    def special(self) -> np.ndarray:
        return self.family != 0

    @property
    def weights(self) -> np.ndarray:
        """1 / (merged reflections in the same holohedry orbit), per merged reflection."""
        _, inv, counts = np.unique(self.holohedry_keys, return_inverse=True, return_counts=True)
        return 1.0 / counts[inv]

    def missing(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unique reflections (canonical under L) inside the data's resolution range that
        the file lacks: (hkl (M, 3), family (M,), orbit weight (M,)), the weights counting
        observed and missing reflections of an orbit together."""
        if self._missing is None:
            mis = missing_reflections(self.hkl, self.rotations, self.cell, self.d_range)
            k_mis = orbit_keys(mis, self.holohedry)
            allk = np.concatenate([self.holohedry_keys, k_mis])
            _, inv, counts = np.unique(allk, return_inverse=True, return_counts=True)
            w_mis = 1.0 / counts[inv[len(self.holohedry_keys) :]]
            self._missing = (mis, _family_codes(mis, self.rotations), w_mis)
        return self._missing


def merge_for_laue(
    u1_hkl: np.ndarray,
    u1_intensity: np.ndarray,
    u1_sigma: np.ndarray,
    u1_holohedry_keys: np.ndarray,
    rotations: np.ndarray,
    holohedry: np.ndarray,
    representative: SettingInfo,
    cell: UnitCell,
) -> LaueMerged:
    """Merge Friedel-merged data (u1, with their holohedry-orbit keys) under a Laue group.

    `representative` is a centrosymmetric setting of the Laue group (its ε is the Laue ε).
    """
    sym = SymmetryOps.from_space_group(representative.gemmi())
    merged = merge_in_orbits(u1_hkl, u1_intensity, u1_sigma, rotations, method="gaussian")
    keys = np.zeros(merged.n, dtype=np.int64)
    keys[merged.group] = u1_holohedry_keys  # every member of an L-orbit is in one K-orbit
    s = stol(cell, merged.hkl)
    d = 0.5 / np.maximum(s, 1e-12)
    return LaueMerged(
        rotations=np.asarray(rotations, dtype=np.int64),
        holohedry=np.asarray(holohedry, dtype=np.int64),
        symmetry=sym,
        cell=cell,
        hkl=merged.hkl.astype(np.int64),
        intensity=merged.intensity,
        sigma=np.maximum(merged.sigma, 1e-12),
        s2=s**2,
        eps=sym.epsilon(merged.hkl).astype(np.float64),
        family=_family_codes(merged.hkl, rotations),
        holohedry_keys=keys,
        d_range=(float(d.min()), float(d.max())),
    )


def merge_in_orbits(hkl, intensity, sigma, rotations, *, method: str = "shelx"):
    """`merge_arrays` under the rotations (and Friedel pairing) of a Laue group.

    Each index is first replaced by its orbit representative (`orbits.orbit_representatives`,
    one matrix product), so the kernel's merge only has to pair identical indices.
    """
    rep = orbit_representatives(hkl, rotations)
    return merge_arrays(rep, intensity, sigma, _P1, friedel=True, method=method, remove_absences=False)


def raw_r_int(ld: LaueMerged, raw_hkl: np.ndarray, raw_intensity: np.ndarray, raw_sigma: np.ndarray) -> float | None:
    """R_int of the raw rows merged under the Laue group (None: nothing measured twice)."""
    raw = merge_in_orbits(raw_hkl, raw_intensity, raw_sigma, ld.rotations)
    return raw.r_int if bool(np.any(raw.multiplicity > 1)) else None


@dataclass
class AbsenceEvidence:
    """What the observed (and missing) reflections say about one setting's absences."""

    llr: float
    llr_kept: float
    centring_llr: float
    removed_bonus: float | None
    n_absent_observed: int
    n_absent_missing: int | None
    n_violations: int  # observed absent reflections with I > 3σ
    worst_i_over_sigma: float
    mean_i_over_sigma: float

    def as_dict(self) -> dict:
        def r(x):
            return None if x is None or not np.isfinite(x) else round(float(x), 3)

        return {
            "absences_llr": r(self.llr),
            "absences_llr_kept": r(self.llr_kept),
            "centring_llr": r(self.centring_llr),
            "removed_absences_bonus": r(self.removed_bonus),
            "n_absent_checked": self.n_absent_observed,
            "n_absent_missing": self.n_absent_missing,
            "n_absent_violations": self.n_violations,
            "worst_absent_i_over_sigma": r(self.worst_i_over_sigma),
            "mean_absent_i_over_sigma": r(self.mean_i_over_sigma),
        }


@dataclass
class CentringEvidence:
    """What the Friedel-merged data say about one lattice centring (against P)."""

    llr_kept: float  # intensity evidence, absences kept in the file
    n_observed: int  # centring-forbidden reflections present in the file


#: share of absent reflections given a small true intensity (the rest are exactly zero)
LEAK_SHARE = 0.2
#: mean intensities (fractions of Σ) of a reflection class that is present but
#: systematically weak -- atoms on special positions or a pseudo-symmetric arrangement
#: extinguish it in part, not by a space-group operation -- with equal prior weight
WEAK_SCALES = np.array([0.03, 0.06, 0.12, 0.25, 0.5])


def _weak_log_densities(i, s, sig_present) -> np.ndarray:
    """log p(I) of each reflection for each `WEAK_SCALES` fraction of Σ, (K, n)."""
    return np.stack([log_present_density(i, s, k * sig_present) for k in WEAK_SCALES]) if len(i) else np.zeros((len(WEAK_SCALES), 0))


def signature_classes(absent: np.ndarray) -> np.ndarray:
    """Class id of each reflection from its absence signature, (n,): `absent` (H, n) says
    which of H hypotheses make each reflection absent; reflections no hypothesis tells apart
    form one class, so every hypothesis's absent set is a union of whole classes."""
    absent = np.asarray(absent, dtype=bool)
    if absent.shape[1] == 0:
        return np.zeros(0, dtype=np.int64)
    packed = np.packbits(absent, axis=0)
    return np.unique(packed.T, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)


def classes_present_log_likelihood(ids: np.ndarray, lp_full: np.ndarray, lp_weak: np.ndarray, weak_share: float) -> float:
    """Σ over the classes `ids` of log p(class | present): all the class's reflections at
    the local mean Σ, or (prior share `weak_share`) all at one common fraction κΣ of it,
    κ from `WEAK_SCALES`. `lp_full` (n,) and `lp_weak` (K, n): weighted log densities."""
    if not len(ids):
        return 0.0
    if weak_share <= 0.0:
        return float(np.sum(lp_full))
    _, inv = np.unique(ids, return_inverse=True)
    full = np.bincount(inv, weights=lp_full)
    weak = np.stack([np.bincount(inv, weights=row) for row in lp_weak])
    weak = np.logaddexp.reduce(weak, axis=0) - math.log(len(WEAK_SCALES))
    return float(np.logaddexp(math.log1p(-weak_share) + full, math.log(weak_share) + weak).sum())


def _log_absent(i, s, sig_present, leak: float, outlier: float, lp_present) -> np.ndarray:
    """log p(I) of an absent reflection: mostly exactly zero, a share (`LEAK_SHARE`) a small
    leak (κΣ), both measured with σ; plus a small share of arbitrary outliers.

    A class of reflections that are weak but clearly not zero (pseudo-centring, heavy atoms
    on special positions) is weighed against it by `classes_present_log_likelihood`."""
    zero = -0.5 * (i / s) ** 2 - np.log(s) - 0.5 * math.log(2.0 * math.pi)
    la = np.logaddexp(math.log1p(-LEAK_SHARE) + zero, math.log(LEAK_SHARE) + log_acentric_density(i, s, leak * sig_present))
    if outlier <= 0:
        return la
    return np.logaddexp(math.log1p(-outlier) + la, math.log(outlier) + lp_present)


def centring_key(vectors: np.ndarray) -> bytes:
    """Hashable key of a set of centring vectors."""
    return np.round(np.asarray(vectors, dtype=np.float64), 6).tobytes()


def centring_evidence(
    hkl: np.ndarray,
    intensity: np.ndarray,
    sigma: np.ndarray,
    cell: UnitCell,
    holohedry: np.ndarray,
    holohedry_keys: np.ndarray,
    vectors_by_key: dict[bytes, np.ndarray],
    *,
    leak: float = 0.02,
    outlier_fraction: float = 0.01,
    weak_share: float = 0.0,
) -> dict[bytes, CentringEvidence]:
    """Evidence of each centring (keyed by `centring_key`) from Friedel-merged data.

    The intensity part only (absences kept in the file), computed once on the same
    reflections for every candidate; the evidence from centring-forbidden reflections
    missing from the file is judged per Laue group (`score_settings`).
    """
    h = np.asarray(hkl, dtype=np.int64)
    s2 = stol(cell, h) ** 2
    base_sigma = expected_intensity(s2, intensity)
    lp_base = log_present_density(intensity, sigma, base_sigma)
    _, inv, counts = np.unique(holohedry_keys, return_inverse=True, return_counts=True)
    w_obs = 1.0 / counts[inv]
    viol_by_key = {key: violates_centring(h, vecs) for key, vecs in vectors_by_key.items() if len(vecs) > 1}
    if weak_share > 0 and viol_by_key:
        classes = signature_classes(np.array(list(viol_by_key.values())))
        w_lp_weak = _weak_log_densities(intensity, sigma, base_sigma) * w_obs
    out = {}
    for key, vecs in vectors_by_key.items():
        if len(vecs) <= 1:
            out[key] = CentringEvidence(0.0, 0)
            continue
        viol = viol_by_key[key]
        ok = ~viol
        if viol.any() and ok.sum() >= 2:
            sig_c = expected_intensity(s2[ok], intensity[ok], at_s2=s2)
            lp_p = log_present_density(intensity, sigma, sig_c)
            lp_a = _log_absent(intensity[viol], sigma[viol], sig_c[viol], leak, outlier_fraction, lp_p[viol])
            wv = w_obs[viol]
            if weak_share > 0:
                present = classes_present_log_likelihood(classes[viol], wv * lp_base[viol], w_lp_weak[:, viol], weak_share)
            else:
                present = float((wv * lp_base[viol]).sum())
            kept = float((wv * lp_a).sum() - present + (w_obs[ok] * (lp_p[ok] - lp_base[ok])).sum())
        else:
            kept = 0.0
        out[key] = CentringEvidence(kept, int(viol.sum()))
    return out


def score_settings(
    ld: LaueMerged,
    settings: list[SettingInfo],
    centring: dict[bytes, CentringEvidence],
    *,
    leak: float = 0.02,
    outlier_fraction: float = 0.01,
    removed_prior: float = 0.4,
    weak_share: float = 0.0,
) -> list[AbsenceEvidence]:
    """Absence evidence of each setting of Laue group `ld`, relative to a P lattice without
    absences: the centring term (shared, from `centring_evidence`) plus the zone and row
    absences judged on the reflections merged under the Laue group."""
    i_obs, sig = ld.intensity, ld.sigma
    sp_idx = np.nonzero(ld.special)[0]
    w = ld.weights
    z = i_obs / sig
    log_kept = math.log1p(-removed_prior)
    log_removed = math.log(removed_prior)
    zone_cache: dict[bytes, tuple] = {}
    bonus_cache: dict[bytes, tuple[float, int]] = {}
    classes = np.full(len(ld.hkl), -1, dtype=np.int64)
    if weak_share > 0 and len(sp_idx):
        classes[sp_idx] = signature_classes(np.array([g.is_absent(ld.hkl[sp_idx]) for g in settings]))
    out = []
    for g in settings:
        ckey = centring_key(g.centring_vectors)
        cen = centring[ckey]
        if ckey not in zone_cache:
            viol = violates_centring(ld.hkl, g.centring_vectors)
            ok = ~viol
            sp_ok = sp_idx[ok[sp_idx]]
            if len(sp_ok):
                sig_c = expected_intensity(ld.s2[ok], i_obs[ok], ld.eps[ok], at_s2=ld.s2[sp_ok], at_epsilon=ld.eps[sp_ok])
                lp_p = log_present_density(i_obs[sp_ok], sig[sp_ok], sig_c)
                lp_a = _log_absent(i_obs[sp_ok], sig[sp_ok], sig_c, leak, outlier_fraction, lp_p)
                lp_w = _weak_log_densities(i_obs[sp_ok], sig[sp_ok], sig_c) * w[sp_ok] if weak_share > 0 else None
            else:
                lp_p = lp_a = np.zeros(0)
                lp_w = None
            zone_cache[ckey] = (sp_ok, w[sp_ok] * lp_a, w[sp_ok] * lp_p, lp_w, viol)
        sp_ok, wlp_a, wlp_p, wlp_weak, viol = zone_cache[ckey]
        zone = g.is_absent(ld.hkl[sp_ok]) if len(sp_ok) else np.zeros(0, dtype=bool)
        if wlp_weak is None:
            zone_llr = float((wlp_a[zone] - wlp_p[zone]).sum())
        else:
            zone_llr = float(wlp_a[zone].sum()) - classes_present_log_likelihood(
                classes[sp_ok][zone], wlp_p[zone], wlp_weak[:, zone], weak_share
            )
        kept = cen.llr_kept + zone_llr
        absent = viol.copy()
        absent[sp_ok[zone]] = True
        za = z[absent]
        n_zone = int(zone.sum())
        # centring-forbidden reflections are often never integrated while zone absences
        # are measured: the two removals are judged separately
        cen_bonus, n_cen_missing = 0.0, 0
        if cen.n_observed == 0:
            if ckey not in bonus_cache:
                bonus_cache[ckey] = _centring_removed_bonus(ld, g.centring_vectors)
            cen_bonus, n_cen_missing = bonus_cache[ckey]
            cen_part = float(np.logaddexp(log_kept, log_removed + cen_bonus))
        else:
            cen_part = log_kept
        zone_bonus, n_zone_missing = (0.0, 0)
        if n_zone == 0:
            zone_bonus, n_zone_missing = _removed_bonus(ld, g)
            zone_part = float(np.logaddexp(log_kept, log_removed + zone_bonus))
        else:
            zone_part = log_kept
        llr = kept + cen_part + zone_part
        bonus = None
        if cen.n_observed == 0 or n_zone == 0:
            bonus = cen_bonus + zone_bonus
        n_missing = n_cen_missing + n_zone_missing
        out.append(
            AbsenceEvidence(
                llr=llr,
                llr_kept=kept,
                centring_llr=cen.llr_kept,
                removed_bonus=bonus,
                n_absent_observed=int(absent.sum()),
                n_absent_missing=n_missing,
                n_violations=int((za > 3.0).sum()),
                worst_i_over_sigma=float(za.max()) if len(za) else float("nan"),
                mean_i_over_sigma=float(za.mean()) if len(za) else float("nan"),
            )
        )
    return out


def _removed_bonus(ld: LaueMerged, g: SettingInfo) -> tuple[float, int]:
    """log(1/P(all of G's zone and row absences missing by chance)), local completeness.

    Centring-forbidden reflections are left to `centring_evidence`.
    """
    mis_hkl, mis_fam, mis_w = ld.missing()
    special = mis_fam != 0
    if not special.any():
        return 0.0, 0
    mis_hkl, mis_fam, mis_w = mis_hkl[special], mis_fam[special], mis_w[special]
    mis_allowed = ~violates_centring(mis_hkl, g.centring_vectors)
    absent_mis = g.is_absent(mis_hkl) & mis_allowed
    n_abs = int(absent_mis.sum())
    if n_abs == 0:
        return 0.0, 0
    allowed_obs = ~violates_centring(ld.hkl, g.centring_vectors)
    bonus = 0.0
    for f in np.unique(mis_fam[absent_mis]):
        n_obs_f = int(((ld.family == f) & allowed_obs).sum())
        n_mis_allowed_f = int(((mis_fam == f) & ~absent_mis & mis_allowed).sum())
        c = (n_obs_f + 1.0) / (n_obs_f + n_mis_allowed_f + 2.0)
        sel = absent_mis & (mis_fam == f)
        bonus += float(mis_w[sel].sum()) * -math.log1p(-min(c, MAX_LOCAL_COMPLETENESS))
    return bonus, n_abs


def _centring_removed_bonus(ld: LaueMerged, vectors: np.ndarray) -> tuple[float, int]:
    """log(1/P(all centring-forbidden reflections missing by chance)), judged on the
    reflections merged under the Laue group against the completeness of the allowed ones
    in the same family (general reflections, zones, rows)."""
    if len(vectors) <= 1:
        return 0.0, 0
    mis_hkl, mis_fam, mis_w = ld.missing()
    if not len(mis_hkl):
        return 0.0, 0
    mis_viol = violates_centring(mis_hkl, vectors)
    n_viol = int(mis_viol.sum())
    if n_viol == 0:
        return 0.0, 0
    obs_allowed = ~violates_centring(ld.hkl, vectors)
    bonus = 0.0
    for f in np.unique(mis_fam[mis_viol]):
        n_obs_f = int(((ld.family == f) & obs_allowed).sum())
        n_mis_f = int(((mis_fam == f) & ~mis_viol).sum())
        c = (n_obs_f + 1.0) / (n_obs_f + n_mis_f + 2.0)
        sel = mis_viol & (mis_fam == f)
        bonus += float(mis_w[sel].sum()) * -math.log1p(-min(c, MAX_LOCAL_COMPLETENESS))
    return bonus, n_viol
