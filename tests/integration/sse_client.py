"""A server-sent events client for tests: reads a stream in a thread, keeps every message."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from tests.integration.support import wait_for


@dataclass(frozen=True)
class Message:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return orjson.loads(self.data)


@dataclass
class EventStreamReader:
    """GET `url` as text/event-stream until it ends or `close()`; `messages` as they came."""

    url: str
    headers: dict[str, str]
    status: int | None = None
    ended: bool = False
    messages: list[Message] = field(default_factory=list)
    # Every event record, parsed once as it arrives: a wait polling `events()` must not parse
    # megabytes again and again (holding the GIL, it would keep the reader from its socket).
    records: list[dict[str, Any]] = field(default_factory=list)
    # The events the `events` messages count (`n`): exact, where `records` may be a sample.
    counted: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=60))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            with self._client.stream("GET", self.url, headers=self.headers) as answer:
                self.status = answer.status_code
                for line in answer.iter_lines():
                    # The server sends a `second` message every second: a stop is seen soon.
                    if self._stop.is_set():
                        break
                    if line:
                        name, _, value = line.partition(":")
                        if name:  # a line starting with ":" is a comment (a ping)
                            fields[name] = value.removeprefix(" ")
                        continue
                    if fields:
                        message = Message(fields.get("event", "message"), fields.get("data", ""),
                                          fields.get("id"))  # fmt: skip
                        data = message.json() if message.event == "events" else {}
                        with self._lock:
                            self.messages.append(message)
                            self.records.extend(data.get("events", []))
                            self.counted += data.get("n", 0)
                    fields = {}
        except httpx.HTTPError:
            pass  # closed by close(), or by the server
        finally:
            self.ended = True

    def of(self, event: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.event == event]

    def events(self) -> list[dict[str, Any]]:
        """Every event record received, in order."""
        with self._lock:
            return list(self.records)

    def wait_events(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        wait_for(lambda: len(self.events()) >= count, timeout, f"{count} live events",
                 lambda: f"{len(self.events())} received, status {self.status}")  # fmt: skip
        return self.events()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._client.close()
