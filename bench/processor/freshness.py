"""Freshness: the api and the processor running, the load paced at fractions of the api's
maximum ingest rate, probes timed from their 200 to their count in Redis."""

from __future__ import annotations

import contextlib
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen import LoadResult, LoadSpec, run_load
from bench.processor.context import Context, fresh_database, role_env, with_src
from bench.processor.data import PARTITIONS
from bench.processor.prober import Prober, make_write_key
from bench.processor.topic import end_offsets, seed_offsets
from bench.processor.window import Api, Load, Window, paced_window
from bench.roles import start_role, wait_ready
from eventpipe.auth.keys import generate_key_file
from eventpipe.core.kafka import ensure_topics
from eventpipe.local.process import ManagedProcess, free_port

# The api as launched: where it listens (its key, its env) and its process.
Launched = tuple[Api, ManagedProcess]


@dataclass(frozen=True)
class Freshness:
    """The api's maximum ingest rate, and a window per processor and fraction of it."""

    max_ingest: LoadResult
    windows: list[Window]


def api_env(ctx: Context, database_url: str, topic: str) -> tuple[dict[str, str], str]:
    port = free_port()
    keys_dir = ctx.tmp / "jwt-keys"
    generate_key_file(keys_dir)
    env = {
        **role_env(ctx.urls, database_url, topic, ctx.tmp),
        "EVENTPIPE_HTTP_PORT": str(port),
        "EVENTPIPE_JWT_KEYS_DIR": str(keys_dir),
        "EVENTPIPE_INGEST_RATE_LIMIT_PER_S": "0",
    }
    return env, f"http://127.0.0.1:{port}"


def launch_api(ctx: Context, stack: contextlib.ExitStack) -> Launched:
    """`eventpipe api --workers 2` on a fresh database and topic, with a write key; started, not
    waited for, and stopped when `stack` closes."""
    database_url = fresh_database(ctx.urls, "bench_api")
    key, project_id = make_write_key(database_url)
    topic = "bench.fresh"
    ensure_topics(ctx.urls.kafka_bootstrap, {topic: PARTITIONS, f"{topic}.dlq": 1})
    env, url = api_env(ctx, database_url, topic)
    args = ["-m", "eventpipe", "api", "--workers", "2"]
    process = start_role("api", args, env, ctx.tmp / "api.log")
    stack.callback(process.stop, 30)
    return Api(url, key, project_id, env, process.pid), process


def measure_freshness(ctx: Context, launched: Launched) -> Freshness:
    """The api's maximum ingest rate, then a paced window per processor (the compared one too)."""
    api, process = launched
    wait_ready(process, f"{api.url}/readyz")
    ctx.clock.say(f"api ready; its maximum ingest rate, {ctx.args.ingest_seconds:g} s")
    spec = LoadSpec(api.url, api.key, batch=100, connections=32, seconds=ctx.args.ingest_seconds)
    max_ingest = run_load(spec)
    ctx.clock.say(f"max ingest {max_ingest.events_per_s:,.0f} events/s")
    windows = [
        fresh_window(ctx, api, fraction * max_ingest.events_per_s,
                     f"{label}, at {fraction:g} x the maximum", src)
        for label, src in ctx.sources().items()
        for fraction in ctx.args.fresh_fractions
    ]  # fmt: skip
    return Freshness(max_ingest, windows)


def fresh_window(ctx: Context, api: Api, rate: float, label: str, src: Path | None) -> Window:
    """A processor of its own group, started at the topic's end, then the paced window."""
    env = with_src({
        **api.env,
        "EVENTPIPE_PROCESSOR_GROUP": f"bench-{uuid.uuid4().hex[:8]}",
        "EVENTPIPE_PROCESSOR_METRICS_PORT": str(free_port()),
    }, src)  # fmt: skip
    ends = end_offsets(ctx.urls.kafka_bootstrap, env["EVENTPIPE_EVENTS_TOPIC"])
    seed_offsets(ctx.redis, env, ends)
    log_path = ctx.tmp / f"fresh-{len(list(ctx.tmp.glob('fresh-*')))}.log"
    process = start_role("processor", ["-m", "eventpipe", "processor"], env, log_path)
    prober = Prober(api.url, api.key, ctx.redis, api.project_id)
    try:
        ctx.clock.say(f"processor started for: {label}; waiting for it to count a first probe")
        calibrate = threading.Thread(target=prober.send)
        calibrate.start()
        if prober.poll(calibrate, timeout_s=60)[1]:
            raise RuntimeError("the processor did not count a first probe within 60 s")
        pids = {"processor": process.pid, "api": api.pid}
        return paced_window(ctx, prober, env, Load(api, rate, ends, label), pids)
    finally:
        prober.close()
        process.stop(30)
