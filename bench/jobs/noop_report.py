"""The no-op jobs' figures, eventpipe's worker beside Procrastinate alone."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable

from bench.cpu import OTHERS
from bench.jobs.context import CONCURRENCY, cores_text, quantile
from bench.jobs.noop import BATCH, JobRun


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def _per_job(run: JobRun, name: str) -> str:
    return f"{run.cpu.seconds.get(name, 0.0) / max(run.cpu_jobs, 1) * 1e6:,.0f}"


_JOB_LINES: tuple[tuple[str, Callable[[JobRun], str], bool], ...] = (
    # (label, cell, whether the ratio eventpipe / alone means something: enqueueing is the same
    # library call into the same queue schema, so there it only measures the noise)
    ("enqueue one at a time (defer_async), jobs/s", lambda r: f"{r.one_by_one.per_s:,.0f}",
     False),
    (f"enqueue in batches of {BATCH:,} (batch_defer_async), jobs/s",
     lambda r: f"{r.batched.per_s:,.0f}", False),
    ("backlog drained, first start to last finish, jobs/s", lambda r: f"{r.drain.per_s:,.0f}",
     True),
    ("  CPU per job: the worker, us", lambda r: _per_job(r, "worker"), True),
    ("  CPU per job: PostgreSQL (whole server), us", lambda r: _per_job(r, "postgres"), True),
    ("  cores busy meanwhile: ours / other processes",
     lambda r: cores_text(r.cpu, r.cpu_window_s), False),
    ("paced, one at a time: rate achieved, jobs/s", lambda r: f"{r.paced.rate.per_s:,.0f}",
     False),
    ("  enqueue to start, p50, ms", lambda r: _ms(quantile(r.paced.delays_s, 0.5)), True),
    ("  enqueue to start, p99, ms", lambda r: _ms(quantile(r.paced.delays_s, 0.99)), True),
    ("  enqueue to start, max, ms", lambda r: _ms(quantile(r.paced.delays_s, 1.0)), True),
    ("  most jobs waiting at once (more: queueing)", lambda r: f"{r.paced.most_waiting:,}",
     False),
    ("  defer_async call, p50 / p99, ms",
     lambda r: f"{_ms(quantile(r.paced.defer_s, 0.5))} / {_ms(quantile(r.paced.defer_s, 0.99))}",
     False),
)  # fmt: skip


def _number(cell: str) -> float | None:
    with contextlib.suppress(ValueError):
        return float(cell.replace(",", ""))
    return None


def report_jobs(args: argparse.Namespace, rounds: dict[str, list[JobRun]]) -> None:
    """Other jobs on a shared machine only slow a run down: the round with the fastest drain
    is the one they disturbed least, and is shown whole; every round's drain is listed."""
    print("\nno-op jobs, every round: backlog drained, jobs/s (cores other processes took)")
    for label, runs in rounds.items():
        cells = "  ".join(
            f"{r.drain.per_s:>7,.0f} ({r.cpu.seconds.get(OTHERS, 0.0) / r.cpu_window_s:.2f})"
            for r in runs
        )
        print(f"  {label:<24}{cells}")
    best = {label: max(runs, key=lambda r: r.drain.per_s) for label, runs in rounds.items()}
    ours, limit = best["eventpipe worker"], best["Procrastinate alone"]
    print(
        f"\nno-op jobs: a backlog of {args.jobs:,}, then {args.paced:,} paced at {args.pace:g}/s; "
        f"one worker process, {CONCURRENCY} at a time; each worker's best round\n"
        f"{'':<56}{'eventpipe':>12}{'limit: alone':>14}{'ratio':>8}"
    )
    for label, cell, ratio in _JOB_LINES:
        a, b = cell(ours), cell(limit)
        x, y = _number(a), _number(b)
        shown = f"{x / y:>8.2f}" if ratio and x is not None and y else ""
        print(f"  {label:<54}{a:>12}{b:>14}{shown}")
