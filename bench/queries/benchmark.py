"""The whole read-path benchmark: the dataset, in-process measures, over HTTP, the live stream."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import uvloop

from bench.harness import tree_meter
from bench.queries.checks import check_against_archive, check_loader
from bench.queries.dataset import Dataset, Marker
from bench.queries.live import measure_live
from bench.queries.live_report import report_live
from bench.queries.loading import prepare_dataset
from bench.queries.over_http import measure_over_http
from bench.queries.overview import measure_overview
from bench.queries.search import SearchCase, build_cases, measure_searches
from bench.queries.store import Store, describe_store, kept_servers
from bench.queries.timing import Meters
from bench.roles import Clock
from eventpipe.core.db import async_engine
from eventpipe.core.redis import redis_client


async def in_process(
    store: Store, marker: Marker, args: argparse.Namespace, users: int
) -> tuple[bool, list[SearchCase]]:
    client, engine = redis_client(store.redis_url), async_engine(store.url)
    try:
        now = datetime.now(UTC)
        print(f"\nchecks: the read functions against the archive (project main, {now:%H:%M} UTC)")
        ok = await check_against_archive(client, store.url, marker.main, now)
        ok = await check_loader(client, marker, now) and ok
        meters: Meters = lambda: tree_meter(store.pids)  # noqa: E731 - a one-line factory
        overview = await measure_overview(client, marker.main, args.calls, meters)
        cases = await build_cases(engine, marker.main, datetime.now(UTC), users)
        searches = await measure_searches(engine, marker.main, cases, args, meters)
    finally:
        await client.aclose()
        await engine.dispose()
    return ok and all(t.ok for t in overview + searches), cases


def run(args: argparse.Namespace, tmp: Path) -> bool:
    clock = Clock()
    dataset = Dataset(args.events, args.days, args.users, args.other_share)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    with kept_servers(args.state_dir) as store:
        marker = prepare_dataset(store, dataset, args, clock)
        print(f"dataset: {describe_store(store, marker)}")
        ok, cases = uvloop.run(in_process(store, marker, args, dataset.users))
        if not args.skip_http:
            clock.say("over HTTP: starting the api")
            ok = measure_over_http(store, marker, cases, args, tmp) and ok
        if not args.skip_live:
            maximum, windows = measure_live(store, args, tmp, clock)
            ok = report_live(maximum, not args.rate, windows) and ok
        clock.say("stopping the servers (their data stays)")
    return ok
