"""Plugin manager: discovers entry points, collects registered components, builds them.

Plugins load lazily: nothing happens at import; the first call to `get_registry()` loads
the entry points of group ``refractor``. A plugin whose import fails, whose hook raises, or
which implements unknown hooks is recorded as broken and reported; other plugins keep
working. Built-in components register through the same entry-point group as third-party
ones: the core has no privileged path.

Environment variables (read when the registry is built):

- ``REFRACTOR_DISABLE_PLUGIN_AUTOLOAD=1``: load only the built-in plugins of the
  ``refractor`` distribution, plus those named in ``REFRACTOR_PLUGINS``.
- ``REFRACTOR_PLUGINS=name1,name2``: entry-point names (or distribution names) to load when
  autoload is disabled (an allowlist).
- ``REFRACTOR_BLOCK_PLUGINS=name1,name2``: entry-point or distribution names never loaded.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy
from pydantic import BaseModel, ValidationError

from . import hookspecs
from .errors import PluginError, RefractorError, UsageError
from .interfaces import INTERFACES, KINDS, BuildContext, Component, ComponentSpec

ENTRY_POINT_GROUP = "refractor"
CORE_DISTRIBUTION = "refractor"
IN_PROCESS = "in-process"

log = logging.getLogger("refractor.plugins")


@dataclass(frozen=True)
class PluginOrigin:
    """Where a plugin came from: its entry point, module and distribution."""

    entry_point: str
    module: str  # the entry point's value, e.g. "refractor_plugins.rankers.register"
    distribution: str
    distribution_version: str
    in_process: bool = False  # registered as an object (tests), not through an entry point


@dataclass
class BrokenPlugin:
    """An entry point that could not be loaded or registered."""

    entry_point: str
    distribution: str
    error: str
    module: str = ""
    distribution_version: str = ""


@dataclass
class ComponentRegistry:
    """All registered components, by kind and name, plus what failed to load."""

    specs: dict[str, dict[str, ComponentSpec]] = field(
        default_factory=lambda: {k: {} for k in KINDS}
    )
    broken: list[BrokenPlugin] = field(default_factory=list)
    #: (kind, name) -> list of distributions that claimed the same name
    conflicts: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    #: (kind, name) -> the plugin that registered it
    origins: dict[tuple[str, str], PluginOrigin] = field(default_factory=dict)
    #: every plugin loaded successfully, in load order
    plugins: list[PluginOrigin] = field(default_factory=list)
    #: model cards registered by plugins (refractor_registry.cards.ModelCard)
    cards: list[Any] = field(default_factory=list)
    plugin_manager: pluggy.PluginManager | None = None

    # -- registration ------------------------------------------------------------------
    def add(self, spec: ComponentSpec, origin: PluginOrigin | None = None) -> None:
        """Add a spec; a second distribution claiming the same kind and name is a conflict."""
        key = (spec.kind, spec.name)
        if key in self.conflicts:
            self.conflicts[key].append(spec.distribution)
            return
        existing = self.specs[spec.kind].get(spec.name)
        if existing is not None:
            self.conflicts[key] = [existing.distribution, spec.distribution]
            return
        self.specs[spec.kind][spec.name] = spec
        if origin is not None:
            self.origins[key] = origin

    # -- lookup ------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        """Usable component names of one kind (conflicting names excluded), sorted."""
        return sorted(n for n in self.specs[kind] if (kind, n) not in self.conflicts)

    def all_specs(self) -> list[ComponentSpec]:
        """Every registered spec, by kind order then name."""
        return [self.specs[k][n] for k in KINDS for n in sorted(self.specs[k])]

    def find(self, name: str, kind: str | None = None) -> list[ComponentSpec]:
        """Specs called `name` (in one kind, or in any kind)."""
        kinds = [kind] if kind else list(KINDS)
        return [self.specs[k][name] for k in kinds if k in self.specs and name in self.specs[k]]

    def spec(self, kind: str, name: str) -> ComponentSpec:
        """The spec of a component; unknown names get 'did you mean' and the list."""
        if kind not in self.specs:
            raise UsageError(f"unknown component kind {kind!r}; kinds are {', '.join(KINDS)}")
        key = (kind, name)
        if key in self.conflicts:
            raise PluginError(
                f"{kind} name {name!r} is registered by more than one distribution: "
                f"{_and(self.conflicts[key])}",
                hint="uninstall one of them or block it with REFRACTOR_BLOCK_PLUGINS",
            )
        try:
            return self.specs[kind][name]
        except KeyError:
            pass
        available = self.names(kind)
        close = difflib.get_close_matches(name, available, n=1, cutoff=0.5)
        msg = f"unknown {kind} {name!r}"
        if close:
            msg += f"; did you mean {close[0]!r}?"
        hint = f"available {kind}s: {', '.join(available) if available else '(none installed)'}"
        broken = [b for b in self.broken if name in b.entry_point or name in b.distribution]
        if broken:
            hint += f"; plugin {broken[0].entry_point!r} is broken: {broken[0].error}"
        raise UsageError(msg, hint=hint)

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
            raise PluginError(
                f"{kind} {name!r} from {spec.distribution!r}: {spec.target} is not a "
                f"{iface.__name__} subclass"
            )
        return cls

    def validate_options(self, kind: str, name: str, options: dict[str, Any] | None = None):
        """The component's Config built from `options`; bad keys or values are a UsageError."""
        spec = self.spec(kind, name)
        try:
            return spec.config.model_validate(options or {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(config)'}: {e['msg']}"
                for e in exc.errors()
            )
            raise UsageError(
                f"invalid options for {kind} {name!r}: {problems}",
                hint=f"valid keys: {', '.join(spec.config.model_fields) or '(none)'}",
            ) from None

    def build(
        self,
        kind: str,
        name: str,
        options: dict[str, Any] | None = None,
        context: BuildContext | None = None,
    ) -> Component:
        """Validate `options` against the component's Config and build it."""
        spec = self.spec(kind, name)
        config = self.validate_options(kind, name, options)
        cls = self.component_class(kind, name)
        try:
            return cls(config, context or BuildContext())
        except RefractorError:
            raise
        except Exception as exc:
            raise PluginError(
                f"{kind} {name!r} from {spec.distribution!r} failed to build: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    # -- reporting ---------------------------------------------------------------------
    def problems(self) -> list[str]:
        """One line per broken plugin or name conflict (empty when all is well)."""
        lines = [
            f"plugin {b.entry_point!r} from {b.distribution!r} is broken: {b.error}"
            for b in self.broken
        ]
        for (kind, name), dists in self.conflicts.items():
            lines.append(f"{kind} name {name!r} is claimed by {_and(dists)}; it is unusable")
        return lines

    def listing(self) -> list[dict[str, Any]]:
        """One record per component (and per broken plugin), as `refractor plugins --json`."""
        records: list[dict[str, Any]] = []
        for spec in self.all_specs():
            key = (spec.kind, spec.name)
            origin = self.origins.get(key)
            record = {
                "kind": spec.kind,
                "name": spec.name,
                "distribution": spec.distribution,
                "version": spec.version,
                "distribution_version": origin.distribution_version if origin else "",
                "status": "ok",
                "error": None,
                "summary": spec.summary,
                "target": spec.target,
                "entry_point": origin.entry_point if origin else "",
            }
            if key in self.conflicts:
                dists = self.conflicts[key]
                record["status"] = "broken"
                record["error"] = f"{spec.kind} name {spec.name!r} is claimed by {_and(dists)}"
                records.append(record)
                for other in dists[1:]:
                    records.append({**record, "distribution": other, "version": "",
                                    "distribution_version": "", "target": "", "summary": ""})
                continue
            records.append(record)
        for b in self.broken:
            records.append(
                {
                    "kind": "plugin",
                    "name": b.entry_point,
                    "distribution": b.distribution,
                    "version": b.distribution_version,
                    "distribution_version": b.distribution_version,
                    "status": "broken",
                    "error": b.error,
                    "summary": "",
                    "target": b.module,
                    "entry_point": b.entry_point,
                }
            )
        return records

    def distribution_versions(self) -> dict[str, str]:
        """Distribution name -> version of every plugin loaded (for manifests)."""
        return {p.distribution: p.distribution_version for p in self.plugins}


def _and(items: list[str]) -> str:
    quoted = [repr(x) for x in items]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


_registry: ComponentRegistry | None = None
_warned = False
_lock = threading.Lock()


def _env_list(name: str) -> set[str]:
    return {x.strip() for x in os.environ.get(name, "").split(",") if x.strip()}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist_of(ep: EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown", ""
    try:
        return dist.metadata["Name"] or "unknown", dist.version or ""
    except Exception:  # damaged metadata: still list the plugin
        return "unknown", ""


def _selected(ep_name: str, dist: str, autoload: bool, allow: set[str], block: set[str]) -> bool:
    names = {ep_name, dist, _normalise(dist)}
    if names & block or {_normalise(b) for b in block} & names:
        return False
    if autoload or _normalise(dist) == CORE_DISTRIBUTION:
        return True
    return bool(names & allow or {_normalise(a) for a in allow} & names)


def load_registry(extra_plugins: list[Any] | None = None, *, entry_points_enabled: bool = True) -> ComponentRegistry:
    """Build a fresh registry from entry points and optional in-process plugin objects.

    `extra_plugins` are modules or objects with ``@hookimpl`` methods, registered after the
    entry points (tests use this for fake components that users never see); an object's
    ``distribution`` attribute names it in listings (default "in-process").
    """
    registry = ComponentRegistry()
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    registry.plugin_manager = pm

    autoload = os.environ.get("REFRACTOR_DISABLE_PLUGIN_AUTOLOAD", "").strip().lower() in ("", "0", "false", "no")
    allow = _env_list("REFRACTOR_PLUGINS")
    block = _env_list("REFRACTOR_BLOCK_PLUGINS")

    loaded: list[tuple[Any, PluginOrigin]] = []
    seen: set[tuple[str, str]] = set()
    eps: Any = []
    if entry_points_enabled:
        try:
            eps = entry_points(group=ENTRY_POINT_GROUP)
        except Exception as exc:  # unreadable metadata of some installed distribution
            registry.broken.append(
                BrokenPlugin("(entry points)", "unknown", f"cannot read installed entry points: {type(exc).__name__}: {exc}")
            )
    for ep in eps:
        dist, dist_version = _dist_of(ep)
        if (dist, ep.name) in seen:  # the same distribution found twice on sys.path
            continue
        seen.add((dist, ep.name))
        if not _selected(ep.name, dist, autoload, allow, block):
            continue
        origin = PluginOrigin(ep.name, ep.value, dist, dist_version)
        try:
            module = ep.load()
        except (Exception, SystemExit) as exc:  # reported, never fatal
            registry.broken.append(
                BrokenPlugin(ep.name, dist, f"import failed: {type(exc).__name__}: {exc}", ep.value, dist_version)
            )
            continue
        loaded.append((module, origin))
    for obj in extra_plugins or []:
        name = getattr(obj, "__name__", None) or type(obj).__name__
        dist = getattr(obj, "distribution", IN_PROCESS)
        loaded.append((obj, PluginOrigin(name, getattr(obj, "__module__", "") or name, dist, "", in_process=True)))

    for module, origin in loaded:
        _register_plugin(registry, pm, module, origin)
    return registry


def _register_plugin(registry: ComponentRegistry, pm: pluggy.PluginManager, module: Any, origin: PluginOrigin) -> None:
    def broken(message: str) -> None:
        registry.broken.append(
            BrokenPlugin(origin.entry_point, origin.distribution, message, origin.module, origin.distribution_version)
        )

    if pm.is_registered(module):  # two entry points naming one module: register once
        return
    try:
        pm.register(module, name=f"{origin.distribution}:{origin.entry_point}")
    except pluggy.PluginValidationError as exc:
        broken(f"invalid hook implementation: {exc}")
        return
    except Exception as exc:
        broken(f"{type(exc).__name__}: {exc}")
        return
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        pm.unregister(module)
        broken(f"implements an unknown hook: {exc}")
        return

    def register(obj: Any = None, /, **kwargs: Any) -> None:
        if obj is None:
            obj = ComponentSpec(**kwargs)
        if isinstance(obj, ComponentSpec):
            update: dict[str, Any] = {"distribution": origin.distribution}
            if "version" not in obj.model_fields_set and origin.distribution_version:
                update["version"] = origin.distribution_version
            registry.add(obj.model_copy(update=update), origin)
            return
        if _is_model_card(obj):
            registry.cards.append(obj)
            return
        raise TypeError(
            f"register() takes a ComponentSpec or a ModelCard, got {type(obj).__name__}"
        )

    others = [p for p in pm.get_plugins() if p is not module]
    try:  # call this one plugin's implementation only, so errors are attributed to it
        pm.subset_hook_caller("refractor_register", remove_plugins=others)(register=register)
    except (Exception, SystemExit) as exc:
        broken(f"registration failed: {type(exc).__name__}: {_short(exc)}")
        return
    registry.plugins.append(origin)


def _is_model_card(obj: Any) -> bool:
    if not isinstance(obj, BaseModel):
        return False
    from refractor_registry.cards import ModelCard

    return isinstance(obj, ModelCard)


def _short(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(spec)'}: {e['msg']}" for e in exc.errors()
        )
    return str(exc)


def get_registry() -> ComponentRegistry:
    """The process-wide registry, loaded on first use."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = load_registry()
        return _registry


def warn_problems(registry: ComponentRegistry | None = None) -> list[str]:
    """Log each broken plugin or name conflict once per process as a warning on stderr."""
    global _warned
    registry = registry or get_registry()
    problems = registry.problems()
    if not _warned:
        _warned = True
        for line in problems:
            log.warning("%s (see `refractor plugins`)", line)
    return problems


def reset_registry(registry: ComponentRegistry | None = None) -> None:
    """Drop (or replace) the cached registry; used by tests."""
    global _registry, _warned
    with _lock:
        _registry = registry
        _warned = False
