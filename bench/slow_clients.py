"""Normal clients' latency while a thousand slow clients (slowloris) hold connections to the api.

`uv run python -m bench.slow_clients` (see bench/README.md). It starts Kafka, Redis and PostgreSQL
with eventpipe.local unless EVENTPIPE_*_URL are set, starts `eventpipe api` (one worker, the
default read deadlines, a soft limit of 1024 open files as many systems give it) and measures
paced `POST /v1/batch` requests from bench.loadgen twice: alone, then while a separate process
keeps a thousand connections open that send their request head (or their body, after a whole
head) a byte at a time, opening a new one whenever the api cuts one. It prints each figure beside
its limit and the CPU of each process, and exits 1 if a limit is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

import httpx
import uvloop

from bench.cpu import CpuMeter, cpu_between, loadgen_cpu_s, tree_cpu_s
from bench.loadgen import LoadResult, LoadSpec, basic_auth, run_load
from bench.roles import start_api, stop_api
from bench.stack import bench_stack
from eventpipe.core.config import Settings

# The target: normal clients' p99 with the slow clients at most this many times their p99 alone.
TARGET_P99_RATIO = 2.0
# A slow connection must be cut within this long after its deadline.
CUT_MARGIN_S = 1.0
# Other processes using more than this during a window make its figures pessimistic: say so.
NOISY_CORES = 0.25
API_SOFT_NOFILE = 1024
Kind = Literal["head", "body"]


def request_head(write_key: str, length: int) -> bytes:
    return (
        "POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: {basic_auth(write_key)}\r\nUser-Agent: slowloris\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


# --- the slow clients, in a process of their own (`--slowloris`) -------------------------------


@dataclass
class Tally:
    """What the slow clients saw, per kind: how long each connection lived, how it ended."""

    opened: Counter[str] = field(default_factory=Counter)
    lived_s: dict[str, list[float]] = field(default_factory=lambda: {"head": [], "body": []})
    ended: Counter[str] = field(default_factory=Counter)
    connect_errors: Counter[str] = field(default_factory=Counter)
    bytes_sent: int = 0
    most_open: int = 0
    cpu_s: float = 0.0
    life_s: float = 0.0


class Slow(asyncio.Protocol):
    """One slow connection: a byte every `trickle_s` (a body's after its whole head) until the
    api closes it; then its pool opens another."""

    def __init__(self, pool: Pool, kind: Kind, started: float) -> None:
        self.pool, self.kind, self.started = pool, kind, started
        self.payload = pool.head if kind == "head" else pool.body
        self.sent = 0
        self.answer = b""
        self.transport: asyncio.Transport | None = None
        self.tick: asyncio.TimerHandle | None = None
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is not an asyncio.Transport by class, only by behaviour.
        self.transport = cast(asyncio.Transport, transport)
        if self.kind == "body":
            self.transport.write(self.pool.head)
            # The body's deadline runs from the head's end: count from here.
            self.started = time.monotonic()
        self._send_byte()

    def _send_byte(self) -> None:
        assert self.transport is not None  # noqa: S101 - connected
        if self.done or self.sent >= len(self.payload):
            return
        self.transport.write(self.payload[self.sent : self.sent + 1])
        self.sent += 1
        self.pool.tally.bytes_sent += 1
        self.tick = asyncio.get_running_loop().call_later(self.pool.trickle_s, self._send_byte)

    def data_received(self, data: bytes) -> None:
        self.answer += data

    def eof_received(self) -> bool:
        self._end("408" if self.answer.startswith(b"HTTP/1.1 408 ") else "closed, no 408")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(type(exc).__name__ if exc else "closed, no 408")

    def _end(self, how: str) -> None:
        if self.done:
            return
        self.done = True
        if self.tick is not None:
            self.tick.cancel()
        if self.transport is not None:
            self.transport.close()
        self.pool.ended(self, how)


class Pool:
    """Keeps `size` slow connections open (a fifth of them slow bodies) until stopped."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.port, self.size, self.trickle_s = args.slowloris, args.connections, args.trickle
        # Long enough never to be complete before the deadline, whatever the pace.
        self.body = b'{"batch": [], "pad": "' + b"x" * 4000 + b'"}'
        self.head = request_head(args.write_key, len(self.body))
        self.tally = Tally()
        self.open: set[Slow] = set()
        self.stopping = False

    async def run(self, ramp_s: float, seconds: float) -> Tally:
        loop = asyncio.get_running_loop()
        cpu, started = time.process_time(), time.monotonic()
        for index in range(self.size):
            loop.create_task(self.connect("body" if index % 5 == 4 else "head"))
            await asyncio.sleep(ramp_s / self.size)
        print(f"ready {len(self.open)}", flush=True)
        await asyncio.sleep(seconds)
        self.stopping = True
        for slow in list(self.open):
            if slow.transport is not None:
                slow.transport.abort()
        self.tally.cpu_s = time.process_time() - cpu
        self.tally.life_s = time.monotonic() - started
        return self.tally

    async def connect(self, kind: Kind) -> None:
        while not self.stopping:
            started = time.monotonic()
            try:
                _, slow = await asyncio.get_running_loop().create_connection(
                    functools.partial(Slow, self, kind, started), "127.0.0.1", self.port
                )
            except OSError as error:
                self.tally.connect_errors[type(error).__name__] += 1
                await asyncio.sleep(0.1)
                continue
            self.open.add(slow)
            self.tally.opened[kind] += 1
            self.tally.most_open = max(self.tally.most_open, len(self.open))
            return

    def ended(self, slow: Slow, how: str) -> None:
        self.open.discard(slow)
        if self.stopping:
            return
        self.tally.lived_s[slow.kind].append(time.monotonic() - slow.started)
        self.tally.ended[f"{slow.kind}: {how}"] += 1
        asyncio.get_running_loop().create_task(self.connect(slow.kind))


def run_slowloris(args: argparse.Namespace) -> None:
    """The `--slowloris` process: keep the pool open for `--life` s, then write its tally."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tally = uvloop.run(Pool(args).run(args.ramp, args.life))
    # Not dataclasses.asdict: it rebuilds a Counter from (key, value) pairs, counting the pairs.
    # A file, not stdout: the parent reads the pipe for the "ready" line only.
    args.tally.write_text(json.dumps(vars(tally)))


# --- the normal clients and the measures --------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """One measured window: the normal clients' answers, fresh connections', and CPU seconds."""

    load: LoadResult
    fresh_ms: list[float]
    fresh_failed: int
    # CPU seconds of each process (with its children) during the window, "others" included:
    # every other process of the machine (other jobs sharing it).
    cpu_s: dict[str, float]
    elapsed_s: float

    @property
    def requests(self) -> int:
        return self.load.requests + len(self.fresh_ms)


class FreshConnections:
    """A request on a new connection every `interval_s` (Connection: close), as a browser
    opening its first connection does: it needs an accept, which keep-alive loads never do."""

    def __init__(self, port: int, write_key: str, interval_s: float = 0.1) -> None:
        self.port, self.interval_s = port, interval_s
        body = b'{"batch": [{"type": "track", "userId": "fresh", "event": "Fresh"}]}'
        head = request_head(write_key, len(body)).replace(
            b"User-Agent: slowloris", b"Connection: close"
        )
        self.request = head + body
        self.latencies_ms: list[float] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FreshConnections:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            started = time.perf_counter()
            try:
                answer = self._exchange()
            except OSError:
                answer = b""
            if answer.startswith(b"HTTP/1.1 200 "):
                self.latencies_ms.append((time.perf_counter() - started) * 1000)
            else:
                self.failed += 1

    def _exchange(self) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(self.request)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)


def measure(spec: LoadSpec, port: int, processes: dict[str, int]) -> Window:
    """Run the normal load once, with the CPU each of `processes` used meanwhile (bench.cpu:
    "loadgen" is this process, fresh connections included, with its load processes)."""
    servers = {name: functools.partial(tree_cpu_s, pid) for name, pid in processes.items()}
    meter = CpuMeter({**servers, "loadgen": loadgen_cpu_s})
    before = meter.sample()
    with FreshConnections(port, spec.write_key) as fresh:
        load = run_load(spec)
    cpu = cpu_between(before, meter.sample())
    return Window(load, sorted(fresh.latencies_ms), fresh.failed, cpu.seconds, cpu.elapsed_s)


def quantile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(fraction * (len(values) - 1)))]


@contextlib.contextmanager
def soft_open_files(limit: int) -> Iterator[None]:
    """This process's soft limit on open files lowered to `limit` meanwhile: what a process
    started now inherits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, soft), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def slowloris(
    args: argparse.Namespace, port: int, key: str, seconds: float, tally_path: Path
) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """The slow clients' process, once its connections are open; its tally once it is done."""
    command = [
        sys.executable, "-m", "bench.slow_clients", "--slowloris", str(port),
        "--write-key", key, "--connections", str(args.connections),
        "--trickle", str(args.trickle), "--ramp", str(args.ramp), "--life", str(seconds),
        "--tally", str(tally_path),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)  # noqa: S603 - ours
    assert process.stdout is not None  # noqa: S101 - piped
    tally: dict[str, Any] = {}
    try:
        ready = process.stdout.readline()
        if not ready.startswith("ready"):
            raise RuntimeError(f"the slow clients did not start: {ready!r}")
        yield process, tally
        process.wait(timeout=seconds + 60)
        tally.update(json.loads(tally_path.read_text()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# --- the report ---------------------------------------------------------------------------------


def healthy(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    return False


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


@dataclass(frozen=True)
class Round:
    """The normal clients alone, then beside the slow clients (whose tally this is)."""

    alone: Window
    loaded: Window
    tally: dict[str, Any]


def report_rounds(rounds: list[Round]) -> None:
    print(
        f"\n{'kept-alive normal clients, each round':<40}"
        f"{'p50 ms':>8}{'p99 ms':>8}{'others':>8}   (others: cores other processes took)"
    )
    for number, one in enumerate(rounds, 1):
        for label, window in (("alone", one.alone), ("with the slow clients", one.loaded)):
            load = window.load
            print(
                f"  {number}: {label:<35}{load.latency_ms(0.5):>8.1f}{load.latency_ms(0.99):>8.1f}"
                f"{window.cpu_s['others'] / window.elapsed_s:>8.2f}"
            )


def report_latency(alone: Window, loaded: Window) -> bool:
    print(
        f"\n{'normal clients, the best round of each':<46}"
        f"{'requests':>9}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}  failed"
    )
    for label, window in (("alone", alone), ("with the slow clients", loaded)):
        load, fresh = window.load, window.fresh_ms
        errors = ", ".join(f"{s or 'none'}: {n}" for s, n in load.errors.items()) or "0"
        rows = (
            (f"kept-alive, paced, {label}", load.latencies_ms, errors),
            (f"a new connection each, {label}", fresh, str(window.fresh_failed)),
        )
        for name, latencies, failed in rows:
            print(
                f"  {name:<44}{len(latencies):>9}{quantile(latencies, 0.5):>8.1f}"
                f"{quantile(latencies, 0.99):>8.1f}{quantile(latencies, 1):>8.1f}  {failed}"
            )
    limit = TARGET_P99_RATIO * alone.load.latency_ms(0.99)
    p99 = loaded.load.latency_ms(0.99)
    ok = p99 <= limit
    print(
        f"\np99 loaded {p99:.1f} ms vs limit {TARGET_P99_RATIO:g}x unloaded = {limit:.1f} ms: "
        f"{verdict(ok)}"
    )
    return ok


def merge_tallies(tallies: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {
        "opened": Counter(), "ended": Counter(), "connect_errors": Counter(),
        "lived_s": {"head": [], "body": []}, "bytes_sent": 0, "most_open": 0, "life_s": 0.0,
    }  # fmt: skip
    for tally in tallies:
        for name in ("opened", "ended", "connect_errors"):
            merged[name].update(tally[name])
        for kind in ("head", "body"):
            merged["lived_s"][kind] += tally["lived_s"][kind]
        merged["bytes_sent"] += tally["bytes_sent"]
        merged["life_s"] += tally["life_s"]
        merged["most_open"] = max(merged["most_open"], tally["most_open"])
    return merged


def report_cuts(tally: dict[str, Any], settings: Settings) -> bool:
    print(
        f"\nslow clients: {tally['most_open']} open at most; opened "
        f"{sum(tally['opened'].values()):,}, {tally['bytes_sent']:,} bytes sent a byte at a time"
    )
    ok = True
    deadlines = (
        ("head", "slow heads", settings.http_header_timeout_s),
        ("body", "slow bodies", settings.http_body_timeout_s),
    )
    for kind, name, timeout in deadlines:
        lived = sorted(tally["lived_s"][kind])
        early = sum(1 for value in lived if value < timeout - 0.05)
        late = sum(1 for value in lived if value > timeout + CUT_MARGIN_S)
        ok = ok and bool(lived) and not early and not late
        print(
            f"  {name} cut: {len(lived):,}, after {quantile(lived, 0):.2f} / "
            f"{quantile(lived, 0.5):.2f} / {quantile(lived, 1):.2f} s (min / median / max); "
            f"limit {timeout:g} to {timeout + CUT_MARGIN_S:g} s, {early} early, {late} late"
        )
    ended = ", ".join(f"{how}: {n:,}" for how, n in sorted(tally["ended"].items()))
    print(f"  how they ended: {ended}")
    errors = ", ".join(f"{name}: {n}" for name, n in tally["connect_errors"].items()) or "none"
    print(f"  connections refused: {errors}")
    print(f"cut within deadline + {CUT_MARGIN_S:g} s, never before: {verdict(ok)}")
    return ok and not tally["connect_errors"]


def report_cpu(rounds: list[Round], tally: dict[str, Any]) -> None:
    alone = [one.alone for one in rounds]
    loaded = [one.loaded for one in rounds]
    print(
        f"\n{'CPU, all rounds (s, us per normal request)':<44}"
        f"{'alone':>8}{'us/req':>8}{'with slow':>11}{'us/req':>8}"
    )
    requests = (sum(w.requests for w in alone), sum(w.requests for w in loaded))
    for name in loaded[0].cpu_s:
        first = sum(w.cpu_s.get(name, 0.0) for w in alone)
        then = sum(w.cpu_s[name] for w in loaded)
        print(
            f"  {name:<42}{first:>8.2f}{first / requests[0] * 1e6:>8.0f}"
            f"{then:>11.2f}{then / requests[1] * 1e6:>8.0f}"
        )
    elapsed = sum(w.elapsed_s for w in loaded)
    extra = sum(w.cpu_s["api"] for w in loaded) - sum(w.cpu_s["api"] for w in alone)
    # The slow clients lived longer than the windows: count their cuts and bytes pro rata.
    cuts = sum(tally["ended"].values()) * elapsed / tally["life_s"]
    trickled = tally["bytes_sent"] * elapsed / tally["life_s"]
    print(
        f"  the slow clients cost the api {extra:.2f} s ({extra / elapsed:.2f} cores): "
        f"{extra / cuts * 1e6:.0f} us per slow connection (accept, its bytes, 408, close), "
        f"or {extra / trickled * 1e6:.1f} us per byte trickled"
    )
    busy = sum(w.cpu_s["others"] for w in loaded + alone) / (elapsed * 2)
    if busy > NOISY_CORES:
        print(
            f"  other processes took {busy:.2f} of the {os.cpu_count()} cores on average: "
            "latencies move with them; compare rounds by their `others`"
        )


def run(args: argparse.Namespace, tmp: Path) -> bool:
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:5.1f} s] {message}", flush=True)

    with bench_stack(tmp, topic_prefix="bench.slow_clients") as stack:
        say(f"servers ready; started here: {', '.join(stack.started_here) or 'none'}")
        port, key = stack.port, stack.write_key
        env = {**stack.env, "EVENTPIPE_LOG_LEVEL": "INFO"}
        with soft_open_files(API_SOFT_NOFILE):
            api = start_api(["python", "-m", "eventpipe", "api"], env, tmp / "api.log", port)
        try:
            spec = LoadSpec(
                stack.url, key, batch=1, connections=args.normal_connections,
                seconds=args.seconds, warmup_s=2.0, rate=args.rate,
            )  # fmt: skip
            say(f"api ready on port {port}")
            rounds = [
                run_round(args, spec, tmp, {"api": api.pid, **stack.server_pids}, say)
                for _ in range(args.rounds)
            ]
            alive = healthy(stack.url)
        finally:
            stop_api(api)
    report_rounds(rounds)
    best_alone = min((one.alone for one in rounds), key=lambda w: w.load.latency_ms(0.99))
    best_loaded = min((one.loaded for one in rounds), key=lambda w: w.load.latency_ms(0.99))
    ok_latency = report_latency(best_alone, best_loaded)
    failed = sum(sum(w.load.errors.values()) + w.fresh_failed for w in (best_alone, best_loaded))
    tally = merge_tallies([one.tally for one in rounds])
    ok_cuts = report_cuts(tally, Settings())
    report_cpu(rounds, tally)
    print(f"\nno normal request failed, api /healthz answers at the end: {verdict(alive)}")
    return ok_latency and ok_cuts and alive and not failed


def run_round(
    args: argparse.Namespace,
    spec: LoadSpec,
    tmp: Path,
    processes: dict[str, int],
    say: Callable[[str], None],
) -> Round:
    port = int(spec.url.rsplit(":", 1)[1])
    say(f"normal clients alone for {args.seconds:g} s")
    alone = measure(spec, port, processes)
    # The slow clients' life: the first cuts, the warm-up and the window.
    life = args.settle + spec.warmup_s + spec.seconds + 2
    with slowloris(args, port, spec.write_key, life, tmp / "tally.json") as (process, tally):
        say(f"{args.connections} slow connections open; letting them settle {args.settle:g} s")
        time.sleep(args.settle)
        say(f"normal clients with the slow clients for {args.seconds:g} s")
        loaded = measure(spec, port, {**processes, "slow clients": process.pid})
    say("slow clients stopped")
    return Round(alone, loaded, tally)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=1000, help="slow connections")
    parser.add_argument("--trickle", type=float, default=1.0, help="seconds between their bytes")
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds to open them all")
    parser.add_argument(
        "--settle", type=float, default=12.0, help="seconds of slow clients before the window"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="each measured window")
    parser.add_argument(
        "--rounds", type=int, default=2, help="windows alone and beside the slow clients, in turns"
    )
    parser.add_argument("--rate", type=float, default=100.0, help="normal requests per second")
    parser.add_argument("--normal-connections", type=int, default=8)
    parser.add_argument("--slowloris", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--write-key", help=argparse.SUPPRESS)
    parser.add_argument("--life", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--tally", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.slowloris is not None:
        run_slowloris(args)
        return
    print(
        f"eventpipe slow clients benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores: the api (1 worker), the normal clients, the slow clients' "
        "process and the servers share them"
    )
    with tempfile.TemporaryDirectory(prefix="eventpipe-bench-") as tmp:
        ok = run(args, Path(tmp))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
