"""No-op jobs and exports through `eventpipe worker`, each beside its limit, in one run.

`uv run python -m bench.jobs` (see bench/README.md). It starts Redis and PostgreSQL with
eventpipe.local in a temporary directory, then measures on them:

- no-op jobs through `eventpipe worker` (its `ping` task) and through Procrastinate's own minimal
  example (one `noop` task, `run_worker_async(concurrency=4, delete_jobs="successful")`), each on
  a fresh database: the enqueue rate, the rate at which the worker drains a backlog, and the delay
  from enqueue to start at a paced rate. The times come from triggers the benchmark adds to the
  queue's tables (the worker deletes a succeeded job, and its events with it);
- exports: for each row count, a fresh database with that many archived events of one project,
  then one export per format, each through a fresh `eventpipe worker` (rows/s, file size, the
  worker's peak RSS and CPU, PostgreSQL's CPU), beside `COPY (the same query) TO STDOUT` and the
  fetch and the writer alone on a sample of the rows.

Every process it started is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import io
import logging
import os
import re
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import procrastinate
import psycopg
from procrastinate.schema import SchemaManager
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from bench.processor import Clock, CpuMeter, Rate, run_in_tmp, start_role, wait_ready
from bench.queries import Span, fill_day, open_generator
from eventpipe.auth.admin import create_user_sync
from eventpipe.core.config import Settings
from eventpipe.core.db import async_engine
from eventpipe.core.queue import Queue, Task, build_app
from eventpipe.domain.exports import ExportCreate, create_export, event_filter, normalised_inputs
from eventpipe.domain.projects import create_project
from eventpipe.domain.search import COLUMNS, export_query
from eventpipe.exports.formats import ExportFormat, extension, open_writer
from eventpipe.local.postgres import start_postgres
from eventpipe.local.process import ManagedProcess, free_port
from eventpipe.local.redis import start_redis
from eventpipe.migrations.runner import upgrade

NOOP = "noop"
CONCURRENCY = 4
BATCH = 1_000
USERS = 100_000
EXPORT_BATCH = Settings.model_fields["export_batch_rows"].default
# "Constant memory whatever the row count": the largest export's peak within this of the smallest's.
MEMORY_TOLERANCE = 0.10
_QUIET_ENV = {"EVENTPIPE_LOG_LEVEL": "WARNING"}

# ---------------------------------------------------------------------------------------------
# Servers, databases and workers.


@dataclass
class Context:
    args: argparse.Namespace
    tmp: Path
    clock: Clock
    cluster_url: str  # the server's `eventpipe` database: a base for the others
    redis_url: str
    servers: dict[str, int | None]

    def database(self, name: str) -> str:
        return f"{self.cluster_url.rpartition('/')[0]}/{name}"

    def meter(self, worker: int) -> CpuMeter:
        return CpuMeter({**self.servers, "worker": worker})


def new_database(ctx: Context, name: str) -> str:
    with psycopg.connect(ctx.database("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return ctx.database(name)


def drop_database(ctx: Context, name: str) -> None:
    """Gone once measured: ten million rows are gigabytes the next size needs."""
    with psycopg.connect(ctx.database("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def worker_env(ctx: Context, database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        **_QUIET_ENV,
        "EVENTPIPE_DATABASE_URL": database_url,
        "EVENTPIPE_REDIS_URL": ctx.redis_url,
        "EVENTPIPE_WORKER_CONCURRENCY": str(CONCURRENCY),
        "EVENTPIPE_WORKER_METRICS_PORT": str(free_port()),
        "EVENTPIPE_STATE_DIR": str(ctx.tmp / "role-state"),
        "EVENTPIPE_EXPORT_DIR": str(ctx.tmp / "exports"),
    }


def run_minimal_worker() -> None:
    """Procrastinate's own minimal example, in a child process: one no-op task, its worker with
    the library's defaults but eventpipe's concurrency and deletion of succeeded jobs."""
    logging.basicConfig(level=logging.WARNING)
    # It warns of an app made in `__main__` (where a worker elsewhere could not import its
    # tasks): here the one worker is this process.
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=os.environ["EVENTPIPE_DATABASE_URL"])
    )

    @app.task(name=NOOP)
    async def noop() -> None:
        pass

    async def work() -> None:
        async with app.open_async():
            await app.run_worker_async(concurrency=CONCURRENCY, delete_jobs="successful")

    asyncio.run(work())


def queue_app(database_url: str) -> procrastinate.App:
    """An app that only defers, as the api's: one connection."""
    return build_app(Settings(database_url=database_url), pool_size=1)


def memory_kib(pid: int) -> dict[str, int]:
    """VmHWM (peak RSS) and VmRSS of a live process, from /proc."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            found[name] = int(value.split()[0])
    return found


def wait_for(check: Callable[[], bool], process: ManagedProcess, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if not process.alive():
            raise process.failure(f"exited with status {process.popen.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)


def quantile(values: Sequence[float], q: float) -> float:
    """Of sorted `values`: the nearest rank."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


# ---------------------------------------------------------------------------------------------
# No-op jobs: when each was deferred, started and finished, by the database's clock.

# clock_timestamp(), not now(): the time of the statement, not of its transaction's start. A
# job is started when a worker's fetch moves it to `doing`, finished when the worker deletes it.
_TIMES = """
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


Conn = psycopg.Connection[tuple[Any, ...]]


def progress(conn: Conn, task: str) -> tuple[int, int]:
    """Jobs of `task` started, and finished."""
    row = conn.execute(
        "SELECT count(started_at), count(finished_at) FROM bench_job_times WHERE task_name = %s",
        (task,),
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


@dataclass(frozen=True)
class JobRun:
    one_by_one: Rate
    batched: Rate
    drain: Rate  # the backlog, first start to last finish (database clock)
    cpu: dict[str, float]  # CPU seconds of each process tree in the window below
    cpu_jobs: int  # jobs finished in that window
    cpu_window_s: float
    paced: Paced


@dataclass(frozen=True)
class Drain:
    rate: Rate
    cpu: dict[str, float]
    jobs: int
    window_s: float


def watch_drain(ctx: Context, conn: Conn, task: str, process: ManagedProcess) -> Drain:
    """From the first job started to the last finished; CPU from the first start seen on, so
    the worker's own start (imports, connections) is not counted."""
    count = ctx.args.jobs
    wait_for(lambda: progress(conn, task)[0] > 0, process, 60, "a first job started")
    meter = ctx.meter(process.pid)
    meter.start()
    started, before = time.perf_counter(), progress(conn, task)[1]
    wait_for(lambda: progress(conn, task)[1] >= count, process, 60 + count / 20,
             f"{count:,} jobs finished")  # fmt: skip
    cpu, window = meter.stop(), time.perf_counter() - started
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


def measure_jobs(ctx: Context, kind: Kind, turn: int) -> JobRun:
    name = f"bench_jobs_{kind.slug}_{turn}"
    url = new_database(ctx, name)
    kind.make_schema(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_TIMES)
    one, batched = asyncio.run(enqueue(url, kind.task, ctx.args.jobs))
    ctx.clock.say(f"{kind.label}: {ctx.args.jobs:,} jobs deferred; the worker drains them")
    log = ctx.tmp / f"worker-{kind.slug}-{turn}.log"
    process = start_role(list(kind.command), worker_env(ctx, url), log)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            drain = watch_drain(ctx, conn, kind.task, process)
            ctx.clock.say(f"{kind.label}: {ctx.args.paced:,} jobs paced at {ctx.args.pace:g}/s")
            paced = paced_pass(ctx, url, conn, kind.task, process)
    finally:
        process.stop(30)
    drop_database(ctx, name)
    return JobRun(one, batched, drain.rate, drain.cpu, drain.jobs, drain.window_s, paced)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def _per_job(run: JobRun, name: str) -> str:
    return f"{run.cpu.get(name, 0.0) / max(run.cpu_jobs, 1) * 1e6:,.0f}"


def _cores(cpu: dict[str, float], window_s: float) -> str:
    ours = sum(v for k, v in cpu.items() if k != "other")
    return f"{ours / window_s:.2f} / {cpu.get('other', 0.0) / window_s:.2f}"


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
     lambda r: _cores(r.cpu, r.cpu_window_s), False),
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


def measure_all_jobs(ctx: Context) -> dict[str, list[JobRun]]:
    """`--repeat` rounds, the two workers in turns, so that each sees the same noise."""
    rounds: dict[str, list[JobRun]] = {kind.label: [] for kind in KINDS}
    for turn in range(ctx.args.repeat):
        for kind in KINDS:
            ctx.clock.say(f"no-op jobs, round {turn + 1} of {ctx.args.repeat}: {kind.label}")
            rounds[kind.label].append(measure_jobs(ctx, kind, turn))
    return rounds


def report_jobs(args: argparse.Namespace, rounds: dict[str, list[JobRun]]) -> None:
    """Other jobs on a shared machine only slow a run down: the round with the fastest drain
    is the one they disturbed least, and is shown whole; every round's drain is listed."""
    print("\nno-op jobs, every round: backlog drained, jobs/s (cores other processes took)")
    for label, runs in rounds.items():
        cells = "  ".join(
            f"{r.drain.per_s:>7,.0f} ({r.cpu.get('other', 0.0) / r.cpu_window_s:.2f})" for r in runs
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


# ---------------------------------------------------------------------------------------------
# Exports: the archive, one export per format, its limits.


@dataclass(frozen=True)
class Dataset:
    name: str
    url: str
    rows: int
    project_id: uuid.UUID
    user_id: uuid.UUID
    row_bytes: float  # in PostgreSQL (pg_column_size)
    json_bytes: float  # the exported columns as one JSON object
    document_bytes: float  # properties, traits and context as JSON text


def make_owner(database_url: str) -> tuple[uuid.UUID, uuid.UUID]:
    """A user and a project of theirs: the export's owner and its rows' project."""
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    settings = Settings(database_url=database_url)
    user_id = create_user_sync(settings, email=email, password=secrets.token_urlsafe(16))

    async def project() -> uuid.UUID:
        engine = async_engine(database_url)
        try:
            async with AsyncSession(engine, expire_on_commit=False) as session:
                made = await create_project(session, owner_id=user_id, name="bench exports")
                await session.commit()
                return made.id
        finally:
            await engine.dispose()

    return user_id, asyncio.run(project())


_EXPORTED = ", ".join(f'e."{c}"' for c in COLUMNS)
# A sample of rows: in PostgreSQL, as one JSON object of the exported columns, and the JSON
# documents alone.
_ROW_SIZES = (
    "SELECT avg(pg_column_size(e.*)), avg(octet_length(row_to_json(x)::text)), "  # noqa: S608 - fixed names
    "avg(octet_length(coalesce(e.properties::text, '')) "
    "+ octet_length(coalesce(e.traits::text, '')) + octet_length(coalesce(e.context::text, ''))) "
    f"FROM (SELECT * FROM events LIMIT 20000) e CROSS JOIN LATERAL (SELECT {_EXPORTED}) x"
)


def fill_dataset(ctx: Context, rows: int) -> Dataset:
    """`rows` events of one project on yesterday's partition, made as bench.queries makes its
    own (track, page and identify events, a context object each), indexed and vacuumed."""
    name = f"bench_jobs_export_{rows}"
    url = new_database(ctx, name)
    upgrade(url)
    user_id, project_id = make_owner(url)
    day = datetime.now(UTC).date() - timedelta(days=1)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    span = Span(start, start + timedelta(days=1), rows, str(project_id), None, 0)
    with open_generator(url) as conn:
        fill_day(conn, day, span, USERS)
        # Hint bits and statistics now, not during the first measure that reads the rows.
        conn.execute("VACUUM (ANALYZE) events")
        sizes = conn.execute(_ROW_SIZES).fetchone()
    assert sizes is not None  # noqa: S101 - an aggregate always has its row
    pg, js, docs = (float(v) for v in sizes)
    return Dataset(name, url, rows, project_id, user_id, pg, js, docs)


@dataclass(frozen=True)
class ExportRun:
    rows: int
    seconds: float  # the export row's started_at to finished_at
    size_bytes: int
    idle_kib: int  # the worker's peak RSS once ready, before the export
    peak_kib: int
    cpu: dict[str, float]
    window_s: float

    @property
    def per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


async def request_export(data: Dataset, fmt: ExportFormat) -> uuid.UUID:
    """The export row and its job, as the api's handler makes them."""
    engine, app = async_engine(data.url), queue_app(data.url)
    try:
        async with app.open_async(), AsyncSession(engine, expire_on_commit=False) as session:
            export = await create_export(
                session, app, project_id=data.project_id, user_id=data.user_id,
                body=ExportCreate(format=fmt),
            )  # fmt: skip
            return export.id
    finally:
        await engine.dispose()


def wait_export(data: Dataset, export_id: uuid.UUID, process: ManagedProcess) -> tuple[Any, ...]:
    with psycopg.connect(data.url, autocommit=True) as conn:

        def state() -> str:
            row = conn.execute("SELECT state FROM exports WHERE id = %s", (export_id,)).fetchone()
            return str(row[0]) if row else "missing"

        timeout = 120 + data.rows / 2_000
        wait_for(lambda: state() in {"succeeded", "failed"}, process, timeout, "the export")
        row = conn.execute(
            "SELECT state, rows_written, size_bytes, "
            "extract(epoch FROM finished_at - started_at), error FROM exports WHERE id = %s",
            (export_id,),
        ).fetchone()
    if row is None or row[0] != "succeeded":
        raise RuntimeError(f"export {export_id} failed: {row[4] if row else 'no row'}")
    return tuple(row)


def measure_export(ctx: Context, data: Dataset, fmt: ExportFormat) -> ExportRun:
    """One export through a fresh worker, so its peak RSS is this export's."""
    env = worker_env(ctx, data.url)
    log = ctx.tmp / f"export-{data.rows}-{fmt.value}.log"
    process = start_role(["-m", "eventpipe", "worker"], env, log)
    try:
        wait_ready(process, f"http://127.0.0.1:{env['EVENTPIPE_WORKER_METRICS_PORT']}/readyz")
        idle = memory_kib(process.pid)["VmHWM"]
        meter = ctx.meter(process.pid)
        meter.start()
        started = time.perf_counter()
        export_id = asyncio.run(request_export(data, fmt))
        _, rows, size, seconds, _ = wait_export(data, export_id, process)
        cpu, window = meter.stop(), time.perf_counter() - started
        peak = memory_kib(process.pid)["VmHWM"]
    finally:
        process.stop(60)
    (Path(env["EVENTPIPE_EXPORT_DIR"]) / f"{export_id}{extension(fmt)}").unlink(missing_ok=True)
    return ExportRun(int(rows), float(seconds), int(size), idle, peak, cpu, window)


def the_query(data: Dataset) -> tuple[str, dict[str, Any]]:
    """The statement an export of every row runs (`to` now, to the minute), and its params."""
    inputs = normalised_inputs(ExportCreate(format=ExportFormat.NDJSON), now=datetime.now(UTC))
    return export_query(data.project_id, event_filter(inputs))


def plan_of(conn: Conn, statement: str, params: dict[str, Any]) -> str:
    """The plan's nodes, outermost first, on one line."""
    cursor = psycopg.ClientCursor(conn)
    lines = [str(r[0]) for r in cursor.execute(f"EXPLAIN (COSTS OFF) {statement}", params)]
    nodes = [line.strip().removeprefix("->").strip() for line in lines if ":" not in line]
    return " < ".join(nodes)


@dataclass
class Limits:
    copy: Rate = field(default_factory=lambda: Rate(0, 0.0))
    copy_bytes: int = 0
    fetch: Rate = field(default_factory=lambda: Rate(0, 0.0))
    writers: dict[str, Rate] = field(default_factory=dict)
    plans: tuple[str, str, str] = ("", "", "")  # the cursor's, the COPY's as run and as planned


def copy_limit(ctx: Context, data: Dataset, limits: Limits) -> None:
    """`COPY (the export's query) TO STDOUT` read into nothing: the rows/s PostgreSQL hands
    out at all, by the plan the export's cursor gets."""
    query, params = the_query(data)
    statement = re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", query)
    with psycopg.connect(data.url) as conn:
        cursor_plan = plan_of(conn, f"DECLARE bench CURSOR FOR {statement}", params)
        planned = plan_of(conn, statement, params)
        if planned != cursor_plan:
            # A cursor is planned for its first rows (index scans in order), a COPY for all of
            # them (it may sort a sequential scan): the export cannot take the COPY's plan.
            conn.execute("SET enable_seqscan = off")
            conn.execute("SET enable_sort = off")
        limits.plans = (cursor_plan, plan_of(conn, statement, params), planned)
        cursor, lines, size = psycopg.ClientCursor(conn), 0, 0
        meter = CpuMeter(ctx.servers)
        meter.start()
        started = time.perf_counter()
        with cursor.copy(f"COPY ({statement}) TO STDOUT", params) as copy:
            for chunk in copy:
                data_bytes = bytes(chunk)
                lines += data_bytes.count(b"\n")
                size += len(data_bytes)
        limits.copy = Rate(lines, time.perf_counter() - started, meter.stop())
        limits.copy_bytes = size


async def fetch_sample(data: Dataset, limit: int) -> tuple[list[tuple[Any, ...]], Rate]:
    """The first `limit` rows as the export reads them: SQLAlchemy's stream over a server-side
    cursor, EXPORT_BATCH at a time, each row made a tuple."""
    query, params = the_query(data)
    engine, rows = async_engine(data.url), list[tuple[Any, ...]]()
    statement = text(f"{query} LIMIT :bench_limit").execution_options(yield_per=EXPORT_BATCH)
    try:
        async with engine.connect() as connection:
            started, cpu = time.perf_counter(), time.process_time()
            result = await connection.stream(statement, {**params, "bench_limit": limit})
            async for part in result.partitions(EXPORT_BATCH):
                rows.extend(tuple(row) for row in part)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await engine.dispose()
    return rows, Rate(len(rows), seconds, {"bench": cpu})


def writer_limit(rows: list[tuple[Any, ...]], fmt: ExportFormat) -> Rate:
    """The format's writer alone on rows already fetched, EXPORT_BATCH at a time."""
    sink = io.BytesIO()
    started, cpu = time.perf_counter(), time.process_time()
    writer = open_writer(fmt, sink)
    for first in range(0, len(rows), EXPORT_BATCH):
        writer.write(rows[first : first + EXPORT_BATCH])
    writer.close()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return Rate(len(rows), seconds, {"bench": cpu})


def measure_limits(ctx: Context, data: Dataset, formats: list[ExportFormat]) -> Limits:
    limits = Limits()
    copy_limit(ctx, data, limits)
    sample, limits.fetch = asyncio.run(fetch_sample(data, min(data.rows, ctx.args.sample_rows)))
    limits.writers = {fmt.value: writer_limit(sample, fmt) for fmt in formats}
    return limits


@dataclass
class ExportResults:
    datasets: list[Dataset] = field(default_factory=list)
    limits: dict[int, Limits] = field(default_factory=dict)
    runs: dict[tuple[int, str], ExportRun] = field(default_factory=dict)


def measure_exports(ctx: Context, formats: list[ExportFormat]) -> ExportResults:
    results = ExportResults()
    for rows in ctx.args.rows:
        ctx.clock.say(f"exports: filling an archive of {rows:,} rows")
        data = fill_dataset(ctx, rows)
        results.datasets.append(data)
        for fmt in formats:
            ctx.clock.say(f"exports: {rows:,} rows as {fmt.value} through a fresh worker")
            results.runs[(rows, fmt.value)] = measure_export(ctx, data, fmt)
        ctx.clock.say(f"exports: the limits on {rows:,} rows")
        results.limits[rows] = measure_limits(ctx, data, formats)
        drop_database(ctx, data.name)
    return results


def _serial(fetch: Rate, write: Rate) -> float:
    """Rows/s of fetching then writing each batch, one after the other, as the export does."""
    if not fetch.per_s or not write.per_s:
        return 0.0
    return 1 / (1 / fetch.per_s + 1 / write.per_s)


def _mb(kib: float) -> str:
    return f"{kib / 1024:,.0f}"


def _export_lines(fmt: str) -> list[tuple[str, Callable[[ExportRun, Limits], str]]]:
    return [
        ("export, rows/s (its started_at to finished_at)", lambda r, _: f"{r.per_s:,.0f}"),
        ("limit: COPY (the same query) TO STDOUT, rows/s", lambda _, m: f"{m.copy.per_s:,.0f}"),
        ("  export / COPY", lambda r, m: f"{r.per_s / m.copy.per_s:.2f}" if m.copy.per_s else "-"),
        ("  COPY: PostgreSQL CPU per row (whole server), us",
         lambda _, m: f"{m.copy.cpu.get('postgres', 0) / max(m.copy.events, 1) * 1e6:.1f}"),
        ("limit: fetch alone, SQLAlchemy stream (sample), rows/s",
         lambda _, m: f"{m.fetch.per_s:,.0f}"),
        (f"limit: the {fmt} writer alone (sample), rows/s",
         lambda _, m: f"{m.writers[fmt].per_s:,.0f}"),
        ("  fetch then write, one after the other, rows/s",
         lambda _, m: f"{_serial(m.fetch, m.writers[fmt]):,.0f}"),
        ("file, MB", lambda r, _: f"{r.size_bytes / 1e6:,.1f}"),
        ("  bytes per row", lambda r, _: f"{r.size_bytes / max(r.rows, 1):,.0f}"),
        ("worker peak RSS (VmHWM) after the export, MB", lambda r, _: _mb(r.peak_kib)),
        ("  its peak RSS once ready, before it, MB", lambda r, _: _mb(r.idle_kib)),
        ("worker CPU per row, us", lambda r, _: f"{r.cpu.get('worker', 0) / r.rows * 1e6:.1f}"),
        ("PostgreSQL CPU per row (whole server), us",
         lambda r, _: f"{r.cpu.get('postgres', 0) / r.rows * 1e6:.1f}"),
        ("cores busy meanwhile: ours / other processes", lambda r, _: _cores(r.cpu, r.window_s)),
    ]  # fmt: skip


def report_datasets(results: ExportResults, sample_rows: int) -> None:
    print("\nexports: the archive, one day of one project (a fresh database per size)")
    for data in results.datasets:
        limits = results.limits[data.rows]
        print(
            f"  {data.rows:,} rows: {data.row_bytes:,.0f} bytes a row in PostgreSQL, "
            f"{data.json_bytes:,.0f} as JSON ({data.document_bytes:,.0f} of them properties, "
            f"traits and context); COPY text {limits.copy_bytes / max(limits.copy.events, 1):,.0f}"
            f" bytes a row\n    plan, the export's cursor: {limits.plans[0]}"
        )
        cursor, run, planned = limits.plans
        if run != cursor:
            print(f"    plan, the COPY:            {run}")
        if planned != run:
            print(f"    (the COPY, left alone, was planned as {planned}: run with enable_seqscan "
                  f"and enable_sort off)")  # fmt: skip
    print(f"  sample: the first {sample_rows:,} rows (fewer if the archive has fewer)")


def report_exports(results: ExportResults, formats: list[ExportFormat]) -> bool:
    sizes = [data.rows for data in results.datasets]
    ok = True
    for fmt in (f.value for f in formats):
        print(f"\nexports as {fmt}, one per size through a fresh `eventpipe worker`\n{'':<56}"
              + "".join(f"{size:>14,}" for size in sizes))  # fmt: skip
        for label, cell in _export_lines(fmt):
            cells = [cell(results.runs[(size, fmt)], results.limits[size]) for size in sizes]
            print(f"  {label:<54}" + "".join(f"{c:>14}" for c in cells))
        ok = report_memory(fmt, [results.runs[(size, fmt)] for size in sizes], sizes) and ok
    return ok


def report_memory(fmt: str, runs: list[ExportRun], sizes: list[int]) -> bool:
    small, large = runs[0].peak_kib, runs[-1].peak_kib
    growth = large / small - 1
    ok = growth <= MEMORY_TOLERANCE
    print(
        f"  constant memory, {fmt}: peak RSS {_mb(small)} MB at {sizes[0]:,} rows, {_mb(large)} "
        f"MB at {sizes[-1]:,} ({growth:+.0%}; within {MEMORY_TOLERANCE:.0%})  "
        f"{'holds' if ok else 'DOES NOT HOLD'}"
    )
    return ok


# ---------------------------------------------------------------------------------------------
# The run.


def run(args: argparse.Namespace, tmp: Path) -> bool:
    clock = Clock()
    formats = [ExportFormat(name) for name in args.formats]
    with contextlib.ExitStack() as stack:
        redis_url, redis_process = start_redis(tmp / "stack")
        stack.callback(redis_process.stop, 30)
        cluster_url, postgres = start_postgres(tmp / "stack")
        stack.callback(postgres.stop, 60)
        stack.callback(clock.say, "stopping the servers")
        servers: dict[str, int | None] = {"redis": redis_process.pid, "postgres": postgres.pid}
        ctx = Context(args, tmp, clock, cluster_url, redis_url, servers)
        clock.say(f"PostgreSQL at {cluster_url}, Redis at {redis_url}")
        if args.jobs:
            report_jobs(args, measure_all_jobs(ctx))
        ok = True
        if args.rows:
            results = measure_exports(ctx, formats)
            report_datasets(results, args.sample_rows)
            ok = report_exports(results, formats)
    return ok


def _numbers(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part]


def _formats(text: str) -> list[str]:
    names = [part for part in text.split(",") if part]
    for name in names:
        ExportFormat(name)  # ValueError names the unknown format
    return names


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000, help="backlog of no-op jobs (0: none)")
    parser.add_argument("--paced", type=int, default=1_000, help="no-op jobs deferred one by one")
    parser.add_argument(
        "--pace", type=float, default=50.0,
        help="their rate, jobs/s: well below the drain rate, or the delays are a queue's",
    )  # fmt: skip
    parser.add_argument("--repeat", type=int, default=2, help="rounds of no-op jobs (best kept)")
    parser.add_argument(
        "--rows", type=_numbers, default=[1_000_000, 10_000_000],
        help="archive sizes, comma-separated (empty: no exports)",
    )  # fmt: skip
    parser.add_argument("--formats", type=_formats, default=["ndjson"], help="ndjson,csv,parquet")
    parser.add_argument(
        "--sample-rows", type=int, default=50_000,
        help="rows fetched for the fetch-alone and writer-alone limits",
    )  # fmt: skip
    parser.add_argument("--logs", type=Path, help="copy the workers' logs to this directory")
    parser.add_argument("--run-minimal-worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def header(args: argparse.Namespace) -> None:
    print(
        f"eventpipe jobs benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores "
        f"shared by PostgreSQL, Redis, one worker and this benchmark\n"
        f"no-op jobs: {args.jobs:,} in a backlog, {args.paced:,} paced at {args.pace:g}/s; "
        f"exports: {', '.join(f'{n:,}' for n in args.rows) or 'none'} rows as "
        f"{', '.join(args.formats)}"
    )


def main() -> None:
    args = parse_args()
    if args.run_minimal_worker:
        run_minimal_worker()
        return
    args.rows = sorted(args.rows)
    header(args)
    run_in_tmp("eventpipe-bench-jobs-", args.logs, lambda tmp: run(args, tmp))


if __name__ == "__main__":
    main()
