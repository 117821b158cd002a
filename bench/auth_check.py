"""What the auth check costs each request: an Ed25519 signature check plus one Redis MGET.

Run with `uv run python -m bench.auth_check` (see bench/README.md). It starts local servers with
eventpipe.local (an EVENTPIPE_*_URL in the environment is used instead), measures, and stops them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI
from redis.asyncio import Redis

from bench.cpu import CpuMeter, cpu_between, loadgen_cpu_s, tree_cpu_s
from bench.limits import AUTH_CHECK_P99_US
from bench.registry import BenchOptions
from bench.results import BenchResult, Figure, RunRecord
from bench.stack import server_pids
from eventpipe.api.app import create_app
from eventpipe.api.deps import CurrentClaims
from eventpipe.auth.denylist import cutoff_key, is_revoked, revoked_key
from eventpipe.auth.keys import Keyring, generate_key_file, load_keyring
from eventpipe.auth.tokens import (
    AccessClaims,
    TokenVerifier,
    issue_access_token,
    verify_access_token,
)
from eventpipe.core.config import Settings
from eventpipe.core.redis import redis_client
from eventpipe.local.stack import LocalStack, StackUrls

# The budget of the whole check (signature and Redis lookup), at p99.
CHECK_P99_TARGET_US = AUTH_CHECK_P99_US
WARM_UP_CALLS = 2_000
DISTINCT_TOKENS = 1_000
# Other users' revocations and logout-all marks, so the lookup does not run on an empty Redis.
DENYLIST_ENTRIES = 10_000


@dataclass(frozen=True)
class Timings:
    """Microseconds per call of each part of the check, and of the two together."""

    verify: list[float]
    lookup: list[float]
    check: list[float]


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def verdict(value: float, target: float) -> str:
    return f"< {target:.0f}  {'ok' if value < target else 'MISSED'}"


def issue_tokens(keyring: Keyring, settings: Settings, count: int) -> list[str]:
    return [
        issue_access_token(
            keyring, settings, user_id=str(uuid.uuid4()), session_id=str(uuid.uuid4())
        ).token
        for _ in range(count)
    ]


async def fill_denylist(redis: Redis, count: int) -> list[str]:
    """Revocations of other users' tokens; returns their keys, to remove them afterwards."""
    keys: list[str] = []
    async with redis.pipeline(transaction=False) as pipe:
        for index in range(count):
            user = str(uuid.uuid4())
            key = cutoff_key(user) if index % 10 == 0 else revoked_key(user, uuid.uuid4().hex)
            pipe.set(key, str(time.time()).encode(), ex=900)
            keys.append(key)
        await pipe.execute()
    return keys


async def time_checks(
    redis: Redis, verify: Callable[[str], AccessClaims], tokens: list[str], calls: int
) -> Timings:
    timings = Timings([], [], [])
    for index in range(calls):
        token = tokens[index % len(tokens)]
        started = time.perf_counter_ns()
        claims = verify(token)
        verified = time.perf_counter_ns()
        if await is_revoked(redis, claims):
            raise RuntimeError("a fresh token was reported revoked")
        finished = time.perf_counter_ns()
        timings.verify.append((verified - started) / 1000)
        timings.lookup.append((finished - verified) / 1000)
        timings.check.append((finished - started) / 1000)
    return timings


async def measure_check(settings: Settings, calls: int) -> tuple[Timings, Timings]:
    """The check with every signature verified, then as the api runs it (TokenVerifier keeps
    the claims of a token it verified, so a client's repeated token skips Ed25519)."""
    keyring = load_keyring(settings)
    tokens = issue_tokens(keyring, settings, DISTINCT_TOKENS)
    redis = redis_client(str(settings.redis_url))

    def uncached(token: str) -> AccessClaims:
        return verify_access_token(keyring, settings, token)

    api_path = TokenVerifier(keyring, settings).verify
    try:
        filler = await fill_denylist(redis, DENYLIST_ENTRIES)
        await time_checks(redis, uncached, tokens, WARM_UP_CALLS)
        first_sight = await time_checks(redis, uncached, tokens, calls)
        await time_checks(redis, api_path, tokens, WARM_UP_CALLS)
        repeated = await time_checks(redis, api_path, tokens, calls)
        await redis.delete(*filler)
    finally:
        await redis.aclose()
    return first_sight, repeated


def bench_app(settings: Settings) -> FastAPI:
    """The real api with two tiny routes that differ only in the auth check."""
    app = create_app(settings)

    @app.get("/bench/open")
    async def bench_open() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/bench/authed")
    async def bench_authed(_claims: CurrentClaims) -> dict[str, bool]:
        return {"ok": True}

    return app


async def requests_per_s(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], total: int, concurrency: int
) -> float:
    each = total // concurrency

    async def worker() -> None:
        for _ in range(each):
            response = await client.get(path, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"{path}: {response.status_code} {response.text}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return each * concurrency / (time.perf_counter() - started)


async def measure_throughput(
    settings: Settings, total: int, rounds: int, concurrency: int
) -> tuple[float, float]:
    """Median requests/s of the open and the authenticated route, measured in turns."""
    app = bench_app(settings)
    token = issue_tokens(load_keyring(settings), settings, 1)[0]
    # The same header on both routes: the open one ignores it, so only the check differs.
    headers = {"Authorization": f"Bearer {token}"}
    rates: dict[str, list[float]] = {"/bench/open": [], "/bench/authed": []}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for path in rates:  # warm-up
                await requests_per_s(client, path, headers, total // 4, concurrency)
            for _ in range(rounds):
                for path, measured in rates.items():
                    measured.append(await requests_per_s(client, path, headers, total, concurrency))
    return percentile(rates["/bench/open"], 0.5), percentile(rates["/bench/authed"], 0.5)


def report_check(timings: Timings, title: str) -> None:
    print(f"\n{title}, {len(timings.check):,} calls (µs)      p50       p99")
    parts = (
        ("verify token (signature, claims)", timings.verify, ""),
        ("is_revoked (one Redis MGET)", timings.lookup, ""),
        ("whole check", timings.check, "p99 "),
    )
    for name, values, label in parts:
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        target = f"   target {label}{verdict(p99, CHECK_P99_TARGET_US)}" if label else ""
        print(f"  {name:<40}{p50:>8.1f}  {p99:>8.1f}{target}")


def report_throughput(open_rps: float, authed_rps: float, total: int, concurrency: int) -> None:
    added_us = (1 / authed_rps - 1 / open_rps) * 1e6
    print(
        f"\nin-process throughput (httpx ASGITransport, {total:,} requests, {concurrency} at once)"
    )
    print(f"  GET /bench/open                         {open_rps:>10,.0f} requests/s")
    print(f"  GET /bench/authed                       {authed_rps:>10,.0f} requests/s")
    print(f"  authed / open                           {authed_rps / open_rps:>10.2f}")
    target = verdict(added_us, CHECK_P99_TARGET_US)
    print(f"  time the check adds (mean)              {added_us:>10.1f} µs   target {target}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000, help="checks timed one by one")
    parser.add_argument("--requests", type=int, default=4_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per route, in turns")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    return parser.parse_args()


@contextlib.contextmanager
def redis_settings(state_dir: Path) -> Iterator[tuple[Settings, StackUrls]]:
    """Settings with the stack's Redis and a signing key of our own in `state_dir`."""
    with LocalStack(Settings(state_dir=state_dir / "stack")) as stack:
        keys_dir = state_dir / "keys"
        generate_key_file(keys_dir)
        yield (
            Settings(state_dir=state_dir, redis_url=stack.urls.redis_url, jwt_keys_dir=keys_dir),
            stack.urls,
        )


def run(args: argparse.Namespace, state_dir: Path) -> None:
    with redis_settings(state_dir) as (settings, urls):
        print(f"Redis at {urls.redis_url}")
        first_sight, repeated = asyncio.run(measure_check(settings, args.calls))
        report_check(first_sight, "auth check, every signature verified")
        report_check(repeated, "auth check as the api runs it (verified token cached)")
        open_rps, authed_rps = asyncio.run(
            measure_throughput(settings, args.requests, args.rounds, args.concurrency)
        )
        report_throughput(open_rps, authed_rps, args.requests, args.concurrency)


def run_bench(options: BenchOptions) -> BenchResult:
    """The registry's entry: the check's p99 and the time it adds, with the CPU per request."""
    calls, requests, rounds = (2_000, 500, 1) if options.quick else (20_000, 4_000, 5)
    with tempfile.TemporaryDirectory(prefix="eventpipe-bench-") as tmp:
        with redis_settings(Path(tmp)) as (settings, urls):
            _, repeated = asyncio.run(measure_check(settings, calls))
            redis = {k: v for k, v in server_pids(urls).items() if k == "redis"}
            # The app and its client share this process: one party, "bench (app + client)".
            meter = CpuMeter({"bench": loadgen_cpu_s, **parties_of(redis)})
            before = meter.sample()
            open_rps, authed_rps = asyncio.run(measure_throughput(settings, requests, rounds, 16))
            cpu = cpu_between(before, meter.sample())
    added_us = (1 / authed_rps - 1 / open_rps) * 1e6
    # Both routes, each with its warm-up (a quarter): every request of the CPU window.
    total = 2 * (requests // 16 * 16 * rounds + requests // 4 // 16 * 16)
    return BenchResult(
        "auth_check",
        figures=[
            Figure(
                "auth check p99, verified token cached",
                percentile(repeated.check, 0.99),
                "µs",
                AUTH_CHECK_P99_US,
                "AUTH_CHECK_P99_US",
                "lower",
            ),
            Figure(
                "time the check adds per request (mean)",
                added_us,
                "µs",
                AUTH_CHECK_P99_US,
                "AUTH_CHECK_P99_US",
                "lower",
            ),
        ],
        runs=[
            RunRecord(
                "auth: open + authed, in-process",
                authed_rps,
                int(total),
                cpu_us_per_event={p: cpu.us_per_event(p, int(total)) for p in cpu.seconds},
                cpu_cores={p: cpu.cores(p) for p in cpu.seconds},
                extra={"open_requests_per_s": open_rps},
            )
        ],
    )


def parties_of(pids: dict[str, int]) -> dict[str, Callable[[], float]]:
    return {name: functools.partial(tree_cpu_s, pid) for name, pid in pids.items()}


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="eventpipe-bench-") as state_dir:
        run(args, Path(state_dir))


if __name__ == "__main__":
    main()
