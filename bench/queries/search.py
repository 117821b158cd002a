"""Event search, in-process, and the plans of its queries."""

from __future__ import annotations

import argparse
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bench.queries.dataset import NAMES, SKUS
from bench.queries.timing import (
    TARGET_SEARCH_P95_MS,
    Call,
    Meters,
    Timing,
    print_header,
    print_timing,
    time_calls,
)
from eventpipe.domain.search import EventFilter, search_events

PAGE = 50


@dataclass(frozen=True)
class SearchCase:
    """A search, and the variants it cycles through call after call: (filters, cursor)."""

    label: str
    variants: Sequence[tuple[EventFilter, str | None]]


def _property(path: str, value: str) -> EventFilter:
    return EventFilter(property_path=(path,), property_value=value)


async def page_cursors(
    engine: AsyncEngine, project: str, filters: EventFilter, pages: int
) -> list[str]:
    """The cursors of pages 2 to `pages`, as a person paging on would get them."""
    cursors: list[str] = []
    cursor: str | None = None
    async with AsyncSession(engine) as session:
        for _ in range(pages - 1):
            _, cursor = await search_events(
                session, project_id=uuid.UUID(project), filters=filters, limit=PAGE, cursor=cursor
            )
            if cursor is None:
                break
            cursors.append(cursor)
    return cursors


async def build_cases(engine: AsyncEngine, project: str, now: datetime,
                      users: int) -> list[SearchCase]:  # fmt: skip
    """The searches: a name over the last 7 days, a property, a user; each in a few variants."""
    start, end = now - timedelta(days=7), now
    tracks = [name for name in NAMES if not name.startswith("$")]
    rng = random.Random(7)

    def named(names: Sequence[str]) -> list[tuple[EventFilter, str | None]]:
        return [(EventFilter(name=name, start=start, end=end), None) for name in names]

    def of_users(numbers: Sequence[int]) -> list[tuple[EventFilter, str | None]]:
        return [(EventFilter(user_id=f"user-{u:06d}"), None) for u in numbers]

    first = named(tracks[:1])[0][0]
    pages = [(first, cursor) for cursor in await page_cursors(engine, project, first, 5)]
    # Product ids of the free, pro and team plans (an enterprise one is rarely used at all).
    products = [f"sku-{rng.randrange(3 * SKUS):07d}" for _ in range(20)]
    typical = [u for u in rng.sample(range(users // 4, users), 60) if u % 5][:40]
    return [
        SearchCase("name + 7 days, page 1 (10 common names)", named(tracks[:10])),
        SearchCase("name + 7 days, pages 2-5 by cursor", pages),
        SearchCase("name + 7 days, page 1 (5 rarest names)", named(tracks[-5:])),
        SearchCase("property plan = pro (common), any time", [(_property("plan", "pro"), None)]),
        SearchCase("property plan = enterprise (rare)", [(_property("plan", "enterprise"), None)]),
        SearchCase("property product_id = one of 150k",
                   [(_property("product_id", product), None) for product in products]),
        SearchCase("user id, the 5 most active users", of_users((1, 2, 3, 4, 6))),
        SearchCase("user id, 40 typical users", of_users(typical)),
    ]  # fmt: skip


def search_call(engine: AsyncEngine, project: str, case: SearchCase) -> Call:
    project_id = uuid.UUID(project)

    async def call(n: int) -> object:
        filters, cursor = case.variants[n % len(case.variants)]
        async with AsyncSession(engine) as session:
            return await search_events(
                session, project_id=project_id, filters=filters, limit=PAGE, cursor=cursor
            )

    return call


class StatementLog:
    """The last statement the engine sent on the archive, to EXPLAIN exactly what ran."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.last: tuple[str, Any] | None = None
        sa_event.listen(engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        if "FROM events" in statement and not statement.startswith("EXPLAIN"):
            self.last = (statement, parameters)


async def explain(engine: AsyncEngine, log: StatementLog, call: Call) -> str:
    await call(0)
    if log.last is None:
        return "(no statement seen)"
    statement, parameters = log.last
    async with engine.connect() as conn:
        result = await conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters)
        return "\n".join(f"    {row[0]}" for row in result)


async def measure_searches(
    engine: AsyncEngine,
    project: str,
    cases: list[SearchCase],
    args: argparse.Namespace,
    meters: Meters,
) -> list[Timing]:
    print_header(
        f"event search, in-process: search_events, {PAGE} per page, an AsyncSession per "
        f"call on the api's engine settings, {args.searches} calls one at a time (ms)"
    )
    log, timings, plans = StatementLog(engine), [], {}
    for case in cases:
        call = search_call(engine, project, case)
        timing = await time_calls(
            case.label, call, args.searches, meters(), (0.95, TARGET_SEARCH_P95_MS)
        )
        print_timing(timing)
        timings.append(timing)
        plans[case.label] = await explain(engine, log, call)
    shown = [t.label for t in timings if args.explain or not t.ok]
    for label in shown:
        print(f"\n  EXPLAIN (ANALYZE, BUFFERS) of {label!r}, first variant:\n{plans[label]}")
    return timings
