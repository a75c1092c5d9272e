"""The `lsq` refiner component: stages of a SHELXL-style refinement.

    1. merge the data as SHELXL does (kernel `prepare_observations`, honouring OMIT/SHEL),
       check them against the space group, fit the scale;
    2. isotropic refinement (and difference-Fourier completion when asked);
    3. anisotropic non-H atoms (when the data allow; with 4-8 reflections per parameter
       only if significantly better than isotropic) with riding H placed geometrically
       and re-placed after every shift; for a generated model, element swaps the data
       support (`element_swaps.py`) and disorder split from the difference map
       (`disorder.py`: PART 1/2 with a refined free occupancy, kept only when significant);
    4. SHELXL weights optimised, refinement continued until max shift/su < 0.05 (a user's
       model starts under its own WGHT, as SHELXL refines it; other models under
       SHELXL's default a = 0.1, b = 0);
    5. standard uncertainties from the inverse normal matrix, the Flack parameter,
       difference-density peak and hole, agreement figures.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from typing import Any, ClassVar

import numpy as np

from refractor_core.crystal.cell import orthogonalization_matrix
from refractor_core.crystal.formula import atomic_number, cell_contents
from refractor_core.crystal.merging import collection_statistics, friedel_merged_count
from refractor_core.crystal.observations import TwinIndices, prepare_observations, to_resolution, twin_operators
from refractor_core.crystal.rfactors import agreement, scale_factor
from refractor_core.crystal.symmetry import SymmetryOps
from refractor_core.errors import InputError, RefinementError
from refractor_core.io.numbers import with_su
from refractor_core.interfaces import BuildContext, Refiner
from refractor_core.types import USER_MODEL, Candidate, RefinedCandidate, ReflectionData, RefinementInstructions, Structure

from ..configs import LsqConfig
from . import hydrogens as hyd
from . import user_restraints
from .absolute import intermediate_flack, inverted_structure, wrong_hand
from .driver import MAX_ATOM_STEP, Driver, Observed, Settings
from .geometry import as_records, bonds_and_angles
from .least_squares import IntensityCalculator
from .model import WorkingModel, is_hydrogen
from .parameters import (Parameterisation, cached_site_groups, free_variable_value, rigid_bases, share_site_values,
                         site_groups, ueq_gradient)
from .torsions import newton_torsions
from .weighting import optimise_weights

_log = logging.getLogger("refractor.lsq")

#: reflections per parameter below which 'auto' keeps ADPs isotropic
ANISO_DATA_RATIO = 8.0
#: between this and ANISO_DATA_RATIO reflections per parameter, anisotropic ADPs are
#: refined and kept only if significantly better (F-test at ANISO_SIGNIFICANCE)
ANISO_TEST_RATIO = 4.0
ANISO_SIGNIFICANCE = 1e-3
#: stage cycle budgets (fractions of max_cycles are not needed: SHELXL-like counts)
ISO_CYCLES = 12
ISO_CONVERGENCE = 0.5
ANISO_CYCLES = 25
WEIGHT_ROUNDS = 3
WEIGHT_CYCLES = 12
#: cycles held back from the earlier stages for the SHELXL weights (at most a quarter of
#: max_cycles), so that a model whose model changes use up the budget is still refined
#: under weights fitted to it
FINAL_RESERVE = 12
#: cycles of the trial that decides whether an extinction parameter is kept (held back
#: from the earlier stages too, at most a quarter of max_cycles)
EXTINCTION_CYCLES = 6
#: reflections × atoms below which one torch thread is used (threads.auto)
SMALL_PROBLEM = 20_000_000
#: a user's BASF gives way to the best start of the twin-fraction grid only if that lowers
#: Σw(Fo² - kFc²)² by more than this many times its mean term (a 5σ gain in one parameter)
TWIN_START_SIGNIFICANCE = 25.0
#: R1 above which a user's refined model is said not to fit the data at all
MISFIT_R1 = 0.3
#: a difference peak higher than this many e/Å³ per electron of the heaviest atom (and than
#: 1 e/Å³), and further than UNEXPLAINED_DISTANCE Å from every atom, is density the model
#: leaves out (a missing atom, or disordered solvent): a warning names it
UNEXPLAINED_PEAK_PER_Z = 0.1
UNEXPLAINED_DISTANCE = 1.3
#: reflections observed weaker than the model by more than this many esd (with the
#: refinement's fitted weights, which already allow for the usual errors) are named in a warning
OUTLIER_ESD = 10.0
#: a user's model whose refined contents stray this much further from the formula (as a
#: fraction of its non-H atoms) than they started is reported
COMPOSITION_DRIFT = 0.05
#: a model's H within this (Å) of an H of the result, or of its image, was kept (not
#: replaced), and an H of the result that near one of the model's was not added
SAME_H = 0.5
#: restraint kinds as the log names them
RESTRAINT_NAMES = {"same": "equal-distance (SADI/SAME)", "distances": "target-distance (DFIX/DANG)",
                   "sump": "free-variable sum (SUMP)"}


def instructions_for(config: LsqConfig, data: ReflectionData, candidate: Candidate) -> RefinementInstructions:
    """The SHELXL instructions a refinement follows: the candidate's own, else those that
    came with the data, else none (none at all with `ignore_instructions`)."""
    if config.ignore_instructions:
        return RefinementInstructions()
    given = candidate.meta.get("instructions")
    if isinstance(given, dict):
        given = RefinementInstructions.model_validate(given)
    return given or data.instructions or RefinementInstructions()


def mirror_candidate(config: LsqConfig, data: ReflectionData, candidate: Candidate, structure: Structure) -> Candidate:
    """A user-model candidate holding the mirror image of `structure`, with the instructions
    the refinement followed (`instructions_for`: the data's when the candidate brings none)
    and their EQIV operators rewritten for the mirror image."""
    mirror, instructions = inverted_structure(structure, instructions_for(config, data, candidate))
    meta = {**candidate.meta, "instructions": instructions.model_dump(mode="json")}
    return candidate.model_copy(update={"structure": mirror, "generator": USER_MODEL, "meta": meta})


def is_generated(candidate: Candidate) -> bool:
    """True for a generator's candidate (completion rounds, false-peak removal), False for
    a model a user supplied (refined as given unless atoms are missing)."""
    return bool(candidate.generator) and candidate.generator != USER_MODEL


class LsqRefiner(Refiner):
    """Least squares on F² with SHELXL weights, constraints, riding H and completion."""

    name: ClassVar[str] = "lsq"
    version: ClassVar[str] = "0.1.0"
    Config: ClassVar[type] = LsqConfig

    def __init__(self, config: LsqConfig | None = None, context: BuildContext | None = None):
        super().__init__(config, context)

    def refine(self, data: ReflectionData, candidate: Candidate) -> RefinedCandidate:
        """Refine `candidate` against `data`; RefinementError when it cannot proceed."""
        import torch

        threads = self.config.threads
        if threads is None:
            # unique reflections are about a quarter of the rows of typical unmerged data;
            # below this size one thread beats several (and never oversubscribes shared CPUs)
            size = max(data.n // 4, 1) * max(len(candidate.structure.sites), 1)
            threads = 1 if size < SMALL_PROBLEM else torch.get_num_threads()
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            result = Refinement(self.config, data, candidate, self.context).run()
            if self.config.invert_wrong_hand and wrong_hand(result.flack, result.flack_su):
                result = self._inverted(data, candidate, result)
            if result.meta.get("twin_laws_found"):
                result = self._twinned(data, candidate, result)
            return result
        finally:
            torch.set_num_threads(before)

    def _inverted(self, data: ReflectionData, candidate: Candidate, result: RefinedCandidate,
                  config: LsqConfig | None = None) -> RefinedCandidate:
        """Refine the mirror image of a model whose Flack parameter says it has the wrong
        hand (under `config`, the refiner's own if None); keep it when its own Flack
        parameter agrees."""
        config = config or self.config
        mirror = mirror_candidate(config, data, candidate, result.structure)
        note = (f"Flack x = {result.flack:.3f}({result.flack_su:.3f}): the model has the wrong hand; "
                f"its mirror image (space group {mirror.structure.space_group.symbol}) is refined")
        _log.info(note)
        again = Refinement(config, data, mirror, self.context).run()
        if again.flack is None or again.flack >= result.flack:
            return result.model_copy(update={
                "log": [*result.log, note, f"the mirror image gives Flack x = {again.flack}: the model is kept as it was"],
            })
        return again.model_copy(update={
            "candidate": candidate,
            "log": [*result.log, note, *again.log],
            "meta": {**again.meta, "inverted": {"flack_before": result.flack, "flack_su_before": result.flack_su,
                                                 "space_group_before": result.structure.space_group.symbol}},
        })

    def _twinned(self, data: ReflectionData, candidate: Candidate, result: RefinedCandidate) -> RefinedCandidate:
        """Refine the result again with the twin law `twin_check` found (TWIN, BASF from its
        fraction). A generator's candidate is refined again as one, and takes the twinned
        model when it fits better (lower wR2), inverted if its Flack parameter, now with the
        twin in place, says so; a user's model is kept as given, SHELXL adding no twin by
        itself, and the warning says what the twin gave."""
        found = result.meta["twin_laws_found"][0]
        # the instructions the refinement followed (those of the data too), with the twin
        twin = instructions_for(self.config, data, candidate).model_copy(update={
            "twin_matrix": tuple(float(v) for v in np.asarray(found["matrix"]).reshape(-1)), "twin_n": 2,
            "basf": [float(found["fraction"])]})
        # a generator's candidate is refined again as one (completion included: a model the
        # twin kept from fitting may lack atoms); a user's model as a user's model
        generated = is_generated(candidate)
        trial = candidate.model_copy(update={"structure": result.structure,
                                             "generator": candidate.generator if generated else USER_MODEL,
                                             "meta": {**candidate.meta, "instructions": twin.model_dump(mode="json")}})
        config = self.config.model_copy(update={"twin_check": False, "ignore_instructions": False})
        try:
            again = Refinement(config, data, trial, self.context).run()
        except RefinementError as exc:
            _log.info("refinement with the twin law failed: %s", exc)
            return result
        basf = again.meta.get("twin_fractions") or [float("nan")]
        summary = (f"refined with it: BASF {basf[0]:.3f}, R1 {result.r1:.4f} -> {again.r1:.4f}, "
                   f"wR2 {result.wr2:.4f} -> {again.wr2:.4f}")
        found = {**found, "refined": {"BASF": basf[0], "R1": again.r1, "wR2": again.wr2}}
        if generated and again.wr2 < result.wr2:
            if self.config.invert_wrong_hand and wrong_hand(again.flack, again.flack_su):
                # the hand, judged again with the twin in place (the mirror image twinned too)
                again = self._inverted(data, trial, again, config)
            meta = {**again.meta, "twin_laws_found": [found, *result.meta["twin_laws_found"][1:]]}
            return again.model_copy(update={"candidate": candidate, "log": [*result.log, "twin law " + summary, *again.log],
                                            "meta": meta})
        warnings = [w + f"; {summary}" if w.startswith("the data look twinned") else w for w in result.meta["warnings"]]
        meta = {**result.meta, "warnings": warnings, "twin_laws_found": [found, *result.meta["twin_laws_found"][1:]]}
        return result.model_copy(update={"log": [*result.log, "twin law " + summary], "meta": meta})

    def screen(self, data: ReflectionData, candidate: Candidate) -> RefinedCandidate:
        """Quick isotropic refinement (no H, σ weights, short completion) to rank candidates."""
        cfg = self.config
        quick = cfg.model_copy(
            update={
                "max_cycles": min(cfg.screen_cycles, cfg.max_cycles),
                "completion_rounds": min(cfg.screen_completion_rounds, cfg.completion_rounds),
                "anisotropic": False,
                "riding_h": False,
                "weighting": "sigma",
                "extinction": False,
                "flack": False,
                "twin_check": False,
                "fit_rotating_groups": False,
                "refine_torsions": False,
                "relocate_atoms": False,
            }
        )
        data = to_resolution(data, cfg.screen_resolution, min_keep=50)
        r = LsqRefiner(quick, self.context).refine(data, candidate)
        return r.model_copy(update={"meta": {**r.meta, "screened": True, "screen_resolution": cfg.screen_resolution}})


class Refinement:
    """One refinement of one candidate (holds the state shared by the stages)."""

    def __init__(self, config: LsqConfig, data: ReflectionData, candidate: Candidate, context: BuildContext | None = None):
        self.cfg = config
        self.data = data
        self.candidate = candidate
        self.held_occupancy: set[str] = set()  # (`_held_occupancies`)
        self.context = context or BuildContext()
        self.lines: list[str] = []
        self.warnings: list[str] = []
        self.meta: dict[str, Any] = {}
        self.t0 = time.perf_counter()
        self.cycles = 0
        self.bar = None
        self.instr: RefinementInstructions | None = None
        self._reported_restraints: set[str] = set()

    # -- logging -----------------------------------------------------------------------
    def log(self, text: str) -> None:
        self.lines.append(text)
        _log.info(text)
        if self.bar is not None and text.startswith("cycle"):
            self.bar.update(1)

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self.lines.append("warning: " + text)

    # -- setup -------------------------------------------------------------------------
    def _instructions(self) -> RefinementInstructions:
        return instructions_for(self.cfg, self.data, self.candidate)

    def _check_inputs(self) -> None:
        data, structure = self.data, self.candidate.structure
        if data.n == 0:
            raise RefinementError(f"{data.source or 'the data'}: no reflections to refine against")
        if data.cell is None:
            raise InputError("the reflection data have no unit cell", path=data.source)
        if not structure.sites:
            raise RefinementError("the starting model has no atoms")
        a = np.array(data.cell.parameters)
        b = np.array(structure.cell.parameters)
        rel = np.abs(a - b) / np.maximum(np.abs(a), 1e-9)
        if np.any(rel > 0.02):
            self.warn(
                f"the model's cell {tuple(round(x, 4) for x in b)} differs from the data's "
                f"{tuple(round(x, 4) for x in a)}; the data's cell is used"
            )
        if np.all(data.intensity <= 0):
            raise RefinementError(f"{data.source or 'the data'}: every intensity is zero or negative")

    def _space_group_check(self, sym: SymmetryOps) -> None:
        """Warn when reflections the space group forbids are observed strongly."""
        absent = sym.is_absent(self.data.hkl)
        if not absent.any():
            return
        i_s = self.data.intensity[absent] / self.data.sigma[absent]
        strong = int(np.sum(i_s > 5.0))
        frac = strong / max(int(absent.sum()), 1)
        self.meta["absence_violations"] = {"n_absent": int(absent.sum()), "n_strong": strong, "mean_i_over_sigma": float(i_s.mean())}
        if strong >= 3 and frac > 0.05 and float(i_s.mean()) > 3.0:
            self.warn(
                f"{strong} of {int(absent.sum())} reflections that space group "
                f"{self.candidate.structure.space_group.symbol} forbids are observed with I > 5σ(I) "
                f"(mean I/σ {float(i_s.mean()):.1f}): the space group may disagree with the data"
            )

    # -- the run -----------------------------------------------------------------------
    def run(self) -> RefinedCandidate:
        progress = self.context.progress
        if progress is None:
            return self._run()
        with progress(f"refining ({LsqRefiner.name})", total=self.cfg.max_cycles) as bar:
            self.bar = bar
            try:
                return self._run()
            finally:
                self.bar = None

    def _run(self) -> RefinedCandidate:
        """The stages: observations and model set up, isotropic start and completion,
        anisotropic ADPs with riding H, element swaps and disorder splits, SHELXL weights."""
        self._check_inputs()
        structure = self.candidate.structure
        if self.data.cell is not None:
            structure = structure.model_copy(update={"cell": self.data.cell})
        sym = SymmetryOps.from_space_group(structure.space_group)
        instr = self._instructions()
        self._space_group_check(sym)
        obs = self._observations(sym, instr)
        wavelength = self.data.wavelength or structure.wavelength or 0.71073

        model = WorkingModel.from_structure(structure, sym, special_tolerance=self.cfg.special_tolerance)
        self._remove_duplicates(model)
        self._setup_twin_and_extinction(model, instr, sym)
        isotropic = self._note_given_adps(structure)
        self._take_model_hydrogens(structure, model)
        self._take_instructions(model, instr, isotropic)
        self._build_calculator(obs, structure, sym, wavelength, model)
        model = self._initial_adp(self._start_scale(model))
        self._build_driver()
        # (every stage starts from its model put within the limits: `Driver.run`)
        given_npd = [model.labels[i] for i in model.copy().enforce_adp_limits() if model.aniso[i]]
        if given_npd:
            self.warn("ADPs of the model as given not positive definite, put on the positivity limit "
                      f"before the first cycle: {', '.join(given_npd)}")

        # max_cycles is the whole run's: the weights stage and the extinction trial have
        # cycles of their own, which the earlier stages may not spend
        cfg = self.cfg
        extinction_cycles = min(EXTINCTION_CYCLES, cfg.max_cycles // 4) if self.extinction_test else 0
        final_reserve = min(FINAL_RESERVE, cfg.max_cycles // 4) if self._optimises_weights else 0
        budget = cfg.max_cycles - extinction_cycles - final_reserve
        model, budget = self._isotropic_stage(model, budget)
        model, budget, converged, last_shift, aniso = self._anisotropic_stage(model, budget)
        model, budget, converged, last_shift = self._model_changes_stage(model, budget, aniso, converged, last_shift)
        model, budget, converged, last_shift = self._weights_stage(model, budget + final_reserve, converged, last_shift)
        model, converged, last_shift = self._test_extinction(model, budget + extinction_cycles, converged, last_shift)

        self.cycles = self.driver.cycle_count
        if not converged:
            self.log(f"not converged after {self.cycles} cycles (max shift/su {last_shift:.3f})")
        return self._finish(model, converged, last_shift, instr, wavelength)

    # -- set-up of a run -----------------------------------------------------------------
    def _observations(self, sym: SymmetryOps, instr: RefinementInstructions):
        """The data merged and filtered as the instructions ask (logged); kept on `self`."""
        obs = prepare_observations(self.data, sym, instr)
        if obs.data.n == 0:
            raise RefinementError(f"{self.data.source or 'the data'}: no reflections left after merging and filtering")
        n_neg = int(np.sum(obs.fo2 < 0))
        if obs.twin_indices is not None:
            self.log(f"{obs.n_input} rows of HKLF 5 data in {obs.data.n} overlap groups, each one observation "
                     f"(not merged); {n_neg} with Fo² < 0")
        else:
            self.log(
                f"{obs.n_input} reflections merged to {obs.data.n} unique "
                f"({'Friedel mates merged' if obs.friedel_merged else 'Friedel mates kept apart'}); "
                f"R_int {obs.merged.r_int:.4f}; {n_neg} with Fo² < 0"
            )
        for key, value in obs.dropped.items():
            if value:
                self.log(f"  {value} reflections dropped ({key.replace('_', ' ')})")
        self.obs_data = obs
        self.fo2, self.sigma = obs.fo2.copy(), obs.sigma.copy()
        # SHELXL's su: Friedel opposites kept apart count as one reflection in the S² that
        # scales the inverse normal matrix (`Driver.su_count`)
        self.n_independent: int | None = None
        if obs.twin_indices is None and not obs.friedel_merged:
            n_ind = friedel_merged_count(obs.hkl, sym)
            if n_ind < len(self.fo2):
                self.n_independent = n_ind
                self.log(f"  {len(self.fo2) - n_ind} Friedel pairs: su scaled as SHELXL scales them, by S² over "
                         f"{n_ind} reflections (each pair counted once)")
        return obs

    def _note_given_adps(self, structure) -> set[str]:
        """Record which atoms keep the ADP kind the model gives them; returns the labels
        of the model's isotropic non-H atoms."""
        generated = is_generated(self.candidate)
        # a user's model with anisotropic atoms of its own keeps its isotropic ones so, as
        # SHELXL refines each atom's ADP as the model gives it (anisotropic=true overrides)
        given_aniso = any(s.u_aniso is not None for s in structure.sites) and not generated
        isotropic = {s.label.upper() for s in structure.sites if s.u_aniso is None and s.element.upper() not in ("H", "D")}
        self.kept_isotropic: set[str] = isotropic if given_aniso and self.cfg.anisotropic == "auto" else set()
        # ... and its anisotropic atoms stay anisotropic, held positive definite at the limit
        # if need be (`_after_cycle`): SHELXL never makes an atom isotropic by itself
        self.given_anisotropic: set[str] = ({s.label.upper() for s in structure.sites if s.u_aniso is not None}
                                            if not generated else set())
        self.held_at_limit: set[str] = set()  # of those, the ones logged as held at the limit
        self.made_isotropic: set[str] = set()  # atoms `_after_cycle` made isotropic stay so
        return isotropic

    def _take_model_hydrogens(self, structure, model: WorkingModel) -> None:
        """Decide what happens to the model's own H atoms: re-placed as riding H (removed
        here), kept and refined freely, or kept riding where they are."""
        hydrogens_in = int(model.hydrogen.sum())
        self.place_h = self._want_riding_h()
        self.free_h_parents: set[str] = set()  # labels of atoms whose own free H are kept
        self.afix_noted = False  # the model's AFIX codes not built are logged once
        self.h_names: dict = {}  # names of the model's H re-placed as riding H, by parent (`hyd.model_h_names`)
        self.h_own_u: dict[str, float] = {}  # U_iso of riding H refined on their own, by upper-case label
        self.h_u_variables: dict[str, tuple[int, float]] = {}  # of those, the free variable their U is on
        # each H's parent as the model names it (AFIX group, CIF calc-attached atom)
        stated = {s.label: s.riding_on for s in structure.sites if s.riding_on and s.element.upper() in ("H", "D")}
        if not hydrogens_in:
            return
        if self.cfg.keep_h or not self.place_h:
            hyd.attach_existing(model, stated=stated)
            # the model's own H are kept: placing riding H would replace them
            self.place_h = False
            return
        # H on atoms riding H are not placed on (hydrides of metals, B, Si, P) stay, refined
        # freely; so do the H a user's SHELXL model refines freely (AFIX 0), as SHELXL would
        parents = hyd.hydrogen_parents(model, stated)
        hydrides = hyd.unplaceable_hydrogens(model, parents)
        # H a model without SHELXL instructions gives as located, not calculated, ride
        # where they are: no restraints come with them to refine them freely
        free, located = self._own_hydrogens(structure, model, parents)
        free &= ~hydrides
        located &= ~hydrides
        located_labels = {model.labels[i] for i in np.nonzero(located)[0]}
        drop = model.hydrogen & ~hydrides & ~free & ~located
        self.free_h_parents = {model.labels[parents[i]] for i in np.nonzero(free)[0]}
        self.h_names = hyd.model_h_names(model, drop, parents)
        own_u = {s.label.upper() for s in structure.sites if s.own_u}
        self.h_own_u = {model.labels[i].upper(): float(model.u_iso[i]) for i in np.nonzero(drop)[0]
                        if model.labels[i].upper() in own_u}
        self.h_u_variables = {s.label.upper(): s.u_variable for s in structure.sites
                              if s.label.upper() in self.h_own_u and s.u_variable is not None}
        model.remove_atoms(drop)
        self._follow_riding_u(structure, model)
        if located_labels:
            hyd.attach_existing(model, labels=located_labels, own=True, stated=stated)
        told = [f"{int(drop.sum())} removed, to be re-placed as riding H (each taking the name of the model's H "
                "nearest to it on the same atom)" if drop.any() else "",
                f"{int(hydrides.sum())} on other atoms (hydrides) kept and refined freely" if hydrides.any() else "",
                f"{int(free.sum())} the model refines freely (AFIX 0) kept and refined freely" if free.any() else "",
                f"{len(located_labels)} located (not calculated) kept, riding on their atom as given"
                if located_labels else ""]
        self.log("H atoms of the starting model: " + "; ".join(t for t in told if t))

    def _take_instructions(self, model: WorkingModel, instr: RefinementInstructions, isotropic: set[str]) -> None:
        """The model's own instructions that shape the model: restraints, EADP/EXYZ, ANIS,
        free variables (and which of them can be refined)."""
        cfg = self.cfg
        # restraints name atoms: only the candidate's own instructions may carry them (the
        # data's instructions belong to another model, whose labels mean other atoms)
        self.instr = instr if self.candidate.meta.get("instructions") is not None and not cfg.ignore_instructions else None
        model.user_sites = user_restraints.user_site_sets(model, self.instr) if cfg.restraints is not False else None
        model.bind = tuple(self.instr.bind) if self.instr is not None else ()
        model.free = tuple(self.instr.free) if self.instr is not None else ()
        # ANIS in the model: the atoms it names are refined anisotropically, the model's
        # other isotropic atoms stay so (anisotropic=true/false still decide for all)
        self.anis_requested = bool(self.instr is not None and self.instr.anis and cfg.anisotropic == "auto")
        if self.anis_requested:
            named = {label.upper() for label in self.instr.anis}
            self.kept_isotropic = isotropic - named
            self.log(f"ANIS: {len(named)} atom{'s' if len(named) != 1 else ''} refined anisotropically, as the model asks")
        if model.user_sites:
            self.log(f"EADP/EXYZ: {len(model.user_sites)} sets of atoms share one ADP (and, for EXYZ, one position)")
        groups = site_groups(model)
        share_site_values(model, groups)
        held = self._unsummable_free_variables(model)
        if held:
            for k in held:
                del model.free_variables[k]
            self.log(f"free variables {', '.join(map(str, held))} are named by a SUMP that cannot be honoured "
                     "(restraints off, or a variable no occupancy refers to): their occupancies are not refined "
                     "on their own (a mixed site keeps its sum)")
        if model.free_variables:
            what = "refined" if cfg.refine_occupancies in (True, "auto") else "held (refine_occupancies=false)"
            self.log(f"occupancies on SHELXL free variables {what}: " + ", ".join(
                f"FVAR {k} ({len(v)} atoms)" for k, v in sorted(model.free_variables.items())))

    def _build_calculator(self, obs, structure, sym: SymmetryOps, wavelength: float, model: WorkingModel) -> None:
        """The intensity calculator over the observations, in chunks sized so that raw
        derivative blocks stay near 40 MB."""
        n_raw = max(model.n * 2, 20) * 10
        twin = obs.twin_indices or TwinIndices.from_twin_law(obs.hkl, model.twin_ops)
        chunk = int(np.clip(4_000_000 // (n_raw * len(twin.component)), 300, 4000))
        device = self.context.device if self.context.device in ("cpu", "cuda") else "cpu"
        self.calc = IntensityCalculator(
            obs.hkl, structure.cell, sym, wavelength, model.twin_ops, twin_indices=twin,
            anomalous=self.cfg.anomalous, chunk=chunk, device=device,
        )

    def _start_scale(self, model: WorkingModel) -> WorkingModel:
        """The overall scale fitted to the start model (σ weights)."""
        fc2c = self.calc.fc2_components(model)
        _, fcabs = self.calc.model_intensities(_unit_scale(model), fc2c)
        k = scale_factor(self.fo2, fcabs, 1.0 / self.sigma**2)
        if not (math.isfinite(k) and k > 0):
            raise RefinementError("the starting model gives no diffracted intensity (scale cannot be fitted)")
        model.scale = k
        return model

    def _build_driver(self) -> None:
        """Weights, damping and step limit of the run, what is refined, and its driver."""
        cfg = self.cfg
        a, b = cfg.weights if cfg.weights is not None else self._starting_weights()
        self.settings = Settings(
            scheme=cfg.weighting, a=a, b=b, damping=cfg.damping, matrix="full",
            block_size=cfg.block_size, convergence=cfg.convergence,
            max_atom_step=None if is_generated(self.candidate) else MAX_ATOM_STEP,
        )
        # mixed sites' fractions, and the model's own SHELXL free variables
        self.refine_occ_mixed = cfg.refine_occupancies in (True, "auto")
        self.refine_occ_partial = cfg.refine_occupancies is True
        # disorder assemblies' free occupancies: on request, or for the splits found here
        self.refine_occ_disorder = cfg.refine_occupancies is True
        self.fixed: set[int] = set()
        self.driver = Driver(self.calc, Observed(self.fo2, self.sigma, self.n_independent), self.settings,
                             self._parameters, self._after_shift, self.log, after_cycle=self._after_cycle)

    # -- the stages ----------------------------------------------------------------------
    def _isotropic_stage(self, model: WorkingModel, budget: int) -> tuple[WorkingModel, int]:
        """Stage 1: isotropic start (atoms already anisotropic stay so), then completion of
        a model that asks for it. Extinction is held at its starting value until the model
        is close, and so are a generated model's twin fractions; a user's model refines its
        twin fractions from the first cycle, as SHELXL does (held, a wrong starting BASF
        pushes the atoms away to fit what it cannot: R1 above 0.3 where 0.03 is right)."""
        self.held_occupancy = self._held_occupancies(model)
        if self.place_h and self.h_names and budget > 0:
            # a model that came with its H (re-placed as riding H) is refined with them from
            # the first cycle, as SHELXL refines it: not first without them, which moves it
            model = self._place_hydrogens(model)
        self._update_restraints(model)
        generated = is_generated(self.candidate)
        if not generated and self.refine_twin.any():
            self._start_twin_fractions(model)
        self._choose_matrix(model)
        late = (self.refine_extinction, self.refine_twin.copy())
        self.refine_extinction = False
        if generated:
            self.refine_twin = np.zeros_like(self.refine_twin)
        if budget > 0:
            res = self.driver.run(model, min(ISO_CYCLES, budget), "iso",
                                  convergence=max(self.cfg.convergence, ISO_CONVERGENCE))
            model, budget = res.model, budget - res.cycles
        if self._want_completion(model) and budget > 0:
            from .completion import complete_model

            model, used = complete_model(self, model, budget)
            budget -= used
        if generated and self.cfg.complete is not False and budget > 0:
            # (only with cycles left to refine the split: a quick screen may have none)
            from .completion import split_mixed_sites

            for line in split_mixed_sites(self, model):
                self.log(line)
        self.refine_extinction, self.refine_twin = late
        return model, budget

    def _anisotropic_stage(self, model: WorkingModel, budget: int):
        """Stage 2: anisotropic non-H and riding H; with few data per parameter, both the
        isotropic and the anisotropic model are refined and the anisotropic one is kept
        only if it fits significantly better. Returns (model, budget left, converged,
        max shift/su, anisotropic)."""
        aniso = self._want_anisotropic(model, len(self.fo2))
        if aniso != "test":
            return (*self._adp_and_hydrogen_stage(model, aniso, budget), aniso)
        meta = copy.deepcopy(self.meta)
        iso_run = self._adp_and_hydrogen_stage(model, False, budget)
        iso_meta, self.meta = self.meta, meta
        aniso_run = self._adp_and_hydrogen_stage(model, True, budget)
        aniso = self._anisotropic_significant(iso_run[0], aniso_run[0])
        if not aniso:
            self.meta = iso_meta
        model, _, converged, last_shift = aniso_run if aniso else iso_run
        budget = max(iso_run[1] + aniso_run[1] - budget, 0)  # both runs' cycles count
        self._update_restraints(model)
        self._choose_matrix(model)
        return model, budget, converged, last_shift, aniso

    def _model_changes_stage(self, model: WorkingModel, budget: int, aniso, converged: bool, last_shift: float):
        """Element swaps and disorder splits the data call for (atoms too close to be both
        present first, then the difference map's), each refined on."""
        if self._want_element_swaps() and budget > 0:
            from .element_swaps import swap_elements

            model, swaps = swap_elements(self, model)
            if swaps:
                self.log("elements swapped on the data's evidence: " + "; ".join(swaps))
                self.meta["element_swaps"] = swaps
                model, budget, converged, last_shift = self._adp_and_hydrogen_stage(model, bool(aniso), budget)
        if self._want_disorder_split(aniso):
            from .disorder import split_close_pairs, split_disorder

            for step in (split_close_pairs, split_disorder):
                model, used, split = step(self, model, budget)
                budget -= used
                if split is not None:
                    converged, last_shift = split.converged, split.max_shift_su
        return model, budget, converged, last_shift

    @property
    def _optimises_weights(self) -> bool:
        """SHELXL weights whose a and b the refinement optimises (none given)."""
        return self.cfg.weighting == "shelxl" and self.cfg.weights is None

    def _weights_stage(self, model: WorkingModel, budget: int, converged: bool, last_shift: float):
        """Stage 3: SHELXL weights optimised in rounds (rotating H groups re-fitted), then
        the model converged under the last weights."""
        cfg, driver = self.cfg, self.driver
        if self._optimises_weights and budget > 0:
            for _ in range(WEIGHT_ROUNDS):
                changed = self._optimise_weights(model)
                if self.place_h and cfg.fit_rotating_groups:
                    model = hyd.refit_rotating_groups(model, self)
                if not changed and converged:
                    break
                # new weights (and re-fitted H torsions) leave the model where it was: the
                # damping the last cycles needed still fits the sum of squares around it
                res = driver.run(model, min(WEIGHT_CYCLES, budget), "weights", keep_damping=True)
                model, budget = res.model, budget - res.cycles
                converged, last_shift = res.converged, res.max_shift_su
                if budget <= 0:
                    break
        if budget > 0 and not converged:  # converge under the last weights
            res = driver.run(model, budget, "final", keep_damping=True)
            model, budget = res.model, budget - res.cycles
            converged, last_shift = res.converged, res.max_shift_su
        return model, budget, converged, last_shift

    # -- pieces ------------------------------------------------------------------------
    def _starting_weights(self) -> tuple[float, float]:
        """SHELXL weights (a, b) to start from: the model's own WGHT, as SHELXL refines a
        model under the weights its .ins gives (optimised here later all the same), else
        SHELXL's default (0.1, 0)."""
        wght = self.instr.wght if self.instr is not None else None
        if not wght:
            return 0.1, 0.0
        a, b = float(wght[0]), float(wght[1]) if len(wght) > 1 else 0.0
        if not (math.isfinite(a) and math.isfinite(b) and a >= 0.0 and b >= 0.0):
            self.log(f"WGHT {a:g} {b:g} of the model not used (a and b must be finite and non-negative): "
                     "weights start from a = 0.1, b = 0")
            return 0.1, 0.0
        extra = "; its further terms (c-f) are not used" if any(
            abs(v - d) > 1e-4 for v, d in zip(wght[2:6], (0.0, 0.0, 0.0, 1.0 / 3.0))) else ""
        self.log(f"weights start from the model's WGHT: a = {a:.4f}, b = {b:.4f}{extra}")
        return a, b

    def _adp_and_hydrogen_stage(self, model: WorkingModel, aniso: bool, budget: int):
        """Stage 2 from `model`: anisotropic non-H (when asked) and riding H, refined; H
        atoms of O/N from difference peaks. Returns (model, budget left, converged, max shift/su)."""
        driver = self.driver
        model = model.copy()
        if aniso:
            heavy = self._anisotropic_candidates(model)
            model.make_anisotropic(heavy)
            self.log(f"anisotropic ADPs for {int(heavy.sum())} non-H atoms"
                     + (f" ({len(self.kept_isotropic)} isotropic in the model stay isotropic)" if self.kept_isotropic else ""))
        if self.place_h:
            model = self._place_hydrogens(model)
        self._update_restraints(model)
        self._choose_matrix(model)
        converged, last_shift = False, driver.last_max_shift_su
        if budget > 0:
            res = driver.run(model, min(ANISO_CYCLES, budget), "aniso" if aniso else "iso")
            model, budget = res.model, budget - res.cycles
            converged, last_shift = res.converged, res.max_shift_su
        if self.place_h and budget > 0:
            n_h = self.meta.get("expected_h")
            model, added = hyd.add_peak_hydrogens(model, self, n_h, self.cfg.h_distances)
            if added:
                self.log(f"{added} H atoms placed at difference-map peaks (riding on their atom)")
                self.meta.setdefault("hydrogens", {})["from_peaks"] = added
            back = hyd.restore_unplaced_hydrogens(model, self.h_names, n_h)
            if back:
                self.log(f"H atoms of the starting model kept riding where they were (neither the geometry nor a "
                         f"difference peak placed H on their atoms): {', '.join(back)}")
            if added or back:
                res = driver.run(model, min(ANISO_CYCLES, budget), "aniso" if aniso else "iso")
                model, budget = res.model, budget - res.cycles
                converged, last_shift = res.converged, res.max_shift_su
        return model, budget, converged, last_shift

    def _anisotropic_significant(self, iso: WorkingModel, aniso: WorkingModel) -> bool:
        """True when the anisotropic model fits the data better by an F-test at the 0.1 %
        level (σ weights, the extra ADP parameters counted) and has no ADP at its
        positivity limit."""
        from .significance import data_fit, f_test

        chi_iso, r1_iso = data_fit(self, iso)
        chi_an, r1_an = data_fit(self, aniso)
        n_iso, n_an = self._parameters(iso).n, self._parameters(aniso).n
        q = n_an - n_iso
        stat, p_value = f_test(chi_iso, chi_an, n_iso, n_an, len(self.fo2))
        npd = [aniso.labels[i] for i in aniso.non_positive_definite() if aniso.aniso[i]]
        keep = p_value < ANISO_SIGNIFICANCE and r1_an < r1_iso and not npd
        self.log(
            f"anisotropic test: R1 {r1_iso:.4f} (isotropic) vs {r1_an:.4f}, F = {stat:.1f} for {q} parameters "
            f"(p = {p_value:.1e}){', ADPs at the limit: ' + ', '.join(npd) if npd else ''}: "
            f"{'anisotropic' if keep else 'isotropic'} kept"
        )
        return keep

    def _initial_adp(self, model: WorkingModel) -> WorkingModel:
        """When every atom carries the same U_iso (a generic start such as 0.05 Å²), replace
        it by the common U (and scale) that fit the data best: a well-conditioned start."""
        iso = ~model.aniso & (model.riding < 0)
        if model.aniso.any() or iso.sum() < 1 or np.ptp(model.u_iso[iso]) > 1e-9:
            return model
        best = None
        for u in np.geomspace(0.003, 0.12, 24):
            trial = model.copy()
            trial.u_iso[iso] = u
            trial.update_u_eq()
            trial.scale = 1.0
            _, fcabs = self.calc.model_intensities(trial)
            w = 1.0 / self.sigma**2
            k = scale_factor(self.fo2, fcabs, w)
            if not (math.isfinite(k) and k > 0):
                continue
            val = float(np.sum(w * (self.fo2 - k * fcabs) ** 2))
            if best is None or val < best[0]:
                best = (val, u, k)
        if best is None:
            return model
        _, u, k = best
        out = model.copy()
        out.u_iso[iso] = u
        out.scale = k
        out.update_u_eq()
        self.log(f"common starting U_iso {u:.4f} Å² (all atoms started equal at {model.u_iso[iso][0]:.4f})")
        return out

    def _update_restraints(self, model: WorkingModel) -> None:
        """(Re)build the restraints: the user's own SHELXL restraints when the instructions
        carry any, else the automatic restraints of disorder components -- for a generated
        model only, unless asked: a user's model is refined with the restraints it brings,
        as SHELXL refines it."""
        if self.cfg.restraints is False:
            self.driver.restraints = []
            return
        if user_restraints.has_restraints(self.instr):
            built = user_restraints.build(model, self.instr)
            if len(built.restraints) != len(self.driver.restraints):
                counts = ", ".join(f"{v} {RESTRAINT_NAMES.get(k, k)}" for k, v in sorted(built.counts().items()))
                self.log(f"the model's own restraints: {counts or 'none left'}")
                for text in built.skipped:
                    if text not in self._reported_restraints:
                        self._reported_restraints.add(text)
                        self.log("  restraint " + text)
            self.driver.restraints = built.restraints
            self.meta["n_restraints"] = len(built.restraints)
            return
        from . import restraints

        if self.cfg.restraints == "auto" and not is_generated(self.candidate):
            self.driver.restraints = []
            return
        rs = restraints.generate(model)
        if rs and len(rs) != len(self.driver.restraints):
            kinds = {k: sum(r.kind == k for r in rs) for k in ("same", "rigu", "simu", "isor")}
            self.log(
                f"restraints for disorder components: {kinds['same']} similar distances, {kinds['rigu']} rigid "
                f"bonds, {kinds['simu']} similar-ADP and {kinds['isor']} near-isotropic ADP components"
            )
        self.driver.restraints = rs
        self.meta["n_restraints"] = len(rs)

    def _unsummable_free_variables(self, model: WorkingModel) -> list[int]:
        """The model's free variables named by a SUMP the refinement cannot honour: refined
        on their own, they would lose the sum SUMP keeps."""
        out: set[int] = set()
        for r in self.instr.restraints if self.instr is not None else []:
            if r.kind != "SUMP":
                continue
            named = {int(round(m)) for m in r.values[3::2]}
            if self.cfg.restraints is False or not named <= set(model.free_variables):
                out |= named & set(model.free_variables)
        return sorted(out)

    def _own_hydrogens(self, structure, model: WorkingModel, parents: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Masks (free, located) of the starting model's own H atoms to keep, none for a
        generated candidate: `free`, the H a user's SHELXL model refines freely (AFIX 0, on
        an atom its atom list marks as carrying free H; `parents`: each H's non-H atom,
        `hyd.hydrogen_parents`); `located`, in a model without SHELXL H instructions (no
        AFIX codes), the H it gives as located rather than calculated (CIF calc flag not
        `calc`, no riding flag)."""
        free = np.zeros(model.n, dtype=bool)
        located = np.zeros(model.n, dtype=bool)
        if is_generated(self.candidate):
            return free, located
        hfix = (self.candidate.meta.get("instructions") or {}).get("hfix") or {}
        # the SHELXL atom list says which atoms carry H refined freely (hfix code 0)
        free_parents = {label for label, code in hfix.items() if code == 0}
        own = {s.label.upper(): s for s in structure.sites if s.element.upper() in ("H", "D") and not s.calc}
        for h in np.nonzero(model.hydrogen)[0]:
            site = own.get(model.labels[h].upper())
            if site is None:
                continue
            if not hfix:
                located[h] = True
            elif site.afix == 0 and not self.cfg.ignore_instructions and h in parents:
                free[h] = model.labels[parents[h]].upper() in free_parents
        return free, located

    @staticmethod
    def _follow_riding_u(structure, model: WorkingModel) -> None:
        """H refined freely whose U rides on another atom's (SHELXL's -1.2 on an AFIX 0 atom)
        keep that link: U_iso = f · U_eq of that atom, f as the model gives it."""
        index = model.label_index()
        sites = {s.label.upper(): s for s in structure.sites}
        for h in np.nonzero(model.hydrogen & (model.riding < 0))[0]:
            site = sites.get(model.labels[h].upper())
            parent = index.get((site.riding_on or "").upper()) if site is not None else None
            if parent is None or model.riding[parent] >= 0 or model.u_iso[parent] <= 0:
                continue
            model.u_parent[h] = parent
            # SHELXL's factors have one decimal; a CIF's U_iso(H) is rounded
            model.u_ratio[h] = round(float(model.u_iso[h] / model.u_iso[parent]), 1)
        model.update_u_eq()

    def _want_riding_h(self) -> bool:
        if self.cfg.riding_h is True:
            return True
        if self.cfg.riding_h is False:
            return False
        formula = self.data.formula
        if not formula:
            return False
        try:
            from refractor_core.crystal.formula import parse_formula

            return parse_formula(formula).get("H", 0.0) + parse_formula(formula).get("D", 0.0) > 0
        except InputError:
            return False

    def _want_anisotropic(self, model: WorkingModel, n_obs: int) -> bool | str:
        """True, False, or "test" (refine both ways and keep the significantly better)."""
        if self.cfg.anisotropic is True:
            return True
        if self.cfg.anisotropic is False:
            return False
        if self.anis_requested:
            return True
        candidates = self._anisotropic_candidates(model)
        if not (candidates & ~model.aniso).any():
            return True  # already anisotropic (a user's refined model): nothing to decide
        trial = model.copy()
        trial.make_anisotropic(candidates)
        n_par = self._parameters(trial).n
        ratio = n_obs / max(n_par, 1)
        self.log(f"data/parameter ratio of the anisotropic model: {ratio:.1f}")
        if ratio >= ANISO_DATA_RATIO:
            return True
        return "test" if ratio >= ANISO_TEST_RATIO else False

    def _anisotropic_candidates(self, model: WorkingModel) -> np.ndarray:
        """Non-H atoms that anisotropic ADPs are for: all of them, except those a model with
        anisotropic atoms of its own gives isotropic (kept so unless anisotropic=true) and
        those made isotropic at the positivity limit (`_after_cycle`)."""
        keep = self.kept_isotropic | self.made_isotropic
        keep_iso = np.array([label.upper() in keep for label in model.labels], dtype=bool)
        return ~model.hydrogen & (model.riding < 0) & ~keep_iso

    def _want_element_swaps(self) -> bool:
        if self.cfg.swap_elements is True:
            return True
        return bool(self.cfg.swap_elements == "auto" and is_generated(self.candidate))

    def _want_disorder_split(self, anisotropic: bool) -> bool:
        if self.cfg.split_disorder is True:
            return True
        return bool(self.cfg.split_disorder == "auto" and anisotropic and is_generated(self.candidate))

    def _want_completion(self, model: WorkingModel) -> bool:
        if self.cfg.complete is False or self.cfg.completion_rounds == 0:
            return False
        if self.cfg.complete is True:
            return True
        expected = expected_asu_counts(self.data, model)
        if not expected:
            return False
        have = sum(model.occupancy[i] / max(model.order[i], 1) for i in range(model.n) if not is_hydrogen(model.elements[i]))
        want = sum(v for e, v in expected.items() if not is_hydrogen(e))
        foreign = {e for e in model.elements if e not in expected and not is_hydrogen(e)}
        # a generated model always: its extra peaks (the generator keeps a few beyond the
        # formula) are kept or rejected here
        return have < want - 0.75 or bool(foreign) or is_generated(self.candidate)

    def _held_occupancies(self, model: WorkingModel) -> set[str]:
        """Labels (upper case) of a user's mixed-site atoms whose occupancy the model gives as
        held in its own refinement (no free variable, no su), which 'auto' keeps: X-rays
        hardly tell Si from Al, and fractions the source did not refine can run off to an
        impossible composition (COD 2108240, labradorite: Al 6.6 / Si 1.4 against 3.3 / 4.7).
        A generator's candidate, and refine_occupancies=true, hold none."""
        if is_generated(self.candidate) or self.cfg.refine_occupancies != "auto":
            return set()
        given = {s.label.upper(): s for s in self.candidate.structure.sites}
        held = set()
        for g in cached_site_groups(model):
            labels = [model.labels[i].upper() for i in g.atoms]
            sites = [given.get(x) for x in labels]
            if len({model.elements[i] for i in g.atoms}) < 2 or any(s is None for s in sites):
                continue
            if all(s.occupancy_variable is None and s.occupancy_su is None for s in sites):
                held.update(labels)
        if held:
            self.log(f"mixed-site fractions held as the model gives them (no free variable, no su): {', '.join(sorted(held))} "
                     "(refine_occupancies=true refines them)")
        return held

    def _choose_matrix(self, model: WorkingModel) -> None:
        n = self._parameters(model).n
        if self.cfg.matrix == "auto":
            self.settings.matrix = "blocked" if n > self.cfg.full_matrix_limit else "full"
        else:
            self.settings.matrix = self.cfg.matrix

    def _disagreeable_reflections(self, model: WorkingModel, mod: np.ndarray, fc2c: np.ndarray) -> list[dict]:
        """The most disagreeable reflections (`rfactors.disagreeable_reflections`, on the
        Fc² scale as SHELXL lists them; `mod`: the model's intensities on the Fo² scale),
        logged; a warning names those observed more than OUTLIER_ESD esd weaker than
        calculated, with the OMIT lines that would leave them out once the user has judged
        them measurement errors; nothing is left out here."""
        from refractor_core.crystal.cell import d_spacing
        from refractor_core.crystal.rfactors import disagreeable_reflections

        weights = self.driver.weights(model, fc2c) * model.scale**2  # (esd on the Fc² scale)
        rows = disagreeable_reflections(self.obs_data.hkl, self.fo2 / model.scale, mod / model.scale, weights,
                                        d_spacing(model.cell, self.obs_data.hkl))
        if rows:
            self.log("most disagreeable reflections (h k l, Fo², Fc², error/esd, d Å): " + "; ".join(
                f"{r['hkl'][0]} {r['hkl'][1]} {r['hkl'][2]} {r['Fo2']:.1f} {r['Fc2']:.1f} {r['error_esd']:+.1f} "
                f"{r['d']:.2f}" for r in rows[:5]))
        # (only those observed too weak: too strong is as often the model's or extinction's
        # doing, and 6 of 22 published dev models have a few such reflections beyond 10 esd)
        weak = [r for r in rows if r["error_esd"] < -OUTLIER_ESD]
        if weak:
            self.warn(f"{len(weak)}{'+' if len(weak) == len(rows) else ''} reflections are observed weaker than the "
                      f"model by more than {OUTLIER_ESD:g} esd; if they are measurement errors (a beam stop's "
                      "shadow, overloads), OMIT leaves them out: "
                      + ", ".join("OMIT {} {} {}".format(*r["hkl"]) for r in weak[:5]) + (" ..." if len(weak) > 5 else ""))
        return rows

    def quiet_driver(self, build=None, after_shift=None) -> Driver:
        """A driver on this refinement's data and settings that logs nothing, for trial
        refinements beside the main one (occupancy probes, element and position trials);
        `build` defaults to the refinement's parameterisation, `after_shift` to doing nothing."""
        return Driver(self.calc, Observed(self.fo2, self.sigma, self.n_independent), self.settings,
                      build or self._parameters, after_shift or (lambda m: None), lambda s: None)

    def _parameters(self, model: WorkingModel) -> Parameterisation:
        return Parameterisation.build(
            model,
            refine_extinction=self.refine_extinction,
            refine_twin=self.refine_twin,
            refine_mixed_occupancy=self.refine_occ_mixed,
            refine_partial_occupancy=self.refine_occ_partial,
            fixed_atoms=self.fixed,
            refine_disorder_occupancy=self.refine_occ_disorder,
            refine_free_variables=self.refine_occ_mixed,
            riding_chain=self.cfg.riding_derivatives == "chain",
            held_occupancy={i for label, i in model.label_index().items() if label in self.held_occupancy},
        )

    def _after_shift(self, model: WorkingModel) -> None:
        if model.extinction is not None and model.extinction < 0:
            model.extinction = 0.0
        model.enforce_adp_limits()
        if (model.riding >= 0).any():
            hyd.update_riding(model)

    def _after_cycle(self, model: WorkingModel, settled: bool) -> bool:
        """Atoms the refinement made anisotropic whose U still sits at the positivity limit
        when the refinement has settled are made isotropic (as a crystallographer would);
        True when the model changed. On the way there an ADP may touch the limit and
        recover, as the positions around it improve. Atoms anisotropic in a user's model
        stay so, held at the limit (logged here, warned of at the end), as SHELXL never
        switches by itself: an isotropic U can fit far worse. First, every refined torsion of a
        rotating riding group takes an exact 1-D Newton step (`torsions.py`)."""
        if self.cfg.newton_torsions and any(g.refine_torsion for g in model.h_groups):
            newton_torsions(self.calc, model, self.driver.obs.fo2, self.driver.weights(model))
        if not settled:
            return False
        bad = [i for i in model.non_positive_definite() if model.aniso[i]]
        given = [model.labels[i] for i in bad if model.labels[i].upper() in self.given_anisotropic]
        new_held = [label for label in given if label.upper() not in self.held_at_limit]
        if new_held:
            self.held_at_limit.update(label.upper() for label in new_held)
            self.log(f"ADP at the positivity limit: {', '.join(new_held)} kept anisotropic, as the model gives it")
        bad = [i for i in bad if model.labels[i].upper() not in self.given_anisotropic]
        if not bad:
            return False
        mask = np.zeros(model.n, dtype=bool)
        mask[bad] = True
        # a whole site group changes together (shared ADPs)
        for g in cached_site_groups(model):
            if any(mask[a] for a in g.atoms):
                mask[g.atoms] = True
        model.make_isotropic(mask)
        model.u_iso[mask] = np.maximum(model.u_iso[mask], 0.01)
        model.update_u_eq()
        names = ", ".join(model.labels[i] for i in np.nonzero(mask)[0])
        self.warn(f"ADP not positive definite: {names} refined isotropically")
        self.meta.setdefault("made_isotropic", []).extend(model.labels[i] for i in np.nonzero(mask)[0])
        self.made_isotropic.update(model.labels[i].upper() for i in np.nonzero(mask)[0])
        return True

    def _warn_of_model_changes(self, model: WorkingModel) -> None:
        """One warning listing how the refinement changed a user's model: H atoms added
        (riding H from the formula), atoms added or removed and elements changed (model
        completion), with the options that keep the model as given. Only the log said so
        before, and a JSON reader saw a model it had not given."""
        given = {s.label.upper(): s.element for s in self.candidate.structure.sites}
        final = {label.upper(): (label, element) for label, element in zip(model.labels, model.elements)}
        given_h = np.array([s.xyz for s in self.candidate.structure.sites if is_hydrogen(s.element)]).reshape(-1, 3)
        final_h = model.xyz[model.hydrogen].reshape(-1, 3)

        def new_h_position(xyz, others) -> bool:
            """No H of the other model at this position or an image of it (an H of a group
            on a symmetry element, given once per image, is kept once, under one name)."""
            return not len(others) or model.symmetry.nearest_image_distance(model.cell, xyz, others) > SAME_H

        added_h = [label for label, el, xyz in zip(model.labels, model.elements, model.xyz)
                   if label.upper() not in given and is_hydrogen(el) and new_h_position(xyz, given_h)]
        added = [label for key, (label, el) in final.items() if key not in given and not is_hydrogen(el)]
        removed = [s.label for s in self.candidate.structure.sites
                   if s.label.upper() not in final and not is_hydrogen(s.element)]
        removed_h = [s.label for s in self.candidate.structure.sites if s.label.upper() not in final
                     and is_hydrogen(s.element) and new_h_position(np.array(s.xyz), final_h)]
        swapped = [f"{label} {given[key]} -> {el}" for key, (label, el) in final.items()
                   if key in given and given[key].upper() != el.upper()]
        changes, options = [], []
        if added_h:
            changes.append(f"{len(added_h)} H atoms added")
            options.append("riding_h=false")
        if removed_h:  # the model's H re-placed elsewhere (another atom, a difference peak)
            changes.append("the model's H atoms " + ", ".join(removed_h[:8]) + (" ..." if len(removed_h) > 8 else "")
                           + " replaced by riding H placed where the geometry or the difference density puts them")
            options.append("keep_h=true")
        for what, items in (("atoms added", added), ("atoms removed", removed), ("elements changed", swapped)):
            if items:
                changes.append(f"{what}: " + ", ".join(items[:8]) + (" ..." if len(items) > 8 else ""))
        if added or removed or swapped:
            options.append("complete=false")
        if changes:
            self.warn("the refinement changed the model: " + "; ".join(changes)
                      + " (--refiner-opt " + " ".join(options) + " keeps it as given)")

    def _remove_duplicates(self, model: WorkingModel) -> None:
        """Atoms of one element on top of each other (same part) are merged, with a warning;
        in a generated model, of two non-H atoms closer than 0.5 Å the lighter is removed."""
        cart = model.cartesian()
        drop = np.zeros(model.n, dtype=bool)
        for i in range(model.n):
            if drop[i]:
                continue
            d = np.linalg.norm(cart - cart[i], axis=1)
            for j in np.nonzero((d < 0.1) & (np.arange(model.n) > i))[0]:
                if model.elements[j] == model.elements[i] and model.part[j] == model.part[i]:
                    drop[j] = True
                    self.warn(f"atoms {model.labels[i]} and {model.labels[j]} lie on top of each other ({d[j]:.3f} Å): {model.labels[j]} removed")
        close, close_pairs = [], []
        m = orthogonalization_matrix(model.cell)
        for i in range(model.n):
            if drop[i] or is_hydrogen(model.elements[i]):
                continue
            dx = model.xyz - model.xyz[i]
            dx -= np.round(dx)
            d = np.linalg.norm(dx @ m.T, axis=1)
            for j in np.nonzero((d < 0.5) & (d >= 0.1) & (np.arange(model.n) > i) & ~drop)[0]:
                if model.part[i] == model.part[j] and model.part[i] >= 0 and not is_hydrogen(model.elements[j]):
                    close.append(f"{model.labels[i]}-{model.labels[j]} {d[j]:.2f} Å")
                    close_pairs.append((i, int(j)))
        if close and is_generated(self.candidate):
            # a generated model: of two atoms this close, the lighter is a false peak
            z = np.array([atomic_number(e) for e in model.elements])
            gone = []
            for i, j in close_pairs:
                if drop[i] or drop[j]:
                    continue
                k = j if z[j] * model.occupancy[j] <= z[i] * model.occupancy[i] else i
                drop[k] = True
                gone.append(model.labels[k])
            self.warn("implausibly short contacts in the generated model: " + ", ".join(close[:10])
                      + f"; removed {', '.join(gone)}")
        elif close:
            self.warn("implausibly short contacts in the starting model: " + ", ".join(close[:10]))
        if not is_generated(self.candidate):
            self._warn_of_symmetry_image_contacts(model, drop)
        if drop.any():
            model.remove_atoms(drop)

    def _warn_of_symmetry_image_contacts(self, model: WorkingModel, drop: np.ndarray) -> None:
        """A warning for non-H atoms of a user's model closer than 0.5 Å to a symmetry image
        (not the identity) of another atom of the same part, or of themselves off a special
        position: an atom given twice, or a site that needs PART -n (SHELXL refines such a
        model without complaint)."""
        sym = model.symmetry
        keep = np.nonzero(~drop & ~model.hydrogen & (model.part >= 0))[0]
        if sym.n < 2 or not len(keep):
            return
        identity = np.all(sym.rotations == np.eye(3, dtype=sym.rotations.dtype), axis=(1, 2)) & np.all(
            np.abs(sym.translations) < 1e-9, axis=1)
        found = []
        for a, i in enumerate(keep):
            others = keep[a:]
            d = sym.image_distances(model.cell, model.xyz[i], model.xyz[others])
            direct, dist_all = d[:, identity].min(axis=1), d[:, ~identity].min(axis=1)
            for j, near, dist in zip(others, direct, dist_all):
                if model.part[i] != model.part[j] or not dist < 0.5:
                    continue
                if (i == j and dist < 0.1) or (i != j and near < 0.5):
                    continue  # on a special position; or close as given (a mixed site, or warned of above)
                found.append(f"{model.labels[i]}-{model.labels[j]} {dist:.2f} Å")
        if found:
            self.warn("atoms close to a symmetry image of an atom of the model: " + ", ".join(found[:10])
                      + (" ..." if len(found) > 10 else "") + " (an atom given twice, or a site that needs PART -n)")

    def _start_twin_fractions(self, model: WorkingModel) -> None:
        """Start each refined twin fraction where a user's model fits the data best (scale
        fitted, atoms as given): a grid over 0-0.95 beside the model's own BASF, component by
        component. A BASF far off (a twin law tried with 0.5 on untwinned data) otherwise
        makes the first cycles move the atoms to fit what the fraction cannot. The model's
        own BASF stays unless the grid's best is significantly better
        (TWIN_START_SIGNIFICANCE): the grid's σ weights are not the refinement's, and a
        refined BASF is closer to the minimum than a 0.05 grid step."""
        fo2, sigma = self.driver.obs.fo2, self.driver.obs.sigma
        w = 1.0 / np.maximum(sigma, 1e-6 * max(float(np.max(np.abs(fo2))), 1.0)) ** 2
        fc2c = self.calc.fc2_components(model)
        scale = model.scale

        def misfit() -> float:
            model.scale = 1.0
            m, _ = self.calc.model_intensities(model, fc2c)
            fitted = scale_factor(fo2, m, w)
            return float(np.sum(w * (fo2 - fitted * m) ** 2))

        given = model.twin_fractions.copy()
        before = misfit()
        for k in np.nonzero(self.refine_twin)[0]:
            own = float(model.twin_fractions[k])
            trials = sorted(set(np.round(np.arange(0.0, 0.951, 0.05), 2)) | {own})
            scores = []
            for v in trials:
                model.twin_fractions[k] = v
                scores.append(misfit())
            best = int(np.argmin(scores))
            gain = scores[trials.index(own)] - scores[best]
            significant = gain > TWIN_START_SIGNIFICANCE * scores[best] / max(len(fo2), 1)
            model.twin_fractions[k] = trials[best] if significant else own
        after = misfit()
        model.scale = scale
        if not np.allclose(model.twin_fractions, given):
            self.log("twin fractions start at " + ", ".join(f"{x:.2f}" for x in model.twin_fractions)
                     + f" (best fit of the model as given; its BASF {', '.join(f'{x:.3f}' for x in given)}"
                     + f" fits {np.sqrt(before / after):.1f} times worse in wR)")

    def _setup_twin_and_extinction(self, model: WorkingModel, instr: RefinementInstructions, sym: SymmetryOps) -> None:
        cfg = self.cfg
        self.refine_twin = np.zeros(0, dtype=bool)
        self.flack_mode = "none"
        self.inversion_component = None
        hklf5 = self.obs_data.twin_indices
        if hklf5 is not None:  # the data name each member's component (HKLF 5): no twin law
            n = hklf5.n_components
            basf = list(instr.basf[: n - 1]) + [0.0] * max(0, n - 1 - len(instr.basf))
            model.twin_fractions = np.array(basf, dtype=np.float64)
            self.refine_twin = np.ones(n - 1, dtype=bool)
            overlapped = int(np.sum(np.sum(hklf5.ok, axis=0) > 1))
            self.log(f"HKLF 5: {n} twin components, {overlapped} of {len(hklf5.ok[0])} observations overlapped; "
                     + (f"BASF {', '.join(f'{x:.3f}' for x in basf)} refined" if n > 1 else "one component"))
            if not sym.centrosymmetric and cfg.flack is not False:
                self.log("HKLF 5: the absolute structure is not determined (no Flack parameter with HKLF 5 data)")
            if instr.twin_n or instr.twin_matrix:
                self.log("TWIN ignored: HKLF 5 data name each reflection's component themselves")
        elif instr.twin_n or instr.twin_matrix:
            ops = twin_operators(instr.twin_matrix, instr.twin_n)
            model.twin_ops = ops
            basf = list(instr.basf[: len(ops) - 1]) + [0.0] * max(0, len(ops) - 1 - len(instr.basf))
            model.twin_fractions = np.array(basf, dtype=np.float64)
            self.refine_twin = np.ones(len(ops) - 1, dtype=bool)
            for k, op in enumerate(ops[1:]):
                if np.allclose(op, -np.eye(3)):
                    self.inversion_component = k
            self.log(f"twin: {len(ops)} components, BASF {', '.join(f'{x:.3f}' for x in basf)} refined")
            if self.inversion_component is not None:
                self.flack_mode = "basf"
            elif not sym.centrosymmetric and cfg.flack is not False:
                # the absolute structure of a twinned model: its Flack x estimated with the
                # twin in place (an inversion component besides would need TWIN with -2N)
                self.flack_mode = "estimate"
                if cfg.flack is True:
                    self.log("Flack x estimated after refinement, not refined: the model already has a TWIN law")
        elif not sym.centrosymmetric and cfg.flack is True:
            model.twin_ops = [np.eye(3), -np.eye(3)]
            model.twin_fractions = np.array([0.0])
            self.refine_twin = np.array([True])
            self.inversion_component = 0
            self.flack_mode = "basf"
            self.log("inversion twin fraction (Flack x) refined")
        elif not sym.centrosymmetric and cfg.flack == "auto":
            self.flack_mode = "estimate"
        self.refine_extinction = False
        if cfg.extinction is True or (cfg.extinction == "auto" and instr.exti is not None):
            model.extinction = float(instr.exti or 0.0)
            self.refine_extinction = True
            self.log(f"extinction refined (start x = {model.extinction:g})")
        self.extinction_test = cfg.extinction == "auto" and instr.exti is None and self._no_instructions(instr)

    @staticmethod
    def _no_instructions(instr: RefinementInstructions) -> bool:
        return instr == RefinementInstructions()

    def _place_hydrogens(self, model: WorkingModel) -> WorkingModel:
        expected = expected_asu_counts(self.data, model)
        n_h = expected.get("H", 0.0) + expected.get("D", 0.0) if expected else None
        forced = None
        if self.instr is not None and self.instr.hfix:
            # the model's own H groups (AFIX codes), as SHELXL would place them
            index = model.label_index()
            forced = {index[label]: code for label, code in self.instr.hfix.items() if label in index}
            # atoms whose own H are kept, refined freely, get no riding H beside them
            for label in self.free_h_parents:
                forced.pop(index.get(label.upper(), -1), None)
            if not self.afix_noted:  # once, not at every placement
                self.afix_noted = True
                for line in hyd.approximated_afix(model, forced):
                    self.log(line)
        # riding H refined with a U of their own keep it through being re-placed
        self.h_own_u.update({model.labels[h].upper(): float(model.u_iso[h]) for h in np.nonzero(model.u_own)[0]})
        placed = hyd.place_hydrogens(
            model,
            expected_h=n_h,
            distances=self.cfg.h_distances,
            refinement=self if self.cfg.fit_rotating_groups else None,
            forced=forced,
            refine_torsions=self.cfg.refine_torsions,
        )
        self.log(placed.summary())
        # the model's own H, re-placed: their torsions, names and own U kept
        hyd.keep_model_hydrogens(placed.model, self.h_names, self.h_own_u, self.h_u_variables)
        self.meta["hydrogens"] = placed.counts
        self.meta["expected_h"] = n_h
        return placed.model

    def _optimise_weights(self, model: WorkingModel) -> bool:
        fc2c = self.calc.fc2_components(model)
        _, fcabs = self.calc.model_intensities(model, fc2c)
        k = model.scale
        n_par = self._parameters(model).n
        fit = optimise_weights(self.fo2 / k, self.sigma / k, fcabs, n_par, start=(self.settings.a, self.settings.b))
        changed = abs(fit.a - self.settings.a) > 0.002 or abs(fit.b - self.settings.b) > 0.05 * max(abs(self.settings.b), 0.02)
        self.log(
            f"weights optimised: a = {fit.a:.4f}, b = {fit.b:.4f} (GooF by Fc² group "
            f"{min(fit.goof_groups_after):.2f}-{max(fit.goof_groups_after):.2f}, was "
            f"{min(fit.goof_groups_before):.2f}-{max(fit.goof_groups_before):.2f})"
        )
        self.settings.a, self.settings.b = fit.a, fit.b
        self.meta["weight_groups_goof"] = fit.goof_groups_after
        return changed

    # -- final figures -----------------------------------------------------------------
    def _check_twin_laws(self, model: WorkingModel) -> None:
        """Warn of a twin law the lattice allows, not refined, whose fraction is significant
        with the refined model held (`twinning.twin_check`)."""
        from .twinning import twin_check

        fits = twin_check(self, model)
        self.meta["twin_laws_found"] = [
            {"matrix": np.rint(f.matrix).astype(int).tolist(), "fraction": f.fraction, "fraction_su": f.fraction_su,
             "wR2_without": f.wr2_without, "wR2_with": f.wr2_with} for f in fits]
        for fit in self.meta["twin_laws_found"]:
            self.log(f"twin law {fit['matrix']}: fraction {fit['fraction']:.3f} (su {fit['fraction_su']:.3f}) "
                     f"with the model held, wR2 {fit['wR2_without']:.4f} -> {fit['wR2_with']:.4f}")
        if fits:
            best = fits[0]
            self.warn(f"the data look twinned: the lattice allows a twin law the model lacks, and with the model held its "
                      f"domain takes a fraction {best.fraction:.3f} (su {best.fraction_su:.3f}) of the intensity (wR2 "
                      f"{best.wr2_without:.4f} -> {best.wr2_with:.4f}); refine it with '{best.shelxl()}' in the model")

    def _check_composition(self, refined: Structure) -> None:
        """Warn when the refinement of a user's model moved its contents away from the
        formula (occupancies refined into a composition the formula does not allow) by
        more than COMPOSITION_DRIFT of its non-H atoms."""
        from refractor_core.simulation.composition import formula_and_z, formula_mismatch

        if is_generated(self.candidate):
            return
        formula, z = self.data.formula, self.data.z
        before = formula_mismatch(self.candidate.structure, formula, z)
        after = formula_mismatch(refined, formula, z)
        if before is None or after is None or after - before <= COMPOSITION_DRIFT:
            return
        found, found_z, _ = formula_and_z(refined)
        self.warn(f"the refined occupancies move the contents away from the formula: {found} (Z {found_z:g}) against "
                  f"{formula} (Z {z:g}), {100 * after:.0f} % of the non-H atoms off ({100 * before:.0f} % at the start); "
                  "refine_occupancies=false holds them")

    def _restrained_goof(self, model: WorkingModel, goof: float, n_parameters: int, n_restraints: int) -> float:
        """SHELXL's restrained GooF: sqrt([Σw(Fo² - Fc²)² + Σ restraint terms] / (n + n_r - p)),
        the restraints weighted as SHELXL reports them (1/σ² times the data's mean
        w(Fo² - Fc²)², every SADI/SAME pair in full: `sum_of_squares(as_reported=True)`);
        n_r (`n_restraints`) counts the floating-origin restraints too, as SHELXL counts them
        (their own terms are nil: the centroid they hold does not move)."""
        from .driver import restraint_weight_scale
        from .restraints import sum_of_squares

        n, rs = len(self.fo2), self.driver.restraints
        chi2_data = goof**2 * max(n - n_parameters, 1)
        chi2_restraints = sum_of_squares(model, rs, restraint_weight_scale(chi2_data, n), as_reported=True)
        return float(math.sqrt((chi2_data + chi2_restraints) / max(n + n_restraints - n_parameters, 1)))

    def _finish(self, model: WorkingModel, converged: bool, last_shift: float, instr, wavelength: float) -> RefinedCandidate:
        from .completion import difference_peaks_and_holes

        self._update_restraints(model)  # the final model's own restraints (its atoms may have changed)
        self.final_model = model  # (with `driver`: for diagnostics such as benchmarks/stationarity.py)
        self.cycles = self.driver.cycle_count
        params, cov, s2, singular = self.driver.uncertainties(model)
        if singular:
            names = ", ".join(params.describe(j) for j in singular[:8])
            self.warn(f"the normal matrix is singular: parameters {names} are not determined by the data (their su "
                      "leave out the undetermined combination, so they are too small, or 0)")
        self._store_su(model, params, cov)
        bonds, angles = bonds_and_angles(model, params, cov)
        self.meta["geometry"] = {"bonds": as_records(model, bonds), "angles": as_records(model, angles)}
        self.meta["undetermined_positions"] = sorted({model.labels[params.info[j].atom] for j in singular
                                                      if params.info[j].kind == "xyz"})
        fc2c = self.calc.fc2_components(model)
        mod, fcabs = self.calc.model_intensities(model, fc2c)
        a, b = (self.settings.a, self.settings.b) if self.settings.scheme == "shelxl" else (0.0, 0.0)
        ag = agreement(self.fo2, self.sigma, fcabs, n_parameters=params.n, weight_a=a, weight_b=b, scale=model.scale)
        flack, flack_su = self._flack(model, params, cov)
        if self.cfg.twin_check and len(model.twin_ops) == 1 and self.obs_data.twin_indices is None:
            self._check_twin_laws(model)
        peak, hole, peaks = difference_peaks_and_holes(self, model)
        self._warn_of_unexplained_density(model, peaks)
        ext = model.extinction
        ext_su = None
        if self.refine_extinction:
            j = _column_of(params, "extinction", 0)
            ext_su = float(math.sqrt(max(cov[j, j], 0.0))) if j is not None else None
        if not is_generated(self.candidate):
            self._warn_of_model_changes(model)
            if ag.R1 > MISFIT_R1:
                self.warn(f"R1 {ag.R1:.2f} after refinement: the model does not fit these data (check the cell, "
                          "the space group, the HKLF matrix and the elements)")
        npd = model.non_positive_definite()
        if npd:
            self.warn("ADPs at the positivity limit (not positive definite when refined freely): " + ", ".join(model.labels[i] for i in npd))
        # SHELXL counts the floating-origin restraints of a polar space group among its
        # restraints (P21, Pna21, P31c: 1; Cc: 2; P1: 3), in its CIF and its restrained GooF
        n_restraints = len(self.driver.restraints) + len(params.origin_restraints())
        restrained_goof = self._restrained_goof(model, ag.GooF, params.n, n_restraints)
        figures = (ag.R1, ag.wR2, ag.GooF)
        if not all(math.isfinite(x) for x in figures):
            raise RefinementError("the refinement produced non-finite agreement figures")
        refined_structure = model.to_structure()
        self._check_composition(refined_structure)
        outliers = self._disagreeable_reflections(model, mod, fc2c)
        meta = dict(self.meta)
        meta.update(
            {
                "R1_all": ag.R1_all,
                "r1_all": ag.R1_all,
                "instructions": instr.model_dump(mode="json"),
                "refined_instructions": self._refined_instructions(instr, model, a, b).model_dump(mode="json"),
                "non_positive_definite": [model.labels[i] for i in npd],
                "warnings": list(self.warnings),
                "seconds": time.perf_counter() - self.t0,
                "matrix": self.settings.matrix,
                "scale_su": float(math.sqrt(max(cov[0, 0], 0.0))),
                "extinction_su": ext_su,
                "twin_fractions": [float(x) for x in model.twin_fractions],
                "friedel_merged": self.obs_data.friedel_merged,
                "r_int": self.obs_data.merged.r_int,
                "data_statistics": None if self.obs_data.twin_indices is not None else
                collection_statistics(self.data, self.obs_data.merged, self.calc.symmetry, wavelength),
                "difference_peaks": peaks,
                "n_restraints": n_restraints,
                "restrained_goof": restrained_goof,
                "fc2": None,
                "disagreeable_reflections": outliers,
            }
        )
        self.meta_fcf = (self.obs_data.hkl, self.fo2 / model.scale, self.sigma / model.scale, fcabs)
        from .restraints import disagreeable

        worst = disagreeable(model, self.driver.restraints)
        if worst:
            self.log(f"disagreeable restraints (more than 3 σ from target), worst {len(worst)}:")
            for text in worst:
                self.log("  " + text)
        self.log(
            f"final: R1 {ag.R1:.4f} ({ag.n_gt} Fo > 4σ(Fo)), wR2 {ag.wR2:.4f}, GooF {ag.GooF:.3f}"
            + (f" (restrained {restrained_goof:.3f}, {n_restraints} restraints)" if self.driver.restraints else "")
            + f", {ag.n_reflections} reflections, {params.n} parameters, max shift/su {last_shift:.3f}, "
            f"Δρ {peak:+.2f}/{hole:+.2f} e/Å³"
        )
        return RefinedCandidate(
            structure=refined_structure,
            candidate=self.candidate,
            r1=ag.R1,
            wr2=ag.wR2,
            goof=ag.GooF,
            n_reflections=ag.n_reflections,
            n_gt=ag.n_gt,
            n_parameters=params.n,
            cycles=self.cycles,
            max_shift_su=float(last_shift) if math.isfinite(last_shift) else None,
            converged=bool(converged),
            scale=float(model.scale),
            extinction=float(ext) if ext is not None else None,
            flack=flack,
            flack_su=flack_su,
            weight_a=float(a),
            weight_b=float(b),
            diff_peak=float(peak),
            diff_hole=float(hole),
            log=list(self.lines),
            meta=meta,
        )

    def _warn_of_unexplained_density(self, model: WorkingModel, peaks: list[dict]) -> None:
        """Warn of the strongest difference peak away from every atom when it is high for
        this structure (UNEXPLAINED_PEAK_PER_Z): an atom or disordered solvent is missing."""
        heaviest = max((atomic_number(e) for e in model.elements if not is_hydrogen(e)), default=1)
        limit = max(1.0, UNEXPLAINED_PEAK_PER_Z * heaviest)
        away = [p for p in peaks if p["height"] > limit and p["distance"] > UNEXPLAINED_DISTANCE]
        if away:
            p = max(away, key=lambda q: q["height"])
            xyz = " ".join(f"{v:.4f}" for v in p["xyz"])
            self.warn(f"a difference peak of {p['height']:+.2f} e/Å³ lies {p['distance']:.2f} Å from the nearest "
                      f"atom ({p['nearest']}), at {xyz} ({len(away)} such peak{'s' if len(away) > 1 else ''} above "
                      f"{limit:.1f} e/Å³): an atom, or disordered solvent, is missing from the model")

    def _flack(self, model: WorkingModel, params: Parameterisation, cov: np.ndarray) -> tuple[float | None, float | None]:
        """Flack x and its su: the refined inversion-twin fraction, or estimated with the
        model held (a warning when it lies significantly between 0 and 1); None if neither."""
        if self.flack_mode == "basf" and self.inversion_component is not None:
            j = _column_of(params, "basf", self.inversion_component)
            flack_su = float(math.sqrt(max(cov[j, j], 0.0))) if j is not None else None
            self.meta["flack_details"] = "Flack x refined as the fraction of the inverted twin domain (BASF)"
            return float(model.twin_fractions[self.inversion_component]), flack_su
        if self.flack_mode != "estimate":
            return None, None
        from .absolute import flack_estimate

        est = flack_estimate(self, model)
        if est is None:
            return None, None
        flack, flack_su, self.meta["flack_details"] = est
        self.log(f"Flack x = {flack:.3f}({flack_su:.3f}) (estimated after refinement: {est[2]})")
        if intermediate_flack(flack, flack_su):
            self.warn(f"Flack x = {flack:.3f}({flack_su:.3f}) lies significantly between 0 and 1: the crystal "
                      "may be an inversion twin (refine its fraction with --refiner-opt flack=true), or the "
                      "structure centrosymmetric (check the space group)")
        return flack, flack_su

    def _refined_instructions(self, instr: RefinementInstructions, model: WorkingModel, a: float, b: float) -> RefinementInstructions:
        """The instructions that describe this refinement (for the .res writer)."""
        # restraints belong to the model they were written for: kept only for that model
        upd: dict[str, Any] = {"wght": (a, b), "restraints": instr.restraints if self.instr is not None else []}
        if model.extinction is not None:
            upd["exti"] = float(model.extinction)
        if len(model.twin_fractions):
            upd["basf"] = [float(x) for x in model.twin_fractions]
        return instr.model_copy(update=upd)

    def _test_extinction(self, model: WorkingModel, budget: int, converged: bool, last_shift: float):
        """Without instructions, keep an extinction parameter only if it is significant
        (a trial of at most EXTINCTION_CYCLES of the `budget` cycles left; a kept one is
        refined on to convergence with the rest). Returns (model, converged, max shift/su)."""
        if not self.extinction_test or budget <= 0:
            return model, converged, last_shift
        trial = model.copy()
        trial.extinction = 0.0
        self.refine_extinction = True
        res = self.driver.run(trial, min(EXTINCTION_CYCLES, budget), "extinction")
        params, cov, _, _ = self.driver.uncertainties(res.model)
        j = _column_of(params, "extinction", 0)
        x = float(res.model.extinction or 0.0)
        su = float(math.sqrt(max(cov[j, j], 0.0))) if j is not None else math.inf
        if x > 3.0 * su and x > 0:
            self.log(f"extinction x = {x:.3g}({su:.2g}) is significant: kept")
            left = budget - res.cycles
            if not res.converged and left > 0:
                res = self.driver.run(res.model, left, "final", keep_damping=True)
            return res.model, res.converged, res.max_shift_su
        self.log(f"extinction x = {x:.3g}({su:.2g}) not significant: not refined")
        self.refine_extinction = False
        return model, converged, last_shift

    def _store_su(self, model: WorkingModel, params: Parameterisation, cov: np.ndarray) -> None:
        """Standard uncertainties of the atoms' parameters from the covariance matrix."""
        cell = model.cell
        n_vec = np.sqrt(np.diag(np.linalg.inv(orthogonalization_matrix(cell).T @ orthogonalization_matrix(cell))))
        ustar_scale = np.array([n_vec[0] ** 2, n_vec[1] ** 2, n_vec[2] ** 2, n_vec[0] * n_vec[1], n_vec[0] * n_vec[2], n_vec[1] * n_vec[2]])
        grad_ueq = ueq_gradient(cell)  # U_eq is linear in U*
        su: dict[str, dict[int, Any]] = {"xyz": {}, "u_iso": {}, "u_aniso": {}, "occupancy": {}}
        torsions: list[str] = []
        distances: list[str] = []
        variables: list[str] = []
        shared_u: list[str] = []  # riding H sharing one U_iso (a SHELXL free variable)
        for seg in params.segments():
            cols, b = seg.columns, seg.basis
            if seg.kind == "xyz":
                sx = np.sqrt(np.clip(np.diag(b @ cov[np.ix_(cols, cols)] @ b.T), 0.0, None))
                for a in seg.atoms:
                    su["xyz"][a] = sx
            elif seg.kind == "rigid":  # each member's su through the body's six parameters
                for a, ba in zip(seg.atoms, rigid_bases(model, seg.atoms)):
                    su["xyz"][a] = np.sqrt(np.clip(np.diag(ba @ cov[np.ix_(cols, cols)] @ ba.T), 0.0, None))
            elif seg.kind == "u_aniso":
                c = b @ cov[np.ix_(cols, cols)] @ b.T
                su_cif = np.sqrt(np.clip(np.diag(c), 0.0, None)) / ustar_scale
                su_ueq = float(np.sqrt(max(grad_ueq @ c @ grad_ueq, 0.0)))
                for a in seg.atoms:
                    su["u_aniso"][a] = su_cif
                    su["u_iso"][a] = su_ueq
            elif seg.kind == "u_iso":
                s = float(np.sqrt(max(cov[cols[0], cols[0]], 0.0)))
                for a in seg.atoms:
                    su["u_iso"][a] = s
                if len(seg.atoms) > 1 and model.riding[seg.atoms[0]] >= 0:
                    shared_u.append(f"{model.labels[seg.atoms[0]]} and {len(seg.atoms) - 1} more "
                                    f"{with_su(float(model.u_iso[seg.atoms[0]]), s)}")
            elif seg.kind == "occ_mixed":
                for a, c in zip(seg.atoms[:-1], cols):
                    su["occupancy"][a] = float(np.sqrt(max(cov[c, c], 0.0)))
                total = cov[np.ix_(cols, cols)].sum()
                su["occupancy"][seg.atoms[-1]] = float(np.sqrt(max(total, 0.0)))
            elif seg.kind == "occ_free":  # p and 1 - p share one su (times each coefficient)
                g = params.groups[seg.group]
                s = float(np.sqrt(max(cov[cols[0], cols[0]], 0.0)))
                for a, c in zip(seg.atoms, g.occupancy_signs or []):
                    su["occupancy"][a] = abs(c) * s
                if g.free_variable is not None:
                    variables.append(f"{g.free_variable} {with_su(free_variable_value(model, g), s)}")
            elif seg.kind == "torsion":  # logged (riding H carry no su of their own, as in SHELXL)
                g = model.h_groups[params.groups[seg.group].torsion_group]
                tau = float((g.torsion + 180.0) % 360.0 - 180.0)
                torsions.append(f"{model.labels[g.parent]} {with_su(tau, float(np.sqrt(max(cov[cols[0], cols[0]], 0.0))))}")
            elif seg.kind == "hdist":
                g = model.h_groups[params.groups[seg.group].distance_group]
                distances.append(f"{model.labels[g.parent]} {with_su(g.distance, float(np.sqrt(max(cov[cols[0], cols[0]], 0.0))))}")
            else:
                su["occupancy"][seg.atoms[0]] = float(np.sqrt(max(cov[cols[0], cols[0]], 0.0)))
        model.su = su
        if variables:
            self.log("free variables of occupancy (SHELXL FVAR): " + ", ".join(variables))
        if shared_u:
            self.log("riding H sharing one refined U_iso (Å², SHELXL free variable): " + "; ".join(shared_u))
        if torsions:
            self.log("rotating riding groups, refined torsion parameters (°): " + ", ".join(torsions))
        if distances:
            self.log("rotating riding groups, refined X-H distances (Å, AFIX m8): " + ", ".join(distances))
        fractions = []
        for k, value in enumerate(model.twin_fractions):
            j = _column_of(params, "basf", k)
            if j is not None:
                fractions.append(with_su(float(value), float(np.sqrt(max(cov[j, j], 0.0)))))
        if fractions:
            self.log("twin fractions (SHELXL BASF): " + ", ".join(fractions))


def _unit_scale(model: WorkingModel) -> WorkingModel:
    m = model.copy()
    m.scale = 1.0
    return m


def _column_of(params: Parameterisation, kind: str, component: int) -> int | None:
    for j, p in enumerate(params.info):
        if p.kind == kind and (kind != "basf" or p.component == component):
            return j
    return None


def expected_asu_counts(data: ReflectionData, model: WorkingModel) -> dict[str, float]:
    """Atoms per asymmetric unit expected from the data's formula and Z (empty if unknown)."""
    if not data.formula or not data.z:
        return {}
    try:
        contents = cell_contents(data.formula, data.z)
    except InputError:
        return {}
    n_ops = model.symmetry.n
    return {e: v / n_ops for e, v in contents.items()}
