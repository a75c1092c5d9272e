"""The Flack parameter of a refined non-centrosymmetric model, and its inversion.

With enough measured Friedel pairs, Parsons' quotients are used (Parsons, Flack & Wagner,
Acta Cryst. B69 (2013) 249): Q = (I⁺ - I⁻)/(I⁺ + I⁻) is compared with the model's
(1 - 2x)·(A⁺ - A⁻)/(A⁺ + A⁻), which cancels most scale and absorption errors. Otherwise x
is fitted to all intensities as an inversion-twin fraction, Fo² ≈ k y [(1 - x) Fc²(h) +
x Fc²(-h)], jointly with every parameter of the model for one Gauss-Newton step: without
Friedel pairs, x is carried by the anomalous scatterers' positions along a polar axis as
much as by the hand, and an x fitted with the model held gets an su that ignores it (0.65(2)
from one start and 0.12(2) from another 0.02 Å away, on a one-hemisphere Pca2₁ data set).
A model twinned by a TWIN matrix is compared with its mirror image twinned the same way.

A model of the wrong hand (x significantly above one half) is inverted
(`inverted_structure`): every atom goes to c - x, an inversion through c/2 chosen so that it
maps the space group onto itself, or, for the eleven enantiomorphic pairs, into the
enantiomorphic group (P4₁2₁2 -> P4₃2₁2), as a crystallographer does with SHELXL's MOVE 1 1 1 -1
(and a new space group where needed). Symmetry operators the instructions name (EQIV) are
rewritten for the mirror image.
"""

from __future__ import annotations

import math

import numpy as np

from refractor_core.crystal.merging import friedel_pairs

from .least_squares import solve_damped
from .model import WorkingModel

MIN_PAIRS = 20
#: a model is inverted when its Flack x exceeds 1/2 by more than this many s.u.
INVERT_MARGIN = 2.0
#: a Flack x this many s.u. and at least INTERMEDIATE_MIN above 0 and below 1 is reported
#: (an inversion twin?); below a few per cent, x is within what absorption and the
#: underestimated su of x leave uncertain
INTERMEDIATE_MARGIN = 3.0
INTERMEDIATE_MIN = 0.05


def wrong_hand(flack: float | None, flack_su: float | None) -> bool:
    """True when the Flack parameter says the model is the mirror image of the crystal's
    structure: x - INVERT_MARGIN·su > 1/2 (an inversion twin near 1/2 is not inverted)."""
    if flack is None or flack_su is None or not (math.isfinite(flack) and math.isfinite(flack_su)):
        return False
    return flack - INVERT_MARGIN * flack_su > 0.5


def intermediate_flack(flack: float | None, flack_su: float | None) -> bool:
    """True when the Flack parameter is significantly above 0 and below 1 (by
    INTERMEDIATE_MARGIN su and INTERMEDIATE_MIN each): neither hand alone fits, the sign of
    an inversion twin or of a missed centre of symmetry."""
    if flack is None or flack_su is None or not (math.isfinite(flack) and math.isfinite(flack_su)):
        return False
    margin = max(INTERMEDIATE_MARGIN * flack_su, INTERMEDIATE_MIN)
    return flack - margin > 0.0 and flack + margin < 1.0


def inverted_structure(structure, instructions=None):
    """(the mirror image of `structure`, its instructions with EQIV operators rewritten).

    Atoms go to c - x (U unchanged); the space group stays or becomes its enantiomorph
    (`spacegroup_tables.inverted_setting`).
    """
    from refractor_core.crystal.spacegroup_tables import inverted_operator, inverted_setting

    c, group = inverted_setting(structure.space_group)
    sites = [s.model_copy(update={"xyz": tuple(float(v) for v in c - np.asarray(s.xyz, dtype=np.float64))})
             for s in structure.sites]
    out = structure.model_copy(update={"sites": sites, "space_group": group})
    if instructions is None or not instructions.restraints:
        return out, instructions

    def flip(ref):
        return ref if ref.symop is None else ref.model_copy(update={"symop": inverted_operator(ref.symop, c)})

    restraints = [r.model_copy(update={"atoms": [flip(a) for a in r.atoms], "reference": [flip(a) for a in r.reference]})
                  for r in instructions.restraints]
    return out, instructions.model_copy(update={"restraints": restraints})


def flack_estimate(refinement, model: WorkingModel) -> tuple[float, float, str] | None:
    """(x, su, how it was found, for the CIF) or None when the data cannot say (no
    anomalous signal, too few data).

    A twinned model (TWIN matrix) is compared with its mirror image twinned the same way:
    A(h) = Σ_j f_j F²(R_j h) against B(h) = Σ_j f_j F²(-R_j h), the twin fractions held.
    """
    calc = refinement.calc
    ops = [np.asarray(op, dtype=np.float64) for op in model.twin_ops]
    # (2k, N): F²(R_j h), then F²(-R_j h)
    fc2 = calc.with_twin_ops([*ops, *(-op for op in ops)]).fc2_components(model)
    fractions = calc.twin_fractions(model)
    a, b = fractions @ fc2[: len(ops)], fractions @ fc2[len(ops):]
    if not np.any(np.abs(a - b) > 1e-6 * np.maximum(a, 1e-12)):
        return None
    est = _parsons(refinement.fo2, refinement.sigma, friedel_pairs(calc.hkl, model.symmetry), a, b)
    if est is not None:
        x, su, n = est
        details = (f"Flack x from the quotients (I+ - I-)/(I+ + I-) of {n} Friedel pairs (Parsons, Flack & "
                   "Wagner, Acta Cryst. B69 (2013) 249)")
    else:
        est = _joint(refinement, model, a, b)
        if est is None:
            return None
        x, su = est
        details = ("no Friedel pairs: Flack x fitted to all intensities as an inversion-twin fraction, jointly "
                   "with every refined parameter (Flack, Acta Cryst. A39 (1983) 876)")
    if not (math.isfinite(x) and math.isfinite(su)):
        return None
    return x, su, details


def _parsons(fo2, sigma, pairs: tuple[np.ndarray, np.ndarray], a, b) -> tuple[float, float, int] | None:
    """(x, su, quotients used) from the Friedel pairs (indices (i, j): h_j ≡ -h_i)."""
    ip, im = pairs
    if len(ip) < MIN_PAIRS:
        return None
    i1, i2, s1, s2 = fo2[ip], fo2[im], sigma[ip], sigma[im]
    tot = i1 + i2
    ok = (tot > 0) & (i1 > 0) & (i2 > 0)
    if ok.sum() < MIN_PAIRS:
        return None
    i1, i2, s1, s2, tot = i1[ok], i2[ok], s1[ok], s2[ok], tot[ok]
    qo = (i1 - i2) / tot
    sq = 2.0 * np.sqrt((i2 * s1) ** 2 + (i1 * s2) ** 2) / tot**2
    # model intensities of h and -h: A(h) = F²(h), and for -h it is F²(-h) = b of row ip
    ap, bp = a[ip][ok], b[ip][ok]
    qc = (ap - bp) / np.maximum(ap + bp, 1e-12)
    w = 1.0 / np.maximum(sq, 1e-12) ** 2
    den = 2.0 * np.sum(w * qc * qc)
    if den <= 0:
        return None
    x = float(np.sum(w * qc * (qc - qo)) / den)
    resid = qo - qc * (1.0 - 2.0 * x)
    chi2 = float(np.sum(w * resid**2)) / max(len(qo) - 1, 1)
    su = math.sqrt(1.0 / (2.0 * den)) * math.sqrt(max(chi2, 1.0))
    return x, su, len(qo)


def _joint(refinement, model: WorkingModel, a, b) -> tuple[float, float] | None:
    """x fitted to all intensities as an inversion-twin fraction together with every
    refined parameter (one Gauss-Newton step from x = 0, restraints included): x and its su
    from the Schur complement of the other parameters in the normal matrix."""
    calc, driver = refinement.calc, refinement.driver
    params = driver.build_parameters(model)
    w = driver.weights(model)
    m, _ = calc.model_intensities(model)
    d = model.scale * calc.extinction(model, a) * (b - a)  # dM/dx at x = 0
    dd = float(np.sum(w * d * d))
    if dd <= 0:
        return None
    ne, _ = driver._restrained_normal_equations(params, w, None, single=True, extra=d[:, None])
    cross = ne.extra_rhs[:, 0]  # Jᵀ W d
    try:
        solved = solve_damped(ne.matrix, np.stack([ne.rhs, cross], axis=1), 0.0)
    except np.linalg.LinAlgError:
        return None
    schur = dd - float(cross @ solved[:, 1])
    if not schur > 1e-12 * dd:
        return None
    x = (float(np.sum(w * d * (refinement.fo2 - m))) - float(cross @ solved[:, 0])) / schur
    s2 = ne.chi2 / max(driver.su_count(len(refinement.fo2)) - params.n - 1, 1)
    return x, math.sqrt(s2 / schur)
