"""Ingest throughput and latency against the raw Kafka producer rate, in one run.

`uv run python -m bench.ingest` (see docs/performance.md). It starts Kafka (default JIT), Redis and
PostgreSQL with eventpipe.local unless EVENTPIPE_*_URL are set, warms the broker, measures the raw
producer rate, starts `eventpipe api --workers 2` as a real process, loads it with bench.loadgen,
checks that the topic holds every acknowledged event, and stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import os
import pstats
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy.ext.asyncio import AsyncSession

from bench.loadgen import LoadResult, LoadSpec, run_load
from bench.rawkafka import RawResult, measure_raw, sample_records
from eventpipe.auth.accounts import create_user
from eventpipe.auth.keys import generate_key_file
from eventpipe.auth.passwords import Passwords
from eventpipe.auth.writekeys import create_write_key
from eventpipe.core.config import Settings
from eventpipe.core.db import async_engine
from eventpipe.core.kafka import admin_client, consumer_config, ensure_topics
from eventpipe.domain.projects import create_project
from eventpipe.local.process import ManagedProcess, descendants, free_port, running
from eventpipe.local.stack import LocalStack, StackUrls
from eventpipe.migrations.runner import upgrade

PARTITIONS = 12
API_WORKERS = 2
# Targets with batches of 100: throughput against the raw producer, and p99 at that load.
TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0
# Other processes using more than this during a run make its figures pessimistic: say so.
NOISY_CORES = 0.25
_CLOCK_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Run:
    label: str
    batch: int
    connections: int
    # Paced at this fraction of the raw rate (events/s); None: as fast as the api answers.
    paced: float | None = None


def own_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (0 once it is gone), from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICK


def machine_busy_s() -> float:
    """CPU seconds every process of the machine has used since boot (all cores)."""
    user, nice, system, _idle, _iowait, irq, softirq = map(
        int, Path("/proc/stat").read_text().split(maxsplit=8)[1:8]
    )
    return (user + nice + system + irq + softirq) / _CLOCK_TICK


@dataclass(frozen=True)
class CpuSnapshot:
    at: float
    api: dict[int, float]
    broker: float
    machine: float


def cpu_snapshot(api_pid: int, broker_pid: int | None) -> CpuSnapshot:
    api = {pid: own_cpu_s(pid) for pid in [api_pid, *descendants(api_pid)]}
    broker = own_cpu_s(broker_pid) if broker_pid else 0.0
    return CpuSnapshot(time.monotonic(), api, broker, machine_busy_s())


@dataclass(frozen=True)
class CpuUse:
    """What each party used during one run: api and broker seconds, and cores."""

    api_s: float
    broker_s: float
    elapsed_s: float
    # The api's processes with their cores, busiest first (the workers; the supervisor is idle).
    api_cores: list[float]
    # Everything else the machine ran meanwhile: other jobs sharing the 2 cores.
    other_cores: float


def cpu_use(before: CpuSnapshot, after: CpuSnapshot, loadgen_s: float) -> CpuUse:
    elapsed = after.at - before.at
    api = {pid: after.api.get(pid, 0.0) - before.api.get(pid, 0.0) for pid in after.api}
    api_s, broker_s = sum(api.values()), after.broker - before.broker
    other = after.machine - before.machine - api_s - broker_s - loadgen_s
    cores = sorted((seconds / elapsed for seconds in api.values()), reverse=True)
    return CpuUse(api_s, broker_s, elapsed, cores[:API_WORKERS], max(other, 0.0) / elapsed)


def topic_records(bootstrap: str, topic: str) -> int:
    """Records in the topic: the sum over partitions of high minus low watermark."""
    consumer = Consumer(consumer_config(bootstrap, f"bench-count-{uuid.uuid4().hex[:8]}"))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for number in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, number), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


@contextlib.contextmanager
def bench_topic(bootstrap: str, ours: bool) -> Iterator[str]:
    """The events topic of a broker we started, else a fresh topic deleted afterwards."""
    name = "eventpipe.events" if ours else f"bench.ingest.{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, {name: PARTITIONS})
    try:
        yield name
    finally:
        if not ours:
            for future in admin_client(bootstrap).delete_topics([name]).values():
                future.result(timeout=30)


@contextlib.contextmanager
def bench_database(database_url: str, ours: bool) -> Iterator[str]:
    """The database of a server we started, else a fresh database dropped afterwards."""
    if ours:
        yield database_url
        return
    base = database_url.rpartition("/")[0]
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as connection:
            connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


async def create_bench_key(database_url: str, settings: Settings) -> tuple[str, str]:
    """A user, a project and a write key; returns the key and the project id."""
    engine = async_engine(database_url)
    try:
        async with AsyncSession(engine, expire_on_commit=False) as session:
            user = await create_user(
                session,
                Passwords(settings),
                email=f"bench-{uuid.uuid4().hex[:8]}@example.com",
                password=secrets.token_urlsafe(16),
            )
            project = await create_project(session, owner_id=user.id, name="bench")
            _, key = await create_write_key(session, project_id=project.id, name="bench")
            await session.commit()
            return key, str(project.id)
    finally:
        await engine.dispose()


def api_env(urls: StackUrls, database_url: str, topic: str, port: int, tmp: Path) -> dict[str, str]:
    keys_dir = tmp / "jwt-keys"
    generate_key_file(keys_dir)
    return {
        **os.environ,
        "EVENTPIPE_KAFKA_BOOTSTRAP": urls.kafka_bootstrap,
        "EVENTPIPE_REDIS_URL": urls.redis_url,
        "EVENTPIPE_DATABASE_URL": database_url,
        "EVENTPIPE_EVENTS_TOPIC": topic,
        "EVENTPIPE_HTTP_PORT": str(port),
        "EVENTPIPE_JWT_KEYS_DIR": str(keys_dir),
        "EVENTPIPE_STATE_DIR": str(tmp / "api-state"),
        "EVENTPIPE_INGEST_RATE_LIMIT_PER_S": "0",
        "EVENTPIPE_LOG_LEVEL": "WARNING",
    }


def start_api(args: list[str], env: dict[str, str], log_path: Path, port: int) -> ManagedProcess:
    """Start an api process (its own session, so a stop reaches its workers) and wait for it."""
    with log_path.open("ab") as log:
        popen = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [sys.executable, *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process = ManagedProcess("api", popen, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not process.alive():
            raise process.failure(f"exited with status {popen.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process
        time.sleep(0.2)
    process.kill()
    raise process.failure("not ready within 60 s")


def stop_api(process: ManagedProcess) -> None:
    """SIGTERM (its workers flush their producers), SIGKILL after 30 s; leave nothing behind."""
    children = descendants(process.pid)
    process.stop(30)
    # uvicorn's workers and multiprocessing's resource tracker end just after their parent.
    deadline = time.monotonic() + 10
    while any(running(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in children if running(pid)]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if left:
        raise RuntimeError(f"api processes {left} outlived their supervisor by 10 s: killed")


@dataclass(frozen=True)
class Measured:
    run: Run
    result: LoadResult
    cpu: CpuUse


@dataclass(frozen=True)
class Target:
    """Where the load goes: the api's URL and write key, and the pids whose CPU is counted."""

    url: str
    key: str
    api_pid: int
    broker_pid: int | None


def measure(run: Run, target: Target, seconds: float, events_per_s: float | None) -> Measured:
    spec = LoadSpec(
        url=target.url,
        write_key=target.key,
        batch=run.batch,
        connections=run.connections,
        seconds=seconds,
        warmup_s=3.0,
        rate=None if events_per_s is None else events_per_s / run.batch,
    )
    before = cpu_snapshot(target.api_pid, target.broker_pid)
    result = run_load(spec)
    after = cpu_snapshot(target.api_pid, target.broker_pid)
    return Measured(run, result, cpu_use(before, after, result.client_cpu_s))


def report(measured: list[Measured], raw: RawResult) -> None:
    print(
        f"\n{'run':<36}{'conns':>5}{'events/s':>10}{'x raw':>7}{'req/s':>8}"
        f"{'p50 ms':>8}{'p99 ms':>8}  non-200"
    )
    print(f"{'raw producer (1 process, no HTTP)':<36}{'':>5}{raw.per_s:>10,.0f}{1:>7.2f}")
    for item in measured:
        result = item.result
        errors = ", ".join(f"{s or 'none'}: {n}" for s, n in result.errors.items()) or "0"
        print(
            f"{item.run.label:<36}{result.spec.total_connections:>5}{result.events_per_s:>10,.0f}"
            f"{result.events_per_s / raw.per_s:>7.2f}{result.requests_per_s:>8,.0f}"
            f"{result.latency_ms(0.5):>8.1f}{result.latency_ms(0.99):>8.1f}  {errors}"
        )


def report_cpu(measured: list[Measured], raw: RawResult) -> None:
    print(
        f"\n{'CPU during each run':<36}{'cores: api workers':>19}{'broker':>8}{'loadgen':>8}"
        f"{'others':>8}   CPU s per 1M events: api, broker"
    )
    print(
        f"{'raw producer':<36}{'':>35}   producer {raw.cpu_s / raw.acked * 1e6:.1f} (client only)"
    )
    for item in measured:
        cpu, events = item.cpu, item.result.acked_events_total
        workers = " + ".join(f"{cores:.2f}" for cores in cpu.api_cores)
        print(
            f"{item.run.label:<36}{workers:>19}{cpu.broker_s / cpu.elapsed_s:>8.2f}"
            f"{item.result.client_cpu_s / cpu.elapsed_s:>8.2f}{cpu.other_cores:>8.2f}   "
            f"{cpu.api_s / events * 1e6:.1f}, {cpu.broker_s / events * 1e6:.1f}"
        )
    busiest = max(item.cpu.other_cores for item in measured)
    if busiest > NOISY_CORES:
        print(
            f"  other processes took up to {busiest:.2f} of the {os.cpu_count()} cores: "
            "rates are low and tails long by that much; compare runs by their `others`"
        )


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def report_targets(best: Measured, paced: Measured, raw: RawResult) -> None:
    goal = TARGET_RATIO * raw.per_s
    rate, p99 = best.result.events_per_s, paced.result.latency_ms(0.99)
    at_goal = paced.run.paced == TARGET_RATIO and paced.result.events_per_s >= 0.95 * goal
    print("\ntargets, batches of 100")
    print(
        f"  throughput >= {TARGET_RATIO} x raw ({goal:,.0f} events/s): {rate:,.0f} events/s, "
        f"{rate / raw.per_s:.2f} x raw  {_verdict(rate >= goal)}"
    )
    at = f"p99 {p99:.1f} ms at {paced.result.events_per_s:,.0f} events/s"
    if at_goal:
        print(f"  p99 < {TARGET_P99_MS:.0f} ms at that load: {at}  {_verdict(p99 < TARGET_P99_MS)}")
    else:
        print(
            f"  p99 < {TARGET_P99_MS:.0f} ms at that load: MISSED, the load is out of reach ({at})"
        )


def paced_run(best: Measured, raw: RawResult) -> Run:
    """The latency run: paced at the target load, or at half the best rate when out of reach."""
    goal = TARGET_RATIO * raw.per_s
    if best.result.events_per_s >= goal:
        label = f"batch 100, paced at {TARGET_RATIO} x raw"
        return Run(label, 100, PACED_CONNECTIONS, TARGET_RATIO)
    fraction = 0.5 * best.result.events_per_s / raw.per_s
    return Run("batch 100, paced at 0.5 x its max", 100, PACED_CONNECTIONS, fraction)


def check_nothing_lost(measured: list[Measured], written: int) -> bool:
    acked = sum(item.result.acked_events_total for item in measured)
    ok = written >= acked
    print(
        f"\nnothing acknowledged is lost: {acked:,} events answered 200, {written:,} records "
        f"written to the topic meanwhile ({written - acked:+,})  {_verdict(ok)}"
    )
    return ok


def profile_api(stats_path: Path) -> None:
    """Serve one api worker in this process under cProfile (run by `--serve-profiled`)."""
    import uvicorn

    from eventpipe.core.logging import configure_logging

    settings = Settings()
    configure_logging(settings.log_level)
    # uvicorn re-raises the SIGTERM it caught once it has shut down; with the default handler
    # that would end the process before the profile is written.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        uvicorn.run(
            "eventpipe.api.app:create_app",
            factory=True,
            host=settings.http_host,
            port=settings.http_port,
            log_level="warning",
            access_log=False,
        )
    finally:
        profiler.disable()
        profiler.dump_stats(stats_path)


def print_profile(stats_path: Path, lines: int) -> None:
    """The functions with the most time of their own, then eventpipe's by cumulative time."""
    listings = (("tottime", "all functions", ()), ("cumulative", "eventpipe's", ("/eventpipe/",)))
    for order, which, restriction in listings:
        out = io.StringIO()
        stats = pstats.Stats(str(stats_path), stream=out).sort_stats(order)
        stats.print_stats(*restriction, lines)
        text = out.getvalue()
        text = text[text.index("   ncalls") :].rstrip()
        print(f"\n--- profile of one api worker: {which}, by {order} ---")
        print(_short_paths(text))


def _short_paths(text: str) -> str:
    """Paths from the package on (eventpipe/..., fastapi/...): short, yet still telling apart
    eventpipe's modules from the libraries' (strip_dirs would drop the package too)."""
    lines = []
    for line in text.splitlines():
        head, _, location = line.rpartition(" ")
        for marker in ("/site-packages/", "/src/", "/lib/python3"):
            if marker in location:
                location = location.rsplit(marker, 1)[1]
        lines.append(f"{head} {location}" if head else line)
    return "\n".join(lines)


def run_profile(env: dict[str, str], key: str, tmp: Path, seconds: float, batch: int) -> None:
    port = free_port()
    stats = tmp / "api.prof"
    args = ["-m", "bench.ingest", "--serve-profiled", str(stats)]
    api = start_api(args, {**env, "EVENTPIPE_HTTP_PORT": str(port)}, tmp / "profile.log", port)
    try:
        spec = LoadSpec(f"http://127.0.0.1:{port}", key, batch, connections=16, seconds=seconds)
        result = run_load(spec)
    finally:
        stop_api(api)
    print(
        f"\nprofiled api (1 worker under cProfile), batch {batch}, 16 connections: "
        f"{result.events_per_s:,.0f} events/s, p99 {result.latency_ms(0.99):.1f} ms"
    )
    print_profile(stats, 20)


# Paced sends go out on schedule, and each latency counts from its scheduled time: enough
# connections that one slow answer does not hold back the requests due after it.
PACED_CONNECTIONS = 64
MAX_RUNS = (
    Run("batch 1, max throughput", 1, 64),
    Run("batch 10, max throughput", 10, 32),
    Run("batch 100, max throughput", 100, 32),
)


def load_api(args: argparse.Namespace, target: Target, raw: RawResult) -> list[Measured]:
    measured = []
    for run in MAX_RUNS:
        measured.append(measure(run, target, args.seconds, None))
        print(f"  {run.label}: {measured[-1].result.events_per_s:,.0f} events/s")
    paced = paced_run(measured[-1], raw)
    assert paced.paced is not None  # noqa: S101 - a paced run by construction
    measured.append(measure(paced, target, args.seconds, paced.paced * raw.per_s))
    return measured


class Clock:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f} s] {message}", flush=True)


def run(args: argparse.Namespace, tmp: Path) -> bool:
    clock = Clock()
    settings = Settings(state_dir=tmp / "stack")
    with LocalStack(settings, fast_start=False) as stack:
        urls, ours = stack.urls, set(stack.processes)
        clock.say(f"servers ready; started here: {', '.join(sorted(ours)) or 'none'}")
        broker = stack.processes["kafka"].pid if "kafka" in ours else None
        with (
            bench_topic(urls.kafka_bootstrap, "kafka" in ours) as topic,
            bench_database(urls.database_url, "postgres" in ours) as database,
        ):
            upgrade(database)
            key, project = asyncio.run(create_bench_key(database, settings))
            records = sample_records(20_000, project_id=project)
            clock.say(f"migrated; topic {topic} ({PARTITIONS} partitions); warming the broker")
            warm = measure_raw(urls.kafka_bootstrap, topic, records, args.warm_seconds)
            clock.say(f"broker warmed by {warm.seconds:.0f} s of raw produce ({warm.per_s:,.0f}/s)")
            port = free_port()
            env = api_env(urls, database, topic, port, tmp)
            api_args = ["-m", "eventpipe", "api", "--workers", str(API_WORKERS)]
            api = start_api(api_args, env, tmp / "api.log", port)
            try:
                machine = machine_busy_s()
                raw = measure_raw(urls.kafka_bootstrap, topic, records, args.raw_seconds)
                others = (machine_busy_s() - machine - raw.cpu_s) / raw.seconds
                clock.say(f"{describe_raw(raw)}; broker and other processes: {others:.2f} cores")
                before = topic_records(urls.kafka_bootstrap, topic)
                target = Target(f"http://127.0.0.1:{port}", key, api.pid, broker)
                measured = load_api(args, target, raw)
            finally:
                stop_api(api)
            written = topic_records(urls.kafka_bootstrap, topic) - before
            clock.say("api stopped")
            report(measured, raw)
            report_cpu(measured, raw)
            report_targets(measured[2], measured[3], raw)
            kept = check_nothing_lost(measured, written)
            if args.profile:
                run_profile(env, key, tmp, args.seconds, args.profile_batch)
            clock.say("stopping the servers")
    clock.say("done")
    return kept


def describe_raw(raw: RawResult) -> str:
    return (
        f"raw producer: {raw.per_s:,.0f} records/s over {raw.seconds:.1f} s "
        f"({raw.mean_value_bytes:.0f}-byte records, {raw.failed} failed)"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window of a run")
    parser.add_argument("--warm-seconds", type=float, default=25.0, help="raw produce, uncounted")
    parser.add_argument("--raw-seconds", type=float, default=10.0, help="raw producer window")
    parser.add_argument("--profile", action="store_true", help="also profile one api worker")
    parser.add_argument(
        "--profile-batch", type=int, default=100, help="events per request of the profiled load"
    )
    parser.add_argument("--serve-profiled", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def header() -> None:
    print(
        f"eventpipe ingest benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores: the api ({API_WORKERS} workers), the load generator "
        "(1 process) and the Kafka broker share them"
    )


def main() -> None:
    args = parse_args()
    if args.serve_profiled is not None:
        profile_api(args.serve_profiled)
        return
    header()
    with tempfile.TemporaryDirectory(prefix="eventpipe-bench-") as tmp:
        kept = run(args, Path(tmp))
    sys.exit(0 if kept else 1)


if __name__ == "__main__":
    main()
