"""`python -m bench.processor`: its options, `--quick`, and its output."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import bench.processor
from bench.processor.benchmark import run_benchmark
from bench.processor.data import DUPLICATE_FRACTION, PARTITIONS, TRACK_NAMES, USERS
from bench.processor.profiling import run_profiled
from bench.processor.report import print_report

# `--quick`: every figure produced, in under a minute (64 s with other jobs taking a core); the
# api starts during the rounds, the broker with its fast start. Options given beside it apply.
QUICK = {
    "events": 20_000,
    "warm_seconds": 0.0,
    "limit_seconds": 20.0,
    "repeat": 1,
    "profile_seconds": 0.0,
    "ingest_seconds": 3.0,
    "fresh_seconds": 4.0,
    "fresh_fractions": (0.5,),
}


def _fractions(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(","))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.processor", description=bench.processor.__doc__
    )
    parser.add_argument("--events", type=int, default=200_000, help="records in the topic")
    parser.add_argument("--warm-seconds", type=float, default=15.0, help="broker warm-up")
    parser.add_argument("--limit-seconds", type=float, default=90.0, help="longest processor run")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of measures (best kept)")
    parser.add_argument("--profile-seconds", type=float, default=15.0, help="0: no profile")
    parser.add_argument("--profile-lines", type=int, default=25)
    parser.add_argument("--ingest-seconds", type=float, default=8.0, help="api maximum run")
    parser.add_argument("--fresh-seconds", type=float, default=20.0, help="0: no freshness")
    parser.add_argument("--probes-per-s", type=float, default=20.0)
    parser.add_argument(
        "--fresh-fractions", type=_fractions, default=(0.5, 0.25),
        help="paced rates as fractions of the api's maximum (the first one is the target's)",
    )  # fmt: skip
    parser.add_argument("--compare-src", type=Path, help="also run the processor from this src/")
    parser.add_argument("--logs", type=Path, help="copy the roles' logs to this directory")
    parser.add_argument(
        "--quick", action="store_true",
        help="under a minute: 20,000 events, one round, no warm-up or profile, one 4 s window",
    )  # fmt: skip
    parser.add_argument("--run-profiled", type=Path, help=argparse.SUPPRESS)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options; `--quick` changes the defaults of the others, not what is given."""
    parser = _parser()
    if parser.parse_known_args(argv)[0].quick:
        parser.set_defaults(**QUICK)
    return parser.parse_args(argv)


def header(args: argparse.Namespace) -> None:
    print(
        f"eventpipe processor benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores shared by Kafka, Redis, PostgreSQL, the processor and this "
        f"benchmark (and the api and its load generator in the freshness part)\n"
        f"data: {args.events:,} records, {DUPLICATE_FRACTION:.0%} of them retries, ~300-byte "
        f"properties, {USERS:,} users, {len(TRACK_NAMES) + 2} names, {PARTITIONS} partitions"
    )


def main() -> None:
    args = parse_args()
    if args.run_profiled is not None:
        run_profiled(args.run_profiled)
        return
    header(args)
    report = run_benchmark(args)
    print_report(report)
    sys.exit(0 if report.ok else 1)
