"""Weights resolution through the real huggingface_hub code, on a locally populated cache."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402

from refractor_core.errors import WeightsError  # noqa: E402
from refractor_core.weights import clear_probe_cache, load_state_dict, pull, resolve_weights  # noqa: E402
from refractor_registry.cards import CardError, ModelCard, load_card  # noqa: E402

REPO = "refractor-tests/tiny-linear"
REVISION = "0123456789abcdef0123456789abcdef01234567"
REFRACTOR = [sys.executable, "-m", "refractor_core.cli"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))


@pytest.fixture
def weights(tmp_path) -> Path:
    """A real safetensors file of a small torch model."""
    path = tmp_path / "src" / "model.safetensors"
    path.parent.mkdir()
    save_file(tiny_model(1).state_dict(), str(path))
    return path


@pytest.fixture
def bundled(tmp_path) -> Path:
    """A different (bundled default) weights file."""
    folder = tmp_path / "bundled"
    folder.mkdir()
    save_file(tiny_model(2).state_dict(), str(folder / "tiny-default.safetensors"))
    return folder


@pytest.fixture
def card(weights, bundled) -> ModelCard:
    return ModelCard(
        kind="encoder",
        name="tiny-linear",
        repo_id=REPO,
        revision=REVISION,
        files=[{"filename": "model.safetensors", "sha256": sha(weights), "size": weights.stat().st_size}],
        config={"width": 3},
        bundled={"filename": "tiny-default.safetensors", "sha256": sha(bundled / "tiny-default.safetensors"),
                 "config": {"width": 3, "default": True}},
        license="BSD-3-Clause",
    )


def populate_cache(cache: Path, repo_id: str, revision: str, filename: str, source: Path) -> Path:
    """Lay a file out as huggingface_hub's cache does: blobs/<sha256>, snapshots/<rev>/<file>, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    blob = repo / "blobs" / sha(source)
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(source.read_bytes())
    snap = repo / "snapshots" / revision / filename
    snap.parent.mkdir(parents=True, exist_ok=True)
    if snap.exists() or snap.is_symlink():
        snap.unlink()
    os.symlink(os.path.relpath(blob, snap.parent), snap)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snap


@pytest.fixture(autouse=True)
def isolated_hub(monkeypatch, tmp_path):
    """No real hub: an endpoint on a closed local port, an empty cache, fresh probes."""
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("REFRACTOR_WEIGHTS_DIR", raising=False)
    clear_probe_cache()
    yield
    clear_probe_cache()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SilentServer:
    """A TCP server that accepts connections and never answers (a hanging hub)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self):
        for c in self.conns:
            c.close()
        self.sock.close()


# --------------------------------------------------------------------------------------


def test_explicit_local_path_is_verified_and_loads_strictly(card, weights):
    resolved = resolve_weights(card, local_path=weights, offline=True)
    assert resolved.source == "local-path" and resolved.path == weights and resolved.sha256 == sha(weights)
    model = load_state_dict(resolved, tiny_model(99))
    reference = tiny_model(1)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    record = resolved.record()
    assert record.repo_id == REPO and record.revision == REVISION and record.source == "local-path"


def test_local_path_folder_uses_the_card_file_name(card, weights):
    assert resolve_weights(card, local_path=weights.parent).path == weights


def test_missing_local_path_is_a_clear_error(card, tmp_path):
    with pytest.raises(WeightsError, match="does not exist") as err:
        resolve_weights(card, local_path=tmp_path / "nope.safetensors")
    assert err.value.exit_code == 3


def test_populated_hf_cache_resolves_through_huggingface_hub_offline(card, weights, tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    snap = populate_cache(cache, REPO, REVISION, "model.safetensors", weights)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolved = resolve_weights(card, cache_dir=cache)
    assert resolved.source == "hf-cache"
    assert resolved.path == snap and resolved.path.resolve().parent.name == "blobs"
    load_state_dict(resolved, tiny_model(5))


def test_hf_cache_in_a_fresh_process_with_hf_hub_offline(card, weights, tmp_path):
    """The environment variables huggingface_hub reads at import time are honoured."""
    cache = tmp_path / "hf-cache"
    populate_cache(cache, REPO, REVISION, "model.safetensors", weights)
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "tiny.json").write_text(card.model_dump_json())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "REFRACTOR_MODEL_CARDS": str(cards)}
    code = (
        "import json; from refractor_core.weights import resolve_weights\n"
        "r = resolve_weights('tiny-linear')\n"
        "print(json.dumps({'source': r.source, 'path': str(r.path)}))\n"
    )
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["source"] == "hf-cache" and out["path"].startswith(str(cache))
    assert time.perf_counter() - t0 < 30


def test_local_dir_is_checked_before_the_hub(card, weights, tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    (local / "model.safetensors").write_bytes(weights.read_bytes())
    resolved = resolve_weights(card, local_dir=local, offline=True)
    assert resolved.source == "hf-cache" and resolved.path.parent == local


def test_sha256_mismatch_in_cache_is_refused(card, weights, tmp_path):
    cache = tmp_path / "hf-cache"
    tampered = tmp_path / "tampered.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    tampered.write_bytes(bytes(data))
    populate_cache(cache, REPO, REVISION, "model.safetensors", tampered)
    with pytest.raises(WeightsError) as err:
        resolve_weights(card, cache_dir=cache, offline=True)
    text = str(err.value)
    assert "sha256" in text and sha(tampered) in text and card.weights_file.sha256 in text and "refusing" in text
    assert err.value.exit_code == 3


def test_sha256_mismatch_exits_3_on_the_command_line(card, weights, tmp_path):
    cache = tmp_path / "hf-cache"
    other = tmp_path / "other.safetensors"
    save_file(tiny_model(7).state_dict(), str(other))
    populate_cache(cache, REPO, REVISION, "model.safetensors", other)
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "tiny.json").write_text(card.model_dump_json())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "REFRACTOR_MODEL_CARDS": str(cards)}
    proc = subprocess.run([*REFRACTOR, "weights", "pull", "tiny-linear"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert "sha256" in proc.stderr and "refusing" in proc.stderr and "Traceback" not in proc.stderr


def test_offline_without_local_copy_falls_back_to_bundled(card, bundled):
    resolved = resolve_weights(card, offline=True, bundled_dir=bundled)
    assert resolved.source == "bundled" and resolved.config == {"width": 3, "default": True}
    assert resolved.record().repo_id is None  # the hub repo did not serve these bytes
    assert any("offline" in t for t in resolved.tried)


def test_nothing_available_names_every_place_tried(card, tmp_path):
    with pytest.raises(WeightsError) as err:
        resolve_weights(card, offline=True, bundled_dir=tmp_path / "none")
    text = str(err.value)
    assert "Hugging Face cache" in text and "offline" in text and "bundled file" in text
    assert "refractor weights pull tiny-linear" in text


def test_refused_connection_falls_back_quickly(card, bundled):
    t0 = time.perf_counter()
    resolved = resolve_weights(card, bundled_dir=bundled)
    elapsed = time.perf_counter() - t0
    assert resolved.source == "bundled" and elapsed < 2.0
    assert any("hub skipped" in t for t in resolved.tried)


def test_hanging_hub_falls_back_within_two_seconds(card, bundled, monkeypatch):
    server = SilentServer()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.port}")
        t0 = time.perf_counter()
        resolved = resolve_weights(card, bundled_dir=bundled)
        elapsed = time.perf_counter() - t0
        assert server.conns, "the probe never reached the server"
        assert resolved.source == "bundled"
        assert elapsed < 2.0, f"fallback took {elapsed:.2f} s"
        # a second resolution in the same process does not probe again
        t0 = time.perf_counter()
        resolve_weights(card, bundled_dir=bundled)
        assert time.perf_counter() - t0 < 0.5
    finally:
        server.close()


def test_pull_offline_is_a_clear_error(card):
    with pytest.raises(WeightsError, match="while offline"):
        pull(card, offline=True)


def test_pull_unreachable_hub_is_a_clear_error(card):
    t0 = time.perf_counter()
    with pytest.raises(WeightsError, match="cannot download"):
        pull(card)
    assert time.perf_counter() - t0 < 2.0


def test_pull_with_cached_copy_verifies_it(card, weights, tmp_path):
    cache = tmp_path / "hf-cache"
    populate_cache(cache, REPO, REVISION, "model.safetensors", weights)
    [resolved] = pull(card, offline=True, cache_dir=cache)
    assert resolved.source == "hf-cache" and resolved.sha256 == card.weights_file.sha256


def test_strict_loading_names_missing_and_misshaped_keys(card, weights):
    resolved = resolve_weights(card, local_path=weights)
    wrong = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2), torch.nn.Linear(2, 2))
    with pytest.raises(WeightsError) as err:
        load_state_dict(resolved, wrong)
    text = str(err.value)
    assert "missing keys ['3.bias', '3.weight']" in text and "shape mismatch" in text and "0.weight" in text


def test_file_changed_after_verification_is_refused(card, weights):
    resolved = resolve_weights(card, local_path=weights)
    save_file(tiny_model(8).state_dict(), str(weights))
    with pytest.raises(WeightsError, match="changed on disk"):
        load_state_dict(resolved, tiny_model(0))


def test_cards_must_pin_a_revision_and_hash(card):
    data = card.model_dump()
    with pytest.raises(ValueError, match="pinned commit"):
        ModelCard.model_validate({**data, "revision": "main"})
    with pytest.raises(ValueError, match="sha256"):
        ModelCard.model_validate({**data, "files": [{"filename": "model.safetensors", "sha256": "abc"}]})
    with pytest.raises(ValueError, match="safetensors"):
        ModelCard.model_validate({**data, "files": [{"filename": "model.bin", "sha256": "0" * 64}]})
    with pytest.raises(ValueError, match="extra"):
        ModelCard.model_validate({**data, "unexpected": 1})


def test_invalid_card_file_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "kind": "encoder",\n  "name": \n}\n')
    with pytest.raises(CardError) as err:
        load_card(bad)
    assert str(bad) in str(err.value) and "line 4" in str(err.value)


def test_weights_list_reports_where_each_card_resolves(card, weights, tmp_path):
    cache = tmp_path / "hf-cache"
    populate_cache(cache, REPO, REVISION, "model.safetensors", weights)
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "tiny.json").write_text(card.model_dump_json())
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "REFRACTOR_MODEL_CARDS": str(cards)}
    proc = subprocess.run([*REFRACTOR, "weights", "list", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    [row] = [r for r in json.loads(proc.stdout) if r["name"] == "tiny-linear"]
    assert row["status"] == "ok" and row["source"] == "hf-cache" and row["revision"] == REVISION
