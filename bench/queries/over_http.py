"""Over HTTP: `eventpipe api` as a process, a signed-in user's bearer token."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import uuid
from pathlib import Path

import httpx
import uvloop
from sqlalchemy.ext.asyncio import AsyncSession

from bench.cpu import CpuMeter, CpuUse
from bench.harness import tree_meter
from bench.queries.dataset import PARTITIONS, Marker
from bench.queries.search import PAGE, SearchCase
from bench.queries.store import Store
from bench.queries.timing import (
    TARGET_OVERVIEW_P99_MS,
    TARGET_SEARCH_P95_MS,
    Meters,
    Timing,
    print_header,
    print_timing,
    time_calls,
)
from bench.roles import start_role, stop_api, wait_ready
from eventpipe.auth.admin import create_user_sync
from eventpipe.auth.keys import generate_key_file
from eventpipe.core.config import Settings
from eventpipe.core.db import async_engine
from eventpipe.domain.projects import set_member
from eventpipe.domain.search import EventFilter
from eventpipe.domain.tables import Role
from eventpipe.domain.timerange import PRESETS
from eventpipe.local.process import free_port

API_WORKERS = 2
_QUIET_ENV = {"EVENTPIPE_LOG_LEVEL": "WARNING", "EVENTPIPE_PARTITIONS": str(PARTITIONS)}


def api_env(
    redis_url: str, database_url: str, port: int, tmp: Path, kafka: str | None = None
) -> dict[str, str]:
    """The api's environment: ours without EVENTPIPE_* settings, then exactly these."""
    keys_dir = tmp / "jwt-keys"
    if not keys_dir.exists():
        generate_key_file(keys_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    env.update(_QUIET_ENV)
    env.update(
        {
            "EVENTPIPE_REDIS_URL": redis_url,
            "EVENTPIPE_DATABASE_URL": database_url,
            "EVENTPIPE_HTTP_PORT": str(port),
            "EVENTPIPE_JWT_KEYS_DIR": str(keys_dir),
            "EVENTPIPE_STATE_DIR": str(tmp / "role-state"),
            "EVENTPIPE_INGEST_RATE_LIMIT_PER_S": "0",
        }
    )
    if kafka is not None:
        env["EVENTPIPE_KAFKA_BOOTSTRAP"] = kafka
    return env


def sign_in(base: str, database_url: str, project: str) -> str:
    """A new user, made a member of `project`, signed in with POST /auth/login: its token."""
    email, password = f"reader-{uuid.uuid4().hex[:8]}@example.com", secrets.token_urlsafe(16)
    user = create_user_sync(Settings(database_url=database_url), email=email, password=password)

    async def join() -> None:
        engine = async_engine(database_url)
        try:
            async with AsyncSession(engine) as session:
                await set_member(
                    session, project_id=uuid.UUID(project), user_id=user, role=Role.MEMBER
                )
                await session.commit()
        finally:
            await engine.dispose()

    asyncio.run(join())
    answer = httpx.post(f"{base}/auth/login", json={"email": email, "password": password})
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def http_params(filters: EventFilter, cursor: str | None) -> dict[str, str]:
    """The query string of GET /api/projects/{id}/events for these filters."""
    given = {
        "name": filters.name,
        "user_id": filters.user_id,
        "cursor": cursor,
        "from": filters.start.isoformat() if filters.start else None,
        "to": filters.end.isoformat() if filters.end else None,
        "property": ".".join(filters.property_path) or None,
        "value": filters.property_value,
    }
    return {"limit": str(PAGE), **{k: v for k, v in given.items() if v is not None}}


# (path, query parameters) of each request a measure cycles through.
Requests = list[tuple[str, dict[str, str]]]


async def time_http(
    http: httpx.AsyncClient,
    label: str,
    requests: Requests,
    calls: int,
    meter: CpuMeter,
    target: tuple[float, float],
) -> Timing:
    """GET each (path, params) in turn; not measured when the first answer is not a 200."""

    async def call(n: int) -> object:
        path, params = requests[n % len(requests)]
        answer = await http.get(path, params=params)
        if answer.status_code != 200:
            raise RuntimeError(f"GET {path} answered {answer.status_code}: {answer.text[:120]}")
        return answer.content

    try:
        return await time_calls(label, call, calls, meter, target)
    except (RuntimeError, httpx.HTTPError) as error:
        return Timing(label, [], CpuUse(0.0, {}), 0.0, target, failure=str(error))


async def time_each(http: httpx.AsyncClient, measures: list[tuple[str, Requests]], calls: int,
                    meters: Meters, target: tuple[float, float]) -> list[Timing]:  # fmt: skip
    """Each measure's requests in turn, `calls` of them, printed as it ends."""
    timings = []
    for label, requests in measures:
        timing = await time_http(http, label, requests, calls, meters(), target)
        print_timing(timing)
        timings.append(timing)
    return timings


async def http_overview(
    http: httpx.AsyncClient, project: str, calls: int, meters: Meters
) -> list[Timing]:
    print_header(
        f"overview over HTTP: GET /api/projects/{{id}}/stats/overview?range=..."
        f"&compare=true, {calls} requests one at a time (ms)"
    )
    path = f"/api/projects/{project}/stats/overview"
    measures = [(f"range={p}", [(path, {"range": p, "compare": "true"})]) for p in PRESETS]
    return await time_each(http, measures, calls, meters, (0.99, TARGET_OVERVIEW_P99_MS))


async def http_searches(
    http: httpx.AsyncClient, project: str, cases: list[SearchCase], calls: int, meters: Meters
) -> list[Timing]:
    print_header(
        f"event search over HTTP: GET /api/projects/{{id}}/events?..., "
        f"{calls} requests one at a time (ms)"
    )
    path = f"/api/projects/{project}/events"
    measures = [(c.label, [(path, http_params(f, cur)) for f, cur in c.variants]) for c in cases]
    return await time_each(http, measures, calls, meters, (0.95, TARGET_SEARCH_P95_MS))


async def http_measures(
    base: str,
    token: str,
    project: str,
    cases: list[SearchCase],
    args: argparse.Namespace,
    meters: Meters,
) -> list[Timing]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
        overview = await http_overview(http, project, args.calls, meters)
        return overview + await http_searches(http, project, cases, args.searches, meters)


def measure_over_http(
    store: Store, marker: Marker, cases: list[SearchCase], args: argparse.Namespace, tmp: Path
) -> bool:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = api_env(store.redis_url, store.url, port, tmp)
    args_ = ["-m", "eventpipe", "api", "--workers", str(API_WORKERS)]
    api = start_role("api", args_, env, tmp / "api.log")
    try:
        wait_ready(api, f"{base}/healthz")  # no Kafka here: /readyz would answer 503
        token = sign_in(base, store.url, marker.main)
        meters: Meters = lambda: tree_meter({**store.pids, "api": api.pid})  # noqa: E731
        timings = uvloop.run(http_measures(base, token, marker.main, cases, args, meters))
    finally:
        stop_api(api)
    return all(t.ok for t in timings)
