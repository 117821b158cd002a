"""The live stream read line by line, and each event's delay from its request's 200."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import defaultdict
from dataclasses import dataclass, field

import httpx
import orjson

from bench.cpu import CpuUse
from bench.queries.paced import PacedRun


class LiveFeed:
    """GET /api/projects/{id}/live read line by line: when each event's line arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.entries = self.counted = 0
        self.kind = ""  # the `event:` of the message being read
        self.status: int | None = None
        self.error = ""
        self.ready = asyncio.Event()

    async def read(self, http: httpx.AsyncClient, path: str) -> None:
        try:
            async with http.stream(
                "GET",
                path,
                headers={"Accept": "text/event-stream"},
                timeout=httpx.Timeout(10, read=None),
            ) as answer:
                self.status = answer.status_code
                if answer.status_code != 200:
                    self.error = (await answer.aread())[:160].decode(errors="replace")
                    return
                self.ready.set()
                async for line in answer.aiter_lines():
                    if line.startswith("event:"):
                        self.kind = line[6:].strip()
                    elif line.startswith("data:") and self.kind == "events":
                        self._take(line[5:], time.perf_counter())
        except httpx.HTTPError as error:
            self.error = f"{type(error).__name__}: {error}"
        finally:
            self.ready.set()

    def _take(self, payload: str, at: float) -> None:
        data = orjson.loads(payload)
        self.entries += 1
        self.counted += int(data.get("n", 0))
        for record in data.get("events", []):
            self.arrived.setdefault(str(record.get("message_id")), at)


def delays_s(run: PacedRun, arrived: dict[str, float]) -> list[float]:
    """Line arrival minus the 200 of its request, for the events of requests answered in the
    measured window (the feed is a sample: the events it shows)."""
    requests: dict[str, list[tuple[int, int, float]]] = defaultdict(list)
    for prefix, first, count, acked in run.acks:
        requests[prefix].append((first, count, acked))
    firsts = {prefix: [r[0] for r in sorted(rs)] for prefix, rs in requests.items()}
    for each in requests.values():
        each.sort()
    out = []
    for message_id, at in arrived.items():
        prefix, number = message_id[:24], message_id[24:]
        if prefix not in requests or len(number) != 12:
            continue
        index = bisect.bisect_right(firsts[prefix], int(number, 16)) - 1
        first, count, acked = requests[prefix][index] if index >= 0 else (0, 0, 0.0)
        if int(number, 16) < first + count and run.window[0] <= acked < run.window[1]:
            out.append(at - acked)
    return sorted(out)


@dataclass
class LiveWindow:
    label: str
    rate: float
    run: PacedRun | None = None
    delays: list[float] = field(default_factory=list)
    feed: LiveFeed | None = None
    cpu: CpuUse = field(default_factory=lambda: CpuUse(0.0, {}))
    seconds: float = 0.0  # of the CPU measure: the paced load, from its first send to its end
    failure: str = ""

    def q(self, fraction: float) -> float:
        values = self.delays
        return (
            values[min(len(values) - 1, round(fraction * (len(values) - 1)))]
            if values
            else float("nan")
        )
