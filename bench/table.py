"""The terminal table of a benchmark's result: each figure beside its limit, then its runs."""

from __future__ import annotations

import math

from bench.results import BenchResult, Figure, RunRecord

# Parties in a fixed order, so the columns line up across runs and benchmarks.
PARTY_ORDER = ("api", "broker", "loadgen", "redis", "postgres", "processor", "others")


def _number(value: float) -> str:
    if math.isnan(value):
        return "missing"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def figure_line(figure: Figure) -> str:
    sign = ">=" if figure.better == "higher" else "<="
    verdict = "ok" if figure.passed else "MISSED"
    ratio = "" if math.isnan(figure.value) else f"{figure.ratio:6.2f}"
    return (
        f"  {figure.name:<48}{_number(figure.value):>12} {figure.unit:<9}"
        f"{sign} {_number(figure.limit):>10}  {ratio:>6}  {verdict:<7}{figure.limit_source}"
    )


def parties(runs: list[RunRecord]) -> list[str]:
    found = {party for run in runs for party in run.cpu_us_per_event}
    return [p for p in PARTY_ORDER if p in found] + sorted(found - set(PARTY_ORDER))


def run_lines(runs: list[RunRecord]) -> list[str]:
    names = parties(runs)
    head = f"  {'run':<30}{'events/s':>10}{'p50':>8}{'p90':>8}{'p99 ms':>8}   CPU µs per event: "
    lines = [head + " ".join(f"{name:>8}" for name in names)]
    for run in runs:
        latency = "".join(
            f"{_number(run.latency_ms.get(p, math.nan)):>8}" for p in ("p50", "p90", "p99")
        )
        cpu = " ".join(f"{_number(run.cpu_us_per_event.get(name, math.nan)):>8}" for name in names)
        lines.append(f"  {run.label:<30}{_number(run.events_per_s):>10}{latency}   {' ' * 18}{cpu}")
    return lines


def print_result(result: BenchResult) -> None:
    print(f"\n== {result.benchmark} ==")
    if result.runs:
        print("\n".join(run_lines(result.runs)))
    print(f"\n  {'figure':<48}{'value':>12} {'unit':<9}{'limit':>13}  {'ratio':>6}  verdict source")
    for figure in result.figures:
        print(figure_line(figure))
    if result.lost:
        print(f"  LOST: {result.lost:,} acknowledged events are not in the topic")
    for note in result.notes:
        print(f"  {note}")
