"""bench.loadgen's paced run in a child process, noting when each request was acknowledged.

Times are time.perf_counter(), CLOCK_MONOTONIC on Linux: one clock for every process."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import uvloop

from bench.loadgen import (
    TEMPLATES,
    Connection,
    LoadSpec,
    MessageIds,
    Recorder,
    Template,
    make_template,
)


class AckedConnection(Connection):
    """A bench.loadgen connection with message ids of its own, noting when each of its requests
    was acknowledged: (id prefix, number of its first id, events, time of the 200)."""

    def __init__(
        self,
        spec: LoadSpec,
        templates: list[Template],
        recorder: Recorder,
        acks: list[tuple[str, int, int, float]],
    ) -> None:
        super().__init__(spec, templates, MessageIds(), recorder)
        self.acks = acks
        self.prefix = self.ids.prefix.decode()

    async def exchange(self, template: Template) -> int:
        first = self.ids.counter  # one request at a time per connection: its ids start here
        status = await super().exchange(template)
        if status == 200:
            self.acks.append((self.prefix, first, template.events, time.perf_counter()))
        return status


@dataclass
class PacedRun:
    acks: list[tuple[str, int, int, float]]
    window: tuple[float, float]
    acked_events: int
    window_events: int
    statuses: dict[int, int]
    latencies_ms: list[float]


async def _connected(spec: LoadSpec, recorder: Recorder,
                     acks: list[tuple[str, int, int, float]]) -> list[AckedConnection]:  # fmt: skip
    """`spec.connections` connections, opened 5 ms apart, sharing the request templates."""
    rng = random.Random(spec.seed)
    host = urlsplit(spec.url).netloc
    templates = [make_template(rng, spec.batch, host, spec.write_key) for _ in range(TEMPLATES)]
    connections = [
        AckedConnection(spec, templates, recorder, acks) for _ in range(spec.connections)
    ]
    for connection in connections:
        await connection.connect()
        await asyncio.sleep(0.005)
    return connections


async def _paced(spec: LoadSpec, connected: Callable[[], None]) -> PacedRun:
    """bench.loadgen's paced run (one process), with AckedConnection."""
    assert spec.rate  # noqa: S101 - paced by construction
    recorder, acks = Recorder(0.0, 0.0), list[tuple[str, int, int, float]]()
    connections = await _connected(spec, recorder, acks)
    connected()
    started = time.perf_counter()
    recorder.window_start = started + spec.warmup_s
    recorder.window_end = stop_at = recorder.window_start + spec.seconds
    interval = spec.connections / spec.rate
    tasks = [
        asyncio.create_task(c.run(stop_at, (started + n / spec.rate, interval), n))
        for n, c in enumerate(connections)
    ]
    _, pending = await asyncio.wait(tasks, timeout=stop_at - time.perf_counter() + 10)
    for task in pending:
        task.cancel()
    for connection in connections:
        connection.close()
    return PacedRun(acks, (recorder.window_start, recorder.window_end),
                    recorder.acked_events_total, recorder.ok_events, dict(recorder.statuses),
                    sorted(recorder.latencies_ms))  # fmt: skip


def paced_main(spec: LoadSpec, results: multiprocessing.Queue[Any]) -> None:
    try:
        results.put(uvloop.run(_paced(spec, lambda: results.put("connected"))))
    except BaseException as error:
        results.put(f"{type(error).__name__}: {error}")
        raise
