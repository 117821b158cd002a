"""No-op jobs: enqueued, drained by each worker, then paced."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from procrastinate.schema import SchemaManager

from bench.cpu import CpuUse
from bench.jobs.context import Context, drop_database, new_database, queue_app, worker_env
from bench.jobs.drain import JOB_TIMES, Paced, paced_pass, watch_drain
from bench.processor.rates import Rate
from bench.roles import start_role
from eventpipe.core.queue import Queue, Task
from eventpipe.migrations.runner import upgrade

NOOP = "noop"
BATCH = 1_000


def procrastinate_schema(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(SchemaManager.get_schema())


@dataclass(frozen=True)
class Kind:
    """A worker to measure: its command, its no-op task, and how its database is made."""

    label: str
    slug: str
    task: str
    command: tuple[str, ...]
    make_schema: Callable[[str], None]


KINDS = (
    Kind("Procrastinate alone", "minimal", NOOP, ("-m", "bench.jobs", "--run-minimal-worker"),
         procrastinate_schema),
    Kind("eventpipe worker", "eventpipe", Task.PING, ("-m", "eventpipe", "worker"), upgrade),
)  # fmt: skip


async def enqueue(database_url: str, task: str, count: int) -> tuple[Rate, Rate]:
    """`count` jobs, no worker running: a quarter one at a time (`defer_async`, a transaction
    each), the rest by `batch_defer_async` of BATCH jobs (one statement each)."""
    app = queue_app(database_url)
    async with app.open_async():
        deferrer = app.configure_task(task, queue=Queue.DEFAULT)
        single = count // 4
        started = time.perf_counter()
        for _ in range(single):
            await deferrer.defer_async()
        middle = time.perf_counter()
        for first in range(single, count, BATCH):
            await deferrer.batch_defer_async(*({} for _ in range(min(BATCH, count - first))))
        ended = time.perf_counter()
    return Rate(single, middle - started), Rate(count - single, ended - middle)


@dataclass(frozen=True)
class JobRun:
    one_by_one: Rate
    batched: Rate
    drain: Rate  # the backlog, first start to last finish (database clock)
    cpu: CpuUse  # CPU seconds of each party in the window below
    cpu_jobs: int  # jobs finished in that window
    cpu_window_s: float
    paced: Paced


def measure_jobs(ctx: Context, kind: Kind, turn: int) -> JobRun:
    name = f"bench_jobs_{kind.slug}_{turn}"
    url = new_database(ctx, name)
    kind.make_schema(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(JOB_TIMES)
    one, batched = asyncio.run(enqueue(url, kind.task, ctx.args.jobs))
    ctx.clock.say(f"{kind.label}: {ctx.args.jobs:,} jobs deferred; the worker drains them")
    log = ctx.tmp / f"worker-{kind.slug}-{turn}.log"
    process = start_role(kind.slug, list(kind.command), worker_env(ctx, url), log)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            drain = watch_drain(ctx, conn, kind.task, process)
            ctx.clock.say(f"{kind.label}: {ctx.args.paced:,} jobs paced at {ctx.args.pace:g}/s")
            paced = paced_pass(ctx, url, conn, kind.task, process)
    finally:
        process.stop(30)
    drop_database(ctx, name)
    return JobRun(one, batched, drain.rate, drain.cpu, drain.jobs, drain.window_s, paced)


def measure_all_jobs(ctx: Context) -> dict[str, list[JobRun]]:
    """`--repeat` rounds, the two workers in turns, so that each sees the same noise."""
    rounds: dict[str, list[JobRun]] = {kind.label: [] for kind in KINDS}
    for turn in range(ctx.args.repeat):
        for kind in KINDS:
            ctx.clock.say(f"no-op jobs, round {turn + 1} of {ctx.args.repeat}: {kind.label}")
            rounds[kind.label].append(measure_jobs(ctx, kind, turn))
    return rounds
