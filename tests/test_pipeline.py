"""The pipeline, atomic outputs and the manifest, in-process with test-only components."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from refractor_core.atomic import OutputFolder, atomic_write_json, atomic_write_text
from refractor_core.errors import PluginError, RefinementError, UsageError
from refractor_core.hookspecs import hookimpl
from refractor_core.interfaces import ComponentConfig, ComponentSpec, Ranker
from refractor_core.manifest import choose_seed, input_records, library_versions, read_manifest, resolve_device
from refractor_core.pipeline import PipelineContext, run_pipeline, stage_seed
from refractor_core.plugins import load_registry
from refractor_core.testing.samples import default_samples
from refractor_core.types import RunConfig

FIXTURES = Path(__file__).parent / "fixtures"
STAGES = {"classifier": "fixture-fixed", "generator": "fixture-model", "refiner": "fixture-evaluate", "ranker": "fixture-r1"}


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES / "pipeline_plugin"))
    return load_registry()


@pytest.fixture(scope="module")
def samples_structure():
    from refractor_core.testing.samples import default_samples

    return default_samples().structure


@pytest.fixture
def data():
    return default_samples().reflections


def config(**kw) -> RunConfig:
    components = {**RunConfig().components, **STAGES, **kw.pop("components", {})}
    return RunConfig(components=components, **kw)


def test_stages_are_wired_and_ranked(registry, data):
    cfg = config(candidates_per_hypothesis=3, options={"classifier": {"alternatives": ["P 1 21/c 1", "P 1"]}}, max_hypotheses=2)
    result = run_pipeline(data, cfg, PipelineContext(registry=registry, seed=4))
    assert [h.space_group.number for h in result.hypotheses] == [14, 14]  # top max_hypotheses of three
    assert result.n_candidates == 6 and len(result.ranked) == 6
    r1 = [r.r1 for r in result.ranked]
    assert r1 == sorted(r1) and result.best.score == r1[0]
    assert result.best.candidate is not None and result.best.candidate.hypothesis is not None
    assert result.solved and result.best.r1 < 0.05  # the undisplaced true model against its own data
    assert [c.kind for c in result.components] == ["classifier", "generator", "refiner", "ranker"]
    assert set(result.timings) >= {"build", "classifier", "generator", "refiner", "ranker"}


def test_same_seed_same_result_other_seed_other_candidates(registry, data):
    cfg = config(candidates_per_hypothesis=3)
    a = run_pipeline(data, cfg, PipelineContext(registry=registry, seed=1))
    b = run_pipeline(data, cfg, PipelineContext(registry=registry, seed=1))
    c = run_pipeline(data, cfg, PipelineContext(registry=registry, seed=2))
    assert [r.r1 for r in a.ranked] == [r.r1 for r in b.ranked]
    assert [r.r1 for r in a.ranked] != [r.r1 for r in c.ranked]
    assert stage_seed(1, 0) == stage_seed(1, 0) != stage_seed(1, 1)


def test_without_classifier_the_data_space_group_is_used(registry, data):
    hinted = data.model_copy(update={"space_group_hint": default_samples().structure.space_group})
    result = run_pipeline(hinted, config(components={"classifier": None}), PipelineContext(registry=registry))
    assert [h.source for h in result.hypotheses] == ["data"] and result.hypotheses[0].space_group.number == 14
    assert any("no classifier" in n for n in result.notes)
    with pytest.raises(UsageError, match="no classifier"):
        run_pipeline(data, config(components={"classifier": None}), PipelineContext(registry=registry))


def test_invalid_options_fail_before_any_stage_runs(registry, data):
    with pytest.raises(UsageError, match="shfit"):
        run_pipeline(data, config(options={"generator": {"shfit": 0.1}}), PipelineContext(registry=registry))
    with pytest.raises(UsageError, match="without a component"):
        run_pipeline(data, config(components={"encoder": None}, options={"encoder": {"x": 1}}), PipelineContext(registry=registry))
    with pytest.raises(UsageError, match="needs a refiner"):
        run_pipeline(data, config(components={"refiner": None}), PipelineContext(registry=registry))


def test_a_failing_refinement_is_noted_not_fatal(registry, data):
    result = run_pipeline(data, config(options={"refiner": {"fail_above_sites": 100}}), PipelineContext(registry=registry))
    assert len(result.ranked) == 4
    with pytest.raises(RefinementError, match="no candidate could be refined"):
        run_pipeline(data, config(options={"refiner": {"fail_above_sites": 2}}), PipelineContext(registry=registry))


class LosingRanker(Ranker):
    """A faulty ranker (test only): drops a candidate."""

    name = "fixture-loses-one"
    Config = ComponentConfig

    def rank(self, data, refined):
        return refined[1:]


class WrongTypeRanker(Ranker):
    """A faulty ranker (test only): returns a dict."""

    name = "fixture-wrong-type"
    Config = ComponentConfig

    def rank(self, data, refined):
        return {"best": refined[0]}


class CrashingRanker(Ranker):
    """A faulty ranker (test only): a bug inside the component."""

    name = "fixture-crashes"
    Config = ComponentConfig

    def rank(self, data, refined):
        return sorted(refined, key=lambda r: r.no_such_field)


class FaultyRankers:
    distribution = "tests"

    @hookimpl
    def refractor_register(self, register):
        register(ComponentSpec(kind="ranker", name="fixture-loses-one", target=f"{__name__}:LosingRanker"))
        register(ComponentSpec(kind="ranker", name="fixture-wrong-type", target=f"{__name__}:WrongTypeRanker"))
        register(ComponentSpec(kind="ranker", name="fixture-crashes", target=f"{__name__}:CrashingRanker"))


def test_misbehaving_components_are_plugin_errors(monkeypatch, data):
    monkeypatch.syspath_prepend(str(FIXTURES / "pipeline_plugin"))
    registry = load_registry(extra_plugins=[FaultyRankers()])
    with pytest.raises(PluginError, match="returned 3 candidates for 4"):
        run_pipeline(data, config(components={"ranker": "fixture-loses-one"}), PipelineContext(registry=registry))
    with pytest.raises(PluginError, match="returned dict"):
        run_pipeline(data, config(components={"ranker": "fixture-wrong-type"}), PipelineContext(registry=registry))
    with pytest.raises(PluginError, match=r"ranker 'fixture-crashes' failed in rank\(\): AttributeError") as err:
        run_pipeline(data, config(components={"ranker": "fixture-crashes"}), PipelineContext(registry=registry))
    assert err.value.exit_code == 3 and isinstance(err.value.__cause__, AttributeError)


def test_progress_callback_sees_every_stage(registry, data):
    seen = []

    class Recorder:
        def __init__(self, description, total):
            seen.append([description, total, 0])

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n=1):
            seen[-1][2] += n

    run_pipeline(data, config(), PipelineContext(registry=registry, progress=Recorder))
    # four candidates of one space group: all are screened first; the best is refined fully
    # and, as it refines well (R1 <= GOOD_R1), no other
    assert [s[0].split(" (")[0] for s in seen] == ["space groups", "generating candidates", "screening", "refining"]
    assert seen[-2][1] == seen[-2][2] == 4
    assert seen[-1][1] == seen[-1][2] == 1
    seen.clear()
    result = run_pipeline(data, config(screen=False), PipelineContext(registry=registry, progress=Recorder))
    assert [s[0].split(" (")[0] for s in seen] == ["space groups", "generating candidates", "refining"]
    assert seen[-1][1] == seen[-1][2] == 4
    assert not any(r.meta.get("screened") for r in result.ranked)


def test_screened_candidates_follow_the_fully_refined_ones(registry, data):
    result = run_pipeline(data, config(candidates_per_hypothesis=5, refine_top=2), PipelineContext(registry=registry, seed=1))
    assert result.n_candidates == 5 and len(result.ranked) == 5
    assert "screening" in result.timings and "refinement" in result.timings
    assert result.best is not None


def test_selection_for_full_refinement_takes_one_per_space_group_first(samples_structure):
    from refractor_core.pipeline import select_for_refinement
    from refractor_core.types import RefinedCandidate, SpaceGroupRef

    def item(symbol, r1):
        s = samples_structure.model_copy(update={"space_group": SpaceGroupRef.from_symbol(symbol)})
        return RefinedCandidate(structure=s, r1=r1, wr2=2 * r1, goof=1.0, n_reflections=100, n_gt=90, n_parameters=10)

    ranked = [item("P 1 21/c 1", 0.10), item("P 1 21/c 1", 0.11), item("P 1", 0.15), item("P -1", 0.40)]
    first, reserve = select_for_refinement(ranked, 3)
    assert first == [ranked[0], ranked[2]] and reserve == [ranked[1]]  # P-1 is 0.30 worse: not worth it
    assert select_for_refinement(ranked, 1) == ([ranked[0]], [])


# --------------------------------------------------------------------------------------
# atomic outputs
# --------------------------------------------------------------------------------------


def test_output_folder_appears_only_on_success(tmp_path):
    dest = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with OutputFolder(dest) as stage:
            (stage.path / "report.json").write_text("{}")
            raise RuntimeError("stage failed")
    assert not dest.exists() and list(tmp_path.iterdir()) == []
    with OutputFolder(dest) as stage:
        atomic_write_json(stage.path / "report.json", {"x": np.float64(1.5), "p": Path("a")})
        assert not dest.exists()
    assert json.loads((dest / "report.json").read_text()) == {"x": 1.5, "p": "a"}


def test_output_folder_replaces_its_own_files_and_keeps_others(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "notes.txt").write_text("user file")
    (dest / "report.json").write_text("old")
    (dest / "candidate_2").mkdir()
    (dest / "candidate_2" / "old.cif").write_text("old")
    with OutputFolder(dest) as stage:
        (stage.path / "report.json").write_text("new")
        (stage.path / "candidate_2").mkdir()
        (stage.path / "candidate_2" / "new.cif").write_text("new")
    assert (dest / "notes.txt").read_text() == "user file" and (dest / "report.json").read_text() == "new"
    assert [p.name for p in (dest / "candidate_2").iterdir()] == ["new.cif"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_output_folder_cleans_up_on_keyboard_interrupt(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with OutputFolder(tmp_path / "out") as stage:
            (stage.path / "a").write_text("x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_sigterm_during_writing_leaves_nothing(tmp_path):
    """A real SIGTERM while outputs are being written: no output folder, no staging left."""
    script = textwrap.dedent(
        f"""
        import os, signal, time
        from pathlib import Path
        from refractor_core.atomic import OutputFolder
        signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(SystemExit(143)))
        with OutputFolder(Path({str(tmp_path / 'out')!r})) as stage:
            (stage.path / "report.json").write_text("partial")
            print("STAGED", flush=True)
            time.sleep(30)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "STAGED"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_leaves_no_temporary_on_error(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_text(target, "old")
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_output_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        OutputFolder(tmp_path / "f")


# --------------------------------------------------------------------------------------
# manifest pieces
# --------------------------------------------------------------------------------------


def test_seed_choice_and_device_resolution():
    assert choose_seed(42) == 42
    seeds = {choose_seed(None) for _ in range(5)}
    assert len(seeds) > 1 and all(0 <= s < 2**31 for s in seeds)
    with pytest.raises(UsageError):
        choose_seed(-1)
    assert resolve_device("cpu") == "cpu"
    import torch

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_versions_and_input_hashes(tmp_path):
    versions = library_versions({"some-plugin": "9.9"})
    assert versions["numpy"] == np.__version__ and versions["some-plugin"] == "9.9"
    f = tmp_path / "a.hkl"
    f.write_bytes(b"   1   0   0  100.00    1.00\n")
    import hashlib

    [rec] = input_records([f, f, None, tmp_path / "missing"])
    assert rec.sha256 == hashlib.sha256(f.read_bytes()).hexdigest()


def test_manifest_round_trip(tmp_path):
    from refractor_core.manifest import finish_manifest, new_manifest, write_manifest

    m = new_manifest(RunConfig(seed=3), seed=3, device="cpu", command=["refractor", "run"])
    path = write_manifest(finish_manifest(m), tmp_path)
    back = read_manifest(path)
    assert back.status == "ok" and back.seed == 3 and back.config.seed == 3 and back.finished


# --------------------------------------------------------------------------------------
# progress display
# --------------------------------------------------------------------------------------


def test_progress_nests_and_is_silent_when_quiet():
    import io

    from refractor_core.progress import Progress

    stream = io.StringIO()
    progress = Progress(0, stream=stream)
    with progress("outer", total=2) as outer:
        for _ in range(2):
            with progress("inner", total=3) as inner:
                inner.update(3)
            outer.update(1)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "outer..." and lines[1] == "  inner..." and lines[2].startswith("  inner: done (3/3)")
    assert lines[-1].startswith("outer: done (2/2)")
    quiet = io.StringIO()
    with Progress(-1, stream=quiet)("outer", total=1) as bar:
        bar.update(1)
    assert quiet.getvalue() == ""


def test_a_long_step_prints_its_progress_without_a_terminal(monkeypatch):
    """In a log (no terminal, no bar) a long step prints how far it is every
    PLAIN_INTERVAL seconds, so that it does not look like a hang."""
    import io

    from refractor_core import progress as progress_module

    monkeypatch.setattr(progress_module, "PLAIN_INTERVAL", 0.0)
    stream = io.StringIO()
    with progress_module.Progress(0, stream=stream)("refining (lsq)", total=100) as bar:
        bar.update(1)
        bar.update(1)
    lines = stream.getvalue().splitlines()
    assert lines == ["refining (lsq)...", "refining (lsq): 1/100", "refining (lsq): 2/100", lines[-1]]
    assert lines[-1].startswith("refining (lsq): done (2/100)")


def test_a_best_model_that_obeys_a_hypothesised_supergroup_is_refined_in_it():
    """Ethylene oxide written in P1 (origin moved) with P21/n among the hypotheses: the
    upgrade finds the missed symmetry and refines the model in P21/n against the data."""
    import numpy as np

    from refractor_core.crystal.symmetry import SymmetryOps
    from refractor_core.dataio import load_bundle, load_reflections
    from refractor_core.pipeline import _null_progress, _symmetry_upgrade
    from refractor_core.plugins import get_registry
    from refractor_core.testing.real_cases import get_case
    from refractor_core.types import Candidate, RefinedCandidate, Site, SpaceGroupHypothesis, SpaceGroupRef

    case = get_case("ethylene_oxide")
    data = load_reflections(case.reflections)
    ref = load_bundle(case.reference, block=case.data_block).structure
    ops = SymmetryOps.from_space_group(ref.space_group)
    heavy = [s for s in ref.sites if s.element != "H"]
    sites = []
    for s in heavy:
        for k, (r, t) in enumerate(zip(ops.rotations, ops.translations)):
            x = np.mod(r @ np.array(s.xyz) + t + np.array([0.11, 0.27, 0.05]), 1.0)
            sites.append(Site(label=f"{s.label}_{k}", element=s.element, xyz=tuple(x), u_iso=0.04))
    p1 = ref.model_copy(update={"space_group": SpaceGroupRef.from_symbol("P 1"), "sites": sites})
    low = RefinedCandidate(structure=p1, candidate=Candidate(structure=p1, generator="charge-flip"),
                           r1=0.05, wr2=0.12, goof=1.0, n_reflections=2000, n_gt=1800, n_parameters=60)
    hypotheses = [SpaceGroupHypothesis(space_group=ref.space_group, probability=0.9),
                  SpaceGroupHypothesis(space_group=SpaceGroupRef.from_symbol("P 1"), probability=0.1)]
    refiner = get_registry().build("refiner", "lsq", {"max_cycles": 20})
    notes: list[str] = []
    up = _symmetry_upgrade([low], hypotheses, refiner, data, _null_progress, notes)
    assert up is not None and up.structure.space_group.number == 14
    assert len([s for s in up.structure.sites if s.element != "H"]) == len(heavy)
    assert up.r1 < 0.08 and any("obeys P 1 21/n 1" in n for n in notes)
    # nothing to upgrade when the supergroup is not among the hypotheses
    assert _symmetry_upgrade([low], hypotheses[1:], refiner, data, _null_progress, notes) is None
