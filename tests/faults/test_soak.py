"""The nightly soak: the whole pipeline at half its maximum ingest rate for 10 minutes
(`python -m bench.soak`), with no error, each process's memory flat after warm-up and the
consumer lag bounded. Its figures, soak.json and soak.png land in test-artifacts/soak/, which
the nightly workflow uploads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench.soak_report import MAX_GROWTH, ROLES

pytestmark = [pytest.mark.nightly, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test-artifacts" / "soak"
MINUTES = 10


@pytest.fixture(scope="module")
def soak() -> dict[str, Any]:
    """One soak run's soak.json. Its printed figures go to this process's output (captured by
    pytest, shown with a failure, or live with `-s`)."""
    (OUT / "soak.json").unlink(missing_ok=True)
    command = [sys.executable, "-m", "bench.soak", "--minutes", str(MINUTES), "--out", str(OUT)]
    done = subprocess.run(command, cwd=ROOT, timeout=1700, check=False)
    assert (OUT / "soak.json").is_file(), f"the soak ended ({done.returncode}) with no results"
    found: dict[str, Any] = json.loads((OUT / "soak.json").read_text())
    # The same verdicts decide the exit status: a run that printed MISSED exits 1.
    assert done.returncode == (0 if found["ok"] else 1), done.returncode
    return found


def verdicts(soak: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {verdict["name"]: verdict for verdict in soak["verdicts"]}


def test_soak_has_no_error(soak: dict[str, Any]) -> None:
    errors = verdicts(soak)["errors"]
    assert errors["value"] == 0, errors["detail"]
    assert soak["soak"]["errors"] == {}, soak["soak"]["errors"]
    held = verdicts(soak)["load held"]
    assert held["ok"], held["detail"]


def test_soak_memory_is_flat_after_warm_up(soak: dict[str, Any]) -> None:
    memory = {name: v for name, v in verdicts(soak).items() if name.startswith("memory ")}
    assert {name.removeprefix("memory ") for name in memory} == set(ROLES)
    grown = {name: v["detail"] for name, v in memory.items() if not v["value"] < MAX_GROWTH}
    assert not grown, grown


def test_soak_lag_is_bounded_and_drains(soak: dict[str, Any]) -> None:
    found = verdicts(soak)
    worst = found["max lag"]
    assert worst["value"] < soak["lag_bound"], worst["detail"]
    assert found["lag at the end"]["value"] <= 0, found["lag at the end"]["detail"]
    assert found["nothing lost"]["ok"], found["nothing lost"]["detail"]


def test_soak_wrote_its_plot(soak: dict[str, Any]) -> None:
    assert soak["samples"] and (OUT / "soak.png").stat().st_size > 10_000
