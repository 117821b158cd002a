"""One paced window of the freshness part: the load, the probes, what the processor said."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.cpu import CpuUse, cpu_between
from bench.loadgen import LoadResult, LoadSpec, run_load
from bench.processor.context import Context
from bench.processor.metrics import scrape
from bench.processor.prober import Prober
from bench.processor.topic import end_offsets, stored_offsets, wait_for_load


@dataclass(frozen=True)
class Api:
    """The running api: where it listens, its write key and project, its env for the roles."""

    url: str
    key: str
    project_id: str
    env: dict[str, str]
    pid: int


@dataclass(frozen=True)
class Load:
    api: Api
    events_per_s: float
    ends: list[int]
    label: str


@dataclass(frozen=True)
class Window:
    """One paced run: its load, the probes' delays, and what the processor said meanwhile."""

    label: str
    paced: LoadResult
    delays_s: list[float]
    lost: int
    probe_failures: int
    metrics: dict[str, float]  # the processor's samples, end minus start of the window
    behind_at_end: int
    processed: int
    cpu: CpuUse
    seconds: float

    def quantile(self, q: float) -> float:
        """Over every acknowledged probe: one never seen counts as infinitely late."""
        values = self.delays_s + [float("inf")] * self.lost
        if not values:
            return float("nan")
        return values[min(len(values) - 1, round(q * (len(values) - 1)))]


@dataclass(frozen=True)
class _Probed:
    delays: list[float]
    lost: int
    metrics: dict[str, float]
    applied: int
    cpu: CpuUse
    seconds: float


def _start_load(load: Load, seconds: float, quick: bool) -> Callable[[], LoadResult]:
    """The paced load in a thread, outlasting the window by 8 s so that it still runs while the
    last probes are awaited (by 3 s in a quick run); a function to join it."""
    margin = 3.0 if quick else 8.0
    spec = LoadSpec(load.api.url, load.api.key, batch=100, connections=32,
                    seconds=seconds + margin, warmup_s=1, rate=load.events_per_s / 100)  # fmt: skip
    results: list[LoadResult] = []
    loader = threading.Thread(target=lambda: results.append(run_load(spec)))
    loader.start()

    def joined() -> LoadResult:
        loader.join()
        if not results:
            raise RuntimeError("the paced load generator failed")
        return results[0]

    return joined


def _probe(ctx: Context, prober: Prober, env: dict[str, str], pids: dict[str, int]) -> _Probed:
    """Probes for `--fresh-seconds`; the processor's metrics and offsets around them."""
    meter, port = ctx.meter(pids), env["EVENTPIPE_PROCESSOR_METRICS_PORT"]
    before, applied = scrape(port), sum(stored_offsets(ctx.redis, env))
    cpu_before, started = meter.sample(), time.perf_counter()
    sender = threading.Thread(
        target=prober.send_for, args=(ctx.args.fresh_seconds, ctx.args.probes_per_s)
    )
    sender.start()
    delays, lost = prober.poll(sender)
    seconds, cpu = time.perf_counter() - started, cpu_between(cpu_before, meter.sample())
    after, applied = scrape(port), sum(stored_offsets(ctx.redis, env)) - applied
    metrics = {name: value - before.get(name, 0.0) for name, value in after.items()}
    return _Probed(delays, lost, metrics, applied, cpu, seconds)


def paced_window(ctx: Context, prober: Prober, env: dict[str, str], load: Load,
                 pids: dict[str, int]) -> Window:  # fmt: skip
    seconds, rate = ctx.args.fresh_seconds, load.events_per_s
    joined = _start_load(load, seconds, ctx.args.quick)
    topic, bootstrap = env["EVENTPIPE_EVENTS_TOPIC"], ctx.urls.kafka_bootstrap
    wait_for_load(bootstrap, topic, load.ends, 3 * rate)
    ctx.clock.say(f"paced load at {rate:,.0f} events/s reaches Kafka; probing for {seconds:g} s")
    probed = _probe(ctx, prober, env, pids)
    behind = sum(end_offsets(bootstrap, topic)) - sum(stored_offsets(ctx.redis, env))
    return Window(load.label, joined(), probed.delays, probed.lost, prober.failed, probed.metrics,
                  behind, probed.applied, probed.cpu, probed.seconds)  # fmt: skip
