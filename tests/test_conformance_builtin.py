"""The conformance kit over every built-in component (one generated class per component).

The classes are generated from the entry points of the `refractor` distribution at
collection time, so a new built-in component is checked without editing this file.
"""

from __future__ import annotations

from refractor_core.plugins import load_registry
from refractor_core.testing.conformance import CONFORMANCE_CLASSES

_REGISTRY = load_registry()
BUILTIN = [(s.kind, s.name) for s in _REGISTRY.all_specs() if s.distribution == "refractor"]

#: per-component settings of the conformance classes (documented reasons only)
SETTINGS: dict[tuple[str, str], dict] = {}


def _class_name(kind: str, name: str) -> str:
    return "Test" + kind.capitalize() + "".join(part.capitalize() for part in name.split("-"))


GENERATED: dict[str, type] = {}
for _kind, _name in BUILTIN:
    _cls = type(
        _class_name(_kind, _name),
        (CONFORMANCE_CLASSES[_kind],),
        {"component_name": _name, "__module__": __name__, **SETTINGS.get((_kind, _name), {})},
    )
    GENERATED[_cls.__name__] = _cls
globals().update(GENERATED)


def test_every_builtin_component_has_a_conformance_class():
    assert len(GENERATED) == len(BUILTIN)
    assert {(c.kind, c.component_name) for c in GENERATED.values()} == set(BUILTIN)


def test_builtin_plugins_load_cleanly():
    assert not [b for b in _REGISTRY.broken if b.distribution == "refractor"]
    assert not [k for k in _REGISTRY.conflicts if "refractor" in _REGISTRY.conflicts[k]]
    assert {p.entry_point for p in _REGISTRY.plugins if p.distribution == "refractor"} == {
        "readers", "encoders", "classifiers", "generators", "refiners", "rankers"
    }
