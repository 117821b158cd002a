"""CPU accounting shared by every benchmark: one formula for "others", so figures compare.

A benchmark names its parties (api, broker, loadgen, redis, postgres...), each a function giving
that party's CPU seconds so far, and samples them with the machine's total before and after a
run. Whatever the machine used beyond the parties is "others": other jobs on the shared cores.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from eventpipe.local.process import descendants

_CLOCK_TICK = os.sysconf("SC_CLK_TCK")
OTHERS = "others"


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (0 once it is gone), from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name, in parentheses, may hold spaces and parentheses itself.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICK


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of `pid` and every process below it (an api's workers, PostgreSQL's backends).

    A child that exited during the run takes its seconds with it (they move to its parent's
    cutime only once reaped): sample trees whose children live as long as the run.
    """
    return sum(process_cpu_s(each) for each in [pid, *descendants(pid)])


def machine_busy_s() -> float:
    """CPU seconds every process of the machine has used since boot (all cores), /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq = map(
        int, Path("/proc/stat").read_text().split(maxsplit=8)[1:8]
    )
    return (user + nice + system + irq + softirq) / _CLOCK_TICK


def loadgen_cpu_s() -> float:
    """CPU seconds of this process and of its children it has reaped: the load generator as a
    party. bench.loadgen's processes end (and are joined) within each run, so their seconds
    are in by the sample after it; a server this process stops meanwhile would be too, so no
    run stops one."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


@dataclass(frozen=True)
class CpuSample:
    at: float
    parties: dict[str, float]
    machine: float


class CpuMeter:
    """Samples the CPU seconds of named parties and of the whole machine at one moment."""

    def __init__(self, parties: Mapping[str, Callable[[], float]]) -> None:
        if OTHERS in parties:
            raise ValueError(f"{OTHERS!r} is what the parties leave: not a party name")
        self._parties = dict(parties)

    def sample(self) -> CpuSample:
        parties = {name: read() for name, read in self._parties.items()}
        return CpuSample(time.monotonic(), parties, machine_busy_s())


@dataclass(frozen=True)
class CpuUse:
    elapsed_s: float
    # Per party, plus "others": the machine's seconds that no party accounts for.
    seconds: dict[str, float]

    def cores(self, party: str) -> float:
        return self.seconds[party] / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def us_per_event(self, party: str, events: int) -> float:
        return self.seconds[party] / events * 1e6 if events > 0 else 0.0


def cpu_between(before: CpuSample, after: CpuSample) -> CpuUse:
    seconds = {
        name: max(after.parties[name] - before.parties.get(name, 0.0), 0.0)
        for name in after.parties
    }
    machine = after.machine - before.machine
    # Floored: /proc/stat and /proc/<pid>/stat are read at slightly different moments.
    seconds[OTHERS] = max(machine - sum(seconds.values()), 0.0)
    return CpuUse(after.at - before.at, seconds)
