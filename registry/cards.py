"""Model cards: which weights serve which learned component, and how to verify them.

A model card is a JSON file in ``refractor_registry/cards/`` (this folder's ``cards/``),
validated by `ModelCard`::

    {
      "kind": "encoder",
      "name": "reci-hybrid",
      "repo_id": "refractor/reci-hybrid",
      "revision": "0123456789abcdef0123456789abcdef01234567",
      "files": [{"filename": "model.safetensors", "sha256": "<64 hex>"}],
      "config": {"width": 256},
      "bundled": {"filename": "reci-hybrid-small.safetensors", "sha256": "<64 hex>"},
      "license": "BSD-3-Clause",
      "description": "..."
    }

`revision` is a pinned 40-hex commit, never a branch name, so a run is reproducible from
its manifest. `bundled` names a small default weights file shipped in
``refractor_registry/weights/`` that keeps ``refractor run`` working offline. Extra
folders of cards can be named in ``REFRACTOR_MODEL_CARDS`` (``os.pathsep``-separated), and
plugins may register cards through their ``refractor_register`` hook.

This module imports pydantic only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CARD_FORMAT = 1
_HEX = set("0123456789abcdef")


def _hex(value: str, length: int, what: str) -> str:
    v = value.strip().lower()
    if len(v) != length or not set(v) <= _HEX:
        raise ValueError(f"{what} must be {length} hexadecimal digits, got {value!r}")
    return v


class WeightFile(BaseModel):
    """One file of a model repository with its expected sha256."""

    model_config = ConfigDict(extra="forbid")

    filename: str = Field(min_length=1)
    sha256: str
    size: int | None = Field(default=None, ge=0)

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str) -> str:
        return _hex(v, 64, "sha256")

    @field_validator("filename")
    @classmethod
    def _relative(cls, v: str) -> str:
        if v.startswith("/") or ".." in Path(v).parts:
            raise ValueError(f"file names are relative to the repository, got {v!r}")
        return v


class BundledWeights(WeightFile):
    """A default weights file shipped inside the package (`refractor_registry/weights/`).

    It may be a smaller model than the hub's; `config` then overrides the card's config.
    """

    config: dict[str, Any] | None = None


class ModelCard(BaseModel):
    """Which weights serve one learned component (kind + name)."""

    model_config = ConfigDict(extra="forbid")

    format: int = CARD_FORMAT
    kind: Literal["reader", "encoder", "classifier", "generator", "refiner", "ranker"]
    name: str
    repo_id: str
    revision: str
    files: list[WeightFile] = Field(min_length=1)
    config: dict[str, Any] = Field(default_factory=dict)
    bundled: BundledWeights | None = None
    license: str
    description: str = ""

    @field_validator("revision")
    @classmethod
    def _pinned(cls, v: str) -> str:
        return _hex(v, 40, "revision (a pinned commit hash, not a branch name)")

    @field_validator("repo_id")
    @classmethod
    def _repo(cls, v: str) -> str:
        parts = v.split("/")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"repo_id must look like 'organisation/name', got {v!r}")
        return v

    @model_validator(mode="after")
    def _weights_present(self) -> "ModelCard":
        if not any(f.filename.endswith(".safetensors") for f in self.files):
            raise ValueError("a model card needs at least one .safetensors file")
        return self

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)

    @property
    def weights_file(self) -> WeightFile:
        """The (first) safetensors file: what the resolver fetches by default."""
        return next(f for f in self.files if f.filename.endswith(".safetensors"))

    def file(self, filename: str | None = None) -> WeightFile:
        """The entry of `filename` (default: the weights file)."""
        if filename is None:
            return self.weights_file
        for f in self.files:
            if f.filename == filename:
                return f
        raise KeyError(filename)


class CardError(ValueError):
    """A model card file is unreadable or invalid (the message names the file)."""


def cards_dir() -> Path:
    """The folder of the model cards shipped with refractor."""
    return Path(__file__).resolve().parent / "cards"


def bundled_weights_dir() -> Path:
    """The folder of the bundled default weights."""
    return Path(__file__).resolve().parent / "weights"


def load_card(path: str | Path) -> ModelCard:
    """Read and validate one card; `CardError` names the file and the problem."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CardError(f"{path}: cannot read model card: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise CardError(f"{path}, line {exc.lineno}: invalid JSON: {exc.msg}") from None
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(card)'}: {e['msg']}" for e in exc.errors()
        )
        raise CardError(f"{path}: invalid model card: {problems}") from None


def card_folders() -> list[Path]:
    """The package's card folder plus those named in REFRACTOR_MODEL_CARDS."""
    folders = [cards_dir()]
    for part in os.environ.get("REFRACTOR_MODEL_CARDS", "").split(os.pathsep):
        if part.strip():
            folders.append(Path(part.strip()).expanduser())
    return folders


def load_cards(folders: list[Path] | None = None) -> list[ModelCard]:
    """All cards in `folders` (default `card_folders()`), sorted by file name per folder."""
    cards = []
    for folder in folders if folders is not None else card_folders():
        if folder.is_dir():
            cards.extend(load_card(p) for p in sorted(folder.glob("*.json")))
    return cards
