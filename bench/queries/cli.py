"""`python -m bench.queries`: its options and its output."""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from pathlib import Path

import bench.queries
from bench.harness import run_in_tmp
from bench.queries.benchmark import run
from bench.queries.dataset import NAMES, PARTITIONS


def _fractions(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(","))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.queries",
        description=bench.queries.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _dataset_options(parser)
    _measure_options(parser)
    parser.add_argument("--logs", type=Path, help="copy the roles' logs to this directory")
    return parser.parse_args()


def _dataset_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=10_000_000, help="the main project's events")
    parser.add_argument("--days", type=int, default=30, choices=range(2, 61), metavar="2..60")
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument(
        "--other-share",
        type=float,
        default=0.1,
        help="the second project's events, as a share of the main one's",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path.home() / ".local" / "state" / "eventpipe-bench-queries",
        help="where Redis and PostgreSQL keep the dataset between runs",
    )
    parser.add_argument("--reload", action="store_true", help="load the dataset again")
    parser.add_argument("--load-connections", type=int, default=2, help="days filled at once")


def _measure_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calls", type=int, default=200, help="calls of each overview measure")
    parser.add_argument("--searches", type=int, default=100, help="calls of each search")
    parser.add_argument("--explain", action="store_true", help="print every search's plan")
    parser.add_argument("--skip-http", action="store_true", help="no measure over HTTP")
    parser.add_argument("--skip-live", action="store_true", help="no live stream (no Kafka)")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="the api's maximum ingest rate (events/s), instead of measuring it",
    )
    parser.add_argument("--ingest-seconds", type=float, default=8.0, help="the maximum's run")
    parser.add_argument("--warm-seconds", type=float, default=30.0, help="broker warm-up")
    parser.add_argument("--live-seconds", type=float, default=20.0, help="each paced window")
    parser.add_argument(
        "--live-fractions",
        type=_fractions,
        default=(0.5, 0.25),
        help="paced rates as fractions of the maximum (the first one is the target's)",
    )


def header(args: argparse.Namespace) -> None:
    print(
        f"eventpipe read-path benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores shared by Redis, PostgreSQL, this benchmark (and the api, Kafka, "
        f"the processor and the load generator over HTTP)\n"
        f"dataset: {args.events:,} events over {args.days} days for the main project, "
        f"{args.other_share:.0%} as many for a second one, {args.users:,} users, {len(NAMES)} "
        f"names (Zipf-like), {PARTITIONS} partitions; kept in {args.state_dir}"
    )


def main() -> None:
    args = parse_args()
    header(args)
    run_in_tmp("eventpipe-bench-queries-", args.logs, lambda tmp: run(args, tmp))
