"""The exports' figures, each beside its limits, and the constant-memory claim."""

from __future__ import annotations

from collections.abc import Callable

from bench.jobs.context import cores_text
from bench.jobs.export import ExportResults, ExportRun
from bench.jobs.limits import Limits
from bench.processor.rates import Rate
from eventpipe.exports.formats import ExportFormat

# "Constant memory whatever the row count": the largest export's peak within this of the smallest's.
MEMORY_TOLERANCE = 0.10


def _serial(fetch: Rate, write: Rate) -> float:
    """Rows/s of fetching then writing each batch, one after the other, as the export does."""
    if not fetch.per_s or not write.per_s:
        return 0.0
    return 1 / (1 / fetch.per_s + 1 / write.per_s)


def _mb(kib: float) -> str:
    return f"{kib / 1024:,.0f}"


def _per_row(run: ExportRun, party: str) -> str:
    return f"{run.cpu.seconds.get(party, 0) / run.rows * 1e6:.1f}"


def _export_lines(fmt: str) -> list[tuple[str, Callable[[ExportRun, Limits], str]]]:
    return [
        ("export, rows/s (its started_at to finished_at)", lambda r, _: f"{r.per_s:,.0f}"),
        ("limit: COPY (the same query) TO STDOUT, rows/s", lambda _, m: f"{m.copy.per_s:,.0f}"),
        ("  export / COPY", lambda r, m: f"{r.per_s / m.copy.per_s:.2f}" if m.copy.per_s else "-"),
        ("  COPY: PostgreSQL CPU per row (whole server), us",
         lambda _, m: f"{m.copy.cpu.seconds.get('postgres', 0) / max(m.copy.events, 1) * 1e6:.1f}"),
        ("limit: fetch alone, SQLAlchemy stream (sample), rows/s",
         lambda _, m: f"{m.fetch.per_s:,.0f}"),
        (f"limit: the {fmt} writer alone (sample), rows/s",
         lambda _, m: f"{m.writers[fmt].per_s:,.0f}"),
        ("  fetch then write, one after the other, rows/s",
         lambda _, m: f"{_serial(m.fetch, m.writers[fmt]):,.0f}"),
        ("file, MB", lambda r, _: f"{r.size_bytes / 1e6:,.1f}"),
        ("  bytes per row", lambda r, _: f"{r.size_bytes / max(r.rows, 1):,.0f}"),
        ("worker peak RSS (VmHWM) after the export, MB", lambda r, _: _mb(r.peak_kib)),
        ("  its peak RSS once ready, before it, MB", lambda r, _: _mb(r.idle_kib)),
        ("worker CPU per row, us", lambda r, _: _per_row(r, "worker")),
        ("PostgreSQL CPU per row (whole server), us", lambda r, _: _per_row(r, "postgres")),
        ("cores busy meanwhile: ours / other processes",
         lambda r, _: cores_text(r.cpu, r.window_s)),
    ]  # fmt: skip


def report_datasets(results: ExportResults, sample_rows: int) -> None:
    print("\nexports: the archive, one day of one project (a fresh database per size)")
    for data in results.datasets:
        limits = results.limits[data.rows]
        print(
            f"  {data.rows:,} rows: {data.row_bytes:,.0f} bytes a row in PostgreSQL, "
            f"{data.json_bytes:,.0f} as JSON ({data.document_bytes:,.0f} of them properties, "
            f"traits and context); COPY text {limits.copy_bytes / max(limits.copy.events, 1):,.0f}"
            f" bytes a row\n    plan, the export's cursor: {limits.plans[0]}"
        )
        cursor, run, planned = limits.plans
        if run != cursor:
            print(f"    plan, the COPY:            {run}")
        if planned != run:
            print(f"    (the COPY, left alone, was planned as {planned}: run with enable_seqscan "
                  f"and enable_sort off)")  # fmt: skip
    print(f"  sample: the first {sample_rows:,} rows (fewer if the archive has fewer)")


def report_exports(results: ExportResults, formats: list[ExportFormat]) -> bool:
    sizes = [data.rows for data in results.datasets]
    ok = True
    for fmt in (f.value for f in formats):
        print(f"\nexports as {fmt}, one per size through a fresh `eventpipe worker`\n{'':<56}"
              + "".join(f"{size:>14,}" for size in sizes))  # fmt: skip
        for label, cell in _export_lines(fmt):
            cells = [cell(results.runs[(size, fmt)], results.limits[size]) for size in sizes]
            print(f"  {label:<54}" + "".join(f"{c:>14}" for c in cells))
        ok = report_memory(fmt, [results.runs[(size, fmt)] for size in sizes], sizes) and ok
    return ok


def report_memory(fmt: str, runs: list[ExportRun], sizes: list[int]) -> bool:
    small, large = runs[0].peak_kib, runs[-1].peak_kib
    growth = large / small - 1
    ok = growth <= MEMORY_TOLERANCE
    print(
        f"  constant memory, {fmt}: peak RSS {_mb(small)} MB at {sizes[0]:,} rows, {_mb(large)} "
        f"MB at {sizes[-1]:,} ({growth:+.0%}; within {MEMORY_TOLERANCE:.0%})  "
        f"{'holds' if ok else 'DOES NOT HOLD'}"
    )
    return ok
