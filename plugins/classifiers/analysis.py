"""The classical space-group analysis: lattice, Laue class, absences, centrosymmetry, priors.

    analyse(data, config) -> SpaceGroupAnalysis

1. Friedel-merge the reflections (P-1) and find the rotations the cell metric admits
   (`lattice.metric_symmetry`); every gemmi setting whose Laue rotations are among them is
   a candidate, in the axes of the data (no re-indexing).
2. Provisional lattice centring (so that the weak centring-forbidden reflections do not
   feed the agreement test with pairs of zeros), then the per-rotation agreement test and
   a log-likelihood per Laue group (`laue.py`).
3. For each Laue group within a window of the best: merge under it, R_int from the raw
   rows, absence likelihoods of all its settings (`absence_scoring.py`), E statistics
   of the general reflections for each centring (`centrosymmetry.py`, with the
   separation of centric and acentric expectations for the atoms of the formula), and
   the centricity of each family of zone and row reflections as each setting predicts
   it (`zones.py`: C2 against Cm, Cmc2₁ against Ama2 in the same axes, and the zones on
   top of the general reflections for Pna2₁ against Pnma).
4. P(G) = P(L) · P(G | L): the Laue group from the agreement of equivalents (and the prior
   mass of its space groups), the setting within it from absences, E statistics, zone
   centricity, Bijvoet differences and the prior; the weights are fitted on simulated
   data (`hypothesis_probabilities`, `benchmarks/spacegroup.py calibrate`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from refractor_core.crystal.cell import stol
from refractor_core.crystal.intensity_stats import expected_intensity
from refractor_core.crystal.lattice import (
    rotation_key,
    CENTRING_HALL,
    centring_statistics,
    centring_vectors,
    metric_symmetry,
    violates_centring,
)
from refractor_core.crystal.merging import merge_arrays
from refractor_core.crystal.spacegroup_tables import SettingInfo, compatible_settings, laue_label, preserves_centring
from refractor_core.crystal.orbits import orbit_keys
from refractor_core.crystal.symmetry import SymmetryOps
from refractor_core.crystal.wilson import normalized_e
from refractor_core.errors import InputError
from refractor_core.types import ReflectionData, SpaceGroupHypothesis

from .absence_scoring import (
    AbsenceEvidence,
    LaueMerged,
    _family_codes,
    centring_evidence,
    centring_key,
    merge_for_laue,
    raw_r_int,
    score_settings,
)
from .bijvoet import BijvoetEvidence, bijvoet_evidence, friedel_pairs
from .centrosymmetry import CentroEvidence, centrosymmetry_evidence
from .configs import AbsencesConfig
from .zones import zone_terms
from .laue import (
    MIN_SCALE_PAIRS,
    bijvoet_merge_group,
    error_scale,
    laue_log_likelihood,
    merge_group,
    score_operators,
    weak_operators,
)
from .priors import setting_log_shares, type_log_priors

SOURCE = "absences"
#: fewer unique reflections than this: the analysis refuses
MIN_REFLECTIONS = 20
#: evidence terms per candidate (see `hypothesis_probabilities`)
N_TERMS = 8
#: R_int from the raw rows is computed for this many of the best Laue groups
R_INT_GROUPS = 2
#: a provisional centring is applied to the agreement test when its evidence exceeds this
PROVISIONAL_CENTRING_LLR = 10.0


@dataclass
class SpaceGroupAnalysis:
    """Everything the classifier found; `hypotheses` is what `classify` returns."""

    hypotheses: list[SpaceGroupHypothesis]
    ambiguous: bool
    laue_groups: list[dict]
    operators: list[dict]
    centring: list[dict]
    warnings: list[str]
    notes: list[str]
    n_rows: int
    n_unique: int
    seconds: float
    #: every candidate scored: symbol, number, hall, probability and the four raw evidence
    #: terms (laue, absences, centro, log_prior) before weighting (for calibration)
    candidates: list[dict] = field(default_factory=list, repr=False)

    def as_dict(self, top: int | None = None) -> dict:
        hyps = self.hypotheses if top is None else self.hypotheses[:top]
        return {
            "hypotheses": [
                {
                    "symbol": h.space_group.symbol,
                    "number": h.space_group.number,
                    "hall": h.space_group.hall,
                    "probability": h.probability,
                    "evidence": h.evidence,
                }
                for h in hyps
            ],
            "ambiguous": self.ambiguous,
            "laue_groups": self.laue_groups,
            "operators": self.operators,
            "centring": self.centring,
            "warnings": self.warnings,
            "notes": self.notes,
            "n_rows": self.n_rows,
            "n_unique": self.n_unique,
            "seconds": round(self.seconds, 3),
        }


def _group_logsumexp(values: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    top = np.full(n, -np.inf)
    np.maximum.at(top, index, values)
    total = np.zeros(n)
    np.add.at(total, index, np.exp(values - top[index]))
    return top + np.log(total)


def hypothesis_probabilities(
    terms: np.ndarray, laue_index: np.ndarray, weights, robust: float = 0.0, temper: float = 0.05
) -> np.ndarray:
    """P(G) = P(L) · P(G | L) from the raw evidence terms of every candidate setting G.

    `terms` (n, 8): log-likelihood of the tested rotations of G's Laue group L, absence
    log-likelihood ratio, signed centrosymmetry evidence from E statistics, log prior of
    G's type, log share of G among its type's settings, number of L's rotations the data
    were merged with, signed centrosymmetry evidence from Bijvoet differences, zone-wise
    centricity evidence (`zones.py`); `laue_index` numbers the Laue groups; `weights`
    (w_laue, w_absences, w_centro, w_prior, w_merged, w_bijvoet, w_zones).

    P(L) ∝ exp(w_laue · LL_L + w_merged · n_merged) · Σ_{G in L} prior(G): the Laue group
    is decided by the agreement of equivalent reflections (and the prior mass of its
    space groups), not by how many absences its settings can explain. Within L,
    P(G | L) ∝ exp(w_absences · LLR_abs + w_centro · centro + w_bijvoet · bijvoet + w_zones · zones)
    · prior(G), with
    log prior(G) = w_prior · log P(type) + log P(setting | type).

    `robust` ε mixes in a tempered copy of the same ranking, p = (1 - ε) p_ev + ε q with
    q ∝ p_ev^temper: the share of data sets whose evidence misleads (pseudo-symmetry,
    structural extinctions), fitted with the weights. No hypothesis is then more certain
    than about 1 - ε, and the order of the hypotheses is kept.
    """
    t = np.asarray(terms, dtype=np.float64).reshape(-1, N_TERMS)
    idx = np.asarray(laue_index, dtype=np.int64)
    w_laue, w_abs, w_centro, w_prior, w_merged, w_bijvoet, w_zones = weights
    n = int(idx.max()) + 1 if len(idx) else 0
    log_prior = w_prior * t[:, 3] + t[:, 4]
    within = w_abs * t[:, 1] + w_centro * t[:, 2] + w_bijvoet * t[:, 6] + w_zones * t[:, 7] + log_prior
    log_g_given_l = within - _group_logsumexp(within, idx, n)[idx]
    laue_score = np.zeros(n)
    laue_score[idx] = w_laue * t[:, 0] + w_merged * t[:, 5]
    score_l = laue_score + _group_logsumexp(log_prior, idx, n)
    log_l = score_l - np.logaddexp.reduce(score_l)
    p = np.exp(log_l[idx] + log_g_given_l)
    if robust > 0.0:
        log_q = temper * np.log(np.maximum(p, 1e-300))
        q = np.exp(log_q - np.logaddexp.reduce(log_q))
        p = (1.0 - robust) * p + robust * q
    return p


def _enantiomorph(g: SettingInfo):
    """The enantiomorphic space group of a setting (P4₃2₁2 for P4₁2₁2), None for the others."""
    if g.centrosymmetric:
        return None
    from refractor_core.crystal.spacegroup_tables import inverted_setting

    _, mirror = inverted_setting(g.ref())
    return mirror if mirror.number != g.number else None


def centring_letter(vectors: np.ndarray) -> str:
    """The lattice type (P, A, B, C, I, F, R, R(rev)) with these centring vectors."""
    key = {tuple(np.round(v % 1.0, 6)) for v in np.asarray(vectors).reshape(-1, 3)}
    for kind in CENTRING_HALL:
        if {tuple(np.round(v % 1.0, 6)) for v in centring_vectors(kind)} == key:
            return kind
    return "?"


def _provisional_centring(hkl, vectors: dict, evidence: dict) -> tuple[np.ndarray | None, str]:
    """The lattice centring to assume before the Laue test, or None (primitive/unclear).

    A centring none of whose forbidden reflections is in the file (integration programs do
    not integrate them) is taken first, the most restrictive one; otherwise the centring
    whose forbidden reflections are clearly absent by their intensities.
    """
    removed = [(len(v), k) for k, v in vectors.items() if len(v) > 1 and evidence[k].n_observed == 0]
    if removed and len(hkl) >= 50:
        key = max(removed)[1]
        return vectors[key], "none of its forbidden reflections is in the file"
    kept = [(evidence[k].llr_kept, k) for k, v in vectors.items() if len(v) > 1]
    if kept:
        llr, key = max(kept)
        if llr > PROVISIONAL_CENTRING_LLR:
            return vectors[key], f"centring evidence {llr:.0f}"
    return None, ""


def _representative(settings: list[SettingInfo]) -> SettingInfo:
    """A centrosymmetric setting (P lattice preferred) of a Laue group, for ε."""
    ranked = sorted(settings, key=lambda s: (not s.centrosymmetric, s.n_centring, not s.is_reference))
    return ranked[0]


def analyse(data: ReflectionData, config: AbsencesConfig | None = None) -> SpaceGroupAnalysis:
    """Rank the space-group settings compatible with the data's cell (see the module doc)."""
    cfg = config or AbsencesConfig()
    t0 = time.perf_counter()
    if data.cell is None:
        raise InputError(
            "space-group determination needs the unit cell",
            path=data.source,
            hint="give --cell A B C ALPHA BETA GAMMA, or an .ins/.p4p/.cif beside the data",
        )
    cell = data.cell
    warnings: list[str] = []
    notes: list[str] = []
    keep = np.any(data.hkl != 0, axis=1)
    hkl_raw = data.hkl[keep].astype(np.int64)
    i_raw, s_raw = data.intensity[keep], data.sigma[keep]
    if data.hklf == 5:
        warnings.append("HKLF 5 data: twin components are treated as one lattice")

    # 1. Friedel-merged data, normalised intensities
    p1 = SymmetryOps.from_space_group("P 1")
    u1 = merge_arrays(hkl_raw, i_raw, s_raw, p1, friedel=True, method="gaussian", remove_absences=False)
    if u1.n < MIN_REFLECTIONS:
        raise InputError(
            f"only {u1.n} unique reflections: too few to determine the space group", path=data.source
        )
    u1_hkl = u1.hkl.astype(np.int64)
    u1_sig = np.maximum(u1.sigma, 1e-12)
    s2_u1 = stol(cell, u1_hkl) ** 2

    # 2. lattice centring (one evidence per centring for every candidate), then the
    # per-rotation agreement test on the reflections the most likely centring allows
    metric_rots = metric_symmetry(cell, cfg.metric_tolerance)
    settings = compatible_settings(metric_rots)
    vectors: dict[bytes, np.ndarray] = {}
    for s in settings:
        vectors.setdefault(centring_key(s.centring_vectors), s.centring_vectors)
    u1_kkeys = orbit_keys(u1_hkl, metric_rots)
    cen_ev = centring_evidence(
        u1_hkl,
        u1.intensity,
        u1_sig,
        cell,
        metric_rots,
        u1_kkeys,
        vectors,
        leak=cfg.absent_leak,
        outlier_fraction=cfg.absent_outlier_fraction,
        weak_share=cfg.weak_class_share,
    )
    prov_vectors, prov_reason = _provisional_centring(u1_hkl, vectors, cen_ev)
    use = np.ones(u1.n, dtype=bool)
    lattice_rots = metric_rots
    if prov_vectors is not None:
        use = ~violates_centring(u1_hkl, prov_vectors)
        letter = centring_letter(prov_vectors)
        notes.append(f"{letter} lattice assumed for the Laue test ({prov_reason})")
        # rotations of the metric that are not symmetries of the centred lattice (the
        # 6-fold of an R lattice in hexagonal axes) cannot belong to its Laue group
        lattice_rots = np.array([r for r in metric_rots if preserves_centring(r, prov_vectors)])
        if len(lattice_rots) < len(metric_rots):
            settings = compatible_settings(lattice_rots)
            notes.append(f"{len(metric_rots) - len(lattice_rots)} rotations of the cell metric are not symmetries of the {letter} lattice")
    sigma0 = expected_intensity(s2_u1[use], u1.intensity[use])
    k_scale, n_scale = error_scale(hkl_raw, i_raw, s_raw)
    d_u1 = 0.5 / np.sqrt(np.maximum(s2_u1, 1e-30))
    sphere = 4.0 * math.pi / 3.0 * (d_u1.min() ** -3 - d_u1.max() ** -3) * cell.volume / 2.0
    coverage = float(min(1.0, u1.n / max(sphere, 1.0)))
    laue_candidates = {s.laue_key: s.laue_rotations for s in settings}
    merged_with = merge_group(u1_hkl[use], list(laue_candidates.values()))
    # merged under a point group's rotations with the Bijvoet mates kept apart (the usual
    # merged file of a non-centrosymmetric crystal): Friedel-merging pairs them up, so only
    # the file's own rows show it; the larger of the two groups found is the one
    raw_use = np.ones(len(hkl_raw), dtype=bool) if prov_vectors is None else ~violates_centring(hkl_raw, prov_vectors)
    acentric_pgs = {rotation_key(s.point_group): (s.point_group, s.laue_rotations) for s in settings if not s.centrosymmetric}
    friedel_order = 2 * (1 if merged_with is None else len(merged_with))
    bijvoet_merged = bijvoet_merge_group(hkl_raw[raw_use], list(acentric_pgs.values()), min_order=friedel_order)
    if bijvoet_merged is not None and (merged_with is None or len(bijvoet_merged) > len(merged_with)):
        merged_with = bijvoet_merged
    if merged_with is not None:
        notes.append(f"the file holds one reflection per orbit of the Laue group {laue_label(rotation_key(merged_with))}: merged with it")
    ops = score_operators(
        u1_hkl[use],
        u1.intensity[use],
        u1_sig[use],
        u1.intensity[use] / sigma0,
        s2_u1[use],
        lattice_rots,
        scale=k_scale,
        # without repeated measurements or Friedel mates the error scale is unknown (and
        # anomalous differences between kept Bijvoet mates cannot be measured): wider
        systematic_width=cfg.op_systematic_width if n_scale >= MIN_SCALE_PAIRS else cfg.op_unscaled_width,
        outlier_fraction=cfg.op_outlier_fraction,
        centring=prov_vectors,
        coverage=coverage,
        merge_group=merged_with,
    )
    if n_scale >= MIN_SCALE_PAIRS:
        notes.append(f"repeated measurements and Friedel mates scatter {k_scale:.2f} times their σ ({n_scale} pairs)")
    if merged_with is None and any(o.status == "merged" for o in ops):
        names = ", ".join(o.name for o in ops if o.status == "merged")
        notes.append(f"no equivalents under {names} in the file: data merged with them?")

    groups: dict[frozenset, list[SettingInfo]] = {}
    for s in settings:
        groups.setdefault(s.laue_key, []).append(s)
    laue_eval = {k: laue_log_likelihood(v[0].laue_rotations, ops) for k, v in groups.items()}
    laue_ll = {k: v[0] for k, v in laue_eval.items()}
    laue_merged = {k: v[1] for k, v in laue_eval.items()}
    laue_score = {k: cfg.w_laue * laue_ll[k] + cfg.w_merged * laue_merged[k] for k in groups}
    best_ll = max(laue_score.values())
    window = [k for k in groups if best_ll - laue_score[k] <= cfg.laue_window]

    # 3. per Laue group: merge, absences, E statistics, zone centricity, Bijvoet differences
    pairs = friedel_pairs(hkl_raw, i_raw, s_raw)
    candidates: list[tuple[SettingInfo, AbsenceEvidence, CentroEvidence, LaueMerged, frozenset]] = []
    zone_term: dict[int, float] = {}
    bijvoet: dict[frozenset, BijvoetEvidence] = {}
    laue_rows = []
    for key in sorted(window, key=lambda k: -laue_score[k]):
        members = groups[key]
        rep = _representative(members)
        ld = merge_for_laue(u1_hkl, u1.intensity, u1_sig, u1_kkeys, rep.laue_rotations, metric_rots, rep, cell)
        if len(laue_rows) < R_INT_GROUPS:
            ld.r_int = raw_r_int(ld, hkl_raw, i_raw, s_raw)
        abs_ev = score_settings(
            ld,
            members,
            cen_ev,
            leak=cfg.absent_leak,
            outlier_fraction=cfg.absent_outlier_fraction,
            removed_prior=cfg.removed_absences_prior,
            weak_share=cfg.weak_class_share,
        )
        general = _family_codes(pairs.hkl, rep.laue_rotations) == 0
        bijvoet[key] = bijvoet_evidence(
            pairs, general, cell, data.formula, data.wavelength, twin_share=cfg.bijvoet_twin_share, cap=cfg.bijvoet_cap
        )
        centro_cache: dict[bytes, CentroEvidence] = {}
        if cfg.w_zones > 0 or cfg.zones_always:
            zt = zone_terms(
                ld, members, data, slope=cfg.centro_slope, cap=cfg.centro_cap,
                spread=cfg.centro_spread, random_share=cfg.centro_random_share,
            )
        else:
            zt = [0.0] * len(members)
        zone_term.update({id(g): z_g for g, z_g in zip(members, zt)})
        for g, ev in zip(members, abs_ev):
            ckey = np.round(g.centring_vectors, 6).tobytes()
            if ckey not in centro_cache:
                centro_cache[ckey] = _centro_for(ld, g, data, cfg)
            candidates.append((g, ev, centro_cache[ckey], ld, key))
        laue_rows.append(
            {
                "laue": laue_label(key),
                "llr": round(laue_ll[key], 3),
                "n_merged": laue_merged[key],
                "r_int": None if ld.r_int is None else round(ld.r_int, 4),
                "n_unique": int(len(ld.hkl)),
                "n_settings": len(members),
            }
        )
    for key in sorted(set(groups) - set(window), key=lambda k: -laue_score[k]):
        laue_rows.append(
            {
                "laue": laue_label(key),
                "llr": round(laue_ll[key], 3),
                "n_merged": laue_merged[key],
                "r_int": None,
                "n_unique": None,
                "n_settings": len(groups[key]),
            }
        )

    # 4. probabilities: P(Laue group) x P(setting | Laue group)
    g_list = [c[0] for c in candidates]
    type_prior = type_log_priors(g_list) if cfg.use_priors else [0.0] * len(g_list)
    share = setting_log_shares(g_list)
    terms = []
    laue_keys = []
    for (g, ev, ce, ld, key), lp, ls in zip(candidates, type_prior, share):
        sign = 0.5 if g.centrosymmetric else -0.5
        terms.append((laue_ll[key], ev.llr, sign * ce.llr, lp, ls, laue_merged[key], sign * bijvoet[key].llr, zone_term[id(g)]))
        laue_keys.append(key)
    t = np.array(terms, dtype=np.float64).reshape(-1, N_TERMS)
    index = {k: i for i, k in enumerate(dict.fromkeys(laue_keys))}
    laue_index = np.array([index[k] for k in laue_keys], dtype=np.int64)
    prob = hypothesis_probabilities(
        t,
        laue_index,
        (cfg.w_laue, cfg.w_absences, cfg.w_centro, cfg.w_prior, cfg.w_merged, cfg.w_bijvoet, cfg.w_zones),
        cfg.robust,
        cfg.robust_temper,
    )
    scores = np.log(np.maximum(prob, 1e-300))
    order = np.argsort(-prob, kind="stable")

    hypotheses = []
    top_p = prob[order[0]]
    runner = [i for i in order[1:] if prob[i] >= cfg.ambiguity_ratio * top_p]
    ambiguous = bool(runner)
    ambiguous_with = [g_list[i].symbol for i in runner]
    for rank, i in enumerate(order):
        if rank >= cfg.max_hypotheses or (rank > 0 and prob[i] < cfg.min_probability):
            break
        g, ev, ce, ld, key = candidates[i]
        evidence = {
            "laue": laue_label(key),
            "laue_llr": round(float(laue_ll[key]), 3),
            "laue_merged_rotations": int(laue_merged[key]),
            "r_int": None if ld.r_int is None else round(float(ld.r_int), 4),
            "centring": centring_letter(g.centring_vectors),
            **ev.as_dict(),
            "centrosymmetric": g.centrosymmetric,
            "centro_term": round(float(t[i, 2]), 3),
            "e_statistics": ce.as_dict(),
            "bijvoet_term": round(float(t[i, 6]), 3),
            "bijvoet": bijvoet[key].as_dict(),
            "zone_term": round(float(t[i, 7]), 3),
            "prior": float(math.exp(t[i, 3] + t[i, 4])),
            "log_probability": round(float(scores[i]), 3),
        }
        if rank == 0:
            evidence["ambiguous"] = ambiguous
            evidence["ambiguous_with"] = ambiguous_with
        hypotheses.append(
            SpaceGroupHypothesis(space_group=g.ref(), probability=float(prob[i]), evidence=evidence, source=SOURCE)
        )

    # warnings about the top hypothesis
    g0, ev0, ce0, ld0, key0 = candidates[order[0]]
    weak = weak_operators(g0.laue_rotations, ops)
    if weak:
        warnings.append(
            "Laue group "
            + laue_label(key0)
            + " includes rotations the data support only weakly: "
            + ", ".join(f"{o.name} (agreement {o.agreement:.2f})" if np.isfinite(o.agreement) else f"{o.name} (untested)" for o in weak)
        )
    warnings.extend(ce0.warnings)
    stats = centring_statistics(u1_hkl, u1.intensity, u1_sig)
    rev = next(s for s in stats if s.kind == "R(rev)")
    obv = next(s for s in stats if s.kind == "R")
    if rev.n_violating and obv.n_violating and rev.mean_i_over_sigma_violating < 1.0 < obv.mean_i_over_sigma_violating:
        warnings.append("the data look rhombohedral in the reverse setting: re-index (-h,-k,l) to use R settings")
    if ambiguous:
        warnings.append("ambiguous: " + ", ".join([g0.symbol] + ambiguous_with) + " are not separable from these data")
        mirror = _enantiomorph(g0)
        if mirror is not None and mirror.number in {g_list[i].number for i in runner}:
            warnings.append(
                f"{g0.symbol} and {mirror.symbol} are enantiomorphs: a structure and its mirror image give the "
                "same intensities, so only a refined model's Flack parameter can choose (the lsq refiner inverts "
                "a model of the wrong hand)"
            )
    return SpaceGroupAnalysis(
        hypotheses=hypotheses,
        ambiguous=ambiguous,
        laue_groups=laue_rows,
        operators=[o.as_dict() for o in ops],
        centring=[s.as_dict() for s in stats],
        warnings=warnings,
        notes=notes,
        n_rows=int(len(hkl_raw)),
        n_unique=int(u1.n),
        seconds=time.perf_counter() - t0,
        candidates=[
            {
                "symbol": g_list[i].symbol,
                "number": g_list[i].number,
                "hall": g_list[i].hall,
                "probability": float(prob[i]),
                "laue": laue_label(laue_keys[i]),
                "laue_index": int(laue_index[i]),
                "terms": [float(x) for x in t[i]],
            }
            for i in order
        ],
    )


def _centro_for(ld: LaueMerged, g: SettingInfo, data: ReflectionData, cfg: AbsencesConfig) -> CentroEvidence:
    """E statistics of the general reflections G's centring allows, and their evidence.

    Only general reflections (fixed by no rotation of the Laue group) are normalised and
    counted: zones and rows hold the absences and the centric reflections.
    """
    use = ~violates_centring(ld.hkl, g.centring_vectors) & (ld.family == 0)
    if use.sum() < 20:
        return CentroEvidence({"n": int(use.sum())}, 0.0, ["too few general reflections for E statistics"])
    sub = ReflectionData(
        hkl=ld.hkl[use],
        intensity=ld.intensity[use],
        sigma=ld.sigma[use],
        cell=ld.cell,
        formula=data.formula,
        z=data.z,
    )
    try:
        e = normalized_e(sub, ld.symmetry)
    except Exception:  # unusable formula: fall back to the volume-based composition
        e = normalized_e(sub.model_copy(update={"formula": None, "z": None}), ld.symmetry)
    return centrosymmetry_evidence(
        e,
        formula=data.formula,
        z=data.z,
        slope=cfg.centro_slope,
        cap=cfg.centro_cap,
        spread=cfg.centro_spread,
        random_share=cfg.centro_random_share,
        n_centring=len(g.centring_vectors),
        laue_order=2 * len(g.laue_rotations),
    )
