"""`python -m bench` (what `eventpipe bench` runs): every registered benchmark, or the named
ones, with one set of servers; a table, results.json and charts. See bench/README.md.

Exit status: 1 when a figure is missing or an acknowledged event was lost, and, without
--quick, when a figure misses its limit; 0 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from bench.output import write_results
from bench.registry import BENCHMARKS, BenchOptions, runner
from bench.results import BenchResult
from bench.table import print_result
from eventpipe.core.config import Settings
from eventpipe.local.stack import LocalStack

DEFAULT_OUTPUT = Path("bench-results")
_SERVER_ENV = ("EVENTPIPE_KAFKA_BOOTSTRAP", "EVENTPIPE_REDIS_URL", "EVENTPIPE_DATABASE_URL")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="eventpipe bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "names",
        nargs="*",
        metavar="BENCHMARK",
        help=f"any of: {', '.join(BENCHMARKS)} (default: all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short windows, about a minute: only checks every figure is produced",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"results.json and charts (default {DEFAULT_OUTPUT}/<UTC time>/)",
    )
    parser.add_argument(
        "--api-command",
        type=shlex.split,
        default=None,
        help="how the api is served, e.g. 'python -m eventpipe api --workers 2'",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"no benchmark {', '.join(unknown)}; registered: {', '.join(BENCHMARKS)}")
    return args


@contextlib.contextmanager
def shared_servers() -> Iterator[None]:
    """One Kafka, Redis and PostgreSQL for every benchmark of the session (each would start its
    own otherwise): started unless EVENTPIPE_*_URL name them, and handed on through those."""
    if all(os.environ.get(name) for name in _SERVER_ENV):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="eventpipe-bench-") as tmp:
        # fast_start=False: the broker's JIT compiles fully, as in production; figures need it.
        with LocalStack(Settings(state_dir=Path(tmp)), fast_start=False) as stack:
            urls = stack.urls
            given = dict(
                zip(
                    _SERVER_ENV,
                    (urls.kafka_bootstrap, urls.redis_url, urls.database_url),
                    strict=True,
                )
            )
            saved = {name: os.environ.get(name) for name in _SERVER_ENV}
            os.environ.update(given)
            try:
                yield
            finally:
                for name, value in saved.items():
                    os.environ.pop(name, None) if value is None else os.environ.update(
                        {name: value}
                    )


def run_one(name: str, options: BenchOptions) -> BenchResult | None:
    """A benchmark's result, or None (its traceback printed) when it failed."""
    started = time.monotonic()
    print(f"\n--- {name} ---", flush=True)
    try:
        result = runner(name)(options)
    except Exception:
        traceback.print_exc()
        print(f"{name} failed after {time.monotonic() - started:.0f} s", flush=True)
        return None
    print(f"{name}: {time.monotonic() - started:.0f} s", flush=True)
    return result


def verdict(results: list[BenchResult], failed: list[str], *, quick: bool) -> list[str]:
    """Why the session fails ([] when it passes)."""
    reasons = [f"{name}: did not finish" for name in failed]
    for result in results:
        for figure in result.figures:
            if math.isnan(figure.value) or math.isnan(figure.limit):
                reasons.append(f"{result.benchmark}: {figure.name} missing")
            elif not quick and not figure.passed:
                reasons.append(f"{result.benchmark}: {figure.name} missed its limit")
        if result.lost:
            reasons.append(f"{result.benchmark}: {result.lost:,} acknowledged events lost")
    return reasons


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = args.names or list(BENCHMARKS)
    output = args.output or DEFAULT_OUTPUT / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    options = BenchOptions(args.quick, output, tuple(args.api_command or ()) or None)
    started = time.monotonic()
    with shared_servers():
        outcomes = {name: run_one(name, options) for name in names}
    results = [result for result in outcomes.values() if result is not None]
    for result in results:
        print_result(result)
    written = write_results(output, results, quick=args.quick)
    print(f"\nwrote {', '.join(path.name for path in written)} in {output}")
    failed = [name for name, result in outcomes.items() if result is None]
    reasons = verdict(results, failed, quick=args.quick)
    for reason in reasons:
        print(f"FAILED {reason}")
    print(f"{'failed' if reasons else 'passed'} in {time.monotonic() - started:.0f} s")
    return 1 if reasons else 0


if __name__ == "__main__":
    sys.exit(main())
