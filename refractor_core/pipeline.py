"""The pipeline: stages wired through the typed models, each swappable by name.

    [encoder] -> classifier (top `max_hypotheses`) -> generator (`candidates_per_hypothesis`
    per hypothesis) -> refiner -> ranker

With `screen` (the default) and several candidates, the refiner first screens every
candidate (its quick `screen` refinement), the ranker orders them, and only the best
`refine_top` (one per space group first; more of one group only while none refines to R1 ≤
GOOD_R1; none far worse than the best) are refined fully; the others follow the fully
refined ones in the ranking, marked `meta["screened"]`. When the best-fitting model obeys a
hypothesised supergroup of its space group (`crystal.addsym`), it is also refined in that
group and ranked with the others.

`run_pipeline(data, config, context)` builds the components named in a `RunConfig` from
the plugin registry, runs them and returns a `PipelineResult`. It reads and writes no
files: the `run` command owns input and output. With no classifier, the space group the
data carry (`space_group_hint`, e.g. from the .ins) is the single hypothesis.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .errors import InputError, PluginError, RefinementError, RefractorError, UsageError
from .interfaces import BuildContext, Component
from .plugins import ComponentRegistry, get_registry
from .types import (
    Candidate,
    ComponentRecord,
    Embedding,
    RefinedCandidate,
    ReflectionData,
    RunConfig,
    SpaceGroupHypothesis,
    WeightsRecord,
)

#: R1 (I > 2σ) at or below which the best refined candidate counts as a solution
SOLVED_R1 = 0.15
#: stages the pipeline builds (the reader runs before it, in the run command)
PIPELINE_STAGES = ("encoder", "classifier", "generator", "refiner", "ranker")
OPTIONAL_STAGES = ("encoder", "classifier")


@dataclass
class PipelineContext:
    """How to run: registry, device, seed, network policy, progress display, weights."""

    registry: ComponentRegistry | None = None
    device: str = "cpu"
    seed: int = 0
    offline: bool = False
    #: progress(description, total) -> context manager with .update(n), or None
    progress: Callable[..., Any] | None = None
    #: component name -> explicit local weights file (first step of the resolver)
    weights_paths: dict[str, str] = field(default_factory=dict)
    cache_dir: str | None = None
    #: weights resolved while building components (filled in by the resolver callback)
    weights: list[WeightsRecord] = field(default_factory=list)

    def resolver(self) -> Callable[..., Any]:
        """The `BuildContext.resolve_weights` callback: resolves and records weights."""

        def resolve(name: str, kind: str | None = None, filename: str | None = None):
            from .weights import find_card, resolve_weights

            card = find_card(name, kind, registry=self.registry)
            resolved = resolve_weights(
                card,
                local_path=self.weights_paths.get(name),
                offline=self.offline,
                cache_dir=self.cache_dir,
                filename=filename,
            )
            self.weights.append(resolved.record())
            return resolved

        return resolve


@dataclass
class PipelineResult:
    """What a run found: ranked refined candidates and how it got there."""

    ranked: list[RefinedCandidate]
    hypotheses: list[SpaceGroupHypothesis]
    embedding: Embedding | None
    n_candidates: int
    timings: dict[str, float]
    components: list[ComponentRecord]
    weights: list[WeightsRecord]
    seed: int
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> RefinedCandidate | None:
        return self.ranked[0] if self.ranked else None

    @property
    def solved(self) -> bool:
        """True when the best candidate refines to R1 <= SOLVED_R1."""
        best = self.best
        return best is not None and np.isfinite(best.r1) and best.r1 <= SOLVED_R1


def stage_seed(seed: int, index: int) -> int:
    """A seed for the `index`-th call of a stage, derived reproducibly from the run seed."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0] % 2**31)


def _call(component: Component, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call a stage method; an unexpected exception becomes a PluginError naming the component.

    RefractorErrors (bad input, failed refinement, weights...) pass through unchanged.
    """
    try:
        return getattr(component, method)(*args, **kwargs)
    except RefractorError:
        raise
    except Exception as exc:
        raise PluginError(
            f"{component.kind} {component.name!r} failed in {method}(): {type(exc).__name__}: {exc}",
            hint="run with -v for the traceback; report it to the component's authors",
        ) from exc


def _null_progress(description: str, total: int | None = None):
    from .progress import silent

    return silent()(description, total)


def _expect(kind: str, name: str, value: Any, typ: type, what: str) -> None:
    if not isinstance(value, typ):
        raise PluginError(f"{kind} {name!r} returned {type(value).__name__} where {what} was expected")


def _expect_list(kind: str, name: str, value: Any, typ: type, what: str) -> list:
    if not isinstance(value, list) or not all(isinstance(v, typ) for v in value):
        got = type(value).__name__ if not isinstance(value, list) else "a list holding other objects"
        raise PluginError(f"{kind} {name!r} returned {got} where a list of {what} was expected")
    return value


#: screened candidates worse than the best by more than this R1 are not refined fully
SCREEN_R1_MARGIN = 0.10
#: once a fully refined candidate reaches this R1, no further candidate of a space group
#: already tried is refined fully
GOOD_R1 = 0.10


def select_for_refinement(
    screened: list[RefinedCandidate], n: int
) -> tuple[list[RefinedCandidate], list[RefinedCandidate]]:
    """From screened candidates (ranked, best first), those worth refining fully: (the best
    of each space group, the others in order as a reserve), at most `n` in all, none whose
    R1 is more than SCREEN_R1_MARGIN above the best one's and no repeat of a result."""
    if not screened:
        return [], []
    best_r1 = screened[0].r1 if np.isfinite(screened[0].r1) else np.inf
    worth = [r for r in screened if np.isfinite(r.r1) and r.r1 <= best_r1 + SCREEN_R1_MARGIN] or screened[:1]
    first: list[RefinedCandidate] = []
    groups: set[str] = set()
    for r in worth:
        if len(first) < n and r.structure.space_group.hall not in groups:
            first.append(r)
            groups.add(r.structure.space_group.hall)
    reserve: list[RefinedCandidate] = []
    for r in worth:
        if len(first) + len(reserve) < n and not any(r is c or _same_result(r, c) for c in first + reserve):
            reserve.append(r)
    return first, reserve


#: a refined candidate in the higher group this close in R1 to the best makes a symmetry
#: upgrade pointless (the ranker's own symmetry preference decides between them)
UPGRADE_R1_MARGIN = 0.005


def _symmetry_upgrade(
    ranked: list[RefinedCandidate],
    hypotheses: list[SpaceGroupHypothesis],
    refiner: Component,
    data: ReflectionData,
    progress: Callable[..., Any],
    notes: list[str],
) -> RefinedCandidate | None:
    """When the atoms of the model with the lowest R1 obey a hypothesised supergroup of its
    space group (an ADDSYM-style check) and no candidate in that group refined as well, that
    model written in the higher group, refined fully; else None."""
    from .crystal.addsym import missed_symmetry, structure_in_higher_group
    from .crystal.symmetry import SymmetryOps

    finite = [r for r in ranked if np.isfinite(r.r1)]
    if not finite:
        return None
    best = min(finite, key=lambda r: r.r1)  # the best fit, whichever group the ranker prefers
    if best.r1 > SOLVED_R1:
        return None
    low_ops = SymmetryOps.from_space_group(best.structure.space_group)
    for hyp in hypotheses:
        sg = hyp.space_group
        high_ops = SymmetryOps.from_space_group(sg)
        if not low_ops.is_proper_subgroup_of(high_ops):
            continue
        if any(r.structure.space_group.hall == sg.hall and r.r1 <= best.r1 + UPGRADE_R1_MARGIN for r in ranked):
            continue
        missed = missed_symmetry(best.structure, sg)
        if missed is None:
            continue
        structure = structure_in_higher_group(best.structure, sg, missed)
        origin = best.candidate
        candidate = Candidate(
            structure=structure,
            generator=origin.generator if origin is not None else "",
            hypothesis=hyp,
            seed=origin.seed if origin is not None else None,
            meta={"symmetry_upgrade": {"from": best.structure.space_group.symbol, "origin_shift": [float(v) for v in missed.shift]}},
        )
        notes.append(f"the best model ({best.structure.space_group.symbol}) obeys {sg.symbol}: refined in it too")
        got = _refine_all(refiner, "refine", data, [candidate], progress, notes, f"refining in {sg.symbol}")
        return got[0] if got else None
    return None


def _starts(screened: list[RefinedCandidate]) -> list[Candidate]:
    """Candidates for full refinement, starting from their screened structures."""
    return [r.candidate.model_copy(update={"structure": r.structure}) for r in screened]  # type: ignore[union-attr]


def _same_result(a: RefinedCandidate, b: RefinedCandidate) -> bool:
    """Two screened candidates that refined to the same figures in the same group (trials
    that found one solution): refining both fully would repeat the work."""
    return (
        a.structure.space_group.hall == b.structure.space_group.hall
        and len(a.structure.sites) == len(b.structure.sites)
        and abs(a.r1 - b.r1) < 1e-4
        and abs(a.wr2 - b.wr2) < 1e-4
    )


def _rank(ranker: Component, data: ReflectionData, refined: list[RefinedCandidate]) -> list[RefinedCandidate]:
    """The ranker's order, checked to hold exactly the candidates given."""
    ranked = _expect_list("ranker", ranker.name, _call(ranker, "rank", data, refined), RefinedCandidate, "RefinedCandidate")
    if len(ranked) != len(refined):
        raise PluginError(f"ranker {ranker.name!r} returned {len(ranked)} candidates for {len(refined)} given")
    return ranked


def _refine_all(
    refiner: Component,
    method: str,
    data: ReflectionData,
    candidates: list[Candidate],
    progress: Callable[..., Any],
    notes: list[str],
    what: str,
) -> list[RefinedCandidate]:
    """`refiner.<method>` on every candidate; a candidate that cannot be refined is noted."""
    out: list[RefinedCandidate] = []
    with progress(f"{what} ({refiner.name})", total=len(candidates)) as bar:
        for i, candidate in enumerate(candidates):
            try:
                r = _call(refiner, method, data, candidate)
            except RefinementError as exc:
                notes.append(f"candidate {i + 1} ({candidate.structure.space_group.symbol}) not refined ({method}): {exc}")
                bar.update(1)
                continue
            _expect("refiner", refiner.name, r, RefinedCandidate, "a RefinedCandidate")
            if r.candidate is None:
                r = r.model_copy(update={"candidate": candidate})
            out.append(r)
            bar.update(1)
    return out


def build_components(
    config: RunConfig, context: PipelineContext
) -> tuple[dict[str, Component | None], list[ComponentRecord]]:
    """Build the pipeline components a config names (Config validated first)."""
    registry = context.registry or get_registry()
    names = {stage: config.components.get(stage) for stage in PIPELINE_STAGES}
    for stage in ("generator", "refiner", "ranker"):
        if not names[stage]:
            raise UsageError(f"the pipeline needs a {stage}; none is configured", hint=f"pass --{stage} NAME")
    for stage, name in names.items():  # validate every name and option before building any
        if name:
            registry.validate_options(stage, name, config.options.get(stage))
    unknown = set(config.options) - {s for s, n in names.items() if n} - {"reader"}
    if unknown:
        raise UsageError(
            f"options given for stage(s) without a component: {', '.join(sorted(unknown))}"
        )
    build_context = BuildContext(
        device=context.device,
        seed=context.seed,
        offline=context.offline,
        resolve_weights=context.resolver(),
        progress=context.progress,
    )
    components: dict[str, Component | None] = {}
    records: list[ComponentRecord] = []
    for stage, name in names.items():
        if not name:
            components[stage] = None
            continue
        spec = registry.spec(stage, name)
        component = registry.build(stage, name, config.options.get(stage), build_context)
        components[stage] = component
        records.append(
            ComponentRecord(
                kind=stage,
                name=name,
                distribution=spec.distribution,
                version=str(getattr(component, "version", spec.version) or spec.version),
                config=component.config.model_dump(mode="json"),
            )
        )
    return components, records


def run_pipeline(
    data: ReflectionData, config: RunConfig, context: PipelineContext | None = None
) -> PipelineResult:
    """Run every stage on `data` as `config` says; see the module docstring."""
    context = context or PipelineContext(seed=config.seed or 0, offline=config.offline)
    progress = context.progress or _null_progress
    timings: dict[str, float] = {}
    notes: list[str] = []

    t0 = time.perf_counter()
    components, records = build_components(config, context)
    timings["build"] = time.perf_counter() - t0
    from .manifest import seed_everything

    seed_everything(context.seed)

    # encoder
    embedding = None
    encoder = components["encoder"]
    if encoder is not None:
        t0 = time.perf_counter()
        with progress(f"encoding ({encoder.name})", total=1) as bar:
            embedding = _call(encoder, "encode", data)
            bar.update(1)
        _expect("encoder", encoder.name, embedding, Embedding, "an Embedding")
        timings["encoder"] = time.perf_counter() - t0

    # classifier, or the space group the data carry
    t0 = time.perf_counter()
    classifier = components["classifier"]
    if classifier is not None:
        with progress(f"space groups ({classifier.name})", total=1) as bar:
            hypotheses = _call(classifier, "classify", data, embedding)
            bar.update(1)
        hypotheses = _expect_list("classifier", classifier.name, hypotheses, SpaceGroupHypothesis, "SpaceGroupHypothesis")
        if not hypotheses:
            raise RefractorError(f"classifier {classifier.name!r} proposed no space group for these data")
        hypotheses = hypotheses[: config.max_hypotheses]
    elif data.space_group_hint is not None:
        hypotheses = [SpaceGroupHypothesis(space_group=data.space_group_hint, probability=1.0, source="data")]
        notes.append(f"no classifier: using the space group of the input, {data.space_group_hint.symbol}")
    else:
        raise UsageError(
            "no classifier is configured and the data name no space group",
            hint="pass --classifier NAME, or give a .ins/.res/CIF with the space group",
        )
    timings["classifier"] = time.perf_counter() - t0

    # generator
    generator = components["generator"]
    assert generator is not None
    candidates: list[Candidate] = []
    t0 = time.perf_counter()
    with progress(f"generating candidates ({generator.name})", total=len(hypotheses)) as bar:
        for i, hypothesis in enumerate(hypotheses):
            try:
                got = _call(
                    generator, "generate", data, hypothesis, k=config.candidates_per_hypothesis, embedding=embedding, seed=stage_seed(context.seed, i)
                )
            except (RefinementError, InputError) as exc:
                notes.append(f"generator failed for {hypothesis.space_group.symbol}: {exc}")
                bar.update(1)
                continue
            got = _expect_list("generator", generator.name, got, Candidate, "Candidate")
            for c in got[: config.candidates_per_hypothesis]:
                if c.hypothesis is None:
                    c = c.model_copy(update={"hypothesis": hypothesis})
                candidates.append(c)
            bar.update(1)
    timings["generator"] = time.perf_counter() - t0
    if not candidates:
        raise RefractorError(
            f"generator {generator.name!r} proposed no candidate structure"
            + (f" ({'; '.join(notes)})" if notes else "")
        )

    # refiner: everything fully when there are few candidates; else screen all, refine the best
    refiner = components["refiner"]
    assert refiner is not None
    ranker = components["ranker"]
    assert ranker is not None
    t0 = time.perf_counter()
    screened_only: list[RefinedCandidate] = []
    if config.screen and len(candidates) > 1:
        screened = _refine_all(refiner, "screen", data, candidates, progress, notes, "screening")
        timings["screening"] = time.perf_counter() - t0
        if not screened:
            raise RefinementError("no candidate could be refined: " + "; ".join(notes))
        order = _rank(ranker, data, screened)
        first, reserve = select_for_refinement(order, config.refine_top)
        t1 = time.perf_counter()
        refined = _refine_all(refiner, "refine", data, _starts(first), progress, notes, "refining")
        chosen = list(first)
        # further candidates of a group already tried only while nothing refines well
        if reserve and not any(np.isfinite(r.r1) and r.r1 <= GOOD_R1 for r in refined):
            refined += _refine_all(refiner, "refine", data, _starts(reserve), progress, notes, "refining further")
            chosen += reserve
        timings["refinement"] = time.perf_counter() - t1
        screened_only = [r for r in order if not any(r is c for c in chosen)]
    else:
        refined = _refine_all(refiner, "refine", data, candidates, progress, notes, "refining")
    timings["refiner"] = time.perf_counter() - t0
    if not refined:
        raise RefinementError("no candidate could be refined: " + "; ".join(notes))

    # ranker: fully refined candidates first, then those only screened; a best model that
    # obeys a higher hypothesised group is re-refined in it (and ranked with the others)
    t0 = time.perf_counter()
    ranked = _rank(ranker, data, refined)
    timings["ranker"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    upgraded = _symmetry_upgrade(ranked, hypotheses, refiner, data, progress, notes)
    if upgraded is not None:
        timings["symmetry_upgrade"] = time.perf_counter() - t1
        refined.append(upgraded)
        ranked = _rank(ranker, data, refined)
    ranked = ranked + screened_only
    timings["ranker"] += time.perf_counter() - t1 - timings.get("symmetry_upgrade", 0.0)

    return PipelineResult(
        ranked=ranked,
        hypotheses=hypotheses,
        embedding=embedding,
        n_candidates=len(candidates),
        timings=timings,
        components=records,
        weights=list(context.weights),
        seed=context.seed,
        notes=notes,
    )
