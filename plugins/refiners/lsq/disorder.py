"""Disorder from the difference map: split sites with a refined free occupancy.

After the anisotropic refinement with riding H, the minor component of a disordered
fragment is left in the difference map as peaks about 0.5-1.3 Å from the major atoms,
bonded to the major atoms' neighbours. A crystallographer models them as PART 1 / PART 2
with one free variable (occupancies p and 1 - p); this module does the same:

1. *Candidates*: symmetry-unique difference peaks of at least PEAK_SIGMA × the map's rms
   and at least MIN_PEAK_FRACTION of the major atom's own peak in the model map (a minor
   component of that occupancy or more), 0.5-1.3 Å from a fully occupied non-H atom on a
   general position (the major atom),
   not in a bond between two atoms (bonding density), not at a riding H, and at a
   bonding distance from another atom or another candidate.
2. *Assemblies*: candidates whose major atoms are 1,2 or 1,3 neighbours share one free
   variable (a whole fragment moves together).
3. *Trial*: each major atom goes to PART 2k-1 with occupancy 0.8, a minor atom of its
   element (isotropic) is added in PART 2k with 0.2; the free variables, positions and
   ADPs are refined (with the automatic disorder restraints).
4. *Decision*: assemblies whose minor occupancy leaves [0.05, 0.5], or whose minor atom
   falls onto its major one, are undone; the rest is kept only if the fit to the data is
   better by an F-test at the 0.1 % level (σ weights, the added parameters counted) and
   R1 drops by at least 2 % of itself. Otherwise the model is left as it was.

Before that, two fully occupied atoms closer than the composite ranker's short contact
(CLOSE_FACTOR × their covalent radii) are read as one site's two components: the weaker
becomes the minor atom of a split that starts at 0.5/0.5. The site's element is the formula
element, between the stronger atom's electron count and the pair's, whose split fits best
after SCREEN_CYCLES cycles (two full C on a disordered F's components become F). Such a
split needs no F-test, as the pair itself is impossible; but if it costs more than
MAX_PAIR_R1_LOSS of R1 the data hold both atoms and the model is left as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refractor_core.crystal.cell import orthogonalization_matrix
from refractor_core.crystal.formula import atomic_number
from refractor_core.union_find import UnionFind

from .completion import MAX_U, closest_image, image_distances
from .hydrogens import BOND_TOLERANCE, add_partner_hydrogens, covalent_radius
from .maps import difference_peaks, model_density_at
from .model import WorkingModel, is_hydrogen
from .significance import data_fit, f_test

PEAK_SIGMA = 4.0
MIN_PEAK_FRACTION = 0.06
SPLIT_MIN, SPLIT_MAX = 0.5, 1.3  # Å from the major atom
MIDPOINT_SLACK = 0.3  # Å: a peak this close to the line between two bonded atoms is bonding density
NEAR_H = 0.6  # Å
BOND_SHORTEST = 0.75  # × the covalent radii
ASSEMBLY_DISTANCE = 2.7  # Å between major atoms of one assembly (1,2 and 1,3 neighbours)
MAX_SPLITS = 8
START_MINOR = 0.2
MIN_MINOR, MAX_MINOR = 0.05, 0.5
MIN_SEPARATION = 0.35  # Å: a minor atom closer than this to its major one is not a split
SPLIT_CYCLES = 10
SIGNIFICANCE = 1e-3
#: relative drop of R1 a split must bring (the F-test alone passes almost any added
#: parameters on data with systematic errors)
MIN_R1_GAIN = 0.02
#: two fully occupied atoms closer than this × their covalent radii are read as one site's
#: disorder components (the composite ranker's short-contact factor)
CLOSE_FACTOR = 0.7
#: R1 may rise by at most this fraction of itself when such a pair is resolved; beyond it
#: the data hold both atoms (the model is left as it was, for the ranker to judge)
MAX_PAIR_R1_LOSS = 0.10
#: refinement cycles given to each element tried for a close pair's site
SCREEN_CYCLES = 1
#: a close pair's two atoms were both refined as full atoms: their split starts even
PAIR_START_MINOR = 0.5


@dataclass
class SplitCandidate:
    """A difference peak read as the minor position of atom `major`."""

    major: int
    xyz: np.ndarray
    height: float
    distance: float
    fraction: float = 0.0  # height / the major atom's own peak


def split_candidates(refinement, model: WorkingModel) -> list[SplitCandidate]:
    """Difference peaks that look like the minor positions of disordered atoms."""
    rho, peaks = difference_peaks(refinement, model, max_peaks=4 * MAX_SPLITS + 10, min_distance=0.5)
    threshold = PEAK_SIGMA * float(rho.std())
    heavy = np.array([i for i in range(model.n) if not is_hydrogen(model.elements[i])], dtype=np.int64)
    hyd = np.array([i for i in range(model.n) if is_hydrogen(model.elements[i])], dtype=np.int64)
    if not len(heavy):
        return []
    major_ok = {int(i) for i in heavy
                if model.riding[i] < 0 and model.part[i] == 0 and model.occupancy[i] > 0.99 and model.order[i] == 1}
    first: list[SplitCandidate] = []
    own_peak = None  # each atom's own peak in the model map (computed when first needed)
    for p in peaks:
        if p.height < threshold:
            break
        if p.site_order != 1:
            continue
        dist = image_distances(model, p.xyz, heavy)
        k = int(np.argmin(dist))
        x = int(heavy[k])
        if x not in major_ok or not (SPLIT_MIN <= dist[k] <= SPLIT_MAX):
            continue
        if len(hyd) and image_distances(model, p.xyz, hyd).min() < NEAR_H:
            continue
        if _bonding_density(model, p.xyz, x, dist[k], heavy, dist):
            continue
        if any(c.major == x for c in first):
            continue  # one minor position per atom: the highest peak
        if own_peak is None:
            own_peak = dict(zip(heavy.tolist(), model_density_at(refinement, model, heavy).tolist()))
        fraction = p.height / max(own_peak[x], 1e-6)
        if fraction < MIN_PEAK_FRACTION:
            continue
        first.append(SplitCandidate(x, _image_next_to(model, p.xyz, x), float(p.height), float(dist[k]), float(fraction)))
    # a minor atom is bonded: to an atom other than its major one, or to another candidate
    m = orthogonalization_matrix(model.cell)
    out = []
    for c in first:
        r = covalent_radius(model.elements[c.major])
        dist = image_distances(model, c.xyz, heavy)
        bonded = False
        for j, d in zip(heavy, dist):
            if j == c.major:
                continue
            rr = r + covalent_radius(model.elements[j])
            if BOND_SHORTEST * rr <= d <= rr + BOND_TOLERANCE:
                bonded = True
                break
        if not bonded:
            for o in first:
                if o is c:
                    continue
                dd = (o.xyz - c.xyz) - np.round(o.xyz - c.xyz)
                rr = r + covalent_radius(model.elements[o.major])
                if BOND_SHORTEST * rr <= float(np.linalg.norm(m @ dd)) <= rr + BOND_TOLERANCE:
                    bonded = True
                    break
        if bonded:
            out.append(c)
    return out[:MAX_SPLITS]


def _image_next_to(model: WorkingModel, xyz, atom: int) -> np.ndarray:
    """The symmetry image of a fractional position closest to an atom (in its cell frame),
    so that a minor atom and its major one share one frame (restraints, riding H)."""
    _, op, shift = closest_image(model, model.xyz[atom], xyz)
    return model.symmetry.rotations[op].astype(np.float64) @ np.asarray(xyz, dtype=np.float64) + model.symmetry.translations[op] + shift


def _bonding_density(model: WorkingModel, xyz, major: int, d_major: float, heavy: np.ndarray, dist: np.ndarray) -> bool:
    """True when the peak lies on the line between the major atom and an atom near it."""
    for j, d in zip(heavy, dist):
        if j == major or d >= 1.0:
            continue
        d_pair = image_distances(model, model.xyz[major], np.array([j]))[0]
        if d_major + d < d_pair + MIDPOINT_SLACK:
            return True
    return False


def group_assemblies(model: WorkingModel, cands: list[SplitCandidate]) -> list[list[SplitCandidate]]:
    """Candidates whose major atoms are within ASSEMBLY_DISTANCE, joined transitively."""
    n = len(cands)
    uf = UnionFind()
    for i in range(n):
        uf.find(i)
        for j in range(i + 1, n):
            d = image_distances(model, model.xyz[cands[i].major], np.array([cands[j].major]))[0]
            if d <= ASSEMBLY_DISTANCE:
                uf.union(i, j)
    return [[cands[i] for i in group] for group in uf.groups()]


def _apply_split(model: WorkingModel, assembly: list[SplitCandidate], part: int,
                 start_minor: float = START_MINOR) -> list[int]:
    """Major atoms to PART `part`, minor atoms (occupancy `start_minor`) added in PART
    part + 1; returns the minors."""
    minors = []
    for c in assembly:
        x = c.major
        for a in [x] + model.riders().get(x, []):
            model.occupancy[a] *= 1.0 - start_minor
            model.part[a] = part
        label = model.unique_label(model.elements[x])
        minors.append(model.add_atom(label, model.elements[x], c.xyz, u_iso=float(model.u_iso[x]),
                                     occupancy=start_minor, part=part + 1))
    if model.h_groups:
        add_partner_hydrogens(model, {c.major: mi for c, mi in zip(assembly, minors)})
    return minors


def _undo_split(model: WorkingModel, majors: list[int], minors: list[int]) -> None:
    """Majors back to PART 0 with full occupancy, minors removed."""
    for x in majors:
        share = 1.0 / model.occupancy[x] if model.occupancy[x] > 0 else 1.0
        for a in [x] + model.riders().get(x, []):
            model.occupancy[a] = min(1.0, model.occupancy[a] * share)
            model.part[a] = 0
    drop = np.zeros(model.n, dtype=bool)
    drop[minors] = True
    model.remove_atoms(drop)


def close_pairs(model: WorkingModel) -> list[tuple[int, int, float]]:
    """(stronger, weaker, distance Å): fully occupied non-H atoms of PART 0 on general
    positions closer than CLOSE_FACTOR × their covalent radii, each atom in one pair at
    most; the weaker is the one with the larger U_eq."""
    ok = np.array([i for i in range(model.n)
                   if not is_hydrogen(model.elements[i]) and model.riding[i] < 0 and model.part[i] == 0
                   and model.occupancy[i] > 0.99 and model.order[i] == 1], dtype=np.int64)
    radius = {e: covalent_radius(e) for e in {model.elements[i] for i in ok}}
    largest = max(radius.values(), default=0.0)
    pairs: list[tuple[int, int, float]] = []
    taken: set[int] = set()
    for i in ok:
        others = ok[ok != i]
        if i in taken or not len(others):
            continue
        dist = image_distances(model, model.xyz[i], others)
        ri = radius[model.elements[i]]
        for k in np.argsort(dist):
            if dist[k] >= CLOSE_FACTOR * (ri + largest):
                break
            j = int(others[k])
            if j in taken or dist[k] >= CLOSE_FACTOR * (ri + radius[model.elements[j]]):
                continue
            strong, weak = (int(i), j) if model.u_iso[i] <= model.u_iso[j] else (j, int(i))
            pairs.append((strong, weak, float(dist[k])))
            taken.update((int(i), j))
            break
    return pairs


def split_close_pairs(refinement, model: WorkingModel, budget: int):
    """Two fully occupied atoms closer than CLOSE_FACTOR × their covalent radii (what the
    composite ranker counts as a short contact) are read as one site's two disorder
    components: the weaker becomes the minor atom of a split of the stronger (PARTs, one
    free occupancy, starting even), its element chosen by `_choose_pair_elements`. The
    split needs no F-test, since the pair itself is impossible; one whose minor occupancy
    leaves the bounds is undone, which leaves the stronger atom alone (as completion drops
    the weaker of two atoms closer than 0.85 Å). If R1 then rises by more than
    MAX_PAIR_R1_LOSS of itself, the data hold both atoms and the model is left as it was.
    Returns (model, cycles used, the last stage result or None when unchanged)."""
    pairs = close_pairs(model)
    if not pairs or budget <= 0:
        return model, 0, None
    trial = model.copy()
    cands = [SplitCandidate(strong, _image_next_to(trial, trial.xyz[weak], strong), float("nan"), d)
             for strong, weak, d in pairs]
    refinement.log("disorder: atoms too close to be both present: "
                   + ", ".join(f"{trial.labels[a]}-{trial.labels[b]} {d:.2f} Å" for a, b, d in pairs))
    strong_labels = [trial.labels[c.major] for c in cands]
    drop = np.zeros(trial.n, dtype=bool)
    drop[[weak for _, weak, _ in pairs]] = True
    trial.remove_atoms(drop)
    for c, label in zip(cands, strong_labels):
        c.major = trial.labels.index(label)
    used = _choose_pair_elements(refinement, trial, cands, pairs, model, budget)
    if refinement.place_h:  # the pair's odd geometry left its atoms without riding H
        trial = refinement._place_hydrogens(trial)
    for c, label in zip(cands, strong_labels):
        c.major = trial.labels.index(label)
    model, more, res = _trial_splits(refinement, model, trial, cands, budget - used, required=True,
                                     start_minor=PAIR_START_MINOR)
    return model, used + more, res


def _choose_pair_elements(refinement, trial: WorkingModel, cands: list[SplitCandidate], pairs,
                          model: WorkingModel, budget: int) -> int:
    """Two full atoms on one disordered site carry the electrons of both: the split site's
    element is the formula element, from the stronger atom's to the pair's total electron
    count, whose split (minor at the weaker atom) fits the data best after SCREEN_CYCLES
    cycles of refinement (every option with the same parameters). Returns the cycles used."""
    from .refiner import expected_asu_counts  # the refiner imports this module

    expected = expected_asu_counts(refinement.data, trial)
    formula = [e for e, v in (expected or {}).items() if not is_hydrogen(e) and v > 0]
    used = 0
    was = refinement.refine_occ_disorder
    refinement.refine_occ_disorder = True
    for c, (strong, weak, _) in zip(cands, pairs):
        z_strong, z_weak = atomic_number(model.elements[strong]), atomic_number(model.elements[weak])
        options = [e for e in formula if z_strong <= atomic_number(e) <= z_strong + z_weak]
        if len(options) < 2 or used + len(options) * SCREEN_CYCLES > budget:
            continue
        scores = []
        for e in options:
            probe = trial.copy()
            probe.elements[c.major] = e
            _apply_split(probe, [c], int(max(probe.part.max(initial=0), 0)) + 1, PAIR_START_MINOR)
            res = _run_disorder_cycles(refinement, probe, SCREEN_CYCLES, "pair element")
            used += res.cycles
            scores.append((data_fit(refinement, res.model)[0], e))
        best = min(scores)[1]
        refinement.log(f"disorder: close pair {trial.labels[c.major]}: element by refined fit "
                       + ", ".join(f"{e} {chi2:.0f}" for chi2, e in sorted(scores, key=lambda t: t[1])) + f": {best}")
        trial.elements[c.major] = best
    refinement.refine_occ_disorder = was
    return used


def _run_disorder_cycles(refinement, model: WorkingModel, cycles: int, stage: str):
    """Refine `model` for at most `cycles` cycles with its disorder restraints (the
    refinement's free occupancies on)."""
    refinement._update_restraints(model)
    refinement._choose_matrix(model)
    return refinement.driver.run(model, max(1, cycles), stage)


def split_disorder(refinement, model: WorkingModel, budget: int):
    """Try split sites from the difference map (module docstring); returns (model, cycles
    used, the last stage result or None when the model is unchanged)."""
    cands = split_candidates(refinement, model)
    if not cands or budget <= 0:
        return model, 0, None
    return _trial_splits(refinement, model, model.copy(), cands, budget, required=False)


def _describe(c: SplitCandidate) -> str:
    if np.isnan(c.height):
        return f"{c.distance:.2f} Å"
    return f"{c.height:.2f} e/Å³ = {c.fraction:.2f} of its atom, {c.distance:.2f} Å"


def _trial_splits(refinement, model: WorkingModel, trial: WorkingModel, cands: list[SplitCandidate],
                  budget: int, required: bool, start_minor: float = START_MINOR):
    """Steps 2-4 of the module docstring on `trial` (`model` with any changes the
    candidates need); `required`: kept without the F-test (the model without the
    splits is not an option)."""
    base_chi2, base_r1 = data_fit(refinement, model)
    n_params_base = refinement._parameters(model).n
    first_part = int(max(trial.part.max(initial=0), 0))
    first_part += 1 if first_part % 2 == 0 else 2
    assemblies = group_assemblies(trial, cands)
    splits = []  # (majors, minors) per assembly
    for k, assembly in enumerate(assemblies):
        minors = _apply_split(trial, assembly, first_part + 2 * k, start_minor)
        splits.append(([c.major for c in assembly], minors))
    names = "; ".join(
        ", ".join(f"{trial.labels[c.major]}/{trial.labels[mi]} ({_describe(c)})" for c, mi in zip(a, s[1]))
        for a, s in zip(assemblies, splits)
    )
    refinement.log(f"disorder: trying split sites {names}")
    was = refinement.refine_occ_disorder
    refinement.refine_occ_disorder = True
    used = 0

    def refine(m: WorkingModel):
        nonlocal used
        res = _run_disorder_cycles(refinement, m, min(SPLIT_CYCLES, budget - used), "disorder")
        used += res.cycles
        return res

    res = refine(trial)
    trial = res.model
    m = orthogonalization_matrix(trial.cell)
    # a close pair's two atoms are equals: either may carry the larger share
    max_minor = 1.0 - MIN_MINOR if required else MAX_MINOR
    undo = []
    for k, (majors, minors) in enumerate(splits):
        minor_occ = 1.0 - float(trial.occupancy[majors[0]])
        sep = []
        for x, mi in zip(majors, minors):
            dd = trial.xyz[mi] - trial.xyz[x]
            sep.append(float(np.linalg.norm(m @ (dd - np.round(dd)))))
        if not (MIN_MINOR <= minor_occ <= max_minor) or min(sep) < MIN_SEPARATION or trial.u_iso[minors].max() > MAX_U:
            undo.append(k)
            refinement.log(f"disorder: split of {', '.join(trial.labels[x] for x in majors)} undone "
                           f"(minor occupancy {minor_occ:.2f}, separation {min(sep):.2f} Å)")
    if undo:
        all_majors = [x for k in undo for x in splits[k][0]]
        all_minors = [x for k in undo for x in splits[k][1]]
        kept = [([trial.labels[x] for x in s[0]], [trial.labels[x] for x in s[1]])
                for k, s in enumerate(splits) if k not in undo]
        _undo_split(trial, all_majors, all_minors)
        splits = [([trial.labels.index(x) for x in a], [trial.labels.index(x) for x in b]) for a, b in kept]
        refinement._update_restraints(trial)  # the undone atoms' restraints go with them
        if (splits or required) and used < budget:
            res = refine(trial)
            trial = res.model
    accepted = False
    if splits or required:
        chi2, r1 = data_fit(refinement, trial)
        if required:
            accepted = r1 <= (1.0 + MAX_PAIR_R1_LOSS) * base_r1
            test = ("kept: a pair too close to be both present is not an option" if accepted else
                    f"rejected: R1 rose by more than {MAX_PAIR_R1_LOSS:.0%}, the data hold both atoms")
        else:
            n_params = refinement._parameters(trial).n
            q = n_params - n_params_base
            stat, p_value = f_test(base_chi2, chi2, n_params_base, n_params, len(refinement.fo2))
            accepted = p_value < SIGNIFICANCE and r1 < (1.0 - MIN_R1_GAIN) * base_r1
            test = f"F = {stat:.1f} for {q} parameters (p = {p_value:.1e}): {'kept' if accepted else 'rejected'}"
        occ = ", ".join(f"{1.0 - trial.occupancy[s[0][0]]:.2f}" for s in splits) or "none (undone)"
        refinement.log(f"disorder: R1 {base_r1:.4f} -> {r1:.4f}, minor occupancies {occ}, {test}")
    if not accepted:
        refinement.refine_occ_disorder = was
        refinement._update_restraints(model)
        refinement._choose_matrix(model)
        return model, used, None
    refinement.meta.setdefault("disorder_splits", []).extend(
        {"major": trial.labels[x], "minor": trial.labels[mi], "minor_occupancy": float(trial.occupancy[mi])}
        for majors, minors in splits for x, mi in zip(majors, minors)
    )
    return trial, used, res
