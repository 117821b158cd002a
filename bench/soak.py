"""A soak: the whole pipeline at a fraction of its maximum ingest rate for minutes, watched.

`uv run python -m bench.soak [--minutes 10] [--rate N | --fraction 0.5] [--out DIR]` (see
bench/README.md). It starts Kafka, Redis and PostgreSQL with eventpipe.local as bench.ingest does,
then `eventpipe api --workers 2`, `eventpipe processor` and `eventpipe worker` as real processes;
measures the maximum ingest rate with all of them running (a closed-loop bench.loadgen run,
batches of 100) unless --rate is given; then drives an open-loop load (bench.loadgen paced) at
fraction x that maximum for --minutes, sampling every process's memory and the processors' lag
every --interval seconds. It prints each figure beside its limit, writes DIR/soak.json and
DIR/soak.png, and exits 1 when a limit is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from bench.cpu import cpu_between
from bench.harness import run_in_tmp
from bench.ingest.serving import api_command, describe
from bench.loadgen import LoadResult, LoadSpec, run_load
from bench.processor.metrics import scrape
from bench.roles import Clock, start_api, start_role, stop_api, wait_ready
from bench.soak_report import Soak, report
from bench.soak_watch import Watch
from bench.stack import bench_stack
from eventpipe.core.config import Settings
from eventpipe.local.process import ManagedProcess, free_port

BATCH = 100
MAX_CONNECTIONS = 32
# Paced sends go out on schedule from this many connections: a slow answer holds back only its
# own connection's next sends, which then go out back to back to catch up (open loop until 64
# requests are in flight at once).
SOAK_CONNECTIONS = 64
# After the maximum's closed-loop run the processor has a backlog: the soak starts once it is
# worked off, so that the lag seen is the soak's own.
CATCH_UP_LIMIT_S = 300.0
# After the soak's load: how long the lag may take to return to 0.
DRAIN_LIMIT_S = 60.0
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "test-artifacts" / "soak"


def soak_env(env: dict[str, str], tmp: Path, dedupe_window_s: int) -> dict[str, str]:
    """bench.stack's api environment, plus what the processor and the worker need."""
    topic = env["EVENTPIPE_EVENTS_TOPIC"]
    return {
        **env,
        "EVENTPIPE_DLQ_TOPIC": f"{topic}.dlq",
        "EVENTPIPE_PROCESSOR_GROUP": f"soak-{uuid.uuid4().hex[:8]}",
        "EVENTPIPE_PROCESSOR_METRICS_PORT": str(free_port()),
        "EVENTPIPE_WORKER_METRICS_PORT": str(free_port()),
        "EVENTPIPE_EXPORT_DIR": str(tmp / "exports"),
        "EVENTPIPE_DEDUPE_WINDOW_S": str(dedupe_window_s),
    }


@contextlib.contextmanager
def running_roles(env: dict[str, str], tmp: Path) -> Iterator[dict[str, ManagedProcess]]:
    """The api, the processor and the worker, each ready; all stopped on the way out."""
    roles: dict[str, ManagedProcess] = {}
    try:
        port = int(env["EVENTPIPE_HTTP_PORT"])
        roles["api"] = start_api(api_command(), env, tmp / "api.log", port)
        for role in ("processor", "worker"):
            roles[role] = start_role(role, ["-m", "eventpipe", role], env, tmp / f"{role}.log")
            health = env[f"EVENTPIPE_{role.upper()}_METRICS_PORT"]
            wait_ready(roles[role], f"http://127.0.0.1:{health}/readyz")
        yield roles
    finally:
        for name, process in reversed(roles.items()):
            stop_api(process) if name == "api" else process.stop(30)


def measure_max(url: str, key: str, seconds: float) -> LoadResult:
    """As fast as the api answers, batches of 100, the processor and worker running."""
    spec = LoadSpec(url, key, BATCH, connections=MAX_CONNECTIONS, seconds=seconds, warmup_s=10.0)
    return run_load(spec)


def wait_caught_up(watch: Watch, limit_s: float) -> float | None:
    """Seconds until the processor has applied everything in the topic; None past `limit_s`."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        if watch.lag() <= 0:
            return time.monotonic() - started
        time.sleep(1.0)
    return None


def soak_load(spec: LoadSpec, watch: Watch, interval_s: float) -> tuple[LoadResult, float]:
    """The paced load in a thread, sampled from this one; the result and when the load ended."""
    outcome: list[LoadResult | BaseException] = []

    def drive() -> None:
        try:
            outcome.append(run_load(spec))
        except BaseException as error:
            outcome.append(error)

    load = threading.Thread(target=drive, name="soak-load")
    watch.begin()
    load.start()
    watch.every(interval_s, lambda _: not load.is_alive(), spec.seconds + 600)
    load.join()
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    # The load's processes take seconds to start on a busy machine: time 0 is their first send.
    watch.rebase(result.started_at)
    return result, result.client_elapsed_s


def drive(args: argparse.Namespace, target: tuple[str, str], watch: Watch, clock: Clock) -> Soak:
    """The maximum (unless given), the catch-up, the soak and its drain, watched."""
    url, key = target
    max_result = None
    if args.rate is None:
        clock.say(f"maximum ingest rate: closed loop, {args.max_seconds:g} s after 10 s of warm-up")
        max_result = measure_max(url, key, args.max_seconds)
        rate = args.fraction * max_result.events_per_s
        clock.say(f"maximum {max_result.events_per_s:,.0f} events/s; soak at {rate:,.0f}")
    else:
        rate = args.rate
    caught_up = wait_caught_up(watch, CATCH_UP_LIMIT_S)
    if caught_up is None:
        clock.say(f"the processor is still behind after {CATCH_UP_LIMIT_S:.0f} s; soak begins")
    else:
        clock.say(f"processor caught up after {caught_up:.0f} s; soak begins")
    seconds = args.minutes * 60
    spec = LoadSpec(url, key, BATCH, connections=SOAK_CONNECTIONS, seconds=seconds,
                    warmup_s=0.0, rate=rate / BATCH)  # fmt: skip
    meter = watch.meter()
    before = meter.sample()
    result, load_end = soak_load(spec, watch, args.interval)
    cpu = cpu_between(before, meter.sample()).seconds
    clock.say(f"load ended at {load_end:.0f} s; waiting for the lag to return to 0")
    watch.every(1.0, lambda sample: sample.lag <= 0, DRAIN_LIMIT_S)
    metrics = scrape(watch.env["EVENTPIPE_PROCESSOR_METRICS_PORT"])
    return Soak(
        args=vars(args) | {"out": str(args.out)}, max_result=max_result, rate=rate,
        result=result, load_end_s=load_end, warmup_s=min(120.0, 0.2 * seconds),
        samples=watch.samples, cpu=cpu, metrics=metrics, batch_size=Settings().processor_batch_size,
    )  # fmt: skip


def run(args: argparse.Namespace, tmp: Path) -> bool:
    clock = Clock()
    with bench_stack(tmp, topic_prefix="bench.soak") as stack:
        clock.say(f"servers ready; started here: {', '.join(stack.started_here) or 'none'}")
        env = soak_env(stack.env, tmp, args.dedupe_window_s)
        with running_roles(env, tmp) as roles:
            pids = {name: process.pid for name, process in roles.items()} | stack.server_pids
            clock.say(f"roles ready: {', '.join(roles)}; watching {', '.join(pids)}")
            watch = Watch(pids, stack.urls.kafka_bootstrap, stack.urls.redis_url, env)
            try:
                soak = drive(args, (stack.url, stack.write_key), watch, clock)
            finally:
                watch.close()
            soak.dead = [name for name, process in roles.items() if not process.alive()]
        clock.say("roles and servers stopped")
    return report(soak, args.out)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError("a fraction in (0, 1]")
    return value


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak's load")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, help="events/s; skips measuring the maximum")
    pace.add_argument("--fraction", type=_fraction, default=0.5, help="of the maximum rate")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="soak.json, soak.png")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="closed-loop window")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument(
        "--dedupe-window-s", type=int, default=60,
        help="the processor's EVENTPIPE_DEDUPE_WINDOW_S (see bench/README.md)",
    )  # fmt: skip
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    print(
        f"eventpipe soak, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores shared "
        f"by the servers, the api ({describe(api_command())}), the processor, the worker and the "
        f"load generator; {args.minutes:g} min at "
        + (f"{args.rate:,.0f} events/s" if args.rate else f"{args.fraction:g} x the maximum")
    )
    run_in_tmp("eventpipe-soak-", args.out / "logs", lambda tmp: run(args, tmp))


if __name__ == "__main__":
    main()
