"""The plugin manager: discovery, broken plugins, unknown hooks, clashes, allow/block lists."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from refractor_core.errors import PluginError, UsageError
from refractor_core.hookspecs import hookimpl
from refractor_core.interfaces import ComponentConfig, ComponentSpec, Ranker
from refractor_core.plugins import get_registry, load_registry, reset_registry

FIXTURES = Path(__file__).parent / "fixtures"


def on_path(monkeypatch, *names: str) -> None:
    """Put fixture distributions (dist-info + module) on sys.path for this test."""
    for name in names:
        monkeypatch.syspath_prepend(str(FIXTURES / name))
    for mod in [m for m in sys.modules if m.startswith("refractor_fixture_")]:
        monkeypatch.delitem(sys.modules, mod)


class ScoreConfig(ComponentConfig):
    weight: float = 1.0


class InProcessRanker(Ranker):
    """A ranker defined in this test module (never registered for users)."""

    name = "in-process-r1"
    version = "1.2.3"
    Config = ScoreConfig

    def rank(self, data, refined):
        return sorted((r.model_copy(update={"score": self.config.weight * r.r1}) for r in refined), key=lambda r: r.score)


class Plugin:
    """An in-process plugin object registering one spec."""

    def __init__(self, distribution: str, name: str = "in-process-r1", target: str = f"{__name__}:InProcessRanker"):
        self.distribution = distribution
        self.spec = ComponentSpec(kind="ranker", name=name, target=target, config=ScoreConfig)

    @hookimpl
    def refractor_register(self, register):
        register(self.spec)


def test_builtin_components_come_from_entry_points():
    registry = load_registry()
    builtin = [s for s in registry.all_specs() if s.distribution == "refractor"]
    assert {p.distribution for p in registry.plugins} >= {"refractor"}
    assert {p.entry_point for p in registry.plugins if p.distribution == "refractor"} == {
        "readers", "encoders", "classifiers", "generators", "refiners", "rankers"
    }
    for spec in builtin:
        origin = registry.origins[(spec.kind, spec.name)]
        assert origin.module.startswith("refractor_plugins."), origin


def test_loading_is_lazy_and_cached():
    reset_registry()
    import refractor_core.plugins as plugins

    assert plugins._registry is None  # importing does not load plugins
    first = get_registry()
    assert get_registry() is first
    reset_registry()
    assert plugins._registry is None


def test_in_process_plugin_registers_and_builds():
    registry = load_registry(extra_plugins=[Plugin("dist-a")], entry_points_enabled=False)
    spec = registry.spec("ranker", "in-process-r1")
    assert spec.distribution == "dist-a"
    component = registry.build("ranker", "in-process-r1", {"weight": 2.0})
    assert isinstance(component, InProcessRanker) and component.config.weight == 2.0
    [record] = registry.listing()
    assert record["status"] == "ok" and record["distribution"] == "dist-a" and record["kind"] == "ranker"


def test_duplicate_names_are_an_error_naming_both_distributions():
    registry = load_registry(extra_plugins=[Plugin("dist-a"), Plugin("dist-b")], entry_points_enabled=False)
    with pytest.raises(PluginError) as err:
        registry.spec("ranker", "in-process-r1")
    assert "'dist-a'" in str(err.value) and "'dist-b'" in str(err.value)
    assert err.value.exit_code == 3
    records = [r for r in registry.listing() if r["name"] == "in-process-r1"]
    assert {r["distribution"] for r in records} == {"dist-a", "dist-b"}
    assert all(r["status"] == "broken" and "dist-a" in r["error"] and "dist-b" in r["error"] for r in records)
    assert "in-process-r1" not in registry.names("ranker")


def test_unknown_name_gets_did_you_mean_and_the_list():
    registry = load_registry(extra_plugins=[Plugin("dist-a")], entry_points_enabled=False)
    with pytest.raises(UsageError) as err:
        registry.spec("ranker", "in-proces-r1")
    text = str(err.value)
    assert "did you mean 'in-process-r1'" in text and "available rankers: in-process-r1" in text
    assert err.value.exit_code == 2


def test_options_are_validated_by_the_component_config():
    registry = load_registry(extra_plugins=[Plugin("dist-a")], entry_points_enabled=False)
    with pytest.raises(UsageError, match="wieght") as err:
        registry.build("ranker", "in-process-r1", {"wieght": 2})
    assert "valid keys: weight" in str(err.value)
    with pytest.raises(UsageError, match="weight"):
        registry.build("ranker", "in-process-r1", {"weight": "heavy"})


def test_hook_raising_marks_only_that_plugin_broken():
    class Failing:
        distribution = "dist-bad"

        @hookimpl
        def refractor_register(self, register):
            raise RuntimeError("cannot register")

    registry = load_registry(extra_plugins=[Failing(), Plugin("dist-a")], entry_points_enabled=False)
    assert registry.names("ranker") == ["in-process-r1"]
    [broken] = registry.broken
    assert broken.distribution == "dist-bad" and "cannot register" in broken.error


def test_invalid_spec_is_reported_with_the_field():
    class BadName:
        distribution = "dist-bad"

        @hookimpl
        def refractor_register(self, register):
            register(kind="ranker", name="Not_Kebab", target="x:y")

    registry = load_registry(extra_plugins=[BadName()], entry_points_enabled=False)
    [broken] = registry.broken
    assert "kebab-case" in broken.error and "name" in broken.error


def test_unknown_hook_is_rejected(monkeypatch):
    on_path(monkeypatch, "typo_plugin")
    registry = load_registry()
    broken = [b for b in registry.broken if b.distribution == "refractor-fixture-typo"]
    assert len(broken) == 1 and "unknown hook" in broken[0].error and "refractor_regster" in broken[0].error


def test_import_failure_is_listed_broken_and_others_still_work(monkeypatch):
    on_path(monkeypatch, "broken_plugin", "pipeline_plugin")
    registry = load_registry()
    records = {(r["kind"], r["name"]): r for r in registry.listing()}
    broken = records[("plugin", "broken-fixture")]
    assert broken["status"] == "broken" and broken["distribution"] == "refractor-fixture-broken"
    assert "fails on import on purpose" in broken["error"]
    assert records[("ranker", "fixture-r1")]["status"] == "ok"
    assert registry.build("ranker", "fixture-r1").name == "fixture-r1"
    assert any("broken-fixture" in line for line in registry.problems())


def test_clash_between_installed_distributions(monkeypatch):
    on_path(monkeypatch, "clash_plugins")
    registry = load_registry()
    with pytest.raises(PluginError) as err:
        registry.build("ranker", "fixture-clash")
    assert "refractor-fixture-clash-a" in str(err.value) and "refractor-fixture-clash-b" in str(err.value)


def test_disable_autoload_keeps_builtins_and_allowlist(monkeypatch):
    on_path(monkeypatch, "pipeline_plugin", "broken_plugin")
    monkeypatch.setenv("REFRACTOR_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = load_registry()
    dists = {p.distribution for p in registry.plugins}
    assert "refractor" in dists and "refractor-fixture-pipeline" not in dists
    assert not registry.broken  # the broken plugin was not even imported
    monkeypatch.setenv("REFRACTOR_PLUGINS", "refractor-fixture-pipeline")
    registry = load_registry()
    assert "refractor-fixture-pipeline" in {p.distribution for p in registry.plugins}
    assert not registry.broken


def test_block_list_by_entry_point_or_distribution(monkeypatch):
    on_path(monkeypatch, "pipeline_plugin", "broken_plugin")
    monkeypatch.setenv("REFRACTOR_BLOCK_PLUGINS", "broken-fixture, refractor_fixture_pipeline")
    registry = load_registry()
    dists = {p.distribution for p in registry.plugins}
    assert "refractor-fixture-pipeline" not in dists
    assert not [b for b in registry.broken if b.distribution == "refractor-fixture-broken"]


def test_component_version_defaults_to_distribution_version(monkeypatch):
    on_path(monkeypatch, "pipeline_plugin")
    registry = load_registry()
    spec = registry.spec("ranker", "fixture-r1")
    assert spec.version == "0.1.0" and registry.origins[("ranker", "fixture-r1")].distribution_version == "0.1.0"


def test_missing_target_is_a_plugin_error():
    plugin = Plugin("dist-a", name="ghost", target="refractor_no_such_module:Ghost")
    registry = load_registry(extra_plugins=[plugin], entry_points_enabled=False)
    with pytest.raises(PluginError, match="refractor_no_such_module"):
        registry.build("ranker", "ghost")


def test_target_of_the_wrong_kind_is_a_plugin_error():
    plugin = Plugin("dist-a", name="not-a-ranker", target="refractor_core.interfaces:ComponentConfig")
    registry = load_registry(extra_plugins=[plugin], entry_points_enabled=False)
    with pytest.raises(PluginError, match="not a Ranker subclass"):
        registry.build("ranker", "not-a-ranker")
