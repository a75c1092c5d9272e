"""Atomic output: files and folders appear complete or not at all.

`atomic_write_text`/`atomic_write_bytes`/`atomic_write_json` write to a temporary file in
the same folder, fsync it and rename it over the target. `OutputFolder` stages a whole
output folder beside its destination and moves it into place only when the block that
fills it finishes without error; on an exception, Ctrl-C or SIGTERM (turned into
`SystemExit` by the run command) the staging folder is removed and nothing is left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write text atomically."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, obj: Any, **kwargs: Any) -> Path:
    """Write an object as indented JSON atomically (numpy values and paths allowed; a
    number that is not finite is written null)."""
    from .commands.common import _json_default, json_safe

    kwargs.setdefault("indent", 2)
    return atomic_write_text(path, json.dumps(json_safe(obj), default=_json_default, allow_nan=False, **kwargs) + "\n")


class OutputFolder:
    """Stage an output folder and move it into place only on success.

    Usage::

        with OutputFolder(Path("out")) as stage:
            (stage.path / "report.json").write_text(...)
        # out/ now holds everything, or (after an exception) nothing new at all

    When the destination already exists, each staged entry replaces its namesake there
    (files with an atomic rename, folders swapped in); other files in it are kept.
    """

    def __init__(self, destination: str | Path):
        self.destination = Path(destination)
        if self.destination.exists() and not self.destination.is_dir():
            from .errors import UsageError

            raise UsageError(f"output {self.destination} exists and is not a folder")
        self.path: Path = self.destination.parent / f".{self.destination.name}.partial-{uuid.uuid4().hex[:8]}"
        self.committed = False

    def __enter__(self) -> "OutputFolder":
        self.path.mkdir(parents=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.discard()
                raise
        else:
            self.discard()
        return False

    def discard(self) -> None:
        """Remove the staging folder."""
        shutil.rmtree(self.path, ignore_errors=True)

    def commit(self) -> Path:
        """Move the staged outputs into the destination."""
        if not self.destination.exists():
            os.rename(self.path, self.destination)
            self.committed = True
            return self.destination
        # manifest.json last: its presence marks a complete run
        entries = sorted(self.path.iterdir(), key=lambda p: (p.name == "manifest.json", p.name))
        for entry in entries:
            target = self.destination / entry.name
            if entry.is_dir():
                if target.exists():
                    old = self.destination / f".{entry.name}.old-{uuid.uuid4().hex[:8]}"
                    os.rename(target, old)
                    os.rename(entry, target)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.rename(entry, target)
            else:
                os.replace(entry, target)
        shutil.rmtree(self.path, ignore_errors=True)
        self.committed = True
        return self.destination
