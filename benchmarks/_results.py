"""Writing a benchmark's results: benchmarks/results/<name>.json and .md with the same header
(command, date, machine), shared by the benchmark scripts that compare us with SHELXL."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, command: str, title: str, body: list[str], fields: dict) -> dict:
    """Write results/<name>.json (command, date, machine, then `fields`) and results/<name>.md
    (`title`, the command line, then the `body` lines); returns the JSON summary."""
    summary = {
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        **fields,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=2, default=str))
    header = [f"# {title}", "", f"Command: `{command}`; date {summary['date']}; {summary['machine']['platform']}", ""]
    (RESULTS / f"{name}.md").write_text("\n".join(header + body) + "\n")
    return summary
