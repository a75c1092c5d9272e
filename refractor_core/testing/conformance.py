"""Conformance test classes, one per interface, for pytest.

A plugin author subclasses the class of their component's kind in their own tests::

    from refractor_core.testing.conformance import RankerConformance

    class TestWR2Ranker(RankerConformance):
        component_name = "wr2"

and pytest runs every check that applies: registration through the entry point, a light
registration module (no torch import), Config round trip and rejection of unknown keys,
output types and shapes, determinism under a seed, and the invariances of the interface
(reflection order, Friedel mates, symmetry-equivalent indices). The checks themselves are
plain functions in `refractor_core.testing.checks`, shared with `refractor plugins check`.

Override points:

- ``component_name`` (class attribute) names the registered component; or override the
  ``component`` fixture to return an instance built your way;
- the ``samples`` fixture returns the inputs (`refractor_core.testing.samples.Samples`);
- class attributes switch checks or set tolerances: ``order_invariant``,
  ``friedel_invariant``, ``equivalent_invariant``, ``atol``, ``rtol``, ``expect_in_top``
  (classifiers), ``max_r1_true_model`` (refiners), ``generate_k`` (generators),
  ``check_light_registration``. Unset attributes keep the default of the kind; `None` or
  `False` switches a check off.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import pytest

from ..interfaces import BuildContext, Component
from . import checks
from .checks import DEFAULT_SETTINGS, Skip, Subject, settings_for
from .samples import Samples, default_samples


class _KindDefault:
    def __repr__(self) -> str:
        return "KIND_DEFAULT"


#: marks a setting the conformance class leaves at the default of its kind
KIND_DEFAULT: Any = _KindDefault()


class ComponentConformance:
    """Shared fixtures of the per-interface conformance classes."""

    kind: ClassVar[str] = ""
    component_name: ClassVar[str | None] = None

    check_light_registration: ClassVar[Any] = KIND_DEFAULT
    order_invariant: ClassVar[Any] = KIND_DEFAULT
    friedel_invariant: ClassVar[Any] = KIND_DEFAULT
    equivalent_invariant: ClassVar[Any] = KIND_DEFAULT
    atol: ClassVar[Any] = KIND_DEFAULT
    rtol: ClassVar[Any] = KIND_DEFAULT
    expect_in_top: ClassVar[Any] = KIND_DEFAULT
    max_r1_true_model: ClassVar[Any] = KIND_DEFAULT
    generate_k: ClassVar[Any] = KIND_DEFAULT

    @pytest.fixture
    def registry(self):
        """The process-wide component registry (entry points)."""
        from ..plugins import get_registry

        return get_registry()

    @pytest.fixture
    def samples(self) -> Samples:
        """Sample inputs; override to feed your own data."""
        return default_samples()

    @pytest.fixture
    def component(self, registry) -> Component:
        """The component under test, built from its default Config."""
        from ..pipeline import PipelineContext

        if not self.component_name:
            pytest.fail(f"{type(self).__name__} sets no component_name (or override the component fixture)")
        resolver = PipelineContext(registry=registry, offline=True).resolver()
        return registry.build(self.kind, self.component_name, {}, BuildContext(seed=0, offline=True, resolve_weights=resolver))

    @pytest.fixture
    def subject(self, component, registry, samples) -> Subject:
        """The component wrapped with the registry, samples and this class's settings."""
        overrides = {k: getattr(self, k) for k in DEFAULT_SETTINGS if getattr(self, k, KIND_DEFAULT) is not KIND_DEFAULT}
        name = self.component_name or component.name
        return Subject(self.kind, name, component, registry, samples, settings_for(self.kind, overrides))


def _as_test(check: Callable[[Subject], None]) -> Callable[..., None]:
    def test(self: Any, subject: Subject) -> None:
        try:
            check(subject)
        except Skip as exc:
            pytest.skip(str(exc))

    test.__name__ = f"test_{checks.check_name(check)}"
    test.__qualname__ = test.__name__
    test.__doc__ = check.__doc__
    return test


def _conformance_class(kind: str, class_name: str, doc: str) -> type:
    namespace: dict[str, Any] = {"kind": kind, "__doc__": doc, "__module__": __name__}
    for check in checks.checks_for(kind):
        fn = _as_test(check)
        namespace[fn.__name__] = fn
    return type(class_name, (ComponentConformance,), namespace)


ReaderConformance = _conformance_class("reader", "ReaderConformance", "Conformance checks of an HKLReader.")
EncoderConformance = _conformance_class("encoder", "EncoderConformance", "Conformance checks of an Encoder.")
ClassifierConformance = _conformance_class(
    "classifier", "ClassifierConformance", "Conformance checks of a SpaceGroupClassifier."
)
GeneratorConformance = _conformance_class("generator", "GeneratorConformance", "Conformance checks of a Generator.")
RefinerConformance = _conformance_class("refiner", "RefinerConformance", "Conformance checks of a Refiner.")
RankerConformance = _conformance_class("ranker", "RankerConformance", "Conformance checks of a Ranker.")

CONFORMANCE_CLASSES: dict[str, type] = {
    "reader": ReaderConformance,
    "encoder": EncoderConformance,
    "classifier": ClassifierConformance,
    "generator": GeneratorConformance,
    "refiner": RefinerConformance,
    "ranker": RankerConformance,
}

__all__ = [
    "ComponentConformance",
    "KIND_DEFAULT",
    "ReaderConformance",
    "EncoderConformance",
    "ClassifierConformance",
    "GeneratorConformance",
    "RefinerConformance",
    "RankerConformance",
    "CONFORMANCE_CLASSES",
]
