"""When each no-op job was deferred, started and finished, by the database's clock."""

from __future__ import annotations

import asyncio
import bisect
import time
from dataclasses import dataclass

from bench.cpu import CpuUse, cpu_between
from bench.jobs.context import Conn, Context, queue_app, wait_for
from bench.processor.rates import Rate
from eventpipe.core.queue import Queue
from eventpipe.local.process import ManagedProcess

# clock_timestamp(), not now(): the time of the statement, not of its transaction's start. A
# job is started when a worker's fetch moves it to `doing`, finished when the worker deletes it.
JOB_TIMES = """
CREATE TABLE bench_job_times (job_id bigint PRIMARY KEY, task_name text NOT NULL,
    deferred_at timestamptz NOT NULL, started_at timestamptz, finished_at timestamptz);
CREATE FUNCTION bench_job_deferred() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    INSERT INTO bench_job_times (job_id, task_name, deferred_at)
        VALUES (NEW.id, NEW.task_name, clock_timestamp());
    RETURN NULL; END $$;
CREATE FUNCTION bench_job_started() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    UPDATE bench_job_times SET started_at = clock_timestamp() WHERE job_id = NEW.job_id;
    RETURN NULL; END $$;
CREATE FUNCTION bench_job_finished() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    UPDATE bench_job_times SET finished_at = clock_timestamp() WHERE job_id = OLD.id;
    RETURN NULL; END $$;
CREATE TRIGGER bench_job_deferred AFTER INSERT ON procrastinate_jobs
    FOR EACH ROW EXECUTE FUNCTION bench_job_deferred();
CREATE TRIGGER bench_job_started AFTER INSERT ON procrastinate_events
    FOR EACH ROW WHEN (NEW.type = 'started') EXECUTE FUNCTION bench_job_started();
CREATE TRIGGER bench_job_finished AFTER DELETE ON procrastinate_jobs
    FOR EACH ROW EXECUTE FUNCTION bench_job_finished();
"""


async def pace(database_url: str, task: str, count: int, per_s: float) -> tuple[Rate, list[float]]:
    """`count` jobs one at a time on a fixed schedule; the seconds each `defer_async` took."""
    app = queue_app(database_url)
    calls: list[float] = []
    async with app.open_async():
        deferrer = app.configure_task(task, queue=Queue.DEFAULT)
        started = time.perf_counter()
        for n in range(count):
            wait = started + n / per_s - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            before = time.perf_counter()
            await deferrer.defer_async()
            calls.append(time.perf_counter() - before)
        seconds = time.perf_counter() - started
    return Rate(count, seconds), sorted(calls)


def progress(conn: Conn, task: str) -> tuple[int, int]:
    """Jobs of `task` started, and finished."""
    row = conn.execute(
        "SELECT count(started_at), count(finished_at) FROM bench_job_times WHERE task_name = %s",
        (task,),
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


@dataclass(frozen=True)
class Drain:
    rate: Rate
    cpu: CpuUse
    jobs: int
    window_s: float


def watch_drain(ctx: Context, conn: Conn, task: str, process: ManagedProcess) -> Drain:
    """From the first job started to the last finished; CPU from the first start seen on, so
    the worker's own start (imports, connections) is not counted."""
    count = ctx.args.jobs
    wait_for(lambda: progress(conn, task)[0] > 0, process, 60, "a first job started")
    meter = ctx.meter(process.pid)
    cpu_before = meter.sample()
    started, before = time.perf_counter(), progress(conn, task)[1]
    wait_for(lambda: progress(conn, task)[1] >= count, process, 60 + count / 20,
             f"{count:,} jobs finished")  # fmt: skip
    cpu, window = cpu_between(cpu_before, meter.sample()), time.perf_counter() - started
    row = conn.execute(
        "SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM bench_job_times "
        "WHERE task_name = %s",
        (task,),
    ).fetchone()
    seconds = float(row[0]) if row and row[0] is not None else 0.0
    return Drain(Rate(count, seconds), cpu, count - before, window)


@dataclass(frozen=True)
class Paced:
    rate: Rate  # as achieved
    defer_s: list[float]  # each `defer_async` call, sorted
    delays_s: list[float]  # each job's enqueue to start, sorted
    most_waiting: int  # the most jobs deferred and not yet started at one time


def most_waiting(times: list[tuple[float, float]]) -> int:
    """Of (deferred, started) pairs: the longest the queue got, seen at each deferral."""
    starts = sorted(started for _, started in times)
    return max(
        (n + 1 - bisect.bisect_right(starts, deferred)
         for n, (deferred, _) in enumerate(sorted(times))),
        default=0,
    )  # fmt: skip


def paced_pass(ctx: Context, url: str, conn: Conn, task: str, process: ManagedProcess) -> Paced:
    """Jobs deferred one at a time on a schedule, the worker idle: enqueue-to-start delays."""
    args = ctx.args
    last = conn.execute(
        "SELECT coalesce(max(job_id), 0) FROM bench_job_times WHERE task_name = %s", (task,)
    ).fetchone()
    rate, calls = asyncio.run(pace(url, task, args.paced, args.pace))
    wait_for(lambda: progress(conn, task)[1] >= args.jobs + args.paced, process,
             60 + args.paced / 20, "the paced jobs finished")  # fmt: skip
    rows = conn.execute(
        "SELECT extract(epoch FROM deferred_at), extract(epoch FROM started_at) "
        "FROM bench_job_times WHERE task_name = %s AND job_id > %s",
        (task, last[0] if last else 0),
    ).fetchall()
    times = [(float(deferred), float(started)) for deferred, started in rows]
    delays = sorted(started - deferred for deferred, started in times)
    return Paced(rate, calls, delays, most_waiting(times))
