"""The `charge-flip` generator: ab initio phasing by charge flipping, one candidate per solution.

Route (Superflip's): merge the data in the hypothesis' Patterson group (its rotations and
lattice centring, no translations; Friedel mates merged; centring absences removed, while
screw/glide absences stay in as the weak reflections they were measured to be), normalise
to |E| (or keep |F|),
expand to P1 and run several charge-flipping trials from random phases (seeded per
trial). The P1 trials depend only on the data, the Patterson group and the seed, and are
cached on those: a call with the same seed for another hypothesis of the same Patterson
group reuses them (the pipeline gives each hypothesis its own seed, so within one run it
does not). For a hypothesis, each distinct solution is
shifted to the origin that best obeys its symmetry (the symmetry-agreement score is
recorded and enters the candidate's score), symmetrised, turned into a map with the
observed amplitudes, and interpreted into atoms.

Candidate.score (lower is better) = 0.75·(1 − symmetry agreement) + 0.25·R_flip
− 0.05·(further trials that reached the same solution, up to 4). The symmetry agreement
weighs most (R_flip is not comparable between |E| and |F| trials); P1, with no operation
to test, counts as 0.5, so a solution that does obey a higher group scores better there.
Candidate.meta holds the trial statistics (R, flip ratio, cycles, converged, seconds), the
origin shift and score, how many trials reached the same solution ("support"), the Z used
and the peak count.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass

import numpy as np

from refractor_core.crystal.cell import d_spacing, stol as stol_of
from refractor_core.crystal.fourier import expand_indices_to_p1, find_peaks, fourier_map, grid_shape
from refractor_core.crystal.merging import merge
from refractor_core.crystal.observations import prepare_observations, to_resolution
from refractor_core.crystal.symmetry import SymmetryOps
from refractor_core.crystal.wilson import normalized_e, wilson_plot
from refractor_core.crystal.formula import cell_contents
from refractor_core.errors import InputError
from refractor_core.interfaces import Generator
from refractor_core.types import Candidate, Embedding, ReflectionData, SpaceGroupHypothesis
from refractor_plugins.generators.configs import ChargeFlipConfig

from .flipping import FlipProblem, FlipResult, FlipSettings, SymmetryProjector, run_trial
from .interpret import expected_contents, peaks_to_structure
from .origin import P1Lookup, find_origin, solution_similarity, symmetrize

log = logging.getLogger("refractor.generators.charge_flip")

#: two trials whose origin-free phase correlation exceeds this reached the same solution
SAME_SOLUTION = 0.6
#: the correlation is maximised over origin shifts on a grid this many times finer than the
#: flipping grid: on the flipping grid itself (0.5 d_min spacing) a relative origin shift off
#: the grid costs up to ~0.15 of the correlation (cod1979688: right solutions 0.46-0.60 with
#: each other on the flipping grid, 0.58-0.65 on this one; wrong ones ~0.1), which split one
#: solution into as many groups as trials found it
SIMILARITY_OVERSAMPLING = 2
#: |E| trials may run this many times max_cycles: they reach a large structure late
#: (cod1979688: cycles 1154-2294), while |F| trials stop early, often falsely "converged"
E_CYCLE_FACTOR = 10 / 3
#: score bonus per further trial that reached the same solution (up to 4)
SUPPORT_BONUS = 0.05
#: symmetry agreement counted for a group with no operation to test (P1)
NEUTRAL_AGREEMENT = 0.5
#: distinct solutions placed and scored per hypothesis (None: every one). The groups come
#: ordered by support, then the "converged" flag and R_flip, neither of which compares
#: |E| with |F| trials, so a cut-off here can drop the only right solution unscored
MAX_GROUPS_SCORED: int | None = None


def patterson_symmetry(sym: SymmetryOps) -> SymmetryOps:
    """The Patterson group: the rotations of `sym` with inversion and its lattice centring, no screw/glide parts."""
    ops = sym.gemmi_ops.derive_symmorphic()
    ops.add_inversion()
    return SymmetryOps.from_triplets([op.triplet() for op in ops])


def _fingerprint(data: ReflectionData) -> str:
    h = hashlib.sha1()
    for arr in (data.hkl, data.intensity, data.sigma):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(repr(data.cell.parameters if data.cell else None).encode())
    h.update(repr((data.formula, data.z, data.wavelength)).encode())
    return h.hexdigest()


@dataclass
class P1Solutions:
    """The P1 trials for one data set and Patterson group."""

    problem: FlipProblem
    problems: dict[str, FlipProblem]
    trials: list[FlipResult]
    groups: list[list[int]]  # trial indices reaching the same solution, best group first
    seconds: float
    d_min: float
    z: float
    z_estimated: bool


class ChargeFlipGenerator(Generator):
    """Charge flipping (Oszlányi & Sütő; Superflip's choices) with origin search and peak interpretation."""

    name = "charge-flip"
    version = "0.1.0"
    Config = ChargeFlipConfig

    def __init__(self, config=None, context=None):
        super().__init__(config, context)
        self._cache: dict[tuple, P1Solutions] = {}

    # ----------------------------------------------------------------------------------
    def generate(
        self,
        data: ReflectionData,
        hypothesis: SpaceGroupHypothesis,
        *,
        k: int = 1,
        embedding: Embedding | None = None,
        seed: int = 0,
    ) -> list[Candidate]:
        """Up to `k` distinct candidates in the hypothesis' space group, best first."""
        if data.cell is None:
            raise InputError("charge flipping needs the unit cell", path=data.source)
        if data.n < 10:
            raise InputError(f"only {data.n} reflections: too few to phase", path=data.source)
        t0 = time.perf_counter()
        cfg: ChargeFlipConfig = self.config  # type: ignore[assignment]
        sg = hypothesis.space_group
        sym = SymmetryOps.from_space_group(sg)
        data = to_resolution(data, cfg.resolution_limit, min_keep=10)  # phase at atomic resolution
        solutions = self._p1_solutions(data, sym, seed=seed, k=k)
        contents = expected_contents(data.formula, data.z if data.z else None, data.cell, sym)
        if data.z is None and data.formula:
            contents.z = solutions.z
            contents.counts = {
                e: n * solutions.z / sym.n for e, n in _heavy_counts(data.formula).items()
            }
        obs = prepare_observations(data, sym)
        hkl_u = obs.hkl.astype(np.int64)
        f_obs = _absolute_amplitudes(obs.data, sym, data, contents.z)
        shape = grid_shape(
            data.cell, solutions.d_min, sampling=cfg.peak_sampling, symmetry=sym,
            hkl=expand_indices_to_p1(hkl_u, sym).hkl, max_spacing=0.3,
        )
        # every distinct solution is placed in this group and scored; the best k are interpreted
        problem = solutions.problem
        scored = []
        for group in solutions.groups[:MAX_GROUPS_SCORED]:
            trial = solutions.trials[group[0]]
            origin = find_origin(problem.hkl, trial.f, data.cell, sym)
            # a solution reached again from independent random phases is trusted more
            # P1 has no operation to test: neutral evidence, so that a group whose symmetry
            # the solution does obey (P-1 against P1) scores better than P1
            agreement = origin.score if origin.n_operations else NEUTRAL_AGREEMENT
            score = 0.75 * (1.0 - agreement) + 0.25 * trial.r - SUPPORT_BONUS * min(len(group) - 1, 4)
            scored.append((score, group, origin))
        scored.sort(key=lambda item: item[0])
        candidates: list[Candidate] = []
        for rank, (score, group, origin) in enumerate(scored[: max(k, 1)]):
            tc = time.perf_counter()
            trial = solutions.trials[group[0]]
            f_final, polish = self._symmetric_polish(solutions, trial, sym, origin.shift)
            lookup = P1Lookup(problem.hkl, f_final)
            f_sym, fom = symmetrize(lookup, hkl_u, sym, np.zeros(3))
            phase = np.exp(1j * np.angle(f_sym))
            rho = fourier_map(hkl_u, fom * f_obs * phase, data.cell, shape, sym)
            max_peaks = int(np.ceil(contents.total * 1.6)) + 10
            peaks = find_peaks(rho, data.cell, sym, max_peaks=max_peaks, min_distance=0.7)
            structure = peaks_to_structure(
                peaks, data.cell, sg, sym, contents, u_iso=cfg.u_iso, extra_fraction=cfg.extra_fraction,
                name=f"charge-flip-{rank + 1}", wavelength=data.wavelength,
            )
            meta = trial.stats()
            meta.update(
                {
                    "trial": int(group[0]),
                    "support": len(group),
                    "trials_run": len(solutions.trials),
                    "trials_converged": int(sum(t.converged for t in solutions.trials)),
                    "origin_shift": [round(float(v), 5) for v in origin.shift],
                    "symmetry_agreement": round(float(origin.score), 4) if origin.n_operations else None,
                    "symmetry_agreement_per_operation": [round(v, 4) for v in origin.per_operation],
                    "mean_fom": round(float(fom.mean()), 4) if len(fom) else 0.0,
                    "r_symmetric": None if polish is None else round(float(polish.r), 4),
                    "n_peaks": len(peaks),
                    "n_sites": structure.n_sites,
                    "expected_sites_asu": round(contents.total, 3),
                    "z": contents.z,
                    "z_estimated": contents.z_estimated,
                    "grid": list(solutions.problem.shape),
                    "map_grid": list(shape),
                    "flip_seconds_total": round(solutions.seconds, 3),
                    "interpret_seconds": round(time.perf_counter() - tc, 3),
                    "normalization": trial.normalization,
                    # the CIF's _atom_sites_solution_primary code of charge flipping
                    "solution_method": "iterative",
                }
            )
            candidates.append(
                Candidate(
                    structure=structure,
                    generator=self.name,
                    hypothesis=hypothesis,
                    seed=int(seed),
                    score=float(score),
                    meta=meta,
                )
            )
        candidates.sort(key=lambda c: c.score if c.score is not None else np.inf)
        log.info(
            "charge-flip %s: %d candidates from %d trials (%d converged) in %.1f s",
            sg.symbol, len(candidates), len(solutions.trials),
            sum(t.converged for t in solutions.trials), time.perf_counter() - t0,
        )
        return candidates[:k]

    # ----------------------------------------------------------------------------------
    def _symmetric_polish(self, solutions: P1Solutions, trial: FlipResult, sym: SymmetryOps, shift: np.ndarray):
        """Flip on from the origin-shifted solution with the hypothesis' symmetry imposed each cycle.

        Returns the final F (kernel convention, on the problem's reflections, origin at the
        group's origin) and the polishing run's result (None when no cycles are asked for).
        """
        cfg: ChargeFlipConfig = self.config  # type: ignore[assignment]
        problem = solutions.problems.get(trial.normalization, solutions.problem)
        h = problem.hkl.astype(np.float64)
        f_shifted = trial.f * np.exp(-2j * np.pi * (h @ np.asarray(shift, dtype=np.float64)))
        if cfg.symmetry_cycles <= 0 or sym.n == 1:
            return f_shifted, None
        rots, trans = coset_representatives(sym)
        projector = SymmetryProjector(problem, rots, trans)
        settings = FlipSettings(max_cycles=cfg.symmetry_cycles, min_cycles=10**9)
        # near the solution the weak-reflection phase shift only blurs the map: plain flipping
        problem = dataclasses.replace(problem, weak=np.zeros_like(problem.weak))
        result = run_trial(
            problem, settings, start=projector_start(projector, f_shifted), project=projector,
            delta_absolute=trial.delta, start_f000=trial.f000,
        )
        return result.f, result

    def _p1_solutions(self, data: ReflectionData, sym: SymmetryOps, *, seed: int, k: int) -> P1Solutions:
        cfg: ChargeFlipConfig = self.config  # type: ignore[assignment]
        patt = patterson_symmetry(sym)
        key = (_fingerprint(data), tuple(sorted(op.triplet() for op in patt.gemmi_ops)), int(seed), int(k), cfg.model_dump_json())
        if key in self._cache:
            return self._cache[key]
        t0 = time.perf_counter()
        merged = merge(data, patt, friedel=True)
        mdata = merged.to_reflection_data(data)
        if data.formula:
            z = float(data.z) if data.z else expected_contents(data.formula, None, data.cell, sym).z
            comp = cell_contents(data.formula, z)
        else:
            z = float(sym.n)
            comp = None
        e_amp = np.minimum(normalized_e(mdata, patt, comp), 6.0)  # outliers would dominate the map
        f_amp = np.sqrt(np.clip(mdata.intensity, 0.0, None))
        f_amp = f_amp / (np.sqrt(np.mean(f_amp**2)) or 1.0)
        if cfg.sharpening:
            sharpen = np.exp(cfg.sharpening * stol_of(data.cell, mdata.hkl) ** 2)
            e_amp, f_amp = e_amp * sharpen, f_amp * sharpen
        kinds = {"E": ["E"], "F": ["F"], "auto": ["F", "E"]}[cfg.normalization]
        d_min = float(d_spacing(data.cell, mdata.hkl).min())
        exp = expand_indices_to_p1(mdata.hkl, patt)
        shape = grid_shape(data.cell, d_min, sampling=cfg.grid_sampling, hkl=exp.hkl)
        problems = {
            kind: FlipProblem.build(exp.hkl, (e_amp if kind == "E" else f_amp)[exp.source], shape, weak_fraction=cfg.weak_fraction)
            for kind in kinds
        }
        problem = problems[kinds[0]]
        settings = FlipSettings(max_cycles=cfg.max_cycles, delta=cfg.delta)
        trials: list[FlipResult] = []
        similarity_cache: dict[tuple[int, int], float] = {}
        n_grid = float(np.prod(problem.shape))
        work_done = 0.0
        for i in range(cfg.max_trials):
            rng = np.random.default_rng([int(seed), i])
            cycles_left = int((cfg.work_budget - work_done) // n_grid)
            if cycles_left < settings.min_cycles:
                log.warning("charge-flip: work budget spent after %d trials", i)
                break
            if cfg.time_limit_s is not None:
                remaining = cfg.time_limit_s - (time.perf_counter() - t0)
                if remaining <= 0:
                    log.warning("charge-flip: time limit %.0f s reached after %d trials", cfg.time_limit_s, i)
                    break
                settings.time_limit_s = remaining
            kind = kinds[i % len(kinds)]
            settings.max_cycles = min(round(cfg.max_cycles * (E_CYCLE_FACTOR if kind == "E" else 1)), cycles_left)
            result = run_trial(problems[kind], settings, rng)
            work_done += result.cycles * n_grid
            result.normalization = kind
            trials.append(result)
            groups = _group_solutions(problem, trials, similarity_cache)
            # the same solution reached again and again from random phases, and obeying the
            # symmetry of the hypothesis that asked for the trials, is the answer
            if len(groups[0]) >= cfg.min_converged:
                agreement = find_origin(problem.hkl, trials[groups[0][0]].f, data.cell, sym).score
                if agreement >= cfg.min_agreement:
                    break
        groups = _group_solutions(problem, trials, similarity_cache)
        out = P1Solutions(
            problem=problem,
            problems=problems,
            trials=trials,
            groups=groups,
            seconds=time.perf_counter() - t0,
            d_min=d_min,
            z=z,
            z_estimated=data.z is None,
        )
        self._cache[key] = out
        return out


def coset_representatives(sym: SymmetryOps) -> tuple[np.ndarray, np.ndarray]:
    """Rotations and translations of the operations without the centring translations.

    On data that obey the lattice centring (centring-absent reflections removed), the
    centred copies of an operation repeat its terms, so these suffice for averaging.
    """
    ops = sym.gemmi_ops.sym_ops
    rots = np.array([op.rot for op in ops], dtype=np.int64) // 24
    trans = np.mod(np.array([op.tran for op in ops], dtype=np.float64) / 24.0, 1.0)
    return rots, trans


def projector_start(projector: SymmetryProjector, f: np.ndarray) -> np.ndarray:
    """Symmetry-averaged start values (kernel convention in, kernel convention out)."""
    return np.conj(projector(np.conj(f)))


def _heavy_counts(formula: str) -> dict[str, float]:
    from refractor_core.crystal.formula import parse_formula

    return {e: n for e, n in parse_formula(formula).items() if e not in ("H", "D")}


def _group_solutions(
    problem: FlipProblem, trials: list[FlipResult], cache: dict[tuple[int, int], float] | None = None
) -> list[list[int]]:
    """Trials grouped by solution (origin- and enantiomorph-free), best group first.

    Groups are ordered by the number of trials that found them (a solution reached
    repeatedly from random phases is the likely one), then converged first, then by R.
    `cache` keeps the pairwise similarities between calls (trials are regrouped after each).
    """
    cache = {} if cache is None else cache
    shape = tuple(int(s) * SIMILARITY_OVERSAMPLING for s in problem.shape)

    def similarity(i: int, j: int) -> float:
        key = (min(i, j), max(i, j))
        if key not in cache:
            cache[key] = solution_similarity(problem.hkl, trials[i].f, trials[j].f, shape)
        return cache[key]

    order = sorted(range(len(trials)), key=lambda i: (not trials[i].converged, trials[i].r))
    groups: list[list[int]] = []
    for i in order:
        for g in groups:
            if similarity(g[0], i) > SAME_SOLUTION:
                g.append(i)
                break
        else:
            groups.append([i])
    groups.sort(key=lambda g: (-len(g), not any(trials[i].converged for i in g), trials[g[0]].r))
    return groups


def _absolute_amplitudes(merged: ReflectionData, sym: SymmetryOps, data: ReflectionData, z: float) -> np.ndarray:
    """|F| of merged reflections on an absolute scale (electrons) from a Wilson plot."""
    i = np.clip(merged.intensity, 0.0, None)
    try:
        comp = cell_contents(data.formula, z) if data.formula else None
        w = wilson_plot(merged, sym, comp)
        scale = w.scale if w.scale > 0 else 1.0
    except (ValueError, FloatingPointError):
        scale = 1.0
    return np.sqrt(i / scale)
