"""Difference-Fourier model completion: add missing atoms, drop spurious ones, fix elements.

A round (isotropic model, no H) does, in order:

1. *Scattering power of each site*: positions and U fixed (U at the median of the model),
   one free occupancy per atom; occupancy × Z estimates the electrons at the site.
2. *Spurious atoms* are dropped: sites with almost no electrons (< 2.5 e), a refined
   U_iso above 0.2 Å², or closer than 0.85 Å to a stronger site.
3. *Elements* are assigned from the formula, count-constrained: sites sorted by their
   electron estimate take the formula's elements heaviest first; an atom changes element
   only when its estimate is closer to the new element's Z (a too-small U on a C says it
   is heavier, a huge U says lighter or wrong).
4. *Missing atoms* come from difference-map peaks (symmetry-unique, ≥ 4σ of the map and
   ≥ 1 e/Å³, 1.1-3.3 Å from an atom, ≥ 1.0 Å from all atoms), as many as the formula
   still lacks, as the most plentiful missing element. An atom on a special position of
   order k counts 1/k of an asymmetric-unit atom, so the formula can lack one that small
   (a B on a 32 site of R32 is 1/6).
5. A few isotropic least-squares cycles.

Rounds stop when nothing changes, the formula is complete, or the cycle budget is used.
Then an atom that scatters far less than its element while a difference peak is left
is tried at that peak, and stays when the fit improves (`relocate_weak_atoms`).
"""

from __future__ import annotations

import math

import numpy as np

from refractor_core.crystal.cell import orthogonalization_matrix
from refractor_core.crystal.formula import atomic_number

from .maps import difference_peaks
from .model import WorkingModel, is_hydrogen
from .parameters import Parameterisation
from .significance import data_fit

ROUND_CYCLES = 6
MIN_ELECTRONS = 2.5
MAX_U = 0.2
#: electrons by which a site must fit another element better before it is reassigned
REASSIGN_MARGIN = 2.0
#: evidence, in reassignment margins, on which an element change is made even where it
#: overfills its new element
CLEAR_EVIDENCE = 2.0
MIN_DISTANCE = 0.85
PEAK_SIGMA = 4.0
PEAK_MIN = 1.0
BOND_MIN, BOND_MAX = 1.1, 3.3
#: an atom scattering less than this fraction of its element's electrons (as the model's
#: atoms do in the median) may be misplaced
WEAK_FRACTION = 0.7
#: relative drop of the weighted χ² that moving such an atom to a difference peak must bring
RELOCATION_GAIN = 0.01
MAX_RELOCATIONS = 2
RELOCATION_TRIALS = 3


def difference_peaks_and_holes(refinement, model: WorkingModel, max_peaks: int = 10) -> tuple[float, float, list[dict]]:
    """Highest peak, deepest hole (e/Å³) and the strongest peaks with their nearest atom."""
    rho, peaks = difference_peaks(refinement, model, max_peaks=max_peaks)
    out = []
    for p in peaks:
        j, d = nearest_atom(model, p.xyz)
        out.append({"xyz": [float(v) for v in p.xyz], "height": float(p.height),
                    "nearest": model.labels[j] if j >= 0 else None, "distance": float(d)})
    return float(rho.max()), float(rho.min()), out


def image_distances(model: WorkingModel, xyz: np.ndarray, atoms: np.ndarray) -> np.ndarray:
    """Shortest distance (Å) from a fractional position to any image of each atom."""
    idx = np.asarray(atoms, dtype=np.int64)
    if len(idx) == 0:
        return np.zeros(0)
    return model.symmetry.image_distances(model.cell, xyz, model.xyz[idx]).min(axis=1)


def closest_image(model: WorkingModel, origin: np.ndarray, xyz: np.ndarray, *, identity_only: bool = False,
                  exclude_itself: bool = False) -> tuple[float, int, np.ndarray]:
    """The symmetry image of the fractional position `xyz` closest to `origin`: (distance
    Å, operation index, lattice shift); the image is R[op] xyz + t[op] + shift.
    `identity_only`: lattice translations only; `exclude_itself`: an image at the origin
    itself (zero distance) does not count."""
    sym = model.symmetry
    img = sym.images(np.asarray(xyz, dtype=np.float64))[:1 if identity_only else None]  # (s, 3)
    d = img - np.asarray(origin, dtype=np.float64)
    shift = -np.round(d)
    dist = np.linalg.norm((d + shift) @ orthogonalization_matrix(model.cell).T, axis=1)
    if exclude_itself:
        dist = np.where(dist < 1e-6, np.inf, dist)
    k = int(np.argmin(dist))
    return float(dist[k]), k, shift[k]


def nearest_atom(model: WorkingModel, xyz: np.ndarray, atoms: np.ndarray | None = None) -> tuple[int, float]:
    """(index, distance Å) of the nearest atom image to a fractional position."""
    idx = np.arange(model.n) if atoms is None else np.asarray(atoms, dtype=np.int64)
    if len(idx) == 0:
        return -1, math.inf
    dist = image_distances(model, xyz, idx)
    k = int(np.argmin(dist))
    return int(idx[k]), float(dist[k])


def _movable(model: WorkingModel) -> np.ndarray:
    """Atoms completion may drop, re-element or move: non-H, fully occupied, ordered, not riding."""
    return ~model.hydrogen & (model.part == 0) & (model.occupancy > 0.99) & (model.riding < 0)


def _common_u(model: WorkingModel) -> float:
    """The U_iso every non-H atom is given for the electron estimates: the model's median,
    within 0.01-0.08 Å²."""
    heavy = ~model.hydrogen
    u = float(np.median(model.u_iso[heavy])) if heavy.any() else 0.03
    return min(max(u, 0.01), 0.08)


def electrons_per_site(refinement, model: WorkingModel, u_common: float) -> np.ndarray:
    """Electron estimate of each non-H atom: free occupancy × Z with fixed xyz and U."""
    probe = model.copy()
    heavy = ~probe.hydrogen
    probe.make_isotropic(np.ones(probe.n, dtype=bool))
    probe.u_iso[heavy] = u_common
    fixed = {i for i in range(probe.n) if not heavy[i]}

    def build(m: WorkingModel) -> Parameterisation:
        return Parameterisation.build(m, occupancy_only=True, fixed_atoms=fixed)

    res = refinement.quiet_driver(build).run(probe, 4, "occupancy", convergence=0.1)
    z = np.array([atomic_number(e) for e in model.elements], dtype=np.float64)
    return res.model.occupancy * z


def _formula_budget(expected: dict[str, float]) -> list[tuple[str, float]]:
    """(element, atoms per asymmetric unit) of the non-H elements, heaviest first."""
    items = [(e, v) for e, v in expected.items() if not is_hydrogen(e) and v > 0]
    return sorted(items, key=lambda t: -atomic_number(t[0]))


def assign_elements(model: WorkingModel, electrons: np.ndarray, expected: dict[str, float], movable: np.ndarray,
                    *, relabel: bool = True) -> list[str]:
    """Count-constrained element assignment; returns log lines of the changes made. With
    `relabel`, an atom named after its old element is renamed after its new one (O1 -> B3;
    a user's labels are kept, and the changes reported under them).

    Atoms change element only on evidence (REASSIGN_MARGIN), so some keep an element the
    count-constrained picks gave away; a change that would then overfill its new element
    by half an atom or more is made only on clear evidence (`_within_budget`: O1 of
    SmFe₃(BO₃)₄, a mis-placed O at 4.5 e, became the third B of a formula with two)."""
    budget = dict(_formula_budget(expected))
    if not budget:
        return []
    order = np.argsort(-electrons, kind="stable")
    elements_by_z = [e for e, _ in _formula_budget(expected)]
    remaining = dict(budget)
    # fixed atoms use their own element's budget first
    for i in range(model.n):
        if not movable[i] and model.elements[i] in remaining:
            remaining[model.elements[i]] -= model.occupancy[i] / max(model.order[i], 1)
    proposed = []  # (evidence in reassignment margins, atom, new element)
    for i in order:
        if not movable[i]:
            continue
        w = 1.0 / max(model.order[i], 1)
        pick = None
        for e in elements_by_z:
            if remaining[e] >= 0.5 * w - 1e-9:
                pick = e
                break
        if pick is None:
            pick = elements_by_z[-1]
        remaining[pick] -= w
        old = model.elements[i]
        if pick != old:
            z_old, z_new = atomic_number(old), atomic_number(pick)
            # only on clear evidence: the count assumes a common U, so for light atoms it is
            # uncertain by about ±2 e (cpna's NH3 nitrogen showed 5.5 e); the generator's own
            # assignment (from integrated peak density) stands unless this one is clearly better
            margin = max(REASSIGN_MARGIN, 0.05 * z_old)
            evidence = abs(electrons[i] - z_old) - abs(electrons[i] - z_new)
            if evidence >= margin:
                proposed.append((evidence / margin, int(i), pick))
    proposed = _within_budget(model, proposed, budget)
    changes = []
    for _, i, pick in proposed:
        old, label = model.elements[i], model.labels[i]
        model.elements[i] = pick
        if relabel and label.upper().startswith(old.upper()) and not label[len(old):len(old) + 1].isalpha():
            model.labels[i] = model.unique_label(pick)
        renamed = f" as {model.labels[i]}" if model.labels[i] != label else ""
        changes.append(f"{label}: {old} -> {pick}{renamed} ({electrons[i]:.1f} e at the site)")
    return changes


def _within_budget(model: WorkingModel, proposed: list[tuple[float, int, str]],
                   budget: dict[str, float]) -> list[tuple[float, int, str]]:
    """The proposed element changes (evidence in reassignment margins, atom, element) less
    those on less than CLEAR_EVIDENCE margins that leave their new element overfilled by
    half the atom or more (counted after all the others are made, so that a swap of two
    atoms passes), dropping the weakest evidence first: the formula outweighs a marginal
    estimate, not a clear one (a site of 22 e given as Sr becomes Ti, though the formula's
    Ti are placed elsewhere: one of those is the wrong atom)."""
    kept = sorted(proposed, reverse=True)
    while kept:
        new = {i: e for _, i, e in kept}
        counts: dict[str, float] = {}
        for i in range(model.n):
            e = new.get(i, model.elements[i])
            counts[e] = counts.get(e, 0.0) + model.occupancy[i] / max(model.order[i], 1)
        over = [k for k, (ev, i, e) in enumerate(kept) if ev < CLEAR_EVIDENCE
                and counts[e] - budget.get(e, 0.0) >= 0.5 / max(model.order[i], 1) - 1e-9]
        if not over:
            break
        kept.pop(over[-1])  # (sorted strongest first)
    return kept


def complete_model(refinement, model: WorkingModel, budget: int) -> tuple[WorkingModel, int]:
    """Completion rounds (see module docstring); returns the model and the cycles used."""
    from .refiner import expected_asu_counts, is_generated

    expected = expected_asu_counts(refinement.data, model)
    cfg = refinement.cfg
    generated = is_generated(refinement.candidate)
    used = 0
    driver = refinement.driver
    for rnd in range(cfg.completion_rounds):
        if budget - used <= 0:
            break
        changed = False
        m = model.copy()
        heavy = ~m.hydrogen
        movable = _movable(m)
        u_common = _common_u(m)
        electrons = electrons_per_site(refinement, m, u_common)
        # spurious atoms
        drop = np.zeros(m.n, dtype=bool)
        for i in np.nonzero(movable)[0]:
            if electrons[i] < MIN_ELECTRONS or m.u_iso[i] > MAX_U:
                drop[i] = True
        cart_m = orthogonalization_matrix(m.cell)
        for i in np.nonzero(movable & ~drop)[0]:
            others = np.nonzero(heavy & ~drop & (np.arange(m.n) != i))[0]
            if not len(others):
                continue
            j, d = nearest_atom(m, m.xyz[i], others)
            if d < MIN_DISTANCE and electrons[i] <= electrons[j] and movable[i]:
                drop[i] = True
        if drop.any():
            refinement.log(f"completion round {rnd + 1}: removed {', '.join(m.labels[i] for i in np.nonzero(drop)[0])}")
            keep = m.remove_atoms(drop)  # (riding H of a removed atom go with it)
            electrons = electrons[keep]
            movable = movable[keep]
            changed = True
        # elements
        if expected:
            lines = assign_elements(m, electrons, expected, movable, relabel=generated)
            if lines:
                refinement.log(f"completion round {rnd + 1}: elements " + "; ".join(lines))
                changed = True
        # missing atoms
        added = _add_peaks(refinement, m, expected, u_common, rnd)
        changed = changed or added > 0
        if not changed:
            break
        refinement._update_restraints(m)
        res = driver.run(m, min(ROUND_CYCLES, budget - used), "complete", convergence=0.2)
        used += res.cycles
        model = res.model
    if cfg.relocate_atoms and generated and budget - used > 0:  # (a user's atoms stay where the user put them)
        model, moved = relocate_weak_atoms(refinement, model, budget - used)
        used += moved
    return model, used


def _placeable(m: WorkingModel, xyz: np.ndarray, heavy_idx: np.ndarray) -> bool:
    """Whether an atom may go at a difference peak: at least 1.0 Å from every atom, and
    BOND_MIN-BOND_MAX from the nearest non-H atom."""
    if nearest_atom(m, xyz)[1] < 1.0:
        return False
    return not len(heavy_idx) or BOND_MIN <= nearest_atom(m, xyz, heavy_idx)[1] <= BOND_MAX


def relocate_weak_atoms(refinement, model: WorkingModel, budget: int) -> tuple[WorkingModel, int]:
    """Misplaced atoms: an atom scattering less than WEAK_FRACTION of its element's
    electrons (relative to the model's median ratio of estimate to Z), while a difference
    peak on a site of the same order is left where an atom could go, is tried at that peak
    (element kept, ROUND_CYCLES cycles) and stays there when the weighted χ² drops by
    RELOCATION_GAIN and R1 drops. A generated model can hold an atom at a ghost of the real
    one, e.g. its mirror image through the heavy atoms' pseudo-centre, with the formula
    complete, so that no peak is added for the real site (an O of SmFe₃(BO₃)₄ in R32: R1
    0.041 where 0.011 is right). Returns the model and the cycles used."""
    used = 0
    for _ in range(MAX_RELOCATIONS):
        if budget - used <= 0:
            break
        movable = _movable(model)
        z = np.array([atomic_number(e) for e in model.elements], dtype=np.float64)
        electrons = electrons_per_site(refinement, model, _common_u(model))
        ratio = electrons / z  # (relative to the median: one common U biases them all alike)
        typical = float(np.median(ratio[movable])) if movable.any() else 1.0
        weak = sorted((i for i in np.nonzero(movable)[0] if ratio[i] < WEAK_FRACTION * typical), key=lambda i: ratio[i])
        if not weak:
            break
        _, peaks = difference_peaks(refinement, model, max_peaks=10)
        weights = refinement.driver.weights(model)  # held fixed for the comparison
        base_chi2, base_r1 = data_fit(refinement, model, weights)
        moved = None
        for i in weak[:RELOCATION_TRIALS]:
            rest = model.copy()
            rest.remove_atoms(np.arange(model.n) == i)
            rest_heavy = np.nonzero(~rest.hydrogen)[0]
            site = next((p for p in peaks if p.site_order == model.order[i] and _placeable(rest, p.xyz, rest_heavy)),
                        None)
            if site is None:
                continue
            trial = rest
            trial.add_atom(model.labels[i], model.elements[i], site.xyz, u_iso=float(model.u_iso[i]),
                           special_tolerance=0.15)
            refinement._update_restraints(trial)
            res = refinement.quiet_driver().run(trial, min(ROUND_CYCLES, budget - used), "relocation",
                                                convergence=0.2)
            chi2, r1 = data_fit(refinement, res.model, weights)
            if chi2 < (1.0 - RELOCATION_GAIN) * base_chi2 and r1 < base_r1:
                moved = (res.model, i, site, chi2, r1)
                used += res.cycles  # (the cycles of a trial not kept are not the refinement's)
                break
        if moved is None:
            break
        trial, i, site, chi2, r1 = moved
        refinement.log(f"completion: {model.labels[i]} ({electrons[i]:.1f} e at its site) moved to a "
                       f"{site.height:.2f} e/Å³ difference peak (weighted χ² {base_chi2:.0f} -> {chi2:.0f}, "
                       f"R1 {base_r1:.4f} -> {r1:.4f})")
        model = trial
    refinement._update_restraints(model)  # (a rejected trial's may be in place)
    return model, used


def _add_peaks(refinement, m: WorkingModel, expected: dict[str, float], u_common: float, rnd: int) -> int:
    heavy_idx = np.nonzero(~m.hydrogen)[0]
    have = float(sum(m.occupancy[i] / max(m.order[i], 1) for i in heavy_idx))
    want = float(sum(v for e, v in expected.items() if not is_hydrogen(e))) if expected else None
    # what the formula still lacks, in atoms per asymmetric unit: an atom on a site of
    # order k counts 1/k, so a site of the point group's full symmetry counts least
    lacking = None if want is None else want - have
    if lacking is not None and lacking < 0.5 / len(m.symmetry.point_group_rotations()):
        return 0
    n_want = max(int(math.ceil(lacking)), 1) if lacking is not None else 4
    room = lacking  # what is left for atoms on special positions
    rho, peaks = difference_peaks(refinement, m, max_peaks=3 * n_want + 10)
    sigma = float(rho.std())
    counts: dict[str, float] = {}
    for i in heavy_idx:
        counts[m.elements[i]] = counts.get(m.elements[i], 0.0) + m.occupancy[i] / max(m.order[i], 1)
    missing = {e: v - counts.get(e, 0.0) for e, v in expected.items() if not is_hydrogen(e)} if expected else {}
    added = []
    for p in peaks:
        if len(added) >= n_want:
            break
        if p.height < max(PEAK_SIGMA * sigma, PEAK_MIN):
            break
        share = 1.0 / max(p.site_order, 1)
        if room is not None and room < (0.5 if share >= 1.0 else 0.5 * share):
            continue  # an atom here would overfill the formula (one on a special position may not)
        if not _placeable(m, p.xyz, heavy_idx):
            continue
        element = max(missing, key=lambda e: missing[e]) if missing else "C"
        label = m.unique_label(element)
        m.add_atom(label, element, p.xyz, u_iso=u_common, special_tolerance=0.15)
        if missing:
            missing[element] -= share
        if room is not None and share < 1.0:
            room -= share
        added.append(f"{label} ({p.height:.2f} e/Å³)")
        heavy_idx = np.append(heavy_idx, m.n - 1)
    if added:
        refinement.log(f"completion round {rnd + 1}: added {', '.join(added)}")
    return len(added)


# --------------------------------------------------------------------------------------
# mixed sites from a formula with complementary fractional counts
# --------------------------------------------------------------------------------------

#: a count within this of an integer counts as whole
WHOLE = 0.02
#: elements of a molecule's framework: in a compound of carbon and hydrogen their
#: fractional counts come from partly occupied molecules (solvent), not from shared sites
MOLECULAR_FRAMEWORK = frozenset({"C", "N", "O"})


def mixed_site_pair(formula: str | None) -> tuple[str, str, float] | None:
    """(A, B, fraction of A) when a formula holds exactly two non-H elements with
    non-integral counts that add up to a whole number (Ag0.6 ... Na0.4, Al0.84 Ga1.16):
    such elements share sites. None otherwise, and None for C, N or O of an organic or
    metal-organic formula (C38.5 H40 O12.5 is a half-occupied solvent, not C/O sites)."""
    if not formula:
        return None
    from refractor_core.crystal.formula import parse_formula
    from refractor_core.errors import InputError

    try:
        counts = parse_formula(formula)
    except InputError:  # an unparsable formula simply has no mixed sites
        return None
    frac = {e: v for e, v in counts.items() if not is_hydrogen(e) and abs(v - round(v)) > WHOLE}
    if len(frac) != 2:
        return None
    (a, va), (b, vb) = sorted(frac.items(), key=lambda t: -atomic_number(t[0]))
    if "C" in counts and ("H" in counts or "D" in counts) and {a, b} & MOLECULAR_FRAMEWORK:
        return None
    total = va + vb
    if abs(total - round(total)) > WHOLE or round(total) < 1:
        return None
    return a, b, va / total


def split_mixed_sites(refinement, model: WorkingModel) -> list[str]:
    """Make every site of either element of the formula's mixed pair an A/B site (same
    position and ADP, occupancies in the formula's ratio; the refiner refines the split).
    Returns log lines."""
    pair = mixed_site_pair(refinement.data.formula)
    if pair is None:
        return []
    a, b, fa = pair
    lines = []
    for i in range(model.n):
        e = model.elements[i]
        if e not in (a, b) or model.part[i] != 0 or model.riding[i] >= 0:
            continue
        partner = b if e == a else a
        if _has_partner(model, i, partner):
            continue
        occ = float(model.occupancy[i])
        f_e = fa if e == a else 1.0 - fa
        model.occupancy[i] = occ * f_e
        label = model.unique_label(partner)
        model.add_atom(label, partner, model.xyz[i], u_iso=float(model.u_iso[i]), occupancy=occ * (1.0 - f_e))
        lines.append(f"{model.labels[i]}/{label} mixed {e}/{partner} site ({f_e:.2f}/{1 - f_e:.2f})")
    return lines


def _has_partner(model: WorkingModel, i: int, element: str) -> bool:
    cart = model.cartesian()
    for j in range(model.n):
        if j != i and model.elements[j] == element and np.linalg.norm(cart[j] - cart[i]) < 0.02:
            return True
    return False
