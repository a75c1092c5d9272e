"""Newton steps in the torsions of rotating riding groups (CH3, NH3, OH).

A rotating group's torsion is a least-squares parameter (`SiteGroup.torsion_group`), but
the Gauss-Newton curvature of the sum of squares along it is a poor guide: its H atoms
scatter weakly and move on a circle, so the term Gauss-Newton leaves out (Σ w r ∂²M/∂τ²)
is as large as the one it keeps, and the steps converge only linearly (by a factor
0.6-0.9 per cycle on the benchmark cases). The sum of squares along one torsion is cheap
to evaluate exactly, since only the group's few H atoms move: F = F(rest) + F(group), and
the group's part is recomputed for each trial torsion. `newton_torsions` takes, for every
refined torsion in turn, the Newton step of the parabola through the sum of squares at
τ and τ ± δ, and keeps it when it lowers the sum of squares (else the better of τ ± δ,
else τ); up to MAX_STEPS such steps, each parabola as wide as the step before (or
narrower when the last found nothing lower). A parabola 5° wide can misplace the minimum
by a tenth of a degree, and Gauss-Newton's step (its curvature too low) then jumps back
over it every cycle: phosphazene's C1' kept max shift/su at 0.011 for 300 cycles.
"""

from __future__ import annotations

import numpy as np

from refractor_core.crystal.cell import fractionalization_matrix

from .hydrogens import place_group
from .least_squares import IntensityCalculator
from .model import WorkingModel

#: torsion difference (degrees) of the three-point parabola
PROBE = 5.0
#: largest Newton step (degrees)
MAX_STEP = 30.0
#: Newton steps per torsion and cycle, each on a parabola as wide as the step before, or a
#: tenth as wide as the last when that one found nothing lower (down to MIN_PROBE degrees)
MAX_STEPS = 4
MIN_PROBE = 0.02


def newton_torsions(calc: IntensityCalculator, model: WorkingModel, fo2: np.ndarray, weights: np.ndarray) -> int:
    """Move each refined torsion of `model` (in place) to where the sum of squares Σ w(Fo² - M)²
    along it is lowest by one exact 1-D Newton step; returns how many torsions moved."""
    # (an AFIX m8 group's torsion is coupled to its refined X-H distance: least squares
    # moves both together, and a 1-D step in the torsion alone slowed it measurably)
    groups = [g for g in model.h_groups if g.refine_torsion and not g.refine_distance and not g.fixed_by_symmetry
              and g.atoms]
    if not groups:
        return 0
    f_m = fractionalization_matrix(model.cell)
    f_all = calc.structure_factors(model).copy()
    moved = 0
    for g in groups:
        index = np.array(g.atoms, dtype=np.int64)
        f_rest = f_all - calc.partial_structure_factors(model, index)
        start = g.torsion
        cache: dict[float, tuple[float, np.ndarray]] = {}

        def sum_of_squares(tau: float) -> float:
            if tau not in cache:
                g.torsion = tau
                place_group(model, g, f_m)
                f = f_rest + calc.partial_structure_factors(model, index)
                m, _ = calc.model_intensities(model, f.real**2 + f.imag**2)
                cache[tau] = (float(np.sum(weights * (fo2 - m) ** 2)), f)
            return cache[tau][0]

        best, probe = start, PROBE
        for _ in range(MAX_STEPS):
            s0, up, down = sum_of_squares(best), sum_of_squares(best + probe), sum_of_squares(best - probe)
            slope = (up - down) / (2.0 * probe)
            curvature = (up - 2.0 * s0 + down) / probe**2
            trials = [best + probe, best - probe]
            if curvature > 0:
                trials.append(best + float(np.clip(-slope / curvature, -MAX_STEP, MAX_STEP)))
            trial = min(trials, key=sum_of_squares)
            if sum_of_squares(trial) < s0:
                step, best = abs(trial - best), trial
                if step < MIN_PROBE:
                    break
                # the next parabola spans the step just taken: a wide one misplaces the
                # minimum by its cubic term, and Gauss-Newton's step, from the other side,
                # undoes it
                probe = float(np.clip(step, MIN_PROBE, PROBE))
            elif probe > MIN_PROBE:  # near the minimum: a narrower parabola places it
                probe = max(probe / 10.0, MIN_PROBE)
            else:
                break
        g.torsion = best
        place_group(model, g, f_m)
        f_all = cache[best][1]
        moved += best != start
    model.update_u_eq()
    return moved
