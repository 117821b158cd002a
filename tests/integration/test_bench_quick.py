"""`eventpipe bench --quick` as a user runs it: every figure, every process's CPU, the charts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eventpipe.local.stack import StackUrls

# One session of every benchmark: ingest on the test run's servers, the processor on its own.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

FIGURE_KEYS = {"name", "value", "unit", "limit", "limit_source", "ratio", "passed"}
EXPECTED = {
    "ingest": {
        "api CPU per event, batch 100",
        "broker CPU per record, batch 100",
        "api CPU per request, batch 1",
        "events/s, batch 1 x 256 connections",
        "p99, batch 100 paced at 0.5 x its max",
        "p99, batch 1 paced at 0.5 x its max",
        "records in the topic / events acknowledged",
    },
    "auth_check": {
        "auth check p99, verified token cached",
        "time the check adds per request (mean)",
    },
}
# The processor's figures carry its own labels (which limit is the slowest, which processor).
PROCESSOR_PREFIXES = ("processor >= ", "freshness p99, ")
# Every process the ingest runs involve, in the CPU accounting of each run through the api.
INGEST_PARTIES = {"api", "broker", "loadgen", "redis", "postgres", "others"}
CHARTS = ("throughput.png", "latency.png", "cpu_per_event.png", "freshness.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def bench_output(stack_urls: StackUrls, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One quick session on the test run's servers (found by their ports for the CPU)."""
    output = tmp_path_factory.mktemp("bench")
    env = {
        **os.environ,
        "EVENTPIPE_KAFKA_BOOTSTRAP": stack_urls.kafka_bootstrap,
        "EVENTPIPE_REDIS_URL": stack_urls.redis_url,
        "EVENTPIPE_DATABASE_URL": stack_urls.database_url,
    }
    # No names: every registered benchmark, as `eventpipe bench --quick` runs them.
    command = [sys.executable, "-m", "eventpipe", "bench", "--quick", "--output", str(output)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=800)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return output


def test_every_figure_has_value_limit_and_ratio(bench_output: Path) -> None:
    document = json.loads((bench_output / "results.json").read_text())
    found = {item["benchmark"]: item for item in document["benchmarks"]}
    assert set(found) == {*EXPECTED, "processor"}
    for name, expected in EXPECTED.items():
        figures = {figure["name"]: figure for figure in found[name]["figures"]}
        assert set(figures) == expected
        for figure in figures.values():
            assert set(figure) >= FIGURE_KEYS
            assert all(figure[key] is not None for key in ("value", "limit", "ratio")), figure
    assert found["ingest"]["lost"] == 0
    processor = found["processor"]["figures"]
    for prefix in PROCESSOR_PREFIXES:
        (figure,) = [f for f in processor if f["name"].startswith(prefix)]
        assert all(figure[key] is not None for key in ("value", "limit", "ratio")), figure
    # Events counted or archived other than once: the limit is 0, so there is no ratio.
    (exact,) = [f for f in processor if f["name"].startswith("exactly once, ")]
    assert (exact["value"], exact["limit"], exact["passed"]) == (0, 0, True)
    assert found["processor"]["lost"] == 0
    assert found["processor"]["series"]["freshness"], "no point of freshness against load"


def test_every_run_has_the_cpu_of_every_process(bench_output: Path) -> None:
    document = json.loads((bench_output / "results.json").read_text())
    ingest = next(item for item in document["benchmarks"] if item["benchmark"] == "ingest")
    through_api = [run for run in ingest["runs"] if run["batch"]]
    assert len(through_api) == 8
    for run in through_api:
        assert set(run["cpu_us_per_event"]) == INGEST_PARTIES, run["label"]
        assert len(run["processes"]["api"]) >= 2  # the supervisor and each worker
    raw = ingest["runs"][0]
    assert raw["cpu_us_per_event"]["broker"] > 0


def test_charts_are_png_files(bench_output: Path) -> None:
    for name in CHARTS:
        data = (bench_output / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, name
