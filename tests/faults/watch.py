"""A watcher of what each role says while a fault holds: `Watch` samples each role's probe
(readiness, or a job outcome) and the live count from threads of its own, so a scenario can tell
when a role noticed a fault and when it recovered.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from eventpipe.domain.keys import ALL
from tests.faults.load import Load
from tests.integration.jobs_support import WorkerProcess
from tests.integration.processor_support import Pipeline, read_totals


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic, when the answer came
    ok: bool
    took_s: float


@dataclass
class Watch:
    """Samples, from a thread, each probe in `probes` (name: check returning ok) and the live
    count, until `stop`."""

    probes: dict[str, Callable[[], bool]]
    count: Callable[[], int]
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    counts: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.samples = {name: [] for name in self.probes}
        self._threads = [
            threading.Thread(target=self._run, args=(name, probe), daemon=True)
            for name, probe in self.probes.items()
        ]
        self._threads.append(threading.Thread(target=self._run_counts, daemon=True))

    def __enter__(self) -> Watch:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, name: str, probe: Callable[[], bool]) -> None:
        # One thread per probe: a probe that hangs must not hide another role's answers.
        while not self._stop.is_set():
            started = time.monotonic()
            ok = probe()
            now = time.monotonic()
            with self._lock:
                self.samples[name].append(Sample(now, ok, now - started))
            self._stop.wait(0.2)

    def _run_counts(self) -> None:
        while not self._stop.is_set():
            counted = self.count()
            with self._lock:
                self.counts.append((time.monotonic(), counted))
            self._stop.wait(0.2)

    def of(self, name: str, since: float = 0.0) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples[name] if s.at >= since]

    def first_failure(self, name: str, since: float) -> float | None:
        return next((s.at for s in self.of(name, since) if not s.ok), None)

    def ok_now(self, name: str, since: float) -> bool:
        """The latest sample taken after `since` is ok."""
        found = self.of(name, since)
        return bool(found) and found[-1].ok

    def recovered_at(self, name: str, since: float) -> float:
        """When the role answered ok after its last failure since `since` (or its first ok)."""
        found = self.of(name, since)
        last_bad = max((i for i, s in enumerate(found) if not s.ok), default=-1)
        assert last_bad + 1 < len(found), f"{name} has not recovered: {found[-3:]}"
        return found[last_bad + 1].at

    def counted_at(self, target: int, since: float) -> float | None:
        with self._lock:
            return next((at for at, n in self.counts if at >= since and n >= target), None)

    def summary(self) -> str:
        """The last answers of each probe and the last count, for a failure's message."""
        with self._lock:
            last = {name: found[-3:] for name, found in self.samples.items()}
            return f"probes {last}, counts {self.counts[-1:]}"

    def longest_probe_s(self) -> float:
        with self._lock:
            return max((s.took_s for found in self.samples.values() for s in found), default=0.0)


class JobOutcomes:
    """A probe of a worker's jobs of one task: ok while their latest attempts succeed (a sample
    that saw a new failure is not ok; one that saw only new successes is)."""

    def __init__(self, worker: WorkerProcess, task: str) -> None:
        self.worker, self.task = worker, task
        self.succeeded = self.failed = 0.0
        self.ok = True

    def __call__(self) -> bool:
        try:
            text = self.worker.metrics()
        except httpx.TransportError:
            return False
        succeeded, failed = self._count(text, "succeeded"), self._count(text, "failed")
        if failed > self.failed:
            self.ok = False
        elif succeeded > self.succeeded:
            self.ok = True
        self.succeeded, self.failed = succeeded, failed
        return self.ok

    def _count(self, text: str, outcome: str) -> float:
        sample = f'eventpipe_jobs_total{{outcome="{outcome}",task="{self.task}"}} '
        found = [line for line in text.splitlines() if line.startswith(sample)]
        return float(found[0].split()[-1]) if found else 0.0


def answers_ok(url: str, timeout: float = 10.0) -> bool:
    """True for a 200; any other answer, or none in `timeout`, is not ready."""
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.TransportError:
        return False


def live_count(stored: Pipeline, project: str) -> Callable[[], int]:
    return lambda: read_totals(stored, project).get(ALL, 0)


def median_request_s(load: Load, start: float, end: float) -> float:
    took = [a.took_s for a in load.answers_since(start) if a.at < end]
    return statistics.median(took) if took else 0.0
