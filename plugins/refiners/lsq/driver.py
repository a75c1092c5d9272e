"""Least-squares cycles: Levenberg-Marquardt steps, full or blocked matrix, shift/su.

A cycle linearises the model at the current parameters with the weights fixed, solves the
damped normal equations (N + λ diag N) δ = Jᵀw r, and accepts the step only if Σ w r²
decreases (otherwise λ grows tenfold and the step is retried). In blocked mode a cycle
visits every block of site groups in turn, each block together with the overall
parameters (scale, extinction, twin fractions), as SHELXL's BLOC does. In a polar space
group the full matrix holds the origin with a restraint on the weighted centroid; a block
cannot (the restraint would pin the centroid of the block's own atoms, and blocks could
never move against each other along the polar axis), so a blocked cycle moves the
structure back along that axis afterwards instead (`_restore_origin`), which changes no
intensity. Convergence: the largest |shift|/su of a cycle falls below the threshold
(SHELXL's criterion).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from refractor_core.errors import RefinementError

from . import restraints
from .least_squares import (
    IntensityCalculator,
    covariance,
    normal_equations,
    objective,
    solve_damped,
    solve_damped_constrained,
)
from .model import WorkingModel
from .parameters import Parameterisation, free_origin_directions, origin_pinned, origin_weight
from .weighting import weights_for

MAX_ATTEMPTS = 8
DAMPING_MIN = 1e-7
DAMPING_MAX = 1e8
#: relative damping below which a step is (nearly) a Gauss-Newton step
CONVERGED_DAMPING = 0.02
#: smallest factor by which λ shrinks after a step the linear model predicted well
FAST_DECREASE = 0.1
#: predicted decrease of the sum of squares (relative) below which a cycle is at the minimum
NEGLIGIBLE = 1e-9
#: rise of the sum of squares, in units of S² (the mean w·Δ² of one observation), that a step
#: may cause and still be taken: SHELXL's riding model gives a riding H's derivatives to its
#: parent only, so the model it converges to is not exactly the minimum of the sum of squares,
#: and the last steps towards it may go uphill by that little
UPHILL = 0.01
#: largest move of a non-H atom (Å) one step may make in a user's model: a Gauss-Newton
#: step is a linear model of the structure factors, whose phases turn by 2π h·Δx, so a
#: longer step is outside the range where it holds (the whole step is scaled down to this).
#: A generated model is refined without it: its atoms may be far off, completion moves
#: them, and the limit slowed its refinements (mn_complex's P-1 candidate: 27 -> 41 cycles)
MAX_ATOM_STEP = 0.5


@dataclass
class CycleRecord:
    """Figures of one least-squares cycle (for the refinement log)."""

    cycle: int
    stage: str
    wr2: float
    goof: float
    max_shift_su: float
    worst: str
    damping: float
    n_parameters: int
    seconds: float
    at_minimum: bool = False
    #: largest |shift|/su of the undamped (Gauss-Newton) step, where the step taken was
    #: damped (None when it was not: then max_shift_su is that step's)
    gauss_newton_shift_su: float | None = None

    def line(self) -> str:
        return (
            f"cycle {self.cycle:3d} [{self.stage}] wR2 {self.wr2:.4f} GooF {self.goof:.3f} "
            f"max shift/su {self.max_shift_su:.3f} ({self.worst}) λ {self.damping:.1e} "
            f"{self.n_parameters} parameters {self.seconds:.1f} s"
        )


@dataclass
class StageResult:
    model: WorkingModel
    cycles: int
    converged: bool
    max_shift_su: float
    records: list[CycleRecord] = field(default_factory=list)


@dataclass
class Observed:
    """The observations a refinement fits (merged Fo², σ)."""

    fo2: np.ndarray
    sigma: np.ndarray
    #: the number of independent reflections SHELXL divides by when it scales the inverse
    #: normal matrix into the parameters' covariance: Friedel opposites both observed (kept
    #: apart in a non-centrosymmetric group) count once; None: every observation counts
    n_independent: int | None = None


@dataclass
class Settings:
    scheme: str = "shelxl"
    a: float = 0.1
    b: float = 0.0
    damping: float = 1e-3
    matrix: str = "full"
    block_size: int = 240
    convergence: float = 0.05
    #: largest move of a non-H atom in one step (Å; None: no limit), see MAX_ATOM_STEP
    max_atom_step: float | None = None


class Driver:
    """Runs least-squares cycles on a model for one stage of a refinement."""

    def __init__(
        self,
        calc: IntensityCalculator,
        obs: Observed,
        settings: Settings,
        build_parameters: Callable[[WorkingModel], Parameterisation],
        after_shift: Callable[[WorkingModel], None],
        log: Callable[[str], None],
        after_cycle: Callable[[WorkingModel, bool], bool] | None = None,
    ):
        self.calc = calc
        self.obs = obs
        self.settings = settings
        self.build_parameters = build_parameters
        self.after_shift = after_shift
        self.log = log
        self.damping = settings.damping
        #: max shift/su of the last cycle run (inf before the first)
        self.last_max_shift_su = math.inf
        self.cycle_count = 0
        self.restraints: list = []
        self.after_cycle = after_cycle

    # -- weights -----------------------------------------------------------------------
    def weights(self, model: WorkingModel, fc2c: np.ndarray | None = None) -> np.ndarray:
        m, _ = self.calc.model_intensities(model, fc2c)
        s = self.settings
        return weights_for(self.obs.fo2, self.obs.sigma, m, model.scale, s.a, s.b, s.scheme)

    # -- cycles ------------------------------------------------------------------------
    def run(self, model: WorkingModel, max_cycles: int, stage: str, convergence: float | None = None,
            keep_damping: bool = False) -> StageResult:
        """Cycles until max shift/su < convergence or `max_cycles`. A stage starts undamped,
        unless `keep_damping` (the model is where the last stage left it, e.g. only the data
        weights changed)."""
        conv = self.settings.convergence if convergence is None else convergence
        records: list[CycleRecord] = []
        last = self.last_max_shift_su  # a stage given no cycles reports the previous one's
        converged = False
        done = 0
        if not keep_damping:
            self.damping = self.settings.damping
        # every trial model of a step is put within the limits (ADPs positive definite, riding
        # H re-placed): so is the start, or a user's U below the positivity limit would make
        # the sum of squares jump at every trial, every step look uphill, and λ soar
        model = model.copy()
        self.after_shift(model)
        for _ in range(max_cycles):
            t0 = time.perf_counter()
            model, rec = self.cycle(model, stage)
            rec.seconds = time.perf_counter() - t0
            records.append(rec)
            self.log(rec.line())
            done += 1
            last = self.last_max_shift_su = rec.max_shift_su
            # the model has settled when its shifts are small (an ADP held at its limit may
            # keep the steps damped: that is settled too, though not converged)
            settled = last < conv or rec.at_minimum
            if self.after_cycle is not None and self.after_cycle(model, settled):
                self.damping = self.settings.damping  # the parameters changed: start afresh
                continue
            # small shifts count only when the Gauss-Newton step is small too (a heavily
            # damped step is small whatever the distance to the minimum)
            undamped = rec.max_shift_su if rec.gauss_newton_shift_su is None else rec.gauss_newton_shift_su
            if (last < conv and undamped < conv) or rec.at_minimum:
                converged = True
                break
        return StageResult(model, done, converged, last, records)

    def cycle(self, model: WorkingModel, stage: str) -> tuple[WorkingModel, CycleRecord]:
        """One least-squares cycle (one pass over all blocks)."""
        self.cycle_count += 1
        params = self.build_parameters(model)
        fc2c0 = self.calc.fc2_components(model)
        w = self.weights(model, fc2c0)
        n_obs = len(self.obs.fo2)
        blocks: list[list[int] | None]
        if self.settings.matrix == "blocked":
            blocks = list(params.blocks(self.settings.block_size)) or [None]
        else:
            blocks = [None]
        worst_ratio, worst_name = 0.0, "-"
        gn_worst: float | None = None
        chi2_start = None
        at_minimum = True
        any_accepted = False
        all_stalled = True  # every block's step was refused until damped to nothing
        restraint_scale = None
        frames = restraints.bond_frames(model, self.restraints)  # held through the cycle
        start = model
        damping_before = self.damping
        for block in blocks:
            params = self.build_parameters(model)
            # the restraint weight scale is held for the whole cycle, trial steps included
            ne, restraint_scale = self._restrained_normal_equations(params, w, block, len(blocks) == 1,
                                                                    restraint_scale, frames)
            if chi2_start is None:
                chi2_start = ne.chi2
            s2 = ne.chi2 / max(self.su_count(n_obs) - params.n, 1)  # shift/su as SHELXL reports it
            accepted = None
            refused = False
            nu = 2.0
            for _ in range(MAX_ATTEMPTS):
                try:
                    steps = self._bounded_steps(params, ne, self.damping)
                except (np.linalg.LinAlgError, ValueError):
                    self.damping = min(self.damping * 10.0, DAMPING_MAX)
                    continue
                # the step clipped at the bounds, and (if the positivity limit cut a U back) the
                # step solved again on the limit: the one lowering the sum of squares more is tried
                val, shift, trial = math.inf, *steps[0]
                for candidate_shift, candidate in steps:
                    try:
                        if not candidate.plausible():
                            # a step through a (near-)singular direction: phases reduced mod 1
                            # can make a wild step look good, so it is refused outright
                            raise RefinementError("implausible step")
                        value, _ = objective(self.calc, candidate, self.obs.fo2, w)
                        value += restraints.sum_of_squares(candidate, self.restraints, restraint_scale, frames)
                    except RefinementError:
                        value = math.inf
                    if value < val:
                        val, shift, trial = value, candidate_shift, candidate
                # the step actually taken (a parameter held at a bound moved less)
                if math.isfinite(val):
                    shift = params.effective_shift(trial)[ne.columns]
                # gain ratio: actual over predicted decrease of the sum of squares (Nielsen)
                predicted = float(shift @ (2.0 * ne.rhs - ne.matrix @ shift))
                actual = ne.chi2 - val
                negligible = 0 <= predicted < NEGLIGIBLE * ne.chi2 and abs(actual) < NEGLIGIBLE * ne.chi2
                if negligible:
                    break  # nothing left to gain in this block
                at_minimum = False
                if math.isfinite(val) and actual >= -max(1e-12 * ne.chi2, UPHILL * s2):
                    rho = actual / predicted if predicted > 0 else 1.0
                    accepted = (trial, shift)
                    # Nielsen's update, but a step the linear model predicted well (ρ near 1)
                    # cuts λ up to tenfold: damping left over from a hard stretch (a model
                    # change, a bad start) would otherwise take many cycles to decay; so does
                    # a step taken a little uphill (UPHILL), which only less damping improves on
                    floor = FAST_DECREASE if rho > 0.75 else 1.0 / 3.0
                    factor = FAST_DECREASE if actual < 0 else max(floor, 1.0 - (2.0 * rho - 1.0) ** 3)
                    self.damping = max(self.damping * factor, DAMPING_MIN)
                    break
                refused = True
                self.damping = min(self.damping * nu, DAMPING_MAX)
                nu *= 2.0
            if accepted is None:
                continue  # no step lowers the sum of squares: this block is at its minimum
            model, shift = accepted
            any_accepted = True
            cov, _ = covariance(ne.matrix, s2)
            su = np.sqrt(np.clip(np.diag(cov), 0.0, None))
            ratio = _shift_over_su(shift, su)
            if len(ratio):
                j = int(np.argmax(ratio))
                if ratio[j] > worst_ratio:
                    worst_ratio = float(ratio[j])
                    worst_name = params.describe(int(ne.columns[j]))
            negligible_step = bool(len(ratio)) and float(np.max(ratio)) < self.settings.convergence
            if self.damping > CONVERGED_DAMPING and len(ratio):
                # the step was damped, so small by construction: converged only if the
                # undamped (Gauss-Newton) step would be small too
                gn = self._gauss_newton_shift_su(params, ne, su)
                gn_worst = max(gn_worst or 0.0, gn)
                if negligible_step and gn >= self.settings.convergence:
                    # a damped step too small to matter while the Gauss-Newton step is not:
                    # without this, a gain ratio stuck near 1/2 (the riding model's gradient
                    # is not quite the sum of squares' own) would hold λ where it is
                    self.damping = max(self.damping * FAST_DECREASE, DAMPING_MIN)
            # a step too small to matter, taken only once larger ones were refused: nothing
            # left to gain downhill (SHELXL's riding model may converge a little uphill)
            all_stalled = all_stalled and refused and negligible_step
        if len(blocks) > 1 and model is not start:
            model = _restore_origin(start, model)
            self.after_shift(model)
        fc2c1 = self.calc.fc2_components(model)
        m, _ = self.calc.model_intensities(model, fc2c1)
        w1 = self.weights(model, fc2c1)
        chi2 = float(np.sum(w1 * (self.obs.fo2 - m) ** 2))
        n_par = self.build_parameters(model).n
        wr2 = float(np.sqrt(chi2 / max(np.sum(w1 * self.obs.fo2**2), 1e-300)))
        goof = float(np.sqrt(chi2 / max(n_obs - n_par, 1)))
        # no block found a step lowering the sum of squares, even heavily damped: the
        # model is at its minimum (numerically); more cycles would repeat the same attempts
        at_minimum = at_minimum or not any_accepted or all_stalled
        if not any_accepted:
            # every step refused: the model is at its minimum, and the λ the refusals raised
            # (up to 2^36-fold) would only hold back a stage that goes on from here
            self.damping = damping_before
        rec = CycleRecord(self.cycle_count, stage, wr2, goof, worst_ratio, worst_name, self.damping, n_par, 0.0, at_minimum,
                          gauss_newton_shift_su=gn_worst)
        return model, rec

    def _bounded_steps(self, params: Parameterisation, ne,
                       damping: float) -> list[tuple[np.ndarray, WorkingModel]]:
        """[(the damped step, the model it leads to, its parameters clipped at their bounds)],
        and where the positivity limit cut an anisotropic U's move back, also the step
        solved again with that U held on the limit along the directions the step took
        below it (`Parameterisation.bound_constraints`), the others free: solved once, they
        kept the part of their step that assumed the U's full move, an error the couplings
        (the scale with every ADP) carry into every cycle while the U stays at the limit.
        The caller tries the one that lowers the sum of squares more (from a rough start,
        the clipped step can be the better). Raises LinAlgError if the equations cannot be
        solved."""
        shift = solve_damped(ne.matrix, ne.rhs, damping)
        if not np.all(np.isfinite(shift)):
            raise np.linalg.LinAlgError("non-finite shift")
        shift, trial = self._limited_step(params, shift, ne.columns)
        steps = [(shift, trial)]
        solved = np.zeros(params.n)
        solved[ne.columns] = shift
        rows, values = params.bound_constraints(solved)
        if len(rows):
            held = solve_damped_constrained(ne.matrix, ne.rhs, damping, rows[:, ne.columns], values)
            if np.all(np.isfinite(held)):
                steps.append(self._limited_step(params, held, ne.columns))
        return steps

    def _limited_step(self, params: Parameterisation, shift: np.ndarray,
                      columns: np.ndarray) -> tuple[np.ndarray, WorkingModel]:
        """(the step, the model it leads to), the whole step scaled down so that no non-H
        atom moves more than MAX_ATOM_STEP (as SHELXL's DAMP scales all shifts down when
        one is too large): the limit of the settings, if any."""
        trial = params.apply(shift, columns)
        self.after_shift(trial)
        limit = self.settings.max_atom_step
        move = _largest_move(params.model, trial) if limit else 0.0
        if limit and move > limit:
            shift = shift * (limit / move)
            trial = params.apply(shift, columns)
            self.after_shift(trial)
        return shift, trial

    def _gauss_newton_shift_su(self, params: Parameterisation, ne, su: np.ndarray) -> float:
        """Largest |shift|/su of the Gauss-Newton step of these normal equations, as far as
        each parameter could move: an ADP held at its positivity limit, or an occupancy at
        its bound, counts by the move it is allowed (the step pressing against a bound is
        no sign of distance from the minimum), and the others by their step given that."""
        try:
            _, trial = self._bounded_steps(params, ne, DAMPING_MIN)[-1]
        except (np.linalg.LinAlgError, ValueError):
            return math.inf
        return float(np.max(_shift_over_su(params.effective_shift(trial)[ne.columns], su)))

    # -- standard uncertainties ----------------------------------------------------------
    def _restrained_normal_equations(self, params: Parameterisation, w: np.ndarray, block: list[int] | None,
                                     single: bool, scale: float | None = None,
                                     frames: dict[int, np.ndarray] | None = None,
                                     extra: np.ndarray | None = None):
        """(normal equations of one block with the restraints added, their weight scale):
        the restraint weights are scaled by `scale`, or by this block's own fit if None;
        origin restraints when the whole matrix is one block (`single`); `frames`: RIGU
        bond directions to hold (`restraints.bond_frames`); `extra`: vectors v whose
        data-only JᵀWv `normal_equations` returns as well."""
        ne = normal_equations(self.calc, params, self.obs.fo2, w, block, extra)
        if scale is None:
            scale = restraint_weight_scale(ne.chi2, len(self.obs.fo2))
        if single:
            add_origin_restraints(ne, params)
        restraints.add_to_normal_equations(ne, params, self.restraints, scale, frames)
        return ne, scale

    def su_count(self, n_obs: int) -> int:
        """The number of observations S² of the parameters' covariance is taken over: as
        SHELXL, χ²/(n_independent - p), where a Friedel pair kept apart counts as one
        reflection (χ² still sums over both; GooF is not affected). Centrosymmetric or
        Friedel-merged data: n_independent = n."""
        n_ind = self.obs.n_independent
        return n_obs if n_ind is None else min(int(n_ind), n_obs)

    def uncertainties(self, model: WorkingModel) -> tuple[Parameterisation, np.ndarray, float, list[int]]:
        """(parameters, their covariance (blocks filled only in blocked mode), S², singular ones)."""
        params = self.build_parameters(model)
        w = self.weights(model)
        n_obs = len(self.obs.fo2)
        cov = np.zeros((params.n, params.n))
        blocks: list[list[int] | None]
        if self.settings.matrix == "blocked":
            blocks = list(params.blocks(self.settings.block_size)) or [None]
        else:
            blocks = [None]
        s2 = None
        singular: list[int] = []
        for block in blocks:
            ne, _ = self._restrained_normal_equations(params, w, block, single=len(blocks) == 1)
            if s2 is None:
                s2 = ne.chi2 / max(self.su_count(n_obs) - params.n, 1)
            c, bad = covariance(ne.matrix, s2)
            cov[np.ix_(ne.columns, ne.columns)] = c
            singular.extend(int(ne.columns[b]) for b in bad)
        return params, cov, float(s2 or 0.0), sorted(set(singular))

    def gauss_newton_step(self, model: WorkingModel) -> tuple[Parameterisation, np.ndarray, np.ndarray]:
        """One full-matrix Gauss-Newton step from `model` under the current weights and
        restraints (damped by DAMPING_MIN only, as the cycles' own Gauss-Newton estimate),
        and the su of each parameter: (parameters, shift, su). At a converged model of
        this objective the shifts are small fractions of the su; from another program's
        converged model they measure how far apart the two minima are."""
        params = self.build_parameters(model)
        ne, _ = self._restrained_normal_equations(params, self.weights(model), None, single=True)
        cov, _ = covariance(ne.matrix, ne.chi2 / max(self.su_count(len(self.obs.fo2)) - params.n, 1))
        return params, solve_damped(ne.matrix, ne.rhs, DAMPING_MIN), np.sqrt(np.clip(np.diag(cov), 0.0, None))


def _restore_origin(before: WorkingModel, after: WorkingModel) -> WorkingModel:
    """`after` moved along the polar directions (if any; not those a fixed coordinate pins)
    so that its scattering-weighted centroid is where `before`'s was (a copy; riding H are
    re-placed by the caller)."""
    dirs = free_origin_directions(after.symmetry)
    dirs = dirs[:, [k for k in range(dirs.shape[1]) if not origin_pinned(after, dirs[:, k])]]
    own = np.nonzero(after.riding < 0)[0]
    if not dirs.shape[1] or not len(own) or after.n != before.n:
        return after
    weight = np.array([origin_weight(after, i) for i in own])
    moved = (weight[:, None] * (after.xyz[own] - before.xyz[own])).sum(axis=0) / max(weight.sum(), 1e-12)
    out = after.copy()
    out.xyz[own] -= dirs @ (dirs.T @ moved)
    return out


def _shift_over_su(shift: np.ndarray, su: np.ndarray) -> np.ndarray:
    """|shift|/su per parameter (0 where the su is zero)."""
    return np.where(su > 0, np.abs(shift) / np.where(su > 0, su, 1.0), 0.0)


def restraint_weight_scale(chi2_data: float, n_obs: int) -> float:
    """SHELXL multiplies the restraint weights by the mean w(Fo² - Fc²)² of the reflections:
    restraints weigh more while the fit is poor (early cycles, GooF well above one) and
    about (n - p)/n at a converged fit; this also makes them independent of the absolute
    scale of the data weights."""
    return chi2_data / max(n_obs, 1) if chi2_data > 0 else 1.0


def add_origin_restraints(ne, params: Parameterisation) -> None:
    """Add the floating-origin restraints of polar space groups to normal equations."""
    rows = params.origin_restraints()
    if not rows:
        return
    diag_max = float(np.max(np.diag(ne.matrix))) if len(ne.matrix) else 1.0
    for a in rows:
        sub = a[ne.columns]
        norm = float(sub @ sub)
        if norm <= 0:
            continue
        weight = 100.0 * diag_max / norm
        ne.matrix += weight * np.outer(sub, sub)


def _largest_move(before: WorkingModel, after: WorkingModel) -> float:
    """Largest distance (Å) a non-H atom moves from `before` to `after` (same atoms)."""
    heavy = ~before.hydrogen
    if not heavy.any() or before.n != after.n:
        return 0.0
    d = after.cartesian(after.xyz[heavy]) - before.cartesian(before.xyz[heavy])
    return float(np.sqrt((d * d).sum(axis=1)).max())
