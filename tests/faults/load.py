"""The fault suite's load generator: Segment batches sent to a running api over HTTP, as an SDK
would, keeping every messageId with what the api answered for it.

A batch the api refused (or never answered) is sent again with the same messageIds, as the
official SDKs do, so a refusal that still reached Kafka shows up as a duplicate to drop, not a
loss. Every request is recorded with its time, so a scenario can tell when the api started and
stopped refusing.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx
import orjson

# What an SDK waits for an answer before it gives up and retries.
REQUEST_TIMEOUT_S = 15.0
NAMES = ("Signed Up", "Viewed Item", "Added To Cart", "Checkout")


@dataclass(frozen=True)
class Answer:
    """One request: when it was sent (monotonic), how long it took, and its status (0: no
    answer, with the transport error's name in `error`)."""

    at: float
    took_s: float
    status: int
    error: str = ""
    retry_after: str | None = None


@dataclass
class LoadResult:
    """What the load generator sent and what the api answered."""

    sent: set[str] = field(default_factory=set)
    acknowledged: set[str] = field(default_factory=set)
    # status (or transport error name) -> requests answered so
    refused: Counter[str] = field(default_factory=Counter)
    answers: list[Answer] = field(default_factory=list)

    @property
    def unacknowledged(self) -> set[str]:
        return self.sent - self.acknowledged

    def longest_request_s(self) -> float:
        return max((answer.took_s for answer in self.answers), default=0.0)

    def refusals_between(self, start: float, end: float) -> list[Answer]:
        return [a for a in self.answers if start <= a.at < end and a.status != 200]


class Load:
    """Sends `rate` events per second in batches of `batch` from a thread of its own until
    `stop`; `connections` requests are in flight at most."""

    def __init__(
        self,
        url: str,
        write_key: str,
        *,
        rate: float = 500.0,
        batch: int = 20,
        connections: int = 8,
        retries: int = 20,
    ) -> None:
        self.url = url
        self._auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
        self.rate = rate
        self.batch = batch
        self.connections = connections
        self.retries = retries
        self.result = LoadResult()
        self._run_id = uuid.uuid4().hex[:10]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="fault-load", daemon=True)
        self._lock = threading.Lock()
        self._failure: BaseException | None = None

    def start(self) -> Load:
        self._thread.start()
        return self

    def acknowledged_count(self) -> int:
        with self._lock:
            return len(self.result.acknowledged)

    def answers_since(self, moment: float) -> list[Answer]:
        with self._lock:
            return [answer for answer in self.result.answers if answer.at >= moment]

    def stop(self, timeout: float = REQUEST_TIMEOUT_S * 4) -> LoadResult:
        """Stop sending new batches; batches in flight finish their retries (bounded)."""
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the load generator did not stop"
        if self._failure is not None:
            raise AssertionError(f"the load generator failed: {self._failure!r}")
        return self.result

    def _main(self) -> None:
        try:
            asyncio.run(self._send_all())
        except BaseException as error:  # reported by `stop`
            self._failure = error

    async def _send_all(self) -> None:
        limits = httpx.Limits(max_connections=self.connections)
        async with httpx.AsyncClient(
            base_url=self.url, timeout=REQUEST_TIMEOUT_S, limits=limits
        ) as http:
            slots = asyncio.Semaphore(self.connections)
            tasks: set[asyncio.Task[None]] = set()
            interval = self.batch / self.rate
            next_at = time.monotonic()
            sequence = 0
            while not self._stop.is_set():
                await slots.acquire()
                ids = [f"{self._run_id}-{sequence + i}" for i in range(self.batch)]
                sequence += self.batch
                task = asyncio.create_task(self._deliver(http, ids, slots))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if tasks:
                await asyncio.gather(*tasks)

    async def _deliver(
        self, http: httpx.AsyncClient, ids: list[str], slots: asyncio.Semaphore
    ) -> None:
        body = orjson.dumps({"batch": [_event(message_id) for message_id in ids]})
        headers = {"Authorization": self._auth, "Content-Type": "application/json"}
        with self._lock:
            self.result.sent.update(ids)
        try:
            for attempt in range(self.retries + 1):
                if await self._post(http, body, headers, ids):
                    return
                if self._stop.is_set() and attempt >= 2:
                    return  # stopping: a few more tries, not the whole schedule
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
        finally:
            slots.release()

    async def _post(
        self, http: httpx.AsyncClient, body: bytes, headers: dict[str, str], ids: list[str]
    ) -> bool:
        started = time.monotonic()
        try:
            response = await http.post("/v1/batch", content=body, headers=headers)
        except httpx.TransportError as error:
            self._record(Answer(started, time.monotonic() - started, 0, type(error).__name__))
            return False
        answer = Answer(
            started, time.monotonic() - started, response.status_code,
            retry_after=response.headers.get("retry-after"),
        )  # fmt: skip
        self._record(answer)
        if response.status_code == 200:
            with self._lock:
                self.result.acknowledged.update(ids)
            return True
        # True ends the batch: 4xx other than 429 is the client's fault (an SDK drops the batch);
        # 429 and 5xx are sent again.
        return not (response.status_code == 429 or response.status_code >= 500)

    def _record(self, answer: Answer) -> None:
        with self._lock:
            self.result.answers.append(answer)
            if answer.status != 200:
                self.result.refused[str(answer.status or answer.error)] += 1


def _event(message_id: str) -> dict[str, object]:
    index = int(message_id.rsplit("-", 1)[1])
    return {
        "type": "track",
        "event": NAMES[index % len(NAMES)],
        "userId": f"user-{index % 97}",
        "messageId": message_id,
        "properties": {"index": index},
    }
