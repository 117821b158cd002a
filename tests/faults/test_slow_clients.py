"""Slow clients (slowloris): a thousand connections sending their request head or body a byte at
a time are cut at the read deadlines (api/serve.py), and normal clients are served meanwhile.

A real `eventpipe api` process, started with a soft limit of 1024 open files as many systems
give it (it must lift the limit itself), and short deadlines so the test is quick. The latency
figures are printed, not asserted (a timed test on a shared machine would be flaky): the 2x
target is checked by `python -m bench.slow_clients`.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
import orjson
import pytest

from eventpipe.core.config import Settings
from eventpipe.core.kafka import ensure_topics
from eventpipe.local.process import free_port
from eventpipe.local.stack import StackUrls
from tests.integration.support import (
    api_env,
    delete_topics,
    fresh_database,
    healthy,
    stop_process,
    wait_until_healthy,
)
from tests.integration.test_ingest import (
    api_settings,
    basic,
    create_project,
    create_write_key,
    sign_in,
)

pytestmark = pytest.mark.integration

HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 3.0
# More than the api's soft limit of open files at start (API_SOFT_NOFILE) between them.
SLOW_HEADS = 900
SLOW_BODIES = 200
# Each slow connection sends one byte this often until it is cut.
TRICKLE_S = 0.5
# How late a cut may come: the api's event loop has a thousand connections to serve.
LATE_MARGIN_S = 1.5
# How early: the server's clocks start after the client's (open_slow_connections), so never
# early, but for the loop's clock granularity (uvloop's timers count whole milliseconds).
EARLY_TOLERANCE_S = 0.01
API_SOFT_NOFILE = 1024
UNLOADED_REQUESTS = 200

BODY = orjson.dumps({"userId": "slow", "event": "Slow", "properties": {"pad": "x" * 140}})
HEAD = (
    b"POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"User-Agent: slowloris\r\nContent-Length: %d\r\n\r\n" % len(BODY)
)


@dataclass(frozen=True)
class Api:
    url: str
    write_key: str
    log_path: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@dataclass(frozen=True)
class SlowClient:
    """One slow connection: from when the deadline it should meet runs (connected for a head,
    head sent for a body) to when the server closed it, and what it answered."""

    kind: Literal["head", "body"]
    started: float
    closed: float
    sent_bytes: int
    answer: bytes
    error: str = ""

    @property
    def lived_s(self) -> float:
        return self.closed - self.started


@dataclass
class NormalClient:
    """Track requests one after another on a kept-alive connection (a fresh one every tenth),
    from a thread of its own until stopped."""

    api: Api
    latencies_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def send(self, count: int) -> list[float]:
        with httpx.Client(base_url=self.api.url, timeout=10) as http:
            return [self._track(http, index) for index in range(count)]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="normal-client", daemon=True)
        self._thread.start()

    def stop(self) -> list[float]:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)
        assert not self._thread.is_alive(), "the normal client did not stop"
        return self.latencies_s

    def _run(self) -> None:
        with httpx.Client(base_url=self.api.url, timeout=10) as http:
            index = 0
            while not self._stop.is_set():
                self.latencies_s.append(self._track(http, index))
                index += 1

    def _track(self, http: httpx.Client, index: int) -> float:
        headers = {**basic(self.api.write_key), "Content-Type": "application/json"}
        if index % 10 == 9:
            headers["Connection"] = "close"  # the next request needs an accept
        body = orjson.dumps({"userId": f"user-{index}", "event": "Normal"})
        started = time.monotonic()
        try:
            answer = http.post("/v1/track", content=body, headers=headers)
        except httpx.TransportError as error:
            self.failures.append(f"request {index}: {error!r}")
            return time.monotonic() - started
        if answer.status_code != 200:
            self.failures.append(f"request {index}: {answer.status_code} {answer.text[:200]}")
        return time.monotonic() - started


@contextlib.contextmanager
def open_files_for(needed: int) -> Iterator[None]:
    """This process's soft limit on open files raised to `needed` meanwhile."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard == resource.RLIM_INFINITY or hard >= needed, (
        f"this test needs {needed} open files; the hard limit is {hard} (ulimit -Hn)"
    )
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _soft_nofile_1024() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (API_SOFT_NOFILE, hard))


@pytest.fixture
def api(stack_urls: StackUrls, tmp_path: Path) -> Iterator[Api]:
    """`python -m eventpipe api` with short read deadlines and a soft limit of 1024 open files,
    on a topic and database of its own; a project's write key."""
    unique = uuid.uuid4().hex[:12]
    topic = f"test.{unique}"
    ensure_topics(stack_urls.kafka_bootstrap, {topic: 3})
    try:
        with fresh_database(stack_urls.database_url, f"test_{unique}") as database_url:
            base = Settings(
                kafka_bootstrap=stack_urls.kafka_bootstrap,
                redis_url=stack_urls.redis_url,
                database_url=database_url,
                state_dir=tmp_path / "state",
                events_topic=topic,
            )
            settings = api_settings(base, tmp_path / "keys")
            env = {
                **api_env(settings, free_port(), tmp_path / "api-state"),
                "EVENTPIPE_HTTP_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
                "EVENTPIPE_HTTP_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
            }
            yield from _serve(settings, env, tmp_path / "api.log", unique)
    finally:
        delete_topics(stack_urls.kafka_bootstrap, [topic])


def _serve(settings: Settings, env: dict[str, str], log_path: Path, unique: str) -> Iterator[Api]:
    url = f"http://127.0.0.1:{env['EVENTPIPE_HTTP_PORT']}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "eventpipe", "api"],
            env=env,
            stdout=log,
            stderr=log,
            preexec_fn=_soft_nofile_1024,
        )
    try:
        wait_until_healthy(process, url, log_path)
        with httpx.Client(base_url=url, timeout=10) as http:
            owner = sign_in(http, settings, f"owner-{unique}@example.com")
            key = str(create_write_key(http, owner, create_project(http, owner))["key"])
        yield Api(url, key, log_path)
        assert process.poll() is None, f"the api exited:\n{log_path.read_text()}"
    finally:
        stop_process(process)


@dataclass(frozen=True)
class Opened:
    """A slow connection as opened: its first bytes already sent, from when its deadline runs."""

    kind: Literal["head", "body"]
    started: float
    sock: socket.socket


def open_slow_connections(port: int) -> list[Opened]:
    """Connect each, and send its head's first byte (or its whole head) at once, with blocking
    calls: the server's clocks start at its accept (and at the head's arrival), after the time
    taken here, so a cut is never early by the client's count, and a client loop busy opening
    the others cannot delay the first byte past the deadline."""
    opened = []
    for kind in ["head"] * SLOW_HEADS + ["body"] * SLOW_BODIES:
        started = time.monotonic()
        sock = socket.create_connection(("127.0.0.1", port))
        if kind == "body":
            started = time.monotonic()
        sock.sendall(HEAD[:1] if kind == "head" else HEAD)
        sock.setblocking(False)
        opened.append(Opened("head" if kind == "head" else "body", started, sock))
    return opened


class Trickle(asyncio.Protocol):
    """One slow connection: the rest of its head (or its body) a byte every TRICKLE_S until the
    server closes it or it is too late to count; `done` tells how it went. Callbacks, not a task
    per connection: the client's own loop must not be what is slow."""

    def __init__(self, opened: Opened) -> None:
        self.kind, self.started = opened.kind, opened.started
        self.payload, self.timeout = (
            (HEAD, HEADER_TIMEOUT_S) if opened.kind == "head" else (BODY, BODY_TIMEOUT_S)
        )
        self.sent = 1 if opened.kind == "head" else 0
        self.received = bytearray()
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[SlowClient] = self.loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.timers: list[asyncio.TimerHandle] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        give_up = self.started + self.timeout + LATE_MARGIN_S + 1 - time.monotonic()
        self.timers.append(self.loop.call_later(give_up, self._finish, "never closed"))
        self.timers.append(self.loop.call_later(TRICKLE_S, self._send_byte))

    def _send_byte(self) -> None:
        assert self.transport is not None
        if not self.done.done() and self.sent < len(self.payload):
            self.transport.write(self.payload[self.sent : self.sent + 1])
            self.sent += 1
            self.timers.append(self.loop.call_later(TRICKLE_S, self._send_byte))

    def data_received(self, data: bytes) -> None:
        self.received += data

    def eof_received(self) -> bool:
        self._finish("")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(type(exc).__name__ if exc else "")

    def _finish(self, error: str) -> None:
        if self.done.done():
            return
        for timer in self.timers:
            timer.cancel()
        closed = time.monotonic()
        answer = bytes(self.received)
        self.done.set_result(SlowClient(self.kind, self.started, closed, self.sent, answer, error))
        if self.transport is not None:
            self.transport.close()


async def slowloris(opened: list[Opened]) -> list[SlowClient]:
    loop = asyncio.get_running_loop()

    async def trickle(one: Opened) -> SlowClient:
        _, protocol = await loop.create_connection(lambda: Trickle(one), sock=one.sock)
        return await protocol.done

    return await asyncio.gather(*(trickle(one) for one in opened))


def ms(latencies_s: list[float], quantile: float) -> float:
    ordered = sorted(latencies_s)
    return 1000 * ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]


def describe(slow: list[SlowClient], kind: str, timeout: float) -> str:
    clients = [client for client in slow if client.kind == kind]
    lived = sorted(client.lived_s for client in clients if client.error != "never closed")
    cut = (
        f"cut after {lived[0]:.2f} s (first), {lived[len(lived) // 2]:.2f} s (median), "
        f"{lived[-1]:.2f} s (last)"
        if lived
        else "none cut"
    )
    return f"{kind} timeout {timeout:g} s: {cut}; {len(clients) - len(lived)} never closed"


def assert_cut_in_time(slow: list[SlowClient]) -> None:
    for kind, timeout in (("head", HEADER_TIMEOUT_S), ("body", BODY_TIMEOUT_S)):
        clients = [client for client in slow if client.kind == kind]
        early = [c for c in clients if c.lived_s < timeout - EARLY_TOLERANCE_S]
        late = [c for c in clients if c.lived_s > timeout + LATE_MARGIN_S]
        assert not early, f"{len(early)} {kind} connections cut early: {early[:3]}"
        assert not late, f"{len(late)} {kind} connections cut late: {late[:3]}"
        # Still trickling when cut: the deadline is not an idle timeout.
        assert all(c.sent_bytes < len(HEAD if kind == "head" else BODY) for c in clients)


def assert_answered_408(slow: list[SlowClient]) -> None:
    # Each sent part of a request, and none got a byte of an answer: a 408 is due. It is lost
    # only when the client's next byte crossed the close and the server's kernel answered it with
    # a reset before the client read the 408; that stays rare.
    unanswered = [client for client in slow if not client.answer]
    assert len(unanswered) <= len(slow) // 100, f"{len(unanswered)} without an answer"
    for client in slow:
        if client.answer:
            head, _, body = client.answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 "), client
            assert orjson.loads(body)["error"]["code"] == "request_timeout", client


def test_slow_clients_are_cut_at_the_deadlines_and_normal_clients_are_served(api: Api) -> None:
    normal = NormalClient(api)
    unloaded = normal.send(UNLOADED_REQUESTS)
    normal.start()
    try:
        with open_files_for(SLOW_HEADS + SLOW_BODIES + 256):
            slow = asyncio.run(slowloris(open_slow_connections(api.port)))
    finally:
        loaded = normal.stop()

    print(  # noqa: T201 - the scenario's figures, shown with -s
        f"\n[slow clients] {SLOW_HEADS} slow heads, {SLOW_BODIES} slow bodies, a byte every "
        f"{TRICKLE_S:g} s\n  {describe(slow, 'head', HEADER_TIMEOUT_S)}\n"
        f"  {describe(slow, 'body', BODY_TIMEOUT_S)}\n"
        f"  normal track requests (the test's own threads share its GIL; see bench.slow_clients):"
        f" unloaded p50 {ms(unloaded, 0.5):.1f} ms p99 {ms(unloaded, 0.99):.1f} ms "
        f"({len(unloaded)}); during p50 {ms(loaded, 0.5):.1f} ms p99 {ms(loaded, 0.99):.1f} ms "
        f"({len(loaded)})"
    )
    assert not normal.failures, normal.failures[:5]
    assert len(loaded) >= 20, f"only {len(loaded)} normal requests during the slowloris"
    assert_cut_in_time(slow)
    assert_answered_408(slow)
    assert healthy(api.url)
    log = api.log_path.read_text()
    assert f"open files limit raised from {API_SOFT_NOFILE}" in log, log
    assert "Traceback" not in log, log
