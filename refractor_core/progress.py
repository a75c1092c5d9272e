"""Progress display on stderr: a rich progress bar on a terminal, plain lines otherwise.

`Progress(verbosity)` is the callable handed to components as `BuildContext.progress`:
``with progress("refining", total=12) as bar: ... bar.update(1)``. Calls may nest (a
component showing its own steps inside a pipeline stage): on a terminal the inner task is
one more line of the same live display. It is silent with ``-q`` (verbosity < 0) and never
writes to stdout, which stays clean for `--json`.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import IO, Any, Iterator


#: seconds between the plain progress lines of a long step (not on a terminal)
PLAIN_INTERVAL = 10.0


class _Task:
    def __init__(self, bar: Any = None, task_id: Any = None, plain: tuple[IO[str], str, int | None] | None = None):
        self._bar = bar
        self._task_id = task_id
        self._plain = plain  # (stream, "indent + description", total): lines, not a bar
        self._last = time.perf_counter()
        self.done = 0

    def update(self, n: int = 1) -> None:
        """Advance by `n` steps (without a terminal, a line every PLAIN_INTERVAL seconds, so
        that a long step does not look like a hang in a log)."""
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task_id, advance=n)
        elif self._plain is not None and time.perf_counter() - self._last >= PLAIN_INTERVAL:
            stream, what, total = self._plain
            stream.write(f"{what}: {self.done}{f'/{total}' if total else ''}\n")
            stream.flush()
            self._last = time.perf_counter()


class Progress:
    """Create progress displays for long steps (silent when `verbosity` < 0)."""

    def __init__(self, verbosity: int = 0, stream: IO[str] | None = None):
        self.verbosity = verbosity
        self.stream = stream if stream is not None else sys.stderr
        self._live: Any = None  # the rich display while a task is open
        self._depth = 0

    @property
    def enabled(self) -> bool:
        return self.verbosity >= 0

    def _terminal(self) -> bool:
        try:
            return bool(self.stream.isatty())
        except (AttributeError, ValueError):
            return False

    def _new_display(self) -> Any:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        console = Console(file=self.stream, stderr=True)
        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        return RichProgress(*columns, console=console, transient=True)

    @contextmanager
    def __call__(self, description: str, total: int | None = None) -> Iterator[_Task]:
        if not self.enabled:
            yield _Task()
            return
        start = time.perf_counter()
        indent = "  " * self._depth
        if self._terminal():
            outer = self._live is None
            if outer:
                self._live = self._new_display()
                self._live.start()
            task_id = self._live.add_task(indent + description, total=total)
            self._depth += 1
            try:
                yield _Task(self._live, task_id)
            finally:
                self._depth -= 1
                self._live.remove_task(task_id)
                if outer:
                    self._live.stop()
                    self._live = None
            if outer:
                self.stream.write(f"{description}: done in {time.perf_counter() - start:.1f} s\n")
            return
        task = _Task(plain=(self.stream, indent + description, total))
        self.stream.write(f"{indent}{description}...\n")
        self.stream.flush()
        self._depth += 1
        try:
            yield task
        finally:
            self._depth -= 1
        count = f" ({task.done}/{total})" if total else ""
        self.stream.write(f"{indent}{description}: done{count} in {time.perf_counter() - start:.1f} s\n")
        self.stream.flush()


def silent() -> Progress:
    """A progress factory that shows nothing."""
    return Progress(verbosity=-1)
