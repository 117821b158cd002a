"""The benchmarks `eventpipe bench` runs, by name, and what each is given.

Each entry names a module and a function `run_bench(options: BenchOptions) -> BenchResult`,
imported only when that benchmark is chosen: a benchmark's imports (FastAPI, the processor)
cost nothing to the others. A later benchmark registers by adding its line to BENCHMARKS.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.results import BenchResult

ENTRY = "run_bench"
# In the order they run; `eventpipe bench` with no names runs them all.
BENCHMARKS: dict[str, str] = {
    "ingest": "bench.ingest",
    "auth_check": "bench.auth_check",
    "processor": "bench.processor",
}


@dataclass(frozen=True)
class BenchOptions:
    """`quick`: short windows, no warm-ups; only that every figure is produced counts.
    `output`: the directory of results.json and the charts, for a benchmark's own files.
    `api_command`: how the api is served (argv), None for the ingest modules' default."""

    quick: bool
    output: Path
    api_command: tuple[str, ...] | None = None


Runner = Callable[[BenchOptions], BenchResult]


def runner(name: str) -> Runner:
    """The entry of the benchmark `name`; KeyError for a name not in BENCHMARKS."""
    module = importlib.import_module(BENCHMARKS[name])
    entry: Runner = getattr(module, ENTRY)
    return entry
