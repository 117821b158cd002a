"""Timing calls, and printing figures beside their targets."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bench.cpu import OTHERS, CpuMeter, CpuUse, cpu_between

TARGET_OVERVIEW_P99_MS = 20.0
TARGET_SEARCH_P95_MS = 200.0


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


@dataclass
class Timing:
    label: str
    ms: list[float]
    cpu: CpuUse
    seconds: float
    # (quantile, limit in ms) of the target this figure is held to, if any.
    target: tuple[float, float] | None = None
    failure: str = ""

    def q(self, fraction: float) -> float:
        if not self.ms:
            return float("nan")
        return self.ms[min(len(self.ms) - 1, round(fraction * (len(self.ms) - 1)))]

    @property
    def ok(self) -> bool:
        return self.target is None or (not self.failure and self.q(self.target[0]) < self.target[1])


Call = Callable[[int], Awaitable[object]]


async def time_calls(
    label: str, call: Call, calls: int, meter: CpuMeter, target: tuple[float, float] | None = None
) -> Timing:
    """`calls` calls one at a time after a tenth as many uncounted; CPU of each process."""
    for n in range(max(5, calls // 10)):
        await call(n)
    samples = []
    before = meter.sample()
    started = time.perf_counter()
    for n in range(calls):
        at = time.perf_counter()
        await call(n)
        samples.append((time.perf_counter() - at) * 1000)
    seconds = time.perf_counter() - started
    return Timing(label, sorted(samples), cpu_between(before, meter.sample()), seconds, target)


_CPU_NAMES = ("bench", "api", "redis", "postgres")


def print_header(title: str) -> None:
    print(
        f"\n{title}\n  {'':<46}{'p50':>8}{'p95':>8}{'p99':>8}   CPU us per call: "
        f"{'bench':>6}{'api':>7}{'redis':>7}{'pg':>7}  other cores"
    )


def print_timing(timing: Timing) -> None:
    if timing.failure:
        print(f"  {timing.label:<46}not measured: {timing.failure}  MISSED")
        return
    calls = len(timing.ms)
    cells = "".join(
        f"{timing.cpu.seconds[name] / calls * 1e6:>7.0f}"
        if name in timing.cpu.seconds
        else f"{'-':>7}"
        for name in _CPU_NAMES
    )
    other = timing.cpu.seconds.get(OTHERS, 0.0) / timing.seconds if timing.seconds else 0.0
    line = (
        f"  {timing.label:<46}{timing.q(0.5):>8.2f}{timing.q(0.95):>8.2f}{timing.q(0.99):>8.2f}"
        f"   {'':<16}{cells}  {other:>5.2f}"
    )
    if timing.target is not None:
        fraction, limit = timing.target
        line += f"   target p{fraction * 100:.0f} < {limit:g} ms  {verdict(timing.ok)}"
    print(line)


Meters = Callable[[], CpuMeter]
