"""Resolve, verify and load the weights of learned components.

Resolution order (first hit wins; every hit is checked against the card's sha256):

1. an explicit local path (a file, or a folder holding the card's file name);
2. the local Hugging Face cache (``hf_hub_download(..., local_files_only=True)``, honouring
   ``HF_HUB_CACHE``/``cache_dir``) and a ``local_dir`` (``REFRACTOR_WEIGHTS_DIR``);
3. a hub download with ``huggingface_hub`` at the card's pinned revision, only when not
   offline (``--offline`` or ``HF_HUB_OFFLINE=1``) and only after a quick probe of the hub
   (at most `PROBE_TIMEOUT` seconds, bounded even when DNS hangs) has answered, so an
   unreachable hub costs about a second instead of a 20-second retry loop;
4. the bundled default weights shipped in ``refractor_registry/weights/``.

A file whose sha256 differs from the card is refused with a `WeightsError` (exit code 3),
never loaded. torch, safetensors and huggingface_hub are imported only when needed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refractor_registry.cards import (
    CardError,
    ModelCard,
    WeightFile,
    bundled_weights_dir,
    load_cards,
)

from .errors import WeightsError
from .types import WeightsRecord

log = logging.getLogger("refractor.weights")

#: seconds the hub probe may take before the hub counts as unreachable
PROBE_TIMEOUT = 1.5
#: ETag timeout handed to huggingface_hub once the probe has succeeded
ETAG_TIMEOUT = 5.0
DEFAULT_ENDPOINT = "https://huggingface.co"

_probe_cache: dict[tuple[str, str, str], tuple[bool, str]] = {}
_sha_cache: dict[tuple[str, int, int], str] = {}


@dataclass
class ResolvedWeights:
    """A verified weights file and where it came from."""

    path: Path
    sha256: str
    source: str  # "local-path" | "hf-cache" | "hub" | "bundled"
    card: ModelCard
    filename: str
    config: dict[str, Any] = field(default_factory=dict)
    tried: list[str] = field(default_factory=list)

    def record(self) -> WeightsRecord:
        """The manifest entry of these weights."""
        bundled = self.source == "bundled"
        return WeightsRecord(
            component=f"{self.card.kind}:{self.card.name}",
            repo_id=None if bundled else self.card.repo_id,
            revision=None if bundled else self.card.revision,
            filename=self.filename,
            sha256=self.sha256,
            source=self.source,  # type: ignore[arg-type]
            path=str(self.path),
        )


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def sha256_file(path: str | Path) -> str:
    """The sha256 hex digest of a file (cached per path, size and mtime)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _sha_cache:
        return _sha_cache[key]
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    _sha_cache[key] = digest
    return digest


def is_offline(offline: bool = False) -> bool:
    """True when `offline` is set or HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is true."""
    if offline:
        return True
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return True
    return False


def hub_endpoint() -> str:
    """The Hugging Face endpoint in force (HF_ENDPOINT, read at call time)."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _default_cache_dir() -> str | None:
    return os.environ.get("HF_HUB_CACHE") or None


def _default_local_dir() -> Path | None:
    v = os.environ.get("REFRACTOR_WEIGHTS_DIR", "").strip()
    return Path(v).expanduser() if v else None


def hub_reachable(card: ModelCard, endpoint: str | None = None, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
    """Ask the hub, within `timeout` seconds, whether it serves the card's pinned revision.

    Returns (reachable, reason). The request runs in a daemon thread so that a hanging DNS
    look-up cannot stretch the wait; the answer is cached for the process.
    """
    endpoint = (endpoint or hub_endpoint()).rstrip("/")
    key = (endpoint, card.repo_id, card.revision)
    if key in _probe_cache:
        return _probe_cache[key]
    url = f"{endpoint}/api/models/{card.repo_id}/revision/{card.revision}"
    headers = {"Accept": "application/json", "User-Agent": "refractor-weights-probe"}
    token = os.environ.get("HF_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    outcome: list[tuple[bool, str]] = []

    def probe() -> None:
        try:
            req = urllib.request.Request(url, headers=headers, method="GET")
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                body = resp.read(1 << 16)
            try:
                sha = json.loads(body.decode("utf-8", "replace")).get("sha")
            except (ValueError, AttributeError):
                sha = None
            if sha and sha != card.revision:
                outcome.append((False, f"hub answered with revision {sha}, not {card.revision}"))
            else:
                outcome.append((True, "ok"))
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):  # gated or private: let huggingface_hub use the token
                outcome.append((True, f"HTTP {exc.code}"))
            else:
                outcome.append((False, f"{url} answered HTTP {exc.code}"))
        except Exception as exc:  # DNS failure, refused, timeout, TLS...
            reason = getattr(exc, "reason", exc)
            outcome.append((False, f"{endpoint} unreachable: {reason}"))

    thread = threading.Thread(target=probe, daemon=True, name="refractor-hub-probe")
    thread.start()
    thread.join(timeout + 0.1)
    result = outcome[0] if outcome else (False, f"{endpoint} did not answer within {timeout:g} s")
    _probe_cache[key] = result
    return result


def clear_probe_cache() -> None:
    """Forget earlier hub probes (tests, long-running processes)."""
    _probe_cache.clear()


def _verify(path: Path, expected: str, where: str, card: ModelCard) -> str:
    actual = sha256_file(path)
    if actual != expected:
        raise WeightsError(
            f"weights of {card.kind} {card.name!r} at {path} ({where}) have sha256 {actual}, "
            f"but the model card expects {expected}; refusing to load them",
            hint="the file is corrupted or not the pinned revision: delete it and run "
            f"`refractor weights pull {card.name}`, or pass the right file",
        )
    return actual


# --------------------------------------------------------------------------------------
# cards
# --------------------------------------------------------------------------------------


def available_cards(registry: Any = None) -> list[ModelCard]:
    """Cards shipped in refractor_registry, in REFRACTOR_MODEL_CARDS, and from plugins."""
    try:
        cards = load_cards()
    except CardError as exc:
        raise WeightsError(str(exc)) from None
    if registry is None:
        from .plugins import get_registry

        registry = get_registry()
    seen = {c.key for c in cards}
    for card in getattr(registry, "cards", []):
        if card.key not in seen:
            cards.append(card)
            seen.add(card.key)
    return cards


def find_card(name: str, kind: str | None = None, registry: Any = None) -> ModelCard:
    """The card of component `name` (of `kind`, if given); WeightsError when none or several."""
    cards = [c for c in available_cards(registry) if c.name == name and (kind is None or c.kind == kind)]
    if not cards:
        known = ", ".join(f"{c.kind}:{c.name}" for c in available_cards(registry)) or "(none)"
        raise WeightsError(f"no model card for {kind + ' ' if kind else ''}{name!r}", hint=f"cards: {known}")
    if len(cards) > 1:
        raise WeightsError(
            f"several model cards are called {name!r} ({', '.join(c.kind for c in cards)})",
            hint="name the kind as well",
        )
    return cards[0]


# --------------------------------------------------------------------------------------
# resolution
# --------------------------------------------------------------------------------------


def _from_cache(card: ModelCard, entry: WeightFile, cache_dir: str | Path | None, local_dir: Path | None) -> tuple[Path | None, str]:
    """Look in local_dir and the HF cache without any network access."""
    from huggingface_hub import hf_hub_download

    notes = []
    if local_dir is not None:
        if (local_dir / entry.filename).is_file():
            try:
                path = hf_hub_download(
                    card.repo_id, entry.filename, revision=card.revision,
                    local_dir=local_dir, local_files_only=True,
                )
                return Path(path), f"local_dir {local_dir}"
            except Exception:  # a file copied in by hand, without hub metadata
                return local_dir / entry.filename, f"local_dir {local_dir}"
        notes.append(f"not in local_dir {local_dir}")
    try:
        path = hf_hub_download(
            card.repo_id, entry.filename, revision=card.revision,
            cache_dir=str(cache_dir) if cache_dir else None, local_files_only=True,
        )
        return Path(path), "Hugging Face cache"
    except Exception as exc:
        notes.append(f"not in the Hugging Face cache ({type(exc).__name__})")
    return None, "; ".join(notes)


def _download(card: ModelCard, entry: WeightFile, cache_dir, local_dir: Path | None, endpoint: str) -> Path:
    from huggingface_hub import hf_hub_download

    kwargs: dict[str, Any] = dict(revision=card.revision, etag_timeout=ETAG_TIMEOUT, endpoint=endpoint)
    if local_dir is not None:
        kwargs["local_dir"] = local_dir
    if cache_dir:
        kwargs["cache_dir"] = str(cache_dir)
    return Path(hf_hub_download(card.repo_id, entry.filename, **kwargs))


def resolve_weights(
    card_or_component: ModelCard | str,
    *,
    local_path: str | Path | None = None,
    offline: bool = False,
    cache_dir: str | Path | None = None,
    local_dir: str | Path | None = None,
    bundled_dir: str | Path | None = None,
    filename: str | None = None,
    kind: str | None = None,
    endpoint: str | None = None,
    download: bool = True,
) -> ResolvedWeights:
    """Find verified weights for a card (or a component name with a card).

    See the module docstring for the order. `download=False` stops before the hub (used to
    report where weights resolve without touching the network).
    """
    card = card_or_component if isinstance(card_or_component, ModelCard) else find_card(card_or_component, kind)
    try:
        entry = card.file(filename)
    except KeyError:
        raise WeightsError(
            f"model card {card.kind}:{card.name} lists no file {filename!r}",
            hint=f"files: {', '.join(f.filename for f in card.files)}",
        ) from None
    cache_dir = cache_dir or _default_cache_dir()
    local_dir = Path(local_dir).expanduser() if local_dir else _default_local_dir()
    tried: list[str] = []

    def found(path: Path, source: str, sha: str, config: dict[str, Any] | None = None) -> ResolvedWeights:
        return ResolvedWeights(
            path=path, sha256=sha, source=source, card=card, filename=entry.filename,
            config=dict(config if config is not None else card.config), tried=tried,
        )

    # 1. explicit local path
    if local_path is not None:
        p = Path(local_path).expanduser()
        if p.is_dir():
            p = p / entry.filename
        if not p.is_file():
            raise WeightsError(f"weights file {p} does not exist (given as the local path for {card.name!r})")
        return found(p, "local-path", _verify(p, entry.sha256, "local path", card))

    # 2. local Hugging Face cache / local_dir, no network
    path, where = _from_cache(card, entry, cache_dir, local_dir)
    if path is not None:
        return found(path, "hf-cache", _verify(path, entry.sha256, where, card))
    tried.append(where)

    # 3. hub download, after a quick reachability probe
    if not download:
        tried.append("hub not asked")
    elif is_offline(offline):
        tried.append("hub not asked: offline (--offline or HF_HUB_OFFLINE=1)")
    else:
        ep = (endpoint or hub_endpoint()).rstrip("/")
        ok, reason = hub_reachable(card, ep)
        if ok:
            try:
                path = _download(card, entry, cache_dir, local_dir, ep)
            except Exception as exc:
                tried.append(f"download from {ep} failed: {type(exc).__name__}: {exc}")
            else:
                return found(path, "hub", _verify(path, entry.sha256, f"downloaded from {ep}", card))
        else:
            tried.append(f"hub skipped: {reason}")
            log.info("Hugging Face Hub not reachable (%s); using local weights", reason)

    # 4. bundled default weights
    if card.bundled is not None:
        p = Path(bundled_dir) if bundled_dir else bundled_weights_dir()
        p = p / card.bundled.filename
        if p.is_file():
            sha = _verify(p, card.bundled.sha256, "bundled default", card)
            return found(p, "bundled", sha, card.bundled.config)
        tried.append(f"bundled file {p} missing")
    else:
        tried.append("no bundled default")

    raise WeightsError(
        f"no weights found for {card.kind} {card.name!r} ({card.repo_id}@{card.revision[:12]}, "
        f"{entry.filename}): " + "; ".join(tried),
        hint=f"run `refractor weights pull {card.name}` while online, or pass a local file",
    )


def pull(
    card: ModelCard,
    *,
    offline: bool = False,
    cache_dir: str | Path | None = None,
    local_dir: str | Path | None = None,
    endpoint: str | None = None,
) -> list[ResolvedWeights]:
    """Make every file of a card available locally (cache first, then the hub), verified."""
    results = []
    cache_dir = cache_dir or _default_cache_dir()
    ldir = Path(local_dir).expanduser() if local_dir else _default_local_dir()
    for entry in card.files:
        path, where = _from_cache(card, entry, cache_dir, ldir)
        if path is not None:
            sha = _verify(path, entry.sha256, where, card)
            results.append(ResolvedWeights(path, sha, "hf-cache", card, entry.filename, dict(card.config)))
            continue
        if is_offline(offline):
            raise WeightsError(
                f"cannot download {card.repo_id}/{entry.filename} while offline",
                hint="unset HF_HUB_OFFLINE / drop --offline, or copy the file into the cache",
            )
        ep = (endpoint or hub_endpoint()).rstrip("/")
        ok, reason = hub_reachable(card, ep)
        if not ok:
            raise WeightsError(f"cannot download {card.repo_id}@{card.revision[:12]}: {reason}")
        try:
            path = _download(card, entry, cache_dir, ldir, ep)
        except Exception as exc:
            raise WeightsError(
                f"download of {card.repo_id}/{entry.filename} from {ep} failed: {type(exc).__name__}: {exc}"
            ) from None
        sha = _verify(path, entry.sha256, f"downloaded from {ep}", card)
        results.append(ResolvedWeights(path, sha, "hub", card, entry.filename, dict(card.config)))
    return results


# --------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------


def load_state_dict(resolved: ResolvedWeights, model: Any, *, device: str = "cpu") -> Any:
    """Load verified safetensors weights into a torch module, strictly; returns the model.

    Missing or unexpected keys and shape mismatches raise `WeightsError` naming them.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if sha256_file(resolved.path) != resolved.sha256:
        raise WeightsError(f"{resolved.path} changed on disk since it was verified; refusing to load it")
    try:
        state = load_file(str(resolved.path), device=device)
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{resolved.path} is not a readable safetensors file: {exc}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if wrong:
            parts.append(
                "shape mismatch "
                + ", ".join(f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}" for k in wrong[:5])
            )
        raise WeightsError(
            f"weights {resolved.path} do not fit {resolved.card.kind} {resolved.card.name!r}: " + "; ".join(parts),
            hint="the model card's config and the weights disagree",
        )
    model.load_state_dict(state, strict=True)
    return model
