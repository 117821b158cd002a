"""What the processor benchmark measured, as one value: every figure it prints, and each
target with its limit and whether it held."""

from __future__ import annotations

from dataclasses import dataclass

from bench.processor.freshness import Freshness
from bench.processor.profiling import Profile
from bench.processor.rates import Rate
from bench.processor.runs import ProcessorRun, Rounds
from bench.processor.window import Window

TARGET_RATIO = 0.7
TARGET_FRESHNESS_P99_S = 1.0
RAW_CONSUME = "kafka: raw consume"
REDIS_STEP = "redis: RedisStep.apply"
SCRIPT = "redis: Lua script alone"
ARCHIVE = "postgres: Archive.write"  # and " x<connections>"


@dataclass(frozen=True)
class Target:
    """A figure held to a limit: `value` against `limit` (in `unit`), and whether it held."""

    name: str
    value: float
    limit: float
    unit: str
    ok: bool


@dataclass(frozen=True)
class FreshnessPoint:
    """One freshness window: the paced load, and its probes' delays (s)."""

    label: str
    load_events_per_s: float
    p50_s: float
    p99_s: float


def window_ok(window: Window) -> bool:
    """Every probe seen, and p99 under the target."""
    return (
        bool(window.delays_s)
        and not window.lost
        and window.quantile(0.99) < (TARGET_FRESHNESS_P99_S)
    )


@dataclass(frozen=True)
class ProcessorReport:
    """The rounds (every run, the best of each kept), the profile and the freshness windows."""

    rounds: Rounds
    profile: Profile | None
    freshness: Freshness | None

    @property
    def limits(self) -> dict[str, Rate]:
        """The best run of each limit: raw consume, Redis step, script alone, archive."""
        return self.rounds.best_limits()

    @property
    def processors(self) -> dict[str, ProcessorRun]:
        """The best run of each processor: this tree's first, the `--compare-src` one next."""
        return self.rounds.best_processors()

    def limit(self, prefix: str) -> Rate:
        """The limit whose label starts with `prefix` (RAW_CONSUME, REDIS_STEP, ...)."""
        return next(rate for label, rate in self.limits.items() if label.startswith(prefix))

    @property
    def processor(self) -> Rate:
        return next(iter(self.processors.values())).rate

    @property
    def slowest_limit(self) -> tuple[str, Rate]:
        """The slowest of the limits the processor works through (the script is a part of
        the Redis step, not a limit of its own)."""
        floors = {k: v for k, v in self.limits.items() if k != SCRIPT}
        slowest = min(floors, key=lambda k: floors[k].per_s)
        return slowest, floors[slowest]

    @property
    def throughput(self) -> Target:
        label, slowest = self.slowest_limit
        goal = TARGET_RATIO * slowest.per_s
        rate = self.processor.per_s
        name = f"processor >= {TARGET_RATIO:.0%} of the slowest limit ({label})"
        return Target(name, rate, goal, "events/s", rate >= goal)

    def exactly_once(self, label: str) -> Target:
        """Every distinct event counted once in Redis and archived once, in every run."""
        runs, unique = self.rounds.processors[label], self.rounds.unique
        off = max(max(abs(r.counted - unique), abs(r.archived - unique)) for r in runs)
        return Target(f"exactly once, {label}", off, 0, "events", off == 0)

    @property
    def points(self) -> list[FreshnessPoint]:
        windows = self.freshness.windows if self.freshness else []
        return [
            FreshnessPoint(w.label, w.paced.events_per_s, w.quantile(0.5), w.quantile(0.99))
            for w in windows
        ]

    @property
    def targets(self) -> list[Target]:
        """Throughput, exactly once per processor, freshness at the first (the target's) load."""
        found = [self.throughput, *(self.exactly_once(label) for label in self.processors)]
        if self.freshness and self.freshness.windows:
            first = self.freshness.windows[0]
            p99 = first.quantile(0.99)
            name = f"freshness p99, {first.label}"
            found.append(Target(name, p99, TARGET_FRESHNESS_P99_S, "s", window_ok(first)))
        return found

    @property
    def ok(self) -> bool:
        return all(target.ok for target in self.targets)
