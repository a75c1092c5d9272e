"""Run provenance: seed and device choice, versions, input hashes, manifest.json.

Every run writes a `RunManifest` (refractor_core.types) beside its outputs: the resolved
configuration, the seed (chosen and recorded when not given), the device, the versions of
the core, its main libraries and each plugin distribution, the weights used and the
sha256 of every input file, so a run can be repeated from its manifest alone.
"""

from __future__ import annotations

import platform
import random
import secrets
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from . import __version__
from .atomic import atomic_write_text
from .errors import UsageError
from .types import InputRecord, RunConfig, RunManifest

#: libraries whose versions every manifest records (looked up without importing them)
LIBRARIES = ("torch", "numpy", "scipy", "gemmi", "pydantic", "pluggy", "huggingface_hub", "safetensors", "click")


def now() -> str:
    """The current UTC time in ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def choose_seed(seed: int | None) -> int:
    """`seed` itself, or a fresh random seed in [0, 2**31) when None."""
    if seed is not None:
        if not (0 <= seed < 2**32):
            raise UsageError(f"--seed must lie in [0, 2**32), got {seed}")
        return int(seed)
    return secrets.randbelow(2**31)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and (when already imported) torch's global generators."""
    random.seed(seed)
    import numpy as np

    np.random.seed(seed % 2**32)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a CUDA device is usable, else 'cpu'; checks an explicit 'cuda'."""
    if device == "cpu":
        return "cpu"
    try:
        import torch

        has_cuda = bool(torch.cuda.is_available())
    except Exception:
        has_cuda = False
    if device == "cuda" and not has_cuda:
        raise UsageError("--device cuda was requested but no CUDA device is available", hint="use --device cpu or auto")
    if device not in ("auto", "cuda"):
        raise UsageError(f"unknown device {device!r}; use auto, cpu or cuda")
    return "cuda" if has_cuda else "cpu"


def library_versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Versions of Python, the core and its main libraries (plus `extra`, e.g. plugins)."""
    versions = {"python": platform.python_version(), "refractor": __version__}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    for dist, version in (extra or {}).items():
        versions.setdefault(dist, version)
    return versions


def input_records(paths: Iterable[str | Path | None]) -> list[InputRecord]:
    """sha256 of each existing input file (duplicates and missing paths skipped)."""
    from .weights import sha256_file

    records, seen = [], set()
    for p in paths:
        if p is None:
            continue
        p = Path(p)
        key = str(p.resolve())
        if key in seen or not p.is_file():
            continue
        seen.add(key)
        records.append(InputRecord(path=str(p), sha256=sha256_file(p)))
    return records


def new_manifest(config: RunConfig, *, seed: int, device: str, command: list[str] | None = None, **fields: Any) -> RunManifest:
    """A manifest for a run that is starting."""
    return RunManifest(
        refractor_version=__version__,
        command=list(command if command is not None else sys.argv),
        config=config,
        seed=seed,
        device=device,
        started=now(),
        **fields,
    )


def finish_manifest(manifest: RunManifest, *, error: str | None = None) -> RunManifest:
    """The manifest marked finished (ok, or failed with `error`)."""
    return manifest.model_copy(
        update={"finished": now(), "status": "failed" if error else "ok", "error": error}
    )


def write_manifest(manifest: RunManifest, folder: str | Path) -> Path:
    """Write `folder/manifest.json` atomically."""
    return atomic_write_text(Path(folder) / "manifest.json", manifest.model_dump_json(indent=2) + "\n")


def read_manifest(path: str | Path) -> RunManifest:
    """Read a manifest.json back (to repeat or compare a run)."""
    return RunManifest.model_validate_json(Path(path).read_text(encoding="utf-8"))
