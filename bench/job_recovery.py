"""How long the job of a SIGKILLed worker waits before it runs again, with the default clocks.

docs/jobs.md promises stale + sweep + poll = 30 + 15 + 5 = 50 s: the heartbeat of a killed worker
goes stale after 30 s, the sweep of a live worker (every 15 s) hands its job back, and an idle
worker polls for it within 5 s. Each round runs an export on one worker, starts a second, kills
the first in the middle of the export (SIGKILL), and times the kill to the second attempt's start.

    uv run python -m bench.job_recovery [--rounds 3] [--rows 600000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from sqlalchemy.ext.asyncio import AsyncSession

from bench.harness import run_in_tmp
from bench.jobs.archive import Dataset, fill_dataset
from bench.jobs.context import Context, queue_app, worker_env
from bench.roles import Clock, start_role, wait_ready
from eventpipe.core.config import Settings
from eventpipe.core.db import async_engine
from eventpipe.domain.exports import ExportCreate, create_export
from eventpipe.exports.formats import ExportFormat
from eventpipe.local.postgres import start_postgres
from eventpipe.local.process import ManagedProcess
from eventpipe.local.redis import start_redis

DEFAULTS = Settings.model_fields
BOUND_S = (
    DEFAULTS["worker_stale_after_s"].default
    + DEFAULTS["worker_sweep_every_s"].default
    + DEFAULTS["worker_poll_s"].default
)


async def export_of(data: Dataset, round_no: int) -> uuid.UUID:
    """A new export each round (its own `to`, so not the same inputs as the last)."""
    end = datetime.now(UTC) + timedelta(days=1, minutes=round_no)
    engine, app = async_engine(data.url), queue_app(data.url)
    try:
        async with app.open_async(), AsyncSession(engine, expire_on_commit=False) as session:
            made = await create_export(
                session, app, project_id=data.project_id, user_id=data.user_id,
                body=ExportCreate(format=ExportFormat.NDJSON, end=end),
            )  # fmt: skip
            return made.id
    finally:
        await engine.dispose()


def state_of(data: Dataset, export_id: uuid.UUID) -> tuple[str, int, int]:
    with psycopg.connect(data.url) as conn:
        row = conn.execute(
            "SELECT state, attempts, rows_written FROM exports WHERE id = %s", (export_id,)
        ).fetchone()
    if row is None:
        raise RuntimeError(f"export {export_id} is gone")
    return str(row[0]), int(row[1]), int(row[2])


def wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def started_worker(ctx: Context, data: Dataset, name: str) -> ManagedProcess:
    env = worker_env(ctx, data.url)
    process = start_role("worker", ["-m", "eventpipe", "worker"], env, ctx.tmp / f"{name}.log")
    wait_ready(process, f"http://127.0.0.1:{env['EVENTPIPE_WORKER_METRICS_PORT']}/readyz")
    return process


def one_round(ctx: Context, data: Dataset, round_no: int) -> float:
    first = started_worker(ctx, data, f"worker-{round_no}-a")
    second: ManagedProcess | None = None
    try:
        export_id = asyncio.run(export_of(data, round_no))
        wait(lambda: state_of(data, export_id)[2] > 0, 120, "rows written")
        second = started_worker(ctx, data, f"worker-{round_no}-b")
        state, attempts, rows = state_of(data, export_id)
        if state != "running" or attempts != 1:
            raise RuntimeError(f"the export finished before the kill ({state}, {rows} rows)")
        first.popen.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        wait(lambda: state_of(data, export_id)[1] >= 2, 5 * BOUND_S, "the second attempt")
        recovered = time.monotonic() - killed
        ctx.clock.say(
            f"round {round_no}: killed at {rows:,} rows, running again {recovered:.1f} s later"
        )
        wait(lambda: state_of(data, export_id)[0] == "succeeded", 600, "the export")
        return recovered
    finally:
        first.stop(10)
        if second is not None:
            second.stop(60)


def run(args: argparse.Namespace, tmp: Path) -> bool:
    clock = Clock()
    with contextlib.ExitStack() as stack:
        redis_url, redis_process = start_redis(tmp / "stack")
        stack.callback(redis_process.stop, 30)
        cluster_url, postgres = start_postgres(tmp / "stack")
        stack.callback(postgres.stop, 60)
        servers = {"redis": redis_process.pid, "postgres": postgres.pid}
        ctx = Context(args, tmp, clock, cluster_url, redis_url, servers)
        clock.say(f"filling an archive of {args.rows:,} rows")
        data = fill_dataset(ctx, args.rows)
        times = [one_round(ctx, data, n) for n in range(1, args.rounds + 1)]
    print(f"\nSIGKILL to the job's next attempt, default clocks, {args.rounds} rounds")
    print(f"  each, s: {', '.join(f'{t:.1f}' for t in times)}")
    print(f"  median {statistics.median(times):.1f} s, max {max(times):.1f} s;"
          f" limit: stale + sweep + poll = {BOUND_S:.0f} s")  # fmt: skip
    return bool(max(times) <= BOUND_S)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--rows", type=int, default=600_000, help="enough for an export to outlive the kill"
    )
    parser.add_argument("--logs", type=Path, help="copy the workers' logs to this directory")
    args = parser.parse_args()
    run_in_tmp("eventpipe-bench-recovery-", args.logs, lambda tmp: run(args, tmp))


if __name__ == "__main__":
    main()
