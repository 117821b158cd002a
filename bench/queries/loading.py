"""Loading the dataset, or topping up the kept one with the events of the time since."""

from __future__ import annotations

import argparse
import contextlib
import time
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta

import psycopg
import redis
from psycopg import sql

from bench.queries.counting import replay_through_processor, write_aggregates
from bench.queries.dataset import DATABASE, Dataset, Marker, read_marker, write_marker
from bench.queries.generator import Span, day_spans, fill_day, generate, in_parallel, open_generator
from bench.queries.store import (
    Store,
    aggregates_present,
    create_projects,
    existing_database,
    partitions_around,
    recreate_database,
)
from bench.roles import Clock
from eventpipe.processor.archive import partition_name


def fill_archive(url: str, dataset: Dataset, spans: list[tuple[date, Span]], check: Span,
                 connections: int) -> None:  # fmt: skip
    """Every day's partition, `connections` at once, then the check project's events."""
    in_parallel(spans, connections, lambda: open_generator(url),
                lambda conn, item: fill_day(conn, item[0], item[1], dataset.users))  # fmt: skip
    with open_generator(url) as conn:
        generate(conn, "events", check, dataset.users)


def vacuum_days(url: str, days: list[date], connections: int) -> None:
    """As autovacuum would have done to past days: visibility map, hint bits, statistics.

    Only once every row is in (a running insert keeps the rows after it from all-visible), and
    not the parent: autovacuum never analyzes a partitioned table.
    """
    vacuum = sql.SQL("VACUUM (ANALYZE) {}")
    in_parallel([partition_name(day) for day in days], connections,
                lambda: psycopg.connect(url, autocommit=True),
                lambda conn, name: conn.execute(vacuum.format(sql.Identifier(name))))  # fmt: skip


def write_all_aggregates(store: Store, projects: dict[str, str]) -> int:
    """The aggregates of the three projects, and the check project's replayed through the
    processor's step under its copy's id; how many events were replayed."""
    main, other, check_project = projects["main"], projects["other"], projects["check"]
    write_aggregates(store.url, store.client, [main, other, check_project], None)
    replayed = replay_through_processor(store.url, store.client, check_project,
                                        projects["check_copy"])  # fmt: skip
    # The append-only file, compacted: a quick start next time (redis-py leaves this untyped);
    # Redis may be rewriting it already, on its own.
    with contextlib.suppress(redis.ResponseError):
        store.client.execute_command("BGREWRITEAOF")  # type: ignore[no-untyped-call]
    return replayed


def load_dataset(store: Store, dataset: Dataset, clock: Clock, connections: int) -> Marker:
    """A new database and an empty Redis, then the archive, its aggregates and the marker."""
    started = time.perf_counter()
    url = store.url = recreate_database(store, DATABASE)
    store.client.flushdb()
    projects = create_projects(url)
    anchor = datetime.now(UTC).replace(microsecond=0)
    start = anchor - timedelta(days=dataset.days)
    spans = day_spans(dataset, projects, start, anchor)
    rows = sum(span.rows for _, span in spans)
    clock.say(f"generating {rows:,} events in {len(spans)} daily partitions, {connections} at once")
    check = Span(start, anchor, dataset.check_events, projects["check"], None, 0)
    fill_archive(url, dataset, spans, check, connections)
    filled = time.perf_counter() - started
    clock.say(f"archive filled and indexed in {filled:.0f} s; VACUUM (ANALYZE) of each day")
    vacuum_days(url, [day for day, _ in spans], connections)
    partitions_around(url, anchor.date())
    archived = time.perf_counter() - started
    clock.say(f"archive loaded in {archived:.0f} s ({rows / archived:,.0f} events/s); aggregates")
    replayed = write_all_aggregates(store, projects)
    marker = Marker(asdict(dataset), projects, anchor, time.perf_counter() - started)
    write_marker(url, marker)
    clock.say(f"aggregates written in {marker.load_seconds - archived:.0f} s ({replayed:,} check "
              f"events through the processor's step too); dataset loaded in "
              f"{marker.load_seconds:.0f} s")  # fmt: skip
    return marker


def top_up(store: Store, marker: Marker, dataset: Dataset, clock: Clock) -> Marker:
    """The events of the time since the data's end, at the dataset's rate, and their aggregates:
    the newest buckets (30m, today) hold events as they would on a live system."""
    now = datetime.now(UTC).replace(microsecond=0)
    if now - marker.anchor < timedelta(minutes=1):
        return marker
    partitions_around(store.url, now.date())
    rows = round(dataset.rate_per_s * (now - marker.anchor).total_seconds())
    projects = marker.projects
    span = Span(marker.anchor, now, rows, projects["main"], projects["other"], dataset.other_every)
    with open_generator(store.url) as conn:
        generate(conn, "events", span, dataset.users)
    write_aggregates(store.url, store.client, [projects["main"], projects["other"]], marker.anchor)
    clock.say(f"topped up: {rows:,} events from {marker.anchor:%Y-%m-%d %H:%M} to {now:%H:%M} UTC")
    marker.anchor = now
    write_marker(store.url, marker)
    return marker


def stale(marker: Marker | None, dataset: Dataset) -> str | None:
    """Why the kept dataset cannot serve (None: it can)."""
    if marker is None:
        return "no dataset kept yet"
    if marker.params != asdict(dataset):
        return f"the kept dataset has other parameters ({marker.params})"
    age = datetime.now(UTC) - marker.anchor
    if age > timedelta(days=dataset.days) / 10:
        return f"the kept dataset ends {age.total_seconds() / 86_400:.1f} days ago"
    return None


def prepare_dataset(
    store: Store, dataset: Dataset, args: argparse.Namespace, clock: Clock
) -> Marker:
    found = existing_database(store, DATABASE)
    marker = read_marker(found) if found else None
    reason = "--reload" if args.reload else stale(marker, dataset)
    if marker is None or reason is not None:
        clock.say(f"loading the dataset: {reason}")
        marker = load_dataset(store, dataset, clock, args.load_connections)
    else:
        assert found is not None  # noqa: S101 - a marker was read from it
        store.url = found
        clock.say(f"dataset kept from an earlier run (loaded in {marker.load_seconds:.0f} s)")
    while datetime.now(UTC) - marker.anchor > timedelta(minutes=1):
        marker = top_up(store, marker, dataset, clock)
    if not aggregates_present(store, marker):
        clock.say("Redis lacks the dataset's aggregates (a lost state?): writing them again")
        write_aggregates(
            store.url, store.client, [marker.projects[r] for r in ("main", "other", "check")], None
        )
    return marker
