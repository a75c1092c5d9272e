"""Data-driven element check: swap two atoms' elements when the data say so.

Electron counts from a map or from occupancies cannot tell neighbours in the periodic
table apart reliably (C/N/O, P/S/Cl differ by 1-2 electrons out of 6-17), so a generated
model may hold, for example, a P where the Cl is and the Cl where the P is. After the
anisotropic refinement this module asks the data directly:

1. *Single relabels*: every fully occupied non-H atom (U_eq at most completion's MAX_U)
   of an element with a neighbour in the formula 1-3 electrons away is given that
   neighbour's element, and Σ((Fo² - M)/σ)²
   is computed with nothing refined; for the MAX_PROBED most promising relabels the atom's
   own position and ADP are then refined for a few cycles, everything else fixed; the drop
   of Σ((Fo² - M)/σ)² is that atom's evidence for the other element. The atoms a swap with
   the best of these would involve (those of the element gained, relabelled back) are
   probed too.
2. *Pairs*: an atom with evidence for element B and an atom of element B make a
   count-preserving swap, scored by their summed evidence; the best PAIRS_TESTED pairs
   are refined jointly, and the best of them is kept when its weighted χ² = Σ w (Fo² - M)²
   drops by at least MIN_GAIN of itself and R1 drops. Up to MAX_SWAPS rounds.

The acceptance uses the refinement's own weights (SHELXL's, as the least squares uses
them), computed from the model before the swap and held fixed for the comparison: with
plain 1/σ² weights the strongest reflections, whose errors on measured data are mostly
systematic, decide, and they rejected swaps that lower R1, wR2 and the weighted sum alike.
The 1/σ² evidence of steps 1-2 only ranks what is tested.

The model's counts of each element are kept, so the formula found stays the formula given.
"""

from __future__ import annotations


import numpy as np

from refractor_core.crystal.formula import atomic_number

from .completion import MAX_U
from .model import WorkingModel, is_hydrogen
from .parameters import Parameterisation
from .significance import data_fit

MAX_Z_GAP = 3
PROBE_CYCLES = 3
#: rounds of one swap each, going on while the data accept one (a solved 52-atom pyrazole
#: had nine wrong C/N/O elements left with two rounds)
MAX_SWAPS = 12
MAX_PROBED = 16
PAIRS_TESTED = 3
MIN_GAIN = 1e-3


def _neighbour_elements(elements: list[str]) -> dict[str, list[str]]:
    """Each element -> the formula's elements 1..MAX_Z_GAP electrons away."""
    out: dict[str, list[str]] = {}
    for a in elements:
        za = atomic_number(a)
        out[a] = [b for b in elements if b != a and 0 < abs(atomic_number(b) - za) <= MAX_Z_GAP]
    return out


def swappable_atoms(model: WorkingModel, neighbours: dict[str, list[str]]) -> list[int]:
    """Atoms whose element may be swapped: fully occupied, ordered, not riding, with a
    neighbouring element in the formula, and a U_eq that is not spurious (at most
    completion's MAX_U: electrons an atom with a huge U gains at an unmodelled solvent site
    would pay for swapping a real atom's element, as a ring N of malbac became C)."""
    return [i for i in range(model.n)
            if not is_hydrogen(model.elements[i]) and model.riding[i] < 0 and model.part[i] == 0
            and model.occupancy[i] > 0.99 and model.u_iso[i] <= MAX_U and neighbours.get(model.elements[i])]


def _probe(refinement, model: WorkingModel, atoms: list[int],
           weights: np.ndarray | None = None) -> tuple[WorkingModel, float, float]:
    """Refine only `atoms` (positions, ADPs) a few cycles; returns (model, χ² (1/σ² or the
    given weights), R1)."""
    keep = set(atoms)
    fixed = {i for i in range(model.n) if i not in keep}

    def build(m: WorkingModel) -> Parameterisation:
        return Parameterisation.build(m, fixed_atoms=fixed)

    drv = refinement.quiet_driver(build, refinement._after_shift)
    res = drv.run(model.copy(), PROBE_CYCLES, "element test", convergence=0.1)
    chi2, r1 = data_fit(refinement, res.model, weights)
    return res.model, chi2, r1


def swap_elements(refinement, model: WorkingModel) -> tuple[WorkingModel, list[str]]:
    """Count-preserving element swaps the data support (module docstring); returns the
    model (unchanged when none) and the swaps made, as log text."""
    from .refiner import expected_asu_counts

    expected = expected_asu_counts(refinement.data, model)
    formula_elements = [e for e, v in expected.items() if not is_hydrogen(e) and v > 0] if expected else []
    neighbours = _neighbour_elements(formula_elements)
    made: list[str] = []
    for _ in range(MAX_SWAPS):
        movable = swappable_atoms(model, neighbours)
        if len({model.elements[i] for i in movable}) < 2:
            break
        base_chi2, base_r1 = data_fit(refinement, model)
        weights = refinement.driver.weights(model)  # for the acceptance, held fixed
        base_wchi2, _ = data_fit(refinement, model, weights)
        # screen: every relabel with nothing refined; then the most promising, refined
        quick = []
        for i in movable:
            for e in neighbours[model.elements[i]]:
                trial = model.copy()
                trial.elements[i] = e
                quick.append((data_fit(refinement, trial)[0], i, e))
        quick.sort()
        gains: dict[tuple[int, str], float] = {}  # (atom, element) -> drop of χ² (may be < 0)

        def probe_gain(i: int, e: str) -> None:
            trial = model.copy()
            trial.elements[i] = e
            _, chi2, _ = _probe(refinement, trial, [i])
            gains[(i, e)] = base_chi2 - chi2

        for _, i, e in quick[:MAX_PROBED]:
            probe_gain(i, e)
        # the partners of the most promising relabels: every atom of the element gained,
        # relabelled to the first atom's element (a swap needs both; up to MAX_PROBED more)
        extra = 0
        for (i, e), gi in sorted(gains.items(), key=lambda t: -t[1])[:PAIRS_TESTED]:
            for j in movable:
                if gi > 0 and model.elements[j] == e and (j, model.elements[i]) not in gains and extra < MAX_PROBED:
                    probe_gain(j, model.elements[i])
                    extra += 1
        # count-preserving pairs: an atom that gains by becoming B, with an atom of B
        # becoming the first one's element (which alone may even lose: the pair is judged)
        pairs = sorted(
            ((gi + gains[(j, model.elements[i])], i, j)
             for (i, e), gi in gains.items() if gi > 0
             for j in movable if model.elements[j] == e and (j, model.elements[i]) in gains),
            reverse=True,
        )
        best = None
        for score, i, j in pairs[:PAIRS_TESTED]:
            if score <= 0:
                break
            trial = model.copy()
            trial.elements[i], trial.elements[j] = model.elements[j], model.elements[i]
            trial, chi2, r1 = _probe(refinement, trial, [i, j], weights)
            if chi2 < (1.0 - MIN_GAIN) * base_wchi2 and r1 < base_r1 and (best is None or chi2 < best[1]):
                best = (trial, chi2, r1, i, j)
        if best is None:
            break
        trial, chi2, r1, i, j = best
        for k in (i, j):  # labels follow the element (riding H are re-placed afterwards)
            trial.labels[k] = trial.unique_label(trial.elements[k])
        made.append(f"{model.labels[i]} -> {trial.labels[i]}, {model.labels[j]} -> {trial.labels[j]} "
                    f"(weighted χ² {base_wchi2:.0f} -> {chi2:.0f}, R1 {base_r1:.4f} -> {r1:.4f})")
        model = trial
    return model, made
