"""One load run or the raw producer's, with the CPU of every party during it (bench.cpu)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from bench.cpu import CpuMeter, CpuUse, cpu_between, loadgen_cpu_s, process_cpu_s, tree_cpu_s
from bench.ingest.plan import Run, Windows
from bench.loadgen import LoadResult, LoadSpec, run_load
from bench.rawkafka import RawResult, Record, measure_raw
from eventpipe.local.process import descendants

# The servers' names in the stack, and the party each is in the CPU accounting.
SERVER_PARTIES = {"kafka": "broker", "redis": "redis", "postgres": "postgres"}


def parties(server_pids: dict[str, int], api_pid: int | None) -> dict[str, Callable[[], float]]:
    """api (with its workers), broker, redis, postgres (with its backends) and the load
    generator: "others" is then everything else on the machine."""
    found: dict[str, Callable[[], float]] = {"loadgen": loadgen_cpu_s}
    if api_pid is not None:
        found["api"] = functools.partial(tree_cpu_s, api_pid)
    for server, pid in server_pids.items():
        found[SERVER_PARTIES[server]] = functools.partial(tree_cpu_s, pid)
    return found


@dataclass(frozen=True)
class Measured:
    run: Run
    result: LoadResult
    cpu: CpuUse
    # CPU seconds of each of the api's processes (its workers), busiest first.
    api_processes: list[float]


@dataclass(frozen=True)
class Target:
    url: str
    key: str
    api_pid: int
    meter: CpuMeter


def _api_processes(api_pid: int) -> dict[int, float]:
    return {pid: process_cpu_s(pid) for pid in [api_pid, *descendants(api_pid)]}


def measure(run: Run, target: Target, windows: Windows) -> Measured:
    spec = LoadSpec(
        url=target.url,
        write_key=target.key,
        batch=run.batch,
        connections=run.connections,
        seconds=windows.run_s,
        warmup_s=windows.warmup_s,
        rate=None if run.paced is None else run.paced / run.batch,
    )
    before, processes = target.meter.sample(), _api_processes(target.api_pid)
    result = run_load(spec)
    after, processes_after = target.meter.sample(), _api_processes(target.api_pid)
    used = [seconds - processes.get(pid, 0.0) for pid, seconds in processes_after.items()]
    return Measured(run, result, cpu_between(before, after), sorted(used, reverse=True))


@dataclass(frozen=True)
class RawMeasured:
    """The raw producer's run: its rate, and what its records cost the broker."""

    raw: RawResult
    cpu: CpuUse


def measure_raw_producer(
    bootstrap: str, topic: str, records: list[Record], seconds: float, meter: CpuMeter
) -> RawMeasured:
    """The raw producer in this process (the "loadgen" party), the api not running."""
    before = meter.sample()
    raw = measure_raw(bootstrap, topic, records, seconds)
    return RawMeasured(raw, cpu_between(before, meter.sample()))
