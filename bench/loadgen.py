"""HTTP load generator for Segment-style `POST /v1/batch`: processes x asyncio connections.

Each process runs one event loop (uvloop) holding C keep-alive HTTP/1.1 connections over raw
asyncio streams. A request is a pre-encoded body whose messageIds are replaced for every request,
so the server never sees a duplicate. Each answer's status and latency are recorded; figures count
the answers that arrive inside the measured window (after a warm-up).

    uv run python -m bench.loadgen --url http://127.0.0.1:8000 --write-key wk_... \
        --batch 100 --processes 2 --connections 16 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import multiprocessing
import queue
import random
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Barrier
from typing import Any
from urllib.parse import urlsplit

import orjson
import uvloop

# The same 10,000 users as the raw producer's records: the same Kafka keys, the same spread.
USERS = 10_000
# Bodies differ by their events; each is reused with fresh messageIds.
TEMPLATES = 16
_PLACEHOLDER = "00000000-0000-4000-8000-000000000000"
_ID_LENGTH = len(_PLACEHOLDER)
_CONNECT_TIMEOUT_S = 10.0
# Not the loop's clock: uvloop's is in whole milliseconds, cached once per loop iteration.
now = time.perf_counter
_CONNECT_GAP_S = 0.005
# After the window, answers still awaited get this long before they count as lost (status 0).
_DRAIN_TIMEOUT_S = 10.0

_TRACKED = (
    ("Product Viewed", {"product_id": "sku-{n}", "price": 59.9}),
    ("Order Completed", {"order_id": "o-{n}", "revenue": 129.5, "currency": "EUR"}),
    ("Signed Up", {"plan": "pro", "trial": True}),
    ("Button Clicked", {"button": "checkout", "path": "/cart"}),
)
_PAGES = ("/", "/pricing", "/docs/getting-started", "/blog/streaming-joins", "/cart")
_AGENTS = (
    "Mozilla/5.0 (X11; Linux) Chrome/130",
    "Mozilla/5.0 (iPhone) Mobile/15E148",
    "analytics-python/2.4.0",
)


def iso_ms(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _who(rng: random.Random) -> dict[str, str]:
    user = rng.randrange(USERS)
    # Most events come from signed-in users; the rest carry only an anonymous id.
    if rng.random() < 0.8:
        return {"userId": f"user-{user:05d}"}
    return {"anonymousId": f"anon-{user:05d}"}


def _context(rng: random.Random) -> dict[str, Any]:
    return {
        "library": {"name": "analytics-python", "version": "2.4.0"},
        "ip": f"203.0.113.{rng.randrange(1, 255)}",
        "userAgent": rng.choice(_AGENTS),
    }


def _details(rng: random.Random, kind: str) -> dict[str, Any]:
    if kind == "track":
        name, properties = rng.choice(_TRACKED)
        n = rng.randrange(1_000_000)
        filled = {k: v.format(n=n) if isinstance(v, str) else v for k, v in properties.items()}
        return {"event": name, "properties": filled}
    if kind == "page":
        path = rng.choice(_PAGES)
        return {
            "name": "Docs" if path.startswith("/docs") else "Home",
            "properties": {"path": path},
        }
    return {"traits": {"plan": rng.choice(("free", "pro", "team")), "seats": rng.randrange(1, 50)}}


def make_event(rng: random.Random, moment: datetime) -> dict[str, Any]:
    """One Segment event of ~300 bytes: track (60 %), page (25 %) or identify (15 %)."""
    draw = rng.random()
    kind = "track" if draw < 0.6 else "page" if draw < 0.85 else "identify"
    return {
        "type": kind,
        **_who(rng),
        **_details(rng, kind),
        "messageId": str(uuid.uuid4()),
        "timestamp": iso_ms(moment - timedelta(milliseconds=rng.randrange(5_000))),
        "context": _context(rng),
    }


def make_events(rng: random.Random, count: int, moment: datetime) -> list[dict[str, Any]]:
    return [make_event(rng, moment) for _ in range(count)]


def batch_body(events: list[dict[str, Any]], sent_at: datetime) -> bytes:
    """The body the server SDKs send: `{"batch": [...], "sentAt": ...}`."""
    return orjson.dumps({"batch": events, "sentAt": iso_ms(sent_at)})


@dataclass(frozen=True)
class Template:
    """A request cut around its messageIds: head, then body parts with an id between each two."""

    head: bytes
    parts: tuple[bytes, ...]

    @property
    def events(self) -> int:
        return len(self.parts) - 1


def basic_auth(write_key: str) -> str:
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()


def make_template(rng: random.Random, batch: int, host: str, write_key: str) -> Template:
    now = datetime.now(UTC)
    events = make_events(rng, batch, now)
    for event in events:
        event["messageId"] = _PLACEHOLDER
    body = batch_body(events, now)
    parts = tuple(body.split(_PLACEHOLDER.encode()))
    head = (
        f"POST /v1/batch HTTP/1.1\r\nHost: {host}\r\nAuthorization: {basic_auth(write_key)}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return Template(head, parts)


class MessageIds:
    """uuid4-shaped ids: a random uuid4's first 24 characters per process, then a 12-digit
    counter, so no id repeats within a run or across processes."""

    def __init__(self) -> None:
        self.prefix = str(uuid.uuid4())[:24].encode()
        self.counter = 0

    def fill(self, template: Template) -> list[bytes]:
        """The request's pieces, ready to write: head, then the body with fresh ids."""
        start, self.counter = self.counter, self.counter + template.events
        prefix = self.prefix
        pieces: list[bytes] = [template.head, template.parts[0]]
        for number, part in enumerate(template.parts[1:], start):
            pieces.append(prefix + b"%012x" % number)
            pieces.append(part)
        return pieces


@dataclass(frozen=True)
class LoadSpec:
    """One load run. `connections` is per process; `rate` (requests/s in all) paces the sends."""

    url: str
    write_key: str
    batch: int = 100
    processes: int = 1
    connections: int = 16
    seconds: float = 20.0
    warmup_s: float = 2.0
    rate: float | None = None
    seed: int = 1

    @property
    def total_connections(self) -> int:
        return self.processes * self.connections


@dataclass
class Recorder:
    """Answers of one process: completion time, latency and status of each, kept compactly."""

    window_start: float
    window_end: float
    latencies_ms: array[float] = field(default_factory=lambda: array("d"))
    statuses: Counter[int] = field(default_factory=Counter)
    ok_events: int = 0
    acked_events_total: int = 0

    def record(self, sent: float, done: float, status: int, events: int) -> None:
        if status == 200:
            self.acked_events_total += events
        if not self.window_start <= done < self.window_end:
            return
        self.latencies_ms.append((done - sent) * 1000)
        self.statuses[status] += 1
        if status == 200:
            self.ok_events += events


@dataclass
class ProcessResult:
    latencies_ms: bytes
    statuses: dict[int, int]
    ok_events: int
    acked_events_total: int
    cpu_s: float
    elapsed_s: float
    started_at: float


class Closed(Exception):
    """The server closed the connection, or answered something we cannot frame."""


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """The status of one HTTP/1.1 answer (its body read and dropped), and whether to reconnect."""
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1."):
        raise Closed(head[:40])
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        raise Closed("answer without Content-Length")
    length = int(lower[at + 17 : lower.index(b"\r\n", at + 17)])
    if length:
        await reader.readexactly(length)
    return status, b"\r\nconnection: close" in lower


class Connection:
    """One keep-alive connection sending requests back to back, or on a schedule."""

    def __init__(
        self, spec: LoadSpec, templates: list[Template], ids: MessageIds, recorder: Recorder
    ) -> None:
        parts = urlsplit(spec.url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.templates = templates
        self.ids = ids
        self.recorder = recorder
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def connect(self) -> None:
        self.streams = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), _CONNECT_TIMEOUT_S
        )

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None

    async def run(self, stop_at: float, schedule: tuple[float, float] | None, index: int) -> None:
        """Send until `stop_at`; `schedule` is (first send, interval) when paced."""
        count = 0
        while True:
            intended = now()
            if schedule is not None:
                intended = schedule[0] + count * schedule[1]
                if intended > now():
                    await asyncio.sleep(intended - now())
            if intended >= stop_at:
                return
            template = self.templates[(index + count) % len(self.templates)]
            count += 1
            # Paced: latency counts from the intended send (no coordinated omission).
            status = await self.exchange(template)
            self.recorder.record(intended, now(), status, template.events)

    async def exchange(self, template: Template) -> int:
        try:
            if self.streams is None:
                await self.connect()
            assert self.streams is not None  # noqa: S101 - set by connect
            reader, writer = self.streams
            writer.writelines(self.ids.fill(template))
            status, close = await read_answer(reader)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, Closed, ValueError):
            self.close()
            await asyncio.sleep(0.01)
            return 0
        if close:
            self.close()
        return status


async def _run_process(spec: LoadSpec, index: int, barrier: Barrier | None) -> ProcessResult:
    rng = random.Random(spec.seed * 1000 + index)
    host = urlsplit(spec.url).netloc
    templates = [make_template(rng, spec.batch, host, spec.write_key) for _ in range(TEMPLATES)]
    recorder = Recorder(0.0, 0.0)
    ids = MessageIds()
    connections = [Connection(spec, templates, ids, recorder) for _ in range(spec.connections)]
    for connection in connections:
        # One at a time, as clients arrive: a burst of connects can all land on one server worker
        # (uvicorn's workers share one listening socket; the first awake accepts the whole burst).
        await connection.connect()
        await asyncio.sleep(_CONNECT_GAP_S)
    if barrier is not None:
        barrier.wait(60)  # every process connected: all start together
    cpu, started, started_at = time.process_time(), now(), time.time()
    recorder.window_start = started + spec.warmup_s
    recorder.window_end = stop_at = recorder.window_start + spec.seconds
    tasks = [
        asyncio.create_task(connection.run(stop_at, _schedule(spec, index, n, started), n))
        for n, connection in enumerate(connections)
    ]
    await _drain(tasks, stop_at, recorder)
    for connection in connections:
        connection.close()
    return ProcessResult(
        latencies_ms=recorder.latencies_ms.tobytes(),
        statuses=dict(recorder.statuses),
        ok_events=recorder.ok_events,
        acked_events_total=recorder.acked_events_total,
        cpu_s=time.process_time() - cpu,
        elapsed_s=now() - started,
        started_at=started_at,
    )


def _schedule(
    spec: LoadSpec, process: int, connection: int, started: float
) -> tuple[float, float] | None:
    """First send and interval of one connection, spread evenly over all connections."""
    if spec.rate is None:
        return None
    interval = spec.total_connections / spec.rate
    slot = process * spec.connections + connection
    return started + slot / spec.rate, interval


async def _drain(tasks: list[asyncio.Task[None]], stop_at: float, recorder: Recorder) -> None:
    """Wait for every connection to finish its last request; a lost answer counts as status 0."""
    timeout = stop_at - now() + _DRAIN_TIMEOUT_S
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
        recorder.statuses[0] += 1
    if pending:
        await asyncio.wait(pending)


def _process_main(
    spec: LoadSpec, index: int, barrier: Barrier, results: multiprocessing.Queue[Any]
) -> None:
    try:
        results.put((index, uvloop.run(_run_process(spec, index, barrier))))
    except BaseException as error:
        results.put((index, f"{type(error).__name__}: {error}"))
        raise


@dataclass(frozen=True)
class LoadResult:
    """What one run measured inside its window, and every event acknowledged during the run."""

    spec: LoadSpec
    seconds: float
    requests: int
    ok_events: int
    statuses: dict[int, int]
    latencies_ms: list[float]
    acked_events_total: int
    client_cpu_s: float
    client_elapsed_s: float
    # Wall-clock time (time.time()) of the first send: where a watcher's own samples meet it.
    started_at: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.ok_events / self.seconds

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def errors(self) -> dict[int, int]:
        """Answers other than 200 by status; 0 is a connection error or an answer never read."""
        return {status: n for status, n in sorted(self.statuses.items()) if status != 200}

    def latency_ms(self, fraction: float) -> float:
        values = self.latencies_ms
        if not values:
            return float("nan")
        return values[min(len(values) - 1, round(fraction * (len(values) - 1)))]

    @property
    def client_cores(self) -> float:
        """CPU the load generator itself used, in cores (it shares the machine with the api)."""
        return self.client_cpu_s / self.client_elapsed_s if self.client_elapsed_s else 0.0


def _merge(spec: LoadSpec, parts: list[ProcessResult]) -> LoadResult:
    latencies = array("d")
    statuses: Counter[int] = Counter()
    for part in parts:
        latencies.frombytes(part.latencies_ms)
        statuses.update(part.statuses)
    return LoadResult(
        spec=spec,
        seconds=spec.seconds,
        requests=sum(statuses.values()),
        ok_events=sum(part.ok_events for part in parts),
        statuses=dict(statuses),
        latencies_ms=sorted(latencies),
        acked_events_total=sum(part.acked_events_total for part in parts),
        client_cpu_s=sum(part.cpu_s for part in parts),
        client_elapsed_s=max(part.elapsed_s for part in parts),
        started_at=min(part.started_at for part in parts),
    )


def _collect(
    workers: Sequence[BaseProcess], results: multiprocessing.Queue[Any], limit: float
) -> dict[int, ProcessResult | str]:
    """Each process's answer; fails fast when one dies without answering (import error...)."""
    answers: dict[int, ProcessResult | str] = {}
    deadline = time.monotonic() + limit
    while len(answers) < len(workers):
        try:
            index, answer = results.get(timeout=1.0)
            answers[index] = answer
        except queue.Empty:
            silent = [n for n, worker in enumerate(workers) if n not in answers]
            if all(workers[n].exitcode is not None for n in silent) or time.monotonic() > deadline:
                # A process's answer is in the queue before it exits: one more look, then give up.
                with contextlib.suppress(queue.Empty):
                    while True:
                        index, answer = results.get(timeout=0.5)
                        answers[index] = answer
                for n in silent:
                    answers.setdefault(n, f"process {n} ended without an answer")
    return answers


def run_load(spec: LoadSpec) -> LoadResult:
    """Run `spec` in `spec.processes` fresh processes and merge what they measured."""
    context = multiprocessing.get_context("spawn")  # no fork of a parent's threads or sockets
    barrier = context.Barrier(spec.processes)
    results: multiprocessing.Queue[Any] = context.Queue()
    workers = [
        context.Process(target=_process_main, args=(spec, n, barrier, results), daemon=True)
        for n in range(spec.processes)
    ]
    for worker in workers:
        worker.start()
    try:
        answers = _collect(workers, results, spec.seconds + spec.warmup_s + _DRAIN_TIMEOUT_S + 60)
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
                worker.join()
    parts = [answer for answer in answers.values() if not isinstance(answer, str)]
    if len(parts) < len(answers):
        failure = next(answer for answer in answers.values() if isinstance(answer, str))
        raise RuntimeError(f"load generator process failed: {failure}")
    return _merge(spec, parts)


def describe(result: LoadResult) -> str:
    spec = result.spec
    pace = f", paced at {spec.rate:,.0f} requests/s" if spec.rate else ""
    errors = ", ".join(f"{status or 'no answer'}: {n}" for status, n in result.errors.items())
    return "\n".join(
        (
            f"batch {spec.batch}, {spec.processes} x {spec.connections} connections{pace}, "
            f"{spec.seconds:g} s after {spec.warmup_s:g} s of warm-up",
            f"  events/s    {result.events_per_s:>12,.0f}",
            f"  requests/s  {result.requests_per_s:>12,.0f}",
            f"  p50 / p99   {result.latency_ms(0.5):>8.1f} / {result.latency_ms(0.99):.1f} ms",
            f"  non-200     {errors or 'none'}",
            f"  acknowledged events, whole run: {result.acked_events_total:,}",
            f"  load generator CPU: {result.client_cores:.2f} cores",
        )
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Load /v1/batch with Segment-style batches.")
    parser.add_argument("--url", required=True, help="the api's base URL, http://host:port")
    parser.add_argument("--write-key", required=True)
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--connections", type=int, default=16, help="per process")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before the window")
    parser.add_argument("--rate", type=float, default=None, help="requests/s in all (paced)")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    spec = LoadSpec(
        url=args.url.rstrip("/"),
        write_key=args.write_key,
        batch=args.batch,
        processes=args.processes,
        connections=args.connections,
        seconds=args.seconds,
        warmup_s=args.warmup,
        rate=args.rate,
    )
    print(describe(run_load(spec)))


if __name__ == "__main__":
    main()
