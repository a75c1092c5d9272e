"""The conformance checks, as plain functions (no pytest needed).

Each check takes a `Subject` (the component under test, the registry it came from, the
sample inputs and the settings of its conformance class) and raises `AssertionError` when
the component breaks its contract, or `Skip` when the check does not apply. The pytest
classes in `refractor_core.testing.conformance` call these one per test method;
`run_checks(kind, name)` runs them all for `refractor plugins check NAME`.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import ValidationError

from ..errors import RefractorError, UsageError
from ..interfaces import BuildContext, Component, ComponentConfig, DataBundle
from ..types import Candidate, Embedding, RefinedCandidate, ReflectionData, SpaceGroupHypothesis
from .invariance import (
    apply_friedel,
    assert_embeddings_close,
    assert_same_top_hypothesis,
    shuffle_reflections,
    structure_coordinates,
    to_symmetry_equivalents,
)
from .samples import Samples, default_samples

#: modules a registration module must not import (it is loaded by `refractor --help`)
HEAVY_MODULES = ("torch", "torch_geometric", "e3nn", "pymatgen", "pyxtal", "dask", "matplotlib")
UNKNOWN_KEY = "no_such_option_for_conformance"


class Skip(Exception):
    """The check does not apply to this component (the message says why)."""


#: defaults of the switches and tolerances a conformance class may override
DEFAULT_SETTINGS: dict[str, Any] = {
    "check_light_registration": True,
    "order_invariant": True,  # reflection order must not matter
    "friedel_invariant": True,  # Friedel mates may replace reflections
    "equivalent_invariant": True,  # symmetry-equivalent indices may replace reflections
    "atol": 1e-4,  # absolute tolerance of numeric invariance checks
    "rtol": 1e-4,  # relative tolerance
    "expect_in_top": 3,  # classifier: true space group among the first N (None: skip)
    "max_r1_true_model": 0.10,  # refiner: R1 after refining the displaced true model
    "generate_k": 2,  # generator: candidates asked for
}

#: per-kind overrides of the defaults (what applies to each interface)
KIND_SETTINGS: dict[str, dict[str, Any]] = {
    "encoder": {"equivalent_invariant": False},  # an encoder does not know the space group
    "generator": {"order_invariant": False, "friedel_invariant": False, "equivalent_invariant": False},
    "refiner": {"friedel_invariant": False, "equivalent_invariant": False},
    "ranker": {"friedel_invariant": False, "equivalent_invariant": False},
    "reader": {"order_invariant": False, "friedel_invariant": False, "equivalent_invariant": False},
}


def settings_for(kind: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults for `kind` with `overrides` applied."""
    out = {**DEFAULT_SETTINGS, **KIND_SETTINGS.get(kind, {})}
    out.update(overrides or {})
    return out


@dataclass
class Subject:
    """A component under test and everything a check needs."""

    kind: str
    name: str
    component: Component
    registry: Any
    samples: Samples
    settings: dict[str, Any] = field(default_factory=dict)

    def fresh(self, seed: int = 0) -> Component:
        """A new instance of the component's class with the same config and `seed`."""
        cls = type(self.component)
        config = self.component.config.model_copy(deep=True)
        ctx = self.component.context
        return cls(config, BuildContext(device="cpu", seed=seed, offline=True, resolve_weights=ctx.resolve_weights))

    def setting(self, key: str) -> Any:
        return self.settings.get(key, DEFAULT_SETTINGS.get(key))


@dataclass
class CheckResult:
    """Outcome of one check."""

    name: str
    status: str  # "pass" | "fail" | "skip"
    message: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "message": self.message, "seconds": round(self.seconds, 3)}


def _require(flag: bool, message: str) -> None:
    if not flag:
        raise AssertionError(message)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float, np.floating, np.integer)) and math.isfinite(float(x))


# --------------------------------------------------------------------------------------
# common checks
# --------------------------------------------------------------------------------------


def check_registered(s: Subject) -> None:
    """Registered through an entry point under its kind and name, consistent with its class."""
    spec = s.registry.spec(s.kind, s.name)
    _require(bool(spec.distribution), f"{s.kind} {s.name!r} has no distribution recorded")
    cls = type(s.component)
    _require(getattr(cls, "name", None) == spec.name,
             f"class {cls.__name__} declares name {getattr(cls, 'name', None)!r}, registered as {spec.name!r}")
    _require(getattr(cls, "kind", None) == s.kind, f"class {cls.__name__} declares kind {getattr(cls, 'kind', None)!r}")
    _require(issubclass(spec.config, ComponentConfig), "the registered Config is not a ComponentConfig subclass")
    _require(cls.Config is spec.config, f"registered Config {spec.config.__name__} differs from {cls.__name__}.Config")
    _require(isinstance(cls.version, str) and cls.version != "", "the component class declares no version string")
    broken = [b for b in s.registry.broken if b.distribution == spec.distribution]
    _require(not broken, f"distribution {spec.distribution!r} also has broken plugins: {broken[0].error if broken else ''}")


def check_light_registration(s: Subject) -> None:
    """Importing the registration module (entry point) in a fresh interpreter imports no torch."""
    if not s.setting("check_light_registration"):
        raise Skip("disabled by the conformance class")
    origin = s.registry.origins.get((s.kind, s.name))
    if origin is None or origin.in_process:
        raise Skip("registered in-process, not through an entry point")
    module = origin.module.partition(":")[0]
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        f"print(json.dumps([m for m in {list(HEAVY_MODULES)!r} if m in sys.modules]))\n"
    )
    env = dict(os.environ)  # the child sees the same import path as this process
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    _require(proc.returncode == 0, f"importing {module} failed: {proc.stderr.strip()[-500:]}")
    heavy = json.loads(proc.stdout.strip().splitlines()[-1])
    _require(not heavy, f"registration module {module} imports {', '.join(heavy)}; import them where the component is built")


def check_config_round_trip(s: Subject) -> None:
    """The Config forbids extra keys and survives dump/validate in Python and JSON."""
    cfg = s.component.config
    cls = type(cfg)
    _require(isinstance(cfg, ComponentConfig), f"config is a {cls.__name__}, not a ComponentConfig")
    _require(cls.model_config.get("extra") == "forbid", f"{cls.__name__} must forbid extra keys (model_config extra='forbid')")
    _require(cls.model_validate(cfg.model_dump()) == cfg, "config changed through model_dump/model_validate")
    _require(cls.model_validate_json(cfg.model_dump_json()) == cfg, "config changed through a JSON round trip")
    default = cls()
    _require(cls.model_validate(default.model_dump(mode="json")) == default, "default config does not survive JSON mode dump")
    described = s.component.describe()
    json.dumps(described)  # the manifest entry must be JSON
    _require(described["name"] == s.name and described["kind"] == s.kind, f"describe() names {described['kind']} {described['name']!r}")


def check_config_rejects_unknown_keys(s: Subject) -> None:
    """An unknown option is refused (UsageError from the registry, ValidationError from Config)."""
    cls = type(s.component.config)
    try:
        cls.model_validate({UNKNOWN_KEY: 1})
    except ValidationError:
        pass
    else:
        raise AssertionError(f"{cls.__name__} accepted the unknown key {UNKNOWN_KEY!r}")
    try:
        s.registry.build(s.kind, s.name, {UNKNOWN_KEY: 1})
    except UsageError as exc:
        _require(UNKNOWN_KEY in str(exc), f"the error does not name the bad key: {exc}")
    else:
        raise AssertionError("registry.build accepted an unknown option")


def check_builds_from_defaults(s: Subject) -> None:
    """The registry builds the component from its default Config."""
    built = s.registry.build(s.kind, s.name, {}, BuildContext(seed=0, offline=True, resolve_weights=s.component.context.resolve_weights))
    _require(type(built) is type(s.component), f"built a {type(built).__name__}")


COMMON = [
    check_registered,
    check_light_registration,
    check_config_round_trip,
    check_config_rejects_unknown_keys,
    check_builds_from_defaults,
]

# --------------------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------------------


def _reader_sample(s: Subject) -> Path:
    suffixes = tuple(getattr(type(s.component), "suffixes", ()) or ())
    files = [p for p in s.samples.reader_files if not suffixes or p.suffix.lower() in suffixes]
    for p in files:
        head = p.read_bytes()[:4096]
        if s.component.sniff(p, head) >= 0.5:
            return p
    raise Skip(f"no sample file this reader claims (suffixes {suffixes or 'any'}); override the samples fixture")


def _garbage_file() -> Path:
    """3000 random bytes named like a reflection file (in the samples' scratch folder)."""
    from .samples import scratch_dir

    p = scratch_dir() / "garbage.hkl"
    if not p.is_file():
        p.write_bytes(bytes(np.random.default_rng(7).integers(0, 256, 3000, dtype=np.uint8)))
    return p


def check_reader_sniff(s: Subject) -> None:
    """sniff() returns a confidence in [0, 1] and is low for random bytes."""
    p = _reader_sample(s)
    conf = s.component.sniff(p, p.read_bytes()[:4096])
    _require(_finite(conf) and 0.0 <= conf <= 1.0, f"sniff returned {conf!r} for {p.name}")
    g = _garbage_file()
    conf_g = s.component.sniff(g, g.read_bytes()[:4096])
    _require(_finite(conf_g) and 0.0 <= conf_g < 0.5, f"sniff is {conf_g!r} for random bytes")


def check_reader_output(s: Subject) -> None:
    """read() returns a DataBundle; reflections, when present, are consistent and non-empty."""
    p = _reader_sample(s)
    bundle = s.component.read(p)
    _require(isinstance(bundle, DataBundle), f"read returned {type(bundle).__name__}, not a DataBundle")
    _require(any(getattr(bundle, k) is not None for k in ("reflections", "cell", "structure", "space_group")),
             f"read({p.name}) found nothing")
    if bundle.reflections is not None:
        _require(isinstance(bundle.reflections, ReflectionData) and bundle.reflections.n > 0, "no reflections read")


def check_reader_deterministic(s: Subject) -> None:
    """Reading the same file twice gives identical content."""
    p = _reader_sample(s)
    a, b = s.component.read(p), s.fresh().read(p)
    _require(a.model_dump_json() == b.model_dump_json() if a.reflections is None else
             (np.array_equal(a.reflections.hkl, b.reflections.hkl)
              and np.array_equal(a.reflections.intensity, b.reflections.intensity)),
             "two reads of one file differ")


def check_reader_rejects_garbage(s: Subject) -> None:
    """A file of random bytes raises a RefractorError (e.g. InputError), not a traceback."""
    g = _garbage_file()
    try:
        s.component.read(g)
    except RefractorError:
        return
    except Exception as exc:
        raise AssertionError(f"reading random bytes raised {type(exc).__name__}: {exc}; raise InputError naming file and line") from exc
    raise AssertionError("reading random bytes succeeded")


READER = [check_reader_sniff, check_reader_output, check_reader_deterministic, check_reader_rejects_garbage]

# --------------------------------------------------------------------------------------
# encoders
# --------------------------------------------------------------------------------------


def _encode(component: Component, data: ReflectionData) -> Embedding:
    out = component.encode(data)
    _require(isinstance(out, Embedding), f"encode returned {type(out).__name__}, not an Embedding")
    return out


def check_encoder_output(s: Subject) -> None:
    """A finite, non-empty 1-d float32 vector whose length does not depend on the data size."""
    e = _encode(s.component, s.samples.reflections)
    v = np.asarray(e.vector)
    _require(v.ndim == 1 and v.size > 0, f"embedding shape {v.shape}")
    _require(v.dtype == np.float32, f"embedding dtype {v.dtype}")
    _require(bool(np.all(np.isfinite(v))), "embedding has NaN or infinite values")
    half = s.samples.reflections.subset(np.arange(s.samples.reflections.n) % 2 == 0)
    _require(np.asarray(_encode(s.component, half).vector).shape == v.shape, "embedding length depends on the data size")


def check_encoder_deterministic(s: Subject) -> None:
    """Two instances built with one seed give the same embedding."""
    d = s.samples.reflections
    assert_embeddings_close(_encode(s.fresh(1), d), _encode(s.fresh(1), d), atol=1e-6, rtol=1e-6, what="same seed: ")


def check_encoder_order_invariant(s: Subject) -> None:
    """Shuffling the reflections leaves the embedding unchanged."""
    if not s.setting("order_invariant"):
        raise Skip("not required by the conformance class")
    d = s.samples.reflections
    assert_embeddings_close(_encode(s.component, d), _encode(s.component, shuffle_reflections(d, 3)),
                            s.setting("atol"), s.setting("rtol"), "shuffled reflections: ")


def check_encoder_friedel_invariant(s: Subject) -> None:
    """Replacing reflections by Friedel mates leaves the embedding unchanged."""
    if not s.setting("friedel_invariant"):
        raise Skip("not required by the conformance class")
    d = s.samples.reflections
    assert_embeddings_close(_encode(s.component, d), _encode(s.component, apply_friedel(d, 0.5, 4)),
                            s.setting("atol"), s.setting("rtol"), "Friedel mates: ")


def check_encoder_equivalent_invariant(s: Subject) -> None:
    """Replacing reflections by symmetry equivalents leaves the embedding unchanged."""
    if not s.setting("equivalent_invariant"):
        raise Skip("not required for encoders (set equivalent_invariant = True to check)")
    d = s.samples.reflections
    e2 = to_symmetry_equivalents(d, s.samples.structure.space_group, 5)
    assert_embeddings_close(_encode(s.component, d), _encode(s.component, e2), s.setting("atol"), s.setting("rtol"), "equivalents: ")


ENCODER = [check_encoder_output, check_encoder_deterministic, check_encoder_order_invariant,
           check_encoder_friedel_invariant, check_encoder_equivalent_invariant]

# --------------------------------------------------------------------------------------
# classifiers
# --------------------------------------------------------------------------------------


def _classify(component: Component, data: ReflectionData) -> list[SpaceGroupHypothesis]:
    out = component.classify(data, None)
    _require(isinstance(out, list) and all(isinstance(h, SpaceGroupHypothesis) for h in out),
             f"classify returned {type(out).__name__}, not a list of SpaceGroupHypothesis")
    _require(len(out) > 0, "classify returned no hypothesis")
    return out


def check_classifier_output(s: Subject) -> None:
    """Hypotheses sorted by probability, probabilities in [0, 1] summing to at most 1."""
    hyps = _classify(s.component, s.samples.reflections)
    p = np.array([h.probability for h in hyps])
    _require(bool(np.all((p >= 0) & (p <= 1))), f"probabilities outside [0, 1]: {p}")
    _require(p.sum() <= 1.0 + 1e-6, f"probabilities sum to {p.sum():.6f} > 1")
    _require(bool(np.all(np.diff(p) <= 1e-12)), "hypotheses are not sorted by decreasing probability")


def check_classifier_deterministic(s: Subject) -> None:
    """Two instances built with one seed give the same ranking."""
    d = s.samples.reflections
    a, b = _classify(s.fresh(1), d), _classify(s.fresh(1), d)
    _require([(h.space_group.hall, round(h.probability, 9)) for h in a] == [(h.space_group.hall, round(h.probability, 9)) for h in b],
             "same seed, different hypotheses")


def check_classifier_order_invariant(s: Subject) -> None:
    """Shuffling the reflections does not change the ranking."""
    if not s.setting("order_invariant"):
        raise Skip("not required by the conformance class")
    d = s.samples.reflections
    a, b = _classify(s.component, d), _classify(s.component, shuffle_reflections(d, 3))
    _require([h.space_group.hall for h in a] == [h.space_group.hall for h in b], "shuffled reflections reorder the hypotheses")
    pa, pb = np.array([h.probability for h in a]), np.array([h.probability for h in b])
    _require(np.allclose(pa, pb, atol=s.setting("atol"), rtol=s.setting("rtol")), "shuffled reflections change the probabilities")


def check_classifier_friedel_invariant(s: Subject) -> None:
    """Friedel mates in place of reflections keep the most probable space group."""
    if not s.setting("friedel_invariant"):
        raise Skip("not required by the conformance class")
    d = s.samples.reflections
    assert_same_top_hypothesis(_classify(s.component, d), _classify(s.component, apply_friedel(d, 0.5, 4)), "Friedel mates: ")


def check_classifier_equivalent_invariant(s: Subject) -> None:
    """Symmetry-equivalent indices in place of reflections keep the most probable space group."""
    if not s.setting("equivalent_invariant"):
        raise Skip("not required by the conformance class")
    d = s.samples.reflections
    e2 = to_symmetry_equivalents(d, s.samples.structure.space_group, 5)
    assert_same_top_hypothesis(_classify(s.component, d), _classify(s.component, e2), "equivalent indices: ")


def check_classifier_finds_sample(s: Subject) -> None:
    """The sample's true space group is among the first `expect_in_top` hypotheses."""
    top = s.setting("expect_in_top")
    if not top:
        raise Skip("not required by the conformance class")
    hyps = _classify(s.component, s.samples.reflections)
    truth = s.samples.structure.space_group
    found = [h.space_group.number for h in hyps[:top]]
    _require(truth.number in found, f"{truth.symbol} (No. {truth.number}) not among the first {top}: {found}")


CLASSIFIER = [check_classifier_output, check_classifier_deterministic, check_classifier_order_invariant,
              check_classifier_friedel_invariant, check_classifier_equivalent_invariant, check_classifier_finds_sample]

# --------------------------------------------------------------------------------------
# generators
# --------------------------------------------------------------------------------------


def _generate(component: Component, s: Subject, data: ReflectionData | None = None, seed: int = 0) -> list[Candidate]:
    k = int(s.setting("generate_k"))
    out = component.generate(data or s.samples.reflections, s.samples.hypothesis, k=k, seed=seed)
    _require(isinstance(out, list) and all(isinstance(c, Candidate) for c in out),
             f"generate returned {type(out).__name__}, not a list of Candidate")
    _require(1 <= len(out) <= k, f"asked for {k} candidates, got {len(out)}")
    return out


def check_generator_output(s: Subject) -> None:
    """Up to k candidates in the hypothesis' space group and the data's cell, finite coordinates."""
    sg, cell = s.samples.hypothesis.space_group, s.samples.reflections.cell
    for c in _generate(s.component, s):
        st = c.structure
        _require((st.space_group.number, st.space_group.hall) == (sg.number, sg.hall),
                 f"candidate in {st.space_group.symbol}, hypothesis {sg.symbol}")
        _require(np.allclose(st.cell.parameters, cell.parameters, atol=1e-6), "candidate cell differs from the data's")
        _require(st.n_sites > 0, "candidate has no sites")
        _require(bool(np.all(np.isfinite(structure_coordinates(st)))), "non-finite coordinates")


def check_generator_deterministic(s: Subject) -> None:
    """Two instances given one seed propose the same structures."""
    a, b = _generate(s.fresh(1), s, seed=11), _generate(s.fresh(1), s, seed=11)
    _require(len(a) == len(b), "same seed, different number of candidates")
    for ca, cb in zip(a, b):
        xa, xb = structure_coordinates(ca.structure), structure_coordinates(cb.structure)
        _require(xa.shape == xb.shape and np.allclose(xa, xb, atol=1e-6), "same seed, different coordinates")
        _require([x.element for x in ca.structure.sites] == [x.element for x in cb.structure.sites], "same seed, different elements")


def check_generator_order_invariant(s: Subject) -> None:
    """Shuffled reflections give the same candidates under one seed."""
    if not s.setting("order_invariant"):
        raise Skip("not required for generators (set order_invariant = True to check)")
    d = s.samples.reflections
    a, b = _generate(s.component, s, d, seed=11), _generate(s.component, s, shuffle_reflections(d, 3), seed=11)
    for ca, cb in zip(a, b):
        _require(np.allclose(structure_coordinates(ca.structure), structure_coordinates(cb.structure), atol=s.setting("atol")),
                 "shuffled reflections change the candidates")


GENERATOR = [check_generator_output, check_generator_deterministic, check_generator_order_invariant]

# --------------------------------------------------------------------------------------
# refiners
# --------------------------------------------------------------------------------------


def _refine(component: Component, data: ReflectionData, candidate: Candidate) -> RefinedCandidate:
    out = component.refine(data, candidate)
    _require(isinstance(out, RefinedCandidate), f"refine returned {type(out).__name__}, not a RefinedCandidate")
    return out


def check_refiner_output(s: Subject) -> None:
    """Finite R1, wR2, GooF and counts; the space group and the atoms are kept."""
    r = _refine(s.component, s.samples.reflections, s.samples.candidate)
    for name in ("r1", "wr2", "goof"):
        _require(_finite(getattr(r, name)), f"{name} = {getattr(r, name)!r}")
    _require(0.0 <= r.r1 <= 2.0 and r.wr2 >= 0.0 and r.goof > 0.0, f"R1 {r.r1}, wR2 {r.wr2}, GooF {r.goof}")
    _require(r.n_reflections > 0 and 0 <= r.n_gt <= r.n_reflections, f"n_reflections {r.n_reflections}, n_gt {r.n_gt}")
    _require(r.n_parameters > 0, f"n_parameters {r.n_parameters}")
    sg = s.samples.candidate.structure.space_group
    _require(r.structure.space_group.hall == sg.hall, f"space group changed to {r.structure.space_group.symbol}")
    before = sorted(x.element for x in s.samples.candidate.structure.non_hydrogen())
    after = sorted(x.element for x in r.structure.non_hydrogen())
    _require(before == after, f"non-H atoms changed from {before} to {after}")


def check_refiner_refines_true_model(s: Subject) -> None:
    """Started from the displaced true structure, R1 reaches `max_r1_true_model`."""
    limit = s.setting("max_r1_true_model")
    if limit is None:
        raise Skip("not required by the conformance class")
    r = _refine(s.component, s.samples.reflections, s.samples.candidate)
    _require(r.r1 <= limit, f"R1 {r.r1:.4f} after refining the displaced true model (limit {limit})")


def check_refiner_deterministic(s: Subject) -> None:
    """Two instances refine one candidate to the same figures."""
    d, c = s.samples.reflections, s.samples.candidate
    a, b = _refine(s.fresh(1), d, c), _refine(s.fresh(1), d, c)
    _require(abs(a.r1 - b.r1) <= 1e-9 + 1e-9 * abs(a.r1) and abs(a.wr2 - b.wr2) <= 1e-9 + 1e-9 * abs(a.wr2),
             f"same input, R1 {a.r1} vs {b.r1}")


def check_refiner_order_invariant(s: Subject) -> None:
    """Shuffled reflections refine to the same R1 and wR2."""
    if not s.setting("order_invariant"):
        raise Skip("not required by the conformance class")
    d, c = s.samples.reflections, s.samples.candidate
    a, b = _refine(s.component, d, c), _refine(s.component, shuffle_reflections(d, 3), c)
    tol = max(s.setting("atol"), s.setting("rtol") * abs(a.r1))
    _require(abs(a.r1 - b.r1) <= tol and abs(a.wr2 - b.wr2) <= max(s.setting("atol"), s.setting("rtol") * abs(a.wr2)),
             f"shuffled reflections: R1 {a.r1:.6f} vs {b.r1:.6f}, wR2 {a.wr2:.6f} vs {b.wr2:.6f}")


REFINER = [check_refiner_output, check_refiner_refines_true_model, check_refiner_deterministic, check_refiner_order_invariant]

# --------------------------------------------------------------------------------------
# rankers
# --------------------------------------------------------------------------------------


def _ids(items: list[RefinedCandidate]) -> list[Any]:
    return [r.meta.get("conformance_id") for r in items]


def _rank(component: Component, data: ReflectionData, refined: list[RefinedCandidate]) -> list[RefinedCandidate]:
    out = component.rank(data, [r.model_copy(deep=True) for r in refined])
    _require(isinstance(out, list) and all(isinstance(r, RefinedCandidate) for r in out),
             f"rank returned {type(out).__name__}, not a list of RefinedCandidate")
    return out


def check_ranker_output(s: Subject) -> None:
    """A permutation of the input, every score set and finite, sorted by increasing score."""
    refined = s.samples.refined
    out = _rank(s.component, s.samples.reflections, refined)
    _require(sorted(_ids(out)) == sorted(_ids(refined)), f"not a permutation of the input: {_ids(out)}")
    scores = [r.score for r in out]
    _require(all(_finite(x) for x in scores), f"scores not all set and finite: {scores}")
    _require(all(a <= b for a, b in zip(scores, scores[1:])), f"not sorted by increasing score: {scores}")


def check_ranker_prefers_dominant(s: Subject) -> None:
    """A candidate better on R1, wR2 and GooF than all others is ranked first."""
    refined = s.samples.refined  # the first is best on every figure
    out = _rank(s.component, s.samples.reflections, list(reversed(refined)))
    _require(out[0].meta.get("conformance_id") == 0, f"the dominant candidate is ranked {_ids(out).index(0) + 1}")


def check_ranker_deterministic(s: Subject) -> None:
    """Two instances give the same order and scores."""
    a = _rank(s.fresh(1), s.samples.reflections, s.samples.refined)
    b = _rank(s.fresh(1), s.samples.reflections, s.samples.refined)
    _require(_ids(a) == _ids(b) and [r.score for r in a] == [r.score for r in b], "same input, different ranking")


def check_ranker_input_order_invariant(s: Subject) -> None:
    """The order in which candidates arrive does not change the ranking."""
    refined = s.samples.refined
    perm = np.random.default_rng(2).permutation(len(refined))
    a = _rank(s.component, s.samples.reflections, refined)
    b = _rank(s.component, s.samples.reflections, [refined[i] for i in perm])
    _require(_ids(a) == _ids(b), f"ranking depends on input order: {_ids(a)} vs {_ids(b)}")


def check_ranker_order_invariant(s: Subject) -> None:
    """Shuffled reflections do not change the ranking."""
    if not s.setting("order_invariant"):
        raise Skip("not required by the conformance class")
    d = s.samples.reflections
    a = _rank(s.component, d, s.samples.refined)
    b = _rank(s.component, shuffle_reflections(d, 3), s.samples.refined)
    _require(_ids(a) == _ids(b), "shuffled reflections change the ranking")


RANKER = [check_ranker_output, check_ranker_prefers_dominant, check_ranker_deterministic,
          check_ranker_input_order_invariant, check_ranker_order_invariant]

CHECKS: dict[str, list[Callable[[Subject], None]]] = {
    "reader": READER,
    "encoder": ENCODER,
    "classifier": CLASSIFIER,
    "generator": GENERATOR,
    "refiner": REFINER,
    "ranker": RANKER,
}


def check_name(fn: Callable) -> str:
    """'check_ranker_output' -> 'ranker_output'."""
    return fn.__name__.removeprefix("check_")


def checks_for(kind: str) -> list[Callable[[Subject], None]]:
    """All checks that apply to a component kind, common ones first."""
    return COMMON + CHECKS[kind]


def make_subject(kind: str, name: str, registry: Any = None, samples: Samples | None = None,
                 settings: dict[str, Any] | None = None) -> Subject:
    """Build the component from its default Config and wrap it for the checks."""
    from ..pipeline import PipelineContext
    from ..plugins import get_registry

    registry = registry or get_registry()
    resolver = PipelineContext(registry=registry, offline=True).resolver()
    component = registry.build(kind, name, {}, BuildContext(seed=0, offline=True, resolve_weights=resolver))
    return Subject(kind, name, component, registry, samples or default_samples(), settings_for(kind, settings))


def run_one(check: Callable[[Subject], None], subject: Subject) -> CheckResult:
    """Run one check, turning its outcome into a CheckResult."""
    t0 = time.perf_counter()
    try:
        check(subject)
    except Skip as exc:
        return CheckResult(check_name(check), "skip", str(exc), time.perf_counter() - t0)
    except AssertionError as exc:
        return CheckResult(check_name(check), "fail", str(exc) or "assertion failed", time.perf_counter() - t0)
    except Exception as exc:  # a crash is a failure of the component, reported not raised
        return CheckResult(check_name(check), "fail", f"raised {type(exc).__name__}: {exc}", time.perf_counter() - t0)
    return CheckResult(check_name(check), "pass", "", time.perf_counter() - t0)


def run_checks(kind: str, name: str, registry: Any = None, samples: Samples | None = None,
               settings: dict[str, Any] | None = None) -> list[CheckResult]:
    """Every check for one installed component (used by `refractor plugins check`)."""
    try:
        subject = make_subject(kind, name, registry, samples, settings)
    except RefractorError as exc:
        return [CheckResult("builds", "fail", str(exc))]
    return [run_one(check, subject) for check in checks_for(kind)]
