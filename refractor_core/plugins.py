"""Plugin manager: discovers entry points, collects registered components, builds them.

Plugins load lazily: nothing happens at import; the first call to `get_registry()` loads
the entry points of group ``refractor``. A plugin whose import fails, or which implements
unknown hooks, is recorded as broken and reported; other plugins keep working.

Environment variables (read when the registry is first built):

- ``REFRACTOR_DISABLE_PLUGIN_AUTOLOAD=1``: load only the built-in plugins of the
  ``refractor`` distribution, plus those named in ``REFRACTOR_PLUGINS``.
- ``REFRACTOR_PLUGINS=name1,name2``: entry-point names (or distribution names) to load when
  autoload is disabled (an allowlist).
- ``REFRACTOR_BLOCK_PLUGINS=name1,name2``: entry-point or distribution names never loaded.
"""

from __future__ import annotations

import difflib
import importlib
import os
import threading
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy
from pydantic import ValidationError

from . import hookspecs
from .errors import PluginError, UsageError
from .interfaces import KINDS, INTERFACES, BuildContext, Component, ComponentSpec

ENTRY_POINT_GROUP = "refractor"
CORE_DISTRIBUTION = "refractor"


@dataclass
class BrokenPlugin:
    """An entry point that could not be loaded or registered."""

    entry_point: str
    distribution: str
    error: str


@dataclass
class ComponentRegistry:
    """All registered components, by kind and name, plus what failed to load."""

    specs: dict[str, dict[str, ComponentSpec]] = field(
        default_factory=lambda: {k: {} for k in KINDS}
    )
    broken: list[BrokenPlugin] = field(default_factory=list)
    #: (kind, name) -> list of distributions that claimed the same name
    conflicts: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    plugin_manager: pluggy.PluginManager | None = None

    # -- registration ------------------------------------------------------------------
    def add(self, spec: ComponentSpec) -> None:
        existing = self.specs[spec.kind].get(spec.name)
        key = (spec.kind, spec.name)
        if key in self.conflicts:
            self.conflicts[key].append(spec.distribution)
            return
        if existing is not None:
            self.conflicts[key] = [existing.distribution, spec.distribution]
            return
        self.specs[spec.kind][spec.name] = spec

    # -- lookup ------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self.specs[kind])

    def spec(self, kind: str, name: str) -> ComponentSpec:
        """The spec of a component; unknown names get 'did you mean' and the list."""
        if kind not in self.specs:
            raise UsageError(f"unknown component kind {kind!r}; kinds are {', '.join(KINDS)}")
        key = (kind, name)
        if key in self.conflicts:
            dists = " and ".join(repr(d) for d in self.conflicts[key])
            raise PluginError(
                f"{kind} name {name!r} is registered by more than one distribution: {dists}",
                hint="uninstall one of them or block it with REFRACTOR_BLOCK_PLUGINS",
            )
        try:
            return self.specs[kind][name]
        except KeyError:
            available = self.names(kind)
            close = difflib.get_close_matches(name, available, n=1)
            msg = f"unknown {kind} {name!r}"
            if close:
                msg += f"; did you mean {close[0]!r}?"
            raise UsageError(
                msg, hint=f"available {kind}s: {', '.join(available) if available else '(none)'}"
            ) from None

    def component_class(self, kind: str, name: str) -> type[Component]:
        """Import the implementation class of a component (this is where torch loads)."""
        spec = self.spec(kind, name)
        module_name, _, attr = spec.target.partition(":")
        try:
            module = importlib.import_module(module_name)
            cls = getattr(module, attr)
        except Exception as exc:  # a broken plugin must not crash the CLI with a traceback
            raise PluginError(
                f"{kind} {name!r} from {spec.distribution!r} failed to import "
                f"{spec.target}: {type(exc).__name__}: {exc}"
            ) from exc
        iface = INTERFACES[kind]
        if not (isinstance(cls, type) and issubclass(cls, iface)):
            raise PluginError(f"{spec.target} is not a {iface.__name__} subclass")
        return cls

    def build(
        self,
        kind: str,
        name: str,
        options: dict[str, Any] | None = None,
        context: BuildContext | None = None,
    ) -> Component:
        """Validate `options` against the component's Config and build it."""
        spec = self.spec(kind, name)
        try:
            config = spec.config.model_validate(options or {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(config)'}: {e['msg']}"
                for e in exc.errors()
            )
            raise UsageError(
                f"invalid options for {kind} {name!r}: {problems}",
                hint=f"valid keys: {', '.join(spec.config.model_fields) or '(none)'}",
            ) from None
        cls = self.component_class(kind, name)
        return cls(config, context or BuildContext())


_registry: ComponentRegistry | None = None
_lock = threading.Lock()


def _env_list(name: str) -> set[str]:
    return {x.strip() for x in os.environ.get(name, "").split(",") if x.strip()}


def _dist_name(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else "unknown"


def load_registry(extra_plugins: list[Any] | None = None) -> ComponentRegistry:
    """Build a fresh registry from entry points (and optional in-process plugin objects)."""
    registry = ComponentRegistry()
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    registry.plugin_manager = pm

    autoload = os.environ.get("REFRACTOR_DISABLE_PLUGIN_AUTOLOAD", "").strip() in ("", "0")
    allow = _env_list("REFRACTOR_PLUGINS")
    block = _env_list("REFRACTOR_BLOCK_PLUGINS")

    loaded: list[tuple[Any, str, str]] = []  # (module, entry-point name, distribution)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = _dist_name(ep)
        if ep.name in block or dist in block:
            continue
        if not autoload and dist != CORE_DISTRIBUTION and ep.name not in allow and dist not in allow:
            continue
        try:
            module = ep.load()
        except Exception as exc:  # reported, never fatal
            registry.broken.append(BrokenPlugin(ep.name, dist, f"{type(exc).__name__}: {exc}"))
            continue
        loaded.append((module, ep.name, dist))
    for obj in extra_plugins or []:
        loaded.append((obj, getattr(obj, "__name__", repr(obj)), getattr(obj, "distribution", "in-process")))

    for module, ep_name, dist in loaded:
        try:
            pm.register(module, name=f"{dist}:{ep_name}")
        except Exception as exc:
            registry.broken.append(BrokenPlugin(ep_name, dist, f"{type(exc).__name__}: {exc}"))
            continue
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            pm.unregister(module)
            registry.broken.append(BrokenPlugin(ep_name, dist, f"unknown hook: {exc}"))
            continue

        def register(spec: ComponentSpec | None = None, /, _dist: str = dist, **kwargs: Any) -> None:
            if spec is None:
                spec = ComponentSpec(**kwargs)
            registry.add(spec.model_copy(update={"distribution": _dist}))

        others = [p for p in pm.get_plugins() if p is not module]
        try:  # call this one plugin's implementation only, so errors are attributed to it
            pm.subset_hook_caller("refractor_register", remove_plugins=others)(register=register)
        except Exception as exc:
            registry.broken.append(BrokenPlugin(ep_name, dist, f"{type(exc).__name__}: {exc}"))
    return registry


def get_registry() -> ComponentRegistry:
    """The process-wide registry, loaded on first use."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = load_registry()
        return _registry


def reset_registry(registry: ComponentRegistry | None = None) -> None:
    """Drop (or replace) the cached registry; used by tests."""
    global _registry
    with _lock:
        _registry = registry
