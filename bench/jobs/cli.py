"""`python -m bench.jobs`: its options and its output."""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from pathlib import Path

import bench.jobs
from bench.harness import run_in_tmp
from bench.jobs.benchmark import run
from bench.jobs.minimal import run_minimal_worker
from eventpipe.exports.formats import ExportFormat


def _numbers(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part]


def _formats(text: str) -> list[str]:
    names = [part for part in text.split(",") if part]
    for name in names:
        ExportFormat(name)  # ValueError names the unknown format
    return names


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.jobs",
        description=bench.jobs.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--jobs", type=int, default=20_000, help="backlog of no-op jobs (0: none)")
    parser.add_argument("--paced", type=int, default=1_000, help="no-op jobs deferred one by one")
    parser.add_argument(
        "--pace", type=float, default=50.0,
        help="their rate, jobs/s: well below the drain rate, or the delays are a queue's",
    )  # fmt: skip
    parser.add_argument("--repeat", type=int, default=2, help="rounds of no-op jobs (best kept)")
    parser.add_argument(
        "--rows", type=_numbers, default=[1_000_000, 10_000_000],
        help="archive sizes, comma-separated (empty: no exports)",
    )  # fmt: skip
    parser.add_argument("--formats", type=_formats, default=["ndjson"], help="ndjson,csv,parquet")
    parser.add_argument(
        "--sample-rows", type=int, default=50_000,
        help="rows fetched for the fetch-alone and writer-alone limits",
    )  # fmt: skip
    parser.add_argument("--logs", type=Path, help="copy the workers' logs to this directory")
    parser.add_argument("--run-minimal-worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def header(args: argparse.Namespace) -> None:
    print(
        f"eventpipe jobs benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores "
        f"shared by PostgreSQL, Redis, one worker and this benchmark\n"
        f"no-op jobs: {args.jobs:,} in a backlog, {args.paced:,} paced at {args.pace:g}/s; "
        f"exports: {', '.join(f'{n:,}' for n in args.rows) or 'none'} rows as "
        f"{', '.join(args.formats)}"
    )


def main() -> None:
    args = parse_args()
    if args.run_minimal_worker:
        run_minimal_worker()
        return
    args.rows = sorted(args.rows)
    header(args)
    run_in_tmp("eventpipe-bench-jobs-", args.logs, lambda tmp: run(args, tmp))
