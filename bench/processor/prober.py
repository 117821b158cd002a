"""Probe events sent through the api, and when each became visible in Redis."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import uuid

import httpx
import redis
from sqlalchemy.ext.asyncio import AsyncSession

from bench.loadgen import basic_auth
from bench.processor.data import PARTITIONS
from eventpipe.auth.admin import create_user_sync
from eventpipe.auth.writekeys import create_write_key
from eventpipe.core.config import Settings
from eventpipe.core.db import async_engine
from eventpipe.domain.keys import totals_key
from eventpipe.domain.projects import create_project


def make_write_key(
    database_url: str, email: str = "", password: str = "", name: str = "bench"
) -> tuple[str, str]:
    """A user (made-up credentials unless given), a project `name` of theirs and its write key;
    returns the key and the project id."""
    settings = Settings(database_url=database_url)
    email = email or f"bench-{uuid.uuid4().hex[:8]}@example.com"
    password = password or secrets.token_urlsafe(16)
    user_id = create_user_sync(settings, email=email, password=password)

    async def project_and_key() -> tuple[str, str]:
        engine = async_engine(database_url)
        try:
            async with AsyncSession(engine, expire_on_commit=False) as session:
                project = await create_project(session, owner_id=user_id, name=name)
                _, key = await create_write_key(session, project_id=project.id, name=name)
                await session.commit()
                return key, str(project.id)
        finally:
            await engine.dispose()

    return asyncio.run(project_and_key())


class Prober:
    """Single-event requests, each with its own event name, and when each became visible.

    A sender thread posts `/v1/track` on a fixed schedule and notes when the 200 arrived; the
    caller's thread polls the totals hashes of every partition (one HMGET each, 5 ms apart) for
    the names still awaited. A delay is from the 200 to the poll answer that first shows it.
    """

    def __init__(self, base_url: str, key: str, client: redis.Redis, project_id: str) -> None:
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": basic_auth(key)})
        self.redis = client
        self.keys = [totals_key(p, project_id) for p in range(PARTITIONS)]
        self.acked: list[tuple[str, float]] = []
        self.lock = threading.Lock()
        self.sent = self.failed = 0
        self.run_id = uuid.uuid4().hex[:8]

    def send(self) -> None:
        name = f"probe-{self.run_id}-{self.sent}"
        body = {"userId": f"probe-{self.sent % 24}", "event": name,
                "messageId": f"{name}-m", "properties": {"probe": True}}  # fmt: skip
        self.sent += 1
        answer = self.http.post("/v1/track", json=body)
        acked = time.perf_counter()
        if answer.status_code != 200:
            self.failed += 1
            return
        with self.lock:
            self.acked.append((name, acked))

    def send_for(self, seconds: float, per_s: float) -> None:
        started = time.perf_counter()
        for n in range(int(seconds * per_s)):
            wait = started + n / per_s - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            self.send()

    def poll(self, sender: threading.Thread, timeout_s: float = 15.0) -> tuple[list[float], int]:
        """Delays (s) of every acknowledged probe, and how many were not seen in `timeout_s`."""
        pending: dict[str, float] = {}
        delays: list[float] = []
        lost = 0
        while sender.is_alive() or pending or self.acked:
            with self.lock:
                pending.update(self.acked)
                self.acked.clear()
            if pending:
                seen = self._visible(list(pending))
                now = time.perf_counter()
                for name in seen:
                    delays.append(now - pending.pop(name))
                for name, acked in list(pending.items()):
                    if now - acked > timeout_s:
                        lost += 1
                        del pending[name]
            time.sleep(0.005)
        return sorted(delays), lost

    def _visible(self, names: list[str]) -> set[str]:
        with self.redis.pipeline(transaction=False) as pipe:
            for key in self.keys:
                pipe.hmget(key, names)
            answers = pipe.execute()
        return {name for answer in answers for name, v in zip(names, answer, strict=True) if v}

    def close(self) -> None:
        self.http.close()
