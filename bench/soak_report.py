"""The soak's verdicts, each figure beside its limit, and its results: soak.json and soak.png."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.loadgen import LoadResult
from bench.soak_watch import Sample

# Memory after warm-up may grow by less than this, per process, to the end of the load.
MAX_GROWTH = 0.10
# Each end of the comparison is the median of the samples in this many seconds: one sample
# taken during a collection (the JVM's, Python's) does not decide it alone.
MEMORY_WINDOW_S = 15.0
# The paced load must reach this share of its target rate, or the soak was not at that rate.
MIN_HELD = 0.95
# Lag: at most this many seconds of the soak's events behind, and never less than the batches
# the processor holds by design (one being read, ARCHIVE_AHEAD archived ahead, one applied).
# A processor slower than the load by 2 % falls 12 s behind in 10 minutes and misses it; one
# that keeps up is a second or so behind on a quiet machine, and 4 to 6 s on a shared one whose
# other jobs take a core and the disk's fsyncs (the soak's first runs): 10 s leaves that room.
LAG_BOUND_S = 10.0
BATCHES_IN_HAND = 4
# PostgreSQL's backends each map the shared buffers: summed, VmRSS counts them once per backend
# (and a short-lived autovacuum worker adds them again), so its tree is judged by PSS.
MEASURE = {"postgres": "pss"}
ROLES = ("api", "processor", "worker", "kafka", "redis", "postgres")
_MIB = 1024


@dataclass
class Soak:
    """Everything one soak measured, in the order it happened."""

    args: dict[str, Any]
    max_result: LoadResult | None
    rate: float
    result: LoadResult
    load_end_s: float
    warmup_s: float
    samples: list[Sample]
    cpu: dict[str, float]
    metrics: dict[str, float]
    batch_size: int
    dead: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        watched = self.samples[0].memory if self.samples else {}
        return [name for name in ROLES if name in watched]

    def metric(self, name: str) -> float:
        return sum(v for k, v in self.metrics.items() if k == name or k.startswith(name + "{"))

    @property
    def lag_bound(self) -> int:
        return max(round(LAG_BOUND_S * self.rate), BATCHES_IN_HAND * self.batch_size)


@dataclass(frozen=True)
class Verdict:
    name: str
    value: float
    limit: str
    ok: bool
    detail: str


def _median(soak: Soak, name: str, upto: float) -> float:
    """Median KiB of `name` over the samples of the window ending at `upto`."""
    measure = MEASURE.get(name, "rss")
    inside = [s for s in soak.samples if upto - MEMORY_WINDOW_S <= s.t <= upto]
    if not inside:
        inside = [max((s for s in soak.samples if s.t <= upto), key=lambda s: s.t)]
    return statistics.median(float(getattr(s.memory[name], measure)) for s in inside)


def memory_verdicts(soak: Soak) -> list[Verdict]:
    found = []
    for name in soak.names:
        start, end = _median(soak, name, soak.warmup_s), _median(soak, name, soak.load_end_s)
        growth = (end - start) / start if start else float("inf")
        detail = (
            f"{MEASURE.get(name, 'rss')} {start / _MIB:,.0f} -> {end / _MIB:,.0f} MiB "
            f"({growth:+.1%})"
        )
        found.append(
            Verdict(f"memory {name}", growth, f"< {MAX_GROWTH:.0%}", growth < MAX_GROWTH, detail)
        )
    return found


def error_verdict(soak: Soak) -> Verdict:
    answers = sum(soak.result.errors.values())
    dlq, sinks = soak.metric("eventpipe_dlq_total"), soak.metric("eventpipe_sink_errors_total")
    total = answers + dlq + sinks + len(soak.dead)
    statuses = ", ".join(f"{s or 'no answer'}: {n}" for s, n in soak.result.errors.items())
    detail = (
        f"non-200 {answers} ({statuses or 'none'}), DLQ {dlq:.0f}, sink errors {sinks:.0f}, "
        f"roles dead {', '.join(soak.dead) or 'none'}"
    )
    return Verdict("errors", total, "0", total == 0, detail)


def lag_verdicts(soak: Soak) -> list[Verdict]:
    during = [s for s in soak.samples if s.t <= soak.load_end_s]
    worst = max(during, key=lambda s: s.lag)
    bound = soak.lag_bound
    after = [s for s in soak.samples if s.t > soak.load_end_s]
    last = (after or soak.samples)[-1]
    drained = next((s.t - soak.load_end_s for s in after if s.lag <= 0), None)
    return [
        Verdict(
            "max lag", worst.lag, f"< {bound:,} events", worst.lag < bound,
            f"{worst.lag:,} events at {worst.t:.0f} s ({worst.lag / soak.rate:.2f} s of the load)",
        ),
        Verdict(
            "lag at the end", last.lag, "0", last.lag <= 0,
            f"{last.lag:,} events; 0 after {drained:.0f} s" if drained is not None
            else f"{last.lag:,} events after {last.t - soak.load_end_s:.0f} s",
        ),
    ]  # fmt: skip


def load_verdicts(soak: Soak) -> list[Verdict]:
    achieved = soak.result.events_per_s
    held = achieved / soak.rate
    acked = soak.result.acked_events_total + (soak.max_result.acked_events_total
                                              if soak.max_result else 0)  # fmt: skip
    processed = soak.metric("eventpipe_events_processed_total")
    return [
        Verdict(
            "load held", held, f">= {MIN_HELD:.0%} of the target", held >= MIN_HELD,
            f"{achieved:,.0f} of {soak.rate:,.0f} events/s",
        ),
        Verdict(
            "nothing lost", processed - acked, ">= 0", processed >= acked,
            f"{processed:,.0f} counted new by the processor, {acked:,} answered 200",
        ),
    ]  # fmt: skip


def verdicts(soak: Soak) -> list[Verdict]:
    return [error_verdict(soak), *load_verdicts(soak), *memory_verdicts(soak), *lag_verdicts(soak)]


def print_figures(soak: Soak, found: list[Verdict]) -> None:
    if soak.max_result is not None:
        best = soak.max_result
        print(
            f"\nmaximum ingest rate (closed loop, batches of 100, {best.spec.connections} "
            f"connections, every role running): {best.events_per_s:,.0f} events/s, "
            f"p99 {best.latency_ms(0.99):.0f} ms"
        )
    result = soak.result
    print(
        f"soak: {soak.result.spec.seconds / 60:g} min paced at {soak.rate:,.0f} events/s: "
        f"{result.events_per_s:,.0f} events/s answered 200, p50 {result.latency_ms(0.5):.1f} ms, "
        f"p99 {result.latency_ms(0.99):.1f} ms; warm-up {soak.warmup_s:.0f} s"
    )
    print(
        f"the processor's dedupe window: {soak.args['dedupe_window_s']} s (its marks reach a "
        f"steady state within the warm-up)\n\n{'':<18}{'figure':<64}limit"
    )
    for verdict in found:
        ok = "ok" if verdict.ok else "MISSED"
        print(f"{verdict.name:<18}{verdict.detail:<64}{verdict.limit:<22}{ok}")


def print_cpu(soak: Soak) -> None:
    events, seconds = soak.result.acked_events_total, soak.load_end_s
    # bench.cpu's parties: the process trees, "loadgen" (this process and the load's processes)
    # and "others", every other process of the machine.
    parts = {name: soak.cpu.get(name, 0.0) for name in [*soak.names, "loadgen"]}
    print(f"\nCPU during the load ({events:,} events in {seconds:.0f} s)   cores   us per event")
    for name, used in parts.items():
        print(f"  {name:<40}{used / seconds:>7.2f}{used / events * 1e6:>14.1f}")
    others = soak.cpu.get("others", 0.0) / seconds
    print(f"  {'other processes on the machine':<40}{others:>7.2f}")


def write_json(path: Path, soak: Soak, found: list[Verdict]) -> None:
    def load(result: LoadResult | None) -> dict[str, Any] | None:
        if result is None:
            return None
        return {
            "events_per_s": result.events_per_s, "requests": result.requests,
            "acked_events": result.acked_events_total, "errors": result.errors,
            "p50_ms": result.latency_ms(0.5), "p99_ms": result.latency_ms(0.99),
            "spec": asdict(result.spec) | {"write_key": "(omitted)"},
        }  # fmt: skip

    document = {
        "args": soak.args, "max": load(soak.max_result), "soak_rate": soak.rate,
        "soak": load(soak.result), "warmup_s": soak.warmup_s, "load_end_s": soak.load_end_s,
        "lag_bound": soak.lag_bound, "cpu_s": soak.cpu, "dead": soak.dead,
        "memory_measure": {name: MEASURE.get(name, "rss") for name in soak.names},
        "samples": [asdict(s) | {"lag": s.lag} for s in soak.samples],
        "verdicts": [asdict(v) for v in found], "ok": all(v.ok for v in found),
    }  # fmt: skip
    path.write_text(json.dumps(document, indent=1, default=str))


def plot(path: Path, soak: Soak, found: list[Verdict]) -> None:
    """Two panels over time: each process's memory (MiB), and the lag (events)."""
    figure = Figure(figsize=(11, 8), layout="constrained")
    FigureCanvasAgg(figure)
    memory, lag = figure.subplots(2, 1, sharex=True)
    minutes = [s.t / 60 for s in soak.samples]
    growth = {v.name.removeprefix("memory "): v.value for v in found if v.name.startswith("mem")}
    for name in soak.names:
        measure = MEASURE.get(name, "rss")
        values = [getattr(s.memory[name], measure) / _MIB for s in soak.samples]
        memory.plot(minutes, values, label=f"{name} ({measure}, {growth[name]:+.1%})")
    lag.plot(minutes, [s.lag for s in soak.samples], color="tab:red", label="lag")
    lag.axhline(soak.lag_bound, color="grey", linestyle="--", label="bound")
    for axes in (memory, lag):
        axes.axvspan(0, soak.warmup_s / 60, color="grey", alpha=0.15, label="warm-up")
        axes.axvline(soak.load_end_s / 60, color="black", linewidth=0.8, label="load ends")
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", fontsize="small")
    memory.set_ylabel("resident memory, MiB")
    memory.set_ylim(bottom=0)
    lag.set_ylabel("consumer lag, events")
    lag.set_xlabel("minutes since the load began")
    memory.set_title(f"soak at {soak.rate:,.0f} events/s, batches of 100")
    figure.savefig(path, dpi=110)


def report(soak: Soak, out: Path) -> bool:
    """Print the figures and verdicts, write soak.json and soak.png; True when all hold."""
    found = verdicts(soak)
    print_figures(soak, found)
    print_cpu(soak)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "soak.json", soak, found)
    plot(out / "soak.png", soak, found)
    print(f"\nwrote {out / 'soak.json'} and {out / 'soak.png'}")
    return all(v.ok for v in found)
