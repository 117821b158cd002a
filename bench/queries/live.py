"""The live stream: from an ingest request's 200 to its events' line on GET .../live."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import multiprocessing
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import redis
import uvloop

from bench.cpu import cpu_between
from bench.harness import tree_meter
from bench.loadgen import (
    LoadSpec,
    run_load,
)
from bench.processor.data import make_pairs
from bench.processor.prober import make_write_key
from bench.processor.topic import end_offsets, seed_offsets, warm_broker
from bench.queries.dataset import PARTITIONS
from bench.queries.feed import LiveFeed, LiveWindow, delays_s
from bench.queries.over_http import API_WORKERS, api_env
from bench.queries.paced import PacedRun, paced_main
from bench.queries.store import Store, partitions_around, recreate_database
from bench.roles import Clock, start_role, stop_api, wait_ready
from eventpipe.core.config import Settings
from eventpipe.core.kafka import ensure_topics
from eventpipe.local.kafka import start_kafka
from eventpipe.local.process import ManagedProcess, free_port


@dataclass(frozen=True)
class LiveTarget:
    """The live part's api and what is needed to load it and read its stream."""

    base: str
    write_key: str
    token: str
    project: str
    pids: dict[str, int]


async def first_event_seen(target: LiveTarget, feed: LiveFeed, timeout_s: float = 60) -> bool:
    """One event through the whole chain (api, Kafka, processor, Redis stream, api, client)."""
    message_id = f"calibrate-{uuid.uuid4().hex}"
    auth = httpx.BasicAuth(target.write_key, "")
    async with httpx.AsyncClient(base_url=target.base, auth=auth) as http:
        body = {"userId": "calibrate", "event": "Calibrated", "messageId": message_id}
        (await http.post("/v1/track", json=body)).raise_for_status()
    deadline = time.perf_counter() + timeout_s
    while message_id not in feed.arrived and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    return message_id in feed.arrived


async def live_window(target: LiveTarget, rate: float, seconds: float, label: str) -> LiveWindow:
    window, feed = LiveWindow(label, rate), LiveFeed()
    headers = {"Authorization": f"Bearer {target.token}"}
    async with httpx.AsyncClient(base_url=target.base, headers=headers) as http:
        reader = asyncio.create_task(feed.read(http, f"/api/projects/{target.project}/live"))
        try:
            await asyncio.wait_for(feed.ready.wait(), 30)
            if feed.status != 200 or feed.error:
                window.failure = f"GET .../live: {feed.status} {feed.error}".strip()
            elif not await first_event_seen(target, feed):
                window.failure = "a first event did not reach the live stream within 60 s"
            else:
                await paced_into(window, target, feed, seconds)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    window.feed = feed
    return window


async def run_paced(spec: LoadSpec, window: LiveWindow, pids: dict[str, int]) -> PacedRun | str:
    """The paced load in a process of its own (its start not counted); its run, or why it
    failed. Notes the CPU of each party meanwhile in `window`."""
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[Any] = context.Queue()
    process = context.Process(target=paced_main, args=(spec, results), daemon=True)
    process.start()
    # Its start (a new interpreter importing this module) is not part of the window.
    answer = await asyncio.to_thread(results.get, True, 120)
    loadgen = process.pid
    if loadgen is None:
        raise RuntimeError("the paced load's process did not start")
    meter = tree_meter({**pids, "loadgen": loadgen})
    before, started = meter.sample(), time.perf_counter()
    if answer == "connected":
        answer = await asyncio.to_thread(results.get, True, spec.seconds + 90)
    window.cpu, window.seconds = cpu_between(before, meter.sample()), time.perf_counter() - started
    process.join(10)
    return answer if isinstance(answer, PacedRun) else f"the paced load failed: {answer}"


async def paced_into(
    window: LiveWindow, target: LiveTarget, feed: LiveFeed, seconds: float
) -> None:
    spec = LoadSpec(target.base, target.write_key, batch=100, connections=32, seconds=seconds,
                    warmup_s=2.0, rate=window.rate / 100)  # fmt: skip
    answer = await run_paced(spec, window, target.pids)
    if isinstance(answer, str):
        window.failure = answer
        return
    window.run = answer
    # What was acknowledged reaches the stream late when the pipeline falls behind: wait for it.
    deadline = time.perf_counter() + 30
    while feed.counted < answer.acked_events and time.perf_counter() < deadline:
        await asyncio.sleep(0.2)
    window.delays = delays_s(answer, feed.arrived)


def live_account(url: str) -> tuple[str, str, str, str]:
    """A user owning a project with a write key: (email, password, write key, project id)."""
    email, password = f"live-{uuid.uuid4().hex[:8]}@example.com", secrets.token_urlsafe(16)
    key, project = make_write_key(url, email, password, "bench live")
    return email, password, key, project


def login(base: str, email: str, password: str) -> str:
    answer = httpx.post(f"{base}/auth/login", json={"email": email, "password": password})
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def run_live_window(
    target: LiveTarget,
    env: dict[str, str],
    bootstrap: str,
    client: redis.Redis,
    rate: float,
    args: argparse.Namespace,
    label: str,
) -> LiveWindow:
    """A processor of its own group, started at the topic's end, then one paced window."""
    port = free_port()
    env = {
        **env,
        "EVENTPIPE_PROCESSOR_GROUP": f"bench-{uuid.uuid4().hex[:8]}",
        "EVENTPIPE_PROCESSOR_METRICS_PORT": str(port),
    }
    seed_offsets(client, env, end_offsets(bootstrap, env["EVENTPIPE_EVENTS_TOPIC"]))
    log = Path(env["EVENTPIPE_STATE_DIR"]).parent / f"processor-{uuid.uuid4().hex[:6]}.log"
    processor = start_role("processor", ["-m", "eventpipe", "processor"], env, log)
    try:
        wait_ready(processor, f"http://127.0.0.1:{port}/readyz")
        pids = {**target.pids, "processor": processor.pid}
        with_processor = dataclasses.replace(target, pids=pids)
        return uvloop.run(live_window(with_processor, rate, args.live_seconds, label))
    finally:
        processor.stop(30)


@dataclass(frozen=True)
class LiveServers:
    """The live part's own Kafka, its database and Redis database, and the api's environment."""

    bootstrap: str
    kafka_pid: int
    database_url: str
    redis_url: str
    client: redis.Redis


def live_servers(stack: contextlib.ExitStack, store: Store, tmp: Path, clock: Clock) -> LiveServers:
    """Kafka (its own, in `tmp`), a fresh database, Redis database 1: undone by `stack`."""
    clock.say("live stream: starting Kafka")
    bootstrap, kafka = start_kafka(tmp / "kafka-state", Settings().cache_dir, fast_start=False)
    stack.callback(kafka.stop, 30)
    url = recreate_database(store, "bench_queries_live")
    partitions_around(url, datetime.now(UTC).date())
    # Database 1 of the same server: the dataset's keys stay apart.
    redis_url = urlunsplit(urlsplit(store.redis_url)._replace(path="/1"))
    client = redis.Redis.from_url(redis_url)
    stack.callback(client.close)
    client.flushdb()
    stack.callback(client.flushdb)
    return LiveServers(bootstrap, kafka.pid, url, redis_url, client)


def start_live_api(
    stack: contextlib.ExitStack, servers: LiveServers, tmp: Path
) -> tuple[dict[str, str], str, ManagedProcess]:
    """The api on the live topic, ready: its environment, its base URL, its process."""
    topic = "bench.queries.live"
    ensure_topics(servers.bootstrap, {topic: PARTITIONS, f"{topic}.dlq": 1})
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = api_env(servers.redis_url, servers.database_url, port, tmp, kafka=servers.bootstrap)
    env.update({"EVENTPIPE_EVENTS_TOPIC": topic, "EVENTPIPE_DLQ_TOPIC": f"{topic}.dlq"})
    args = ["-m", "eventpipe", "api", "--workers", str(API_WORKERS)]
    api = start_role("api", args, env, tmp / "live-api.log")
    stack.callback(stop_api, api)
    wait_ready(api, f"{base}/readyz")
    return env, base, api


def measure_live(
    store: Store, args: argparse.Namespace, tmp: Path, clock: Clock
) -> tuple[float, list[LiveWindow]]:
    """Kafka, a fresh database, Redis database 1, the api and a processor per window."""
    with contextlib.ExitStack() as stack:
        servers = live_servers(stack, store, tmp, clock)
        email, password, key, project = live_account(servers.database_url)
        # A broker's first minutes cost several times the CPU per record (its JIT at work).
        clock.say(f"live stream: warming the broker, {args.warm_seconds:g} s of raw produce")
        warm_broker(servers.bootstrap, make_pairs(50_000, project), args.warm_seconds)
        env, base, api = start_live_api(stack, servers, tmp)
        maximum = api_maximum(base, key, args, clock)
        pids = {**store.pids, "api": api.pid, "kafka": servers.kafka_pid}
        target = LiveTarget(base, key, login(base, email, password), project, pids)
        windows = []
        for fraction in args.live_fractions:
            label = f"at {fraction:g} x the maximum"
            clock.say(f"live stream: {label}, {fraction * maximum:,.0f} events/s")
            windows.append(run_live_window(target, env, servers.bootstrap, servers.client,
                                           fraction * maximum, args, label))  # fmt: skip
        return maximum, windows


def api_maximum(base: str, key: str, args: argparse.Namespace, clock: Clock) -> float:
    if args.rate:
        return float(args.rate)
    clock.say(f"live stream: the api's maximum ingest rate ({args.ingest_seconds:g} s)")
    spec = LoadSpec(base, key, batch=100, connections=32, seconds=args.ingest_seconds, warmup_s=3)
    return run_load(spec).events_per_s
