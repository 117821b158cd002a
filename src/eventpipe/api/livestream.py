"""One project's live stream as server-sent events, read from its Redis stream (domain/live.py).

Each client reads the stream on its own from its own position: a slow client falls behind alone,
and one that stops reading is dropped after `send_timeout_s` (its socket buffer full) without the
processor or another client noticing. Memory per client is one read (at most READ_COUNT entries).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import anyio
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from eventpipe.domain import live

log = logging.getLogger(__name__)

READ_COUNT = 50
BLOCK_MS = 250
PING_S = 15.0
STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


def _id_tuple(stream_id: str) -> tuple[int, int]:
    ms, seq = stream_id.split("-")
    return int(ms), int(seq)


def message(event: str, data: bytes, stream_id: str | None = None) -> bytes:
    head = f"id: {stream_id}\n" if stream_id else ""
    return f"{head}event: {event}\n".encode() + b"data: " + data + b"\n\n"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _events_message(stream_id: str, fields: dict[bytes, bytes]) -> tuple[bytes, int]:
    count = int(fields.get(live.COUNT_FIELD, b"0"))
    # Raw JSON may hold line breaks between its tokens (never inside a string, where JSON
    # escapes them): as spaces the whole entry fits on one `data:` line.
    events = fields.get(live.EVENTS_FIELD, b"[]").replace(b"\n", b" ").replace(b"\r", b" ")
    ms = _id_tuple(stream_id)[0]
    data = b'{"t":%d,"n":%d,"events":%s}' % (ms, count, events)
    return message("events", data, stream_id), count


@dataclass
class Seconds:
    """Per-second counts of new events, by the second their batch was applied."""

    current: int
    count: int = 0

    def add(self, ms: int, count: int) -> list[bytes]:
        out = self.flush(ms // 1000)
        self.count += count
        return out

    def flush(self, second: int) -> list[bytes]:
        """Messages for every finished second up to `second` (zeros too: a chart needs them)."""
        out = []
        while self.current < second:
            data = orjson.dumps({"t": self.current, "n": self.count})
            out.append(message("second", data))
            self.current, self.count = self.current + 1, 0
        return out


async def start_id(redis: Redis, key: str, last_event_id: str | None) -> tuple[str, list[bytes]]:
    """Where to read from, and a `reset` message when the stream no longer holds that place."""
    if last_event_id is None:
        newest = await redis.xrevrange(key, count=1)
        return (_text(newest[0][0]) if newest else "0-0"), []
    oldest = await redis.xrange(key, count=1)
    if oldest and _id_tuple(_text(oldest[0][0])) > _id_tuple(last_event_id):
        # Entries after the client's last one were trimmed: say so rather than skip silently.
        data = orjson.dumps({"reason": "the stream no longer holds the events after this id",
                             "last_event_id": last_event_id})  # fmt: skip
        return last_event_id, [message("reset", data)]
    return last_event_id, []


async def read_stream(
    redis: Redis,
    key: str,
    position: str,
    still_allowed: Callable[[], Awaitable[str | None]],
    check_every_s: float,
) -> AsyncIterator[bytes]:
    """SSE messages from `position` on, until `still_allowed` answers a reason to stop."""
    seconds = Seconds(int(time.time()))
    checked = quiet_since = time.monotonic()
    while True:
        if time.monotonic() - checked >= check_every_s:
            reason = await still_allowed()
            if reason is not None:
                yield message("bye", orjson.dumps({"reason": reason}))
                return
            checked = time.monotonic()
        try:
            answer = await redis.xread({key: position}, count=READ_COUNT, block=BLOCK_MS)
        except RedisError:
            # The client reconnects by itself (EventSource does) and resumes from its last id.
            yield message("bye", orjson.dumps({"reason": "unavailable"}))
            return
        out = seconds.flush(int(time.time()))
        for _key, entries in answer or []:
            for raw_id, fields in entries:
                position = _text(raw_id)
                chunk, count = _events_message(position, fields)
                out += seconds.add(_id_tuple(position)[0], count)
                out.append(chunk)
        if not out and time.monotonic() - quiet_since >= PING_S:
            out.append(b": ping\n\n")
        if out:
            quiet_since = time.monotonic()
            yield b"".join(out)


class EventStream(Response):
    """text/event-stream whose every write must complete within `send_timeout_s`, else the
    client is dropped; it ends when the client leaves."""

    media_type = "text/event-stream"

    def __init__(self, chunks: AsyncIterator[bytes], *, send_timeout_s: float) -> None:
        super().__init__(headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        # Streamed until the client leaves: no length (Response sets 0 for an empty body).
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.chunks = chunks
        self.send_timeout_s = send_timeout_s

    async def __call__(self, _scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        async with anyio.create_task_group() as group:

            async def left() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()

            group.start_soon(left)
            try:
                async for chunk in self.chunks:
                    with anyio.fail_after(self.send_timeout_s):
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except TimeoutError:
                # A stalled client: no more reads for it. Leaving without a last chunk makes
                # the server close the connection (once the socket takes what it holds).
                log.info("live stream: dropped a client that took no data for %.0f s",
                         self.send_timeout_s)  # fmt: skip
            finally:
                group.cancel_scope.cancel()
