"""How the api is served: uvicorn's httptools protocol with deadlines for reading a request, and
enough file descriptors for the connections that wait on them (docs/configuration.md#slow-clients).

uvicorn alone bounds only the idle time between two requests (its keep-alive timeout): a client
that sends its request head or body a byte at a time, or opens a connection and sends nothing,
holds a socket, a file descriptor and a request's memory for as long as it likes. A thousand such
clients (slowloris) exhaust the descriptors and every other client is refused.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
import time
from collections import Counter, deque
from typing import Any, Literal

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from eventpipe.core.config import get_settings

log = logging.getLogger(__name__)

Phase = Literal["idle", "head", "body"]
# Where no limit is set (macOS says infinity), ask for this many: Linux's own ceiling (nr_open).
_MANY_FILES = 1 << 20


class CutLog:
    """The first cut is logged at once, then how many more every `window_s` while they go on:
    a slowloris makes thousands a minute, and a log record each would cost more than the cut."""

    def __init__(self, window_s: float = 30.0) -> None:
        self.window_s = window_s
        self.counts: Counter[str] = Counter()
        self.flush: asyncio.TimerHandle | None = None

    def cut(
        self,
        loop: asyncio.AbstractEventLoop,
        client: tuple[str, int] | None,
        part: str,
        timeout: float,
    ) -> None:
        if self.flush is None:
            who = f"{client[0]}:{client[1]}" if client else "a client"
            log.info("closed %s: no complete request %s in %g s", who, part, timeout)
            self.flush = loop.call_later(self.window_s, self._report, loop)
        else:
            self.counts[part] += 1

    def _report(self, loop: asyncio.AbstractEventLoop) -> None:
        self.flush = None
        if self.counts:
            log.info(
                "closed %d more connections in %g s: %d without a complete request head in "
                "time, %d without a complete body",
                self.counts.total(), self.window_s, self.counts["head"], self.counts["body"],
            )  # fmt: skip
            self.counts.clear()
            self.flush = loop.call_later(self.window_s, self._report, loop)


class CutQueue:
    """Connections past their deadline, cut `per_turn` at a time each turn of the event loop.

    A slowloris opens its connections together, so their deadlines fall due together: a thousand
    cuts (each a write, a close, and soon the client's next connection to accept) in one turn of
    the loop would hold every other client's request for as long. A few per turn leave the loop
    to serve the others in between; the last of a thousand is cut a hundred turns later (0.1 to
    0.3 s on a busy 2-core machine, bench/slow_clients.py).
    """

    def __init__(self, per_turn: int = 10) -> None:
        self.per_turn = per_turn
        self.due: deque[tuple[DeadlineProtocol, int]] = deque()
        self.scheduled = False

    def add(self, protocol: DeadlineProtocol, generation: int) -> None:
        self.due.append((protocol, generation))
        if not self.scheduled:
            self.scheduled = True
            protocol.loop.call_soon(self._cut_some, protocol.loop)

    def _cut_some(self, loop: asyncio.AbstractEventLoop) -> None:
        for _ in range(min(self.per_turn, len(self.due))):
            protocol, generation = self.due.popleft()
            protocol.cut(generation)
        # call_soon from a callback runs on the loop's next turn, after it has polled sockets.
        if self.due:
            loop.call_soon(self._cut_some, loop)
        else:
            self.scheduled = False


# One each per process: uvicorn runs one event loop in each worker.
_cuts = CutLog()
_due = CutQueue()


class DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, cutting a connection whose request is not read in time.

    The head must be complete within `http_header_timeout_s` of the connection's accept (for a
    later request on a kept-alive connection, of that request's first byte: the idle time
    between requests is the keep-alive timeout's), and the body within `http_body_timeout_s` of
    the head's end. Both are deadlines, not idle timeouts: a byte now and then does not extend
    them. On a cut, a client that sent part of a request and got no byte of an answer gets a
    408 in JSON, then the connection is closed; any other is just closed.

    The deadlines come from `get_settings()`: the class is what uvicorn is given (`http=`), and
    it builds one per connection, in each worker process.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = get_settings()
        self.header_timeout_s = settings.http_header_timeout_s
        self.body_timeout_s = settings.http_body_timeout_s
        self.phase: Phase = "idle"
        self.deadline: asyncio.TimerHandle | None = None
        # Which deadline is current: one fallen due but not cut yet is void once it moved on.
        self.generation = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # From the accept: a connection that never sends a byte is cut as well.
        self._arm(self.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.phase = "head"
        if self.deadline is None:
            self._arm(self.header_timeout_s)

    def on_headers_complete(self) -> None:
        # Armed first: the body's clock runs while the app starts on the request (and, with
        # `Expect: 100-continue`, until it asks for the body), which is counted in its favour.
        self.phase = "body"
        self._arm(self.body_timeout_s)
        super().on_headers_complete()
        self.cycle.transport = HeadHeld(self.transport, self.loop)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        self.phase = "idle"
        self._disarm()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()
        super().handle_websocket_upgrade()

    def _arm(self, timeout_s: float) -> None:
        self._disarm()
        # From now, not from loop.time(): uvloop's is the time its turn began, which under load
        # is tens of milliseconds ago, and the deadline would fall due that much early. Both
        # loops' clocks are CLOCK_MONOTONIC.
        due = time.monotonic() + timeout_s
        self.deadline = self.loop.call_at(due, _due.add, self, self.generation)

    def _disarm(self) -> None:
        self.generation += 1
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def cut(self, generation: int) -> None:
        """Close the connection (after a 408 if due) if its deadline `generation` still holds:
        its head or body may have come in while it waited in the queue."""
        if generation != self.generation or self.transport.is_closing():
            return
        self.deadline = None
        if self.phase == "body":
            part, timeout = "body", self.body_timeout_s
            answer = not self.cycle.response_started
            # The app waiting for the body hears a disconnect, and anything it sends is dropped.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        else:
            part, timeout = "head", self.header_timeout_s
            # Not after a response still being written (a pipelined request), nor to a connection
            # that sent nothing: a browser's preconnected socket expects a quiet close.
            previous_done = self.cycle is None or self.cycle.response_complete
            answer = self.phase == "head" and previous_done
        _cuts.cut(self.loop, self.client, part, timeout)
        if answer:
            head = [STATUS_LINE[408]]
            for name, value in self.server_state.default_headers:  # date, server
                head.extend([name, b": ", value, b"\r\n"])
            self.transport.write(b"".join(head) + _timeout_answer(part, timeout))
        self.transport.close()


class HeadHeld:
    """A response's transport that holds the answer's head until its body is written, or until
    this turn of the event loop ends, whichever comes first.

    uvicorn writes the head and the body of an answer in two calls, so two TCP segments, each a
    send by the api and a wake-up and read by the client: a third of a lone event's HTTP cost in
    the api (measured on loopback). Held back to the body's write, a small answer leaves in one.
    A streamed answer (the live stream) gets its head at the end of the turn, as before.
    """

    __slots__ = ("flush", "held", "loop", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.held: bytes | None = None
        self.flush: asyncio.Handle | None = None

    def write(self, data: bytes) -> None:
        if self.held is not None:
            data, self.held = self.held + data, None
            assert self.flush is not None  # noqa: S101 - set with held
            self.flush.cancel()
        elif self.flush is None and data.startswith(b"HTTP/1.1 ") and b" 100 " not in data[8:13]:
            # The first write of an answer that is not `100 Continue`: its head.
            self.held = data
            self.flush = self.loop.call_soon(self._write_held)
            return
        self.transport.write(data)

    def _write_held(self) -> None:
        if self.held is not None:
            data, self.held = self.held, None
            if not self.transport.is_closing():  # the client may have gone meanwhile
                self.transport.write(data)

    def close(self) -> None:
        self._write_held()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


@functools.cache
def _timeout_answer(part: str, timeout: float) -> bytes:
    """The 408's last headers and its body (the same for every cut of a process)."""
    message = f"the request's {part} did not arrive within {timeout:g} s"
    body = orjson.dumps({"error": {"code": "request_timeout", "message": message}})
    return (
        b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        % len(body)
        + body
    )


def raise_open_files_limit() -> None:
    """Lift the soft limit on open files to the hard one, once at start: every connection holds
    a descriptor while its deadline runs, and the usual soft default (1024) would let a thousand
    slow clients refuse everyone else. Worker processes inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _MANY_FILES if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft >= target:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as error:
        log.warning("open files limit stays at %d (hard %d): %s", soft, hard, error)
        return
    log.info("open files limit raised from %d to %d", soft, target)
