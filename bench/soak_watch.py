"""What the soak samples every few seconds: each process tree's memory from /proc, and how far
the processors' group is behind the topic (high watermarks against the offsets the processor
stored in Redis with its aggregates, the offsets it resumes from)."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import redis

from bench.cpu import CpuMeter, loadgen_cpu_s, tree_cpu_s
from bench.processor.runs import used_memory
from bench.processor.topic import end_offsets, stored_offsets
from eventpipe.local.process import descendants


@dataclass(frozen=True)
class Memory:
    """KiB of one process tree: VmRSS, its anonymous part, and PSS (shared pages split among
    the processes that map them, so a tree's sum counts PostgreSQL's shared buffers once)."""

    rss: int
    anon: int
    pss: int


def _status_kib(pid: int) -> tuple[int, int]:
    """VmRSS and RssAnon of one process, from /proc/<pid>/status (0, 0 once it is gone)."""
    found = {"VmRSS": 0, "RssAnon": 0}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in found:
                found[name] = int(value.split()[0])
    return found["VmRSS"], found["RssAnon"]


def _pss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def tree_memory(pid: int) -> Memory:
    """The sum over `pid` and every process below it (the api's workers, PostgreSQL's
    backends); processes that exit between the listing and the read count 0."""
    rss = anon = pss = 0
    for each in [pid, *descendants(pid)]:
        vm_rss, rss_anon = _status_kib(each)
        rss, anon, pss = rss + vm_rss, anon + rss_anon, pss + _pss_kib(each)
    return Memory(rss, anon, pss)


@dataclass(frozen=True)
class Sample:
    """One look at the pipeline, `t` seconds after the soak's load began."""

    t: float
    memory: dict[str, Memory]
    # Records in the topic (sum of high watermarks) and records the processor has applied.
    produced: int
    applied: int
    redis_used_bytes: int
    redis_keys: int

    @property
    def lag(self) -> int:
        return self.produced - self.applied


class Watch:
    """Reads samples of the named process trees and of the processors' group."""

    def __init__(
        self, pids: dict[str, int], bootstrap: str, redis_url: str, env: dict[str, str]
    ) -> None:
        self.pids = pids
        self.bootstrap = bootstrap
        self.topic = env["EVENTPIPE_EVENTS_TOPIC"]
        self.env = env
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=10)
        self.started = time.time()
        self.samples: list[Sample] = []

    def meter(self) -> CpuMeter:
        """The CPU of the same process trees (bench.cpu), and of the load generator, this
        process with the load's processes: "others" is then every other job on the machine."""
        trees = {name: functools.partial(tree_cpu_s, pid) for name, pid in self.pids.items()}
        return CpuMeter({**trees, "loadgen": loadgen_cpu_s})

    def begin(self) -> None:
        """Samples count their time from now: the soak's load begins."""
        self.started = time.time()

    def position(self) -> tuple[int, int]:
        """(records in the topic, records the processor has applied), over every partition."""
        return sum(end_offsets(self.bootstrap, self.topic)), sum(
            stored_offsets(self.redis, self.env)
        )

    def lag(self) -> int:
        produced, applied = self.position()
        return produced - applied

    def take(self) -> Sample:
        memory = {name: tree_memory(pid) for name, pid in self.pids.items()}
        produced, applied = self.position()
        sample = Sample(
            t=round(time.time() - self.started, 2),
            memory=memory,
            produced=produced,
            applied=applied,
            redis_used_bytes=used_memory(self.redis),
            redis_keys=cast(int, self.redis.dbsize()),
        )
        self.samples.append(sample)
        return sample

    def every(self, interval_s: float, until: Callable[[Sample], bool], limit_s: float) -> None:
        """A sample every `interval_s` until one satisfies `until`, or for `limit_s` at most."""
        deadline = time.monotonic() + limit_s
        next_at = time.monotonic()
        while True:
            sample = self.take()
            if until(sample) or time.monotonic() >= deadline:
                return
            next_at += interval_s
            time.sleep(max(0.0, next_at - time.monotonic()))

    def rebase(self, started_at: float) -> None:
        """Count the samples' times from `started_at` (wall clock: the load's first send)."""
        shift = started_at - self.started
        self.samples = [replace(s, t=round(s.t - shift, 2)) for s in self.samples]
        self.started = started_at

    def close(self) -> None:
        self.redis.close()
