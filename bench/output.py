"""results.json and the charts of a `bench` session."""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.charts import draw_charts
from bench.results import BenchResult


def _clean(value: Any) -> Any:
    """NaN and infinities (a figure not produced, a run without answers) as null: JSON has none."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    return value


def results_json(results: list[BenchResult], *, quick: bool) -> dict[str, Any]:
    return {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "cores": os.cpu_count(),
        "benchmarks": [_clean(result.to_json()) for result in results],
    }


def write_results(output: Path, results: list[BenchResult], *, quick: bool) -> list[Path]:
    """results.json and every chart the results have data for; the paths written."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / "results.json"
    path.write_text(json.dumps(results_json(results, quick=quick), indent=2, ensure_ascii=False))
    return [path, *draw_charts(output, results)]
