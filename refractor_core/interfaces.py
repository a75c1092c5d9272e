"""Interfaces of the pipeline stages and the component specification plugins register.

A component is a class with a kebab-case `name`, a `version`, a `kind` (its stage) and a
pydantic `Config` (extra keys forbidden). It is built from a validated Config and a
`BuildContext` (device, seed, offline flag, weights resolver). Plugins do not hand the core
their classes directly: they register a `ComponentSpec` whose `target` is an import path,
so torch-heavy implementations are imported only when the component is built.

Stages and their contracts:

    HKLReader.read(path)              -> DataBundle   (reflections and/or a structure)
    Encoder.encode(data)              -> Embedding
    SpaceGroupClassifier.classify(..) -> list[SpaceGroupHypothesis], best first
    Generator.generate(..)            -> list[Candidate]
    Refiner.refine(data, candidate)   -> RefinedCandidate
    Ranker.rank(data, refined)        -> list[RefinedCandidate], best first, `score` set
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .types import (
    Candidate,
    Embedding,
    RefinedCandidate,
    ReflectionData,
    RefinementInstructions,
    SpaceGroupHypothesis,
    SpaceGroupRef,
    Structure,
    UnitCell,
)

Kind = Literal["reader", "encoder", "classifier", "generator", "refiner", "ranker"]
KINDS: tuple[str, ...] = ("reader", "encoder", "classifier", "generator", "refiner", "ranker")

_KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class ComponentConfig(BaseModel):
    """Base class of every component's Config: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")


class ComponentSpec(BaseModel):
    """What a plugin registers: a name, a kind, a lazy import target and the Config class."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    kind: Kind
    name: str
    target: str = Field(description="'package.module:ClassName', imported when built")
    config: type[ComponentConfig] = ComponentConfig
    version: str = "0.0.0"
    summary: str = ""
    distribution: str = ""  # filled in by the plugin manager from the entry point

    @field_validator("name")
    @classmethod
    def _kebab(cls, v: str) -> str:
        if not _KEBAB.match(v):
            raise ValueError(f"component names are kebab-case (e.g. 'charge-flip'), got {v!r}")
        return v

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if ":" not in v:
            raise ValueError(f"target must look like 'package.module:ClassName', got {v!r}")
        return v


@dataclass
class BuildContext:
    """What the framework hands a component when building it."""

    device: str = "cpu"
    seed: int = 0
    offline: bool = False
    #: resolve_weights(name, kind=None, filename=None) -> ResolvedWeights; set by the framework.
    resolve_weights: Callable[..., Any] | None = None
    #: progress(description, total) -> context manager with .update(n); may be None.
    progress: Callable[..., Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Component(ABC):
    """Base of all components."""

    kind: ClassVar[str]
    name: ClassVar[str]
    version: ClassVar[str] = "0.0.0"
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig

    def __init__(self, config: ComponentConfig | None = None, context: BuildContext | None = None):
        if config is None:
            config = self.Config()
        elif not isinstance(config, self.Config):
            config = self.Config.model_validate(
                config.model_dump() if isinstance(config, BaseModel) else config
            )
        self.config = config
        self.context = context or BuildContext()

    def describe(self) -> dict[str, Any]:
        """Name, version and resolved configuration (recorded in manifests)."""
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "config": self.config.model_dump(mode="json"),
        }


# --------------------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------------------


class DataBundle(BaseModel):
    """What a reader found in a file: reflections, crystal information, a model, or all."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    reflections: ReflectionData | None = None
    cell: UnitCell | None = None
    wavelength: float | None = None
    space_group: SpaceGroupRef | None = None
    formula: str | None = None
    z: float | None = None
    structure: Structure | None = None
    instructions: RefinementInstructions | None = None
    source: str | None = None
    notes: list[str] = Field(default_factory=list)


class HKLReader(Component):
    """Reads reflection files and the files that describe the crystal (.ins, .p4p, CIF)."""

    kind: ClassVar[str] = "reader"
    #: file suffixes this reader usually handles (lower case, with the dot); a hint only.
    suffixes: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def sniff(self, path: Path, head: bytes) -> float:
        """Confidence in [0, 1] that this reader understands `path`, from its first bytes."""

    @abstractmethod
    def read(self, path: Path) -> DataBundle:
        """Read the file; raise `InputError` naming file and line on malformed content."""


# --------------------------------------------------------------------------------------
# learned and classical stages
# --------------------------------------------------------------------------------------


class Encoder(Component):
    """Maps a reflection set to a fixed-length embedding (plus auxiliary predictions)."""

    kind: ClassVar[str] = "encoder"

    @abstractmethod
    def encode(self, data: ReflectionData) -> Embedding:
        """Embed the reflections. Must not depend on reflection order."""


class SpaceGroupClassifier(Component):
    """Proposes space groups for a data set, most probable first."""

    kind: ClassVar[str] = "classifier"

    @abstractmethod
    def classify(
        self, data: ReflectionData, embedding: Embedding | None = None
    ) -> list[SpaceGroupHypothesis]:
        """Ranked hypotheses with probabilities summing to at most 1."""


class Generator(Component):
    """Proposes candidate structures for one space-group hypothesis."""

    kind: ClassVar[str] = "generator"

    @abstractmethod
    def generate(
        self,
        data: ReflectionData,
        hypothesis: SpaceGroupHypothesis,
        *,
        k: int = 1,
        embedding: Embedding | None = None,
        seed: int = 0,
    ) -> list[Candidate]:
        """Up to `k` candidates in the hypothesis' space group; deterministic given `seed`."""


class Refiner(Component):
    """Refines a candidate against the measured data."""

    kind: ClassVar[str] = "refiner"

    @abstractmethod
    def refine(self, data: ReflectionData, candidate: Candidate) -> RefinedCandidate:
        """Refined structure with R1, wR2, GooF and refinement statistics."""

    def screen(self, data: ReflectionData, candidate: Candidate) -> RefinedCandidate:
        """A quick refinement that is enough to rank candidates (the pipeline screens all
        candidates and refines only the best fully). Default: the full `refine`."""
        return self.refine(data, candidate)


class Ranker(Component):
    """Orders refined candidates, best first, setting `score` and `score_details`."""

    kind: ClassVar[str] = "ranker"

    @abstractmethod
    def rank(self, data: ReflectionData, refined: list[RefinedCandidate]) -> list[RefinedCandidate]:
        """Best first. Lower score is better."""


INTERFACES: dict[str, type[Component]] = {
    "reader": HKLReader,
    "encoder": Encoder,
    "classifier": SpaceGroupClassifier,
    "generator": Generator,
    "refiner": Refiner,
    "ranker": Ranker,
}
