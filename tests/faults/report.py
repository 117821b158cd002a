"""The latest tally of each fault scenario as a Markdown table, for docs/reliability.md:

uv run python -m tests.faults.report [results.jsonl]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.faults.checker import results_path

COLUMNS = ("sent", "acknowledged", "in_kafka", "counted", "archived", "duplicates", "lost")


def latest(path: Path) -> dict[str, dict[str, Any]]:
    """Each scenario's last recorded tally, in the order scenarios first appear."""
    found: dict[str, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        found[entry["scenario"]] = entry
    return found


def table(entries: dict[str, dict[str, Any]]) -> str:
    head = ["scenario", *(c.replace("_", " ") for c in COLUMNS), "refused", "timings (s)"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, entry in entries.items():
        refused = ", ".join(f"{k}: {v}" for k, v in sorted(entry["refused"].items())) or "none"
        timings = ", ".join(f"{k} {v:.1f}" for k, v in entry["timings"].items()) or ""
        cells = [name, *(str(entry[c]) for c in COLUMNS), refused, timings]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else results_path()
    sys.stdout.write(table(latest(path)) + "\n")


if __name__ == "__main__":
    main()
