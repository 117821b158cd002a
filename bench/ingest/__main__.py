"""`python -m bench.ingest`: the ingest benchmark alone, its table, and optionally a profile."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import scratch_dir
from bench.ingest.bench import PREFIX, measure_ingest
from bench.ingest.plan import FULL, QUICK, Windows
from bench.ingest.profile import SERVE_PROFILED_FLAG, profile_api, run_profile
from bench.ingest.serving import API_COMMAND_ENV, api_command, describe
from bench.output import write_results
from bench.stack import bench_stack
from bench.table import print_result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--seconds", type=float, default=FULL.run_s, help="measured window of a run"
    )
    parser.add_argument(
        "--warm-seconds", type=float, default=FULL.broker_warmup_s, help="raw produce, uncounted"
    )
    parser.add_argument("--raw-seconds", type=float, default=FULL.raw_s, help="raw producer window")
    parser.add_argument("--quick", action="store_true", help="2 s windows, no warm-ups")
    parser.add_argument(
        "--api-command",
        type=shlex.split,
        default=None,
        help=f"how to serve the api (default: {API_COMMAND_ENV} or {describe(api_command())!r})",
    )
    parser.add_argument("--output", type=Path, help="also write results.json and charts here")
    parser.add_argument("--profile", action="store_true", help="also profile one api worker")
    parser.add_argument(
        "--profile-batch", type=int, default=100, help="events per request of the profiled load"
    )
    parser.add_argument(SERVE_PROFILED_FLAG, type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def windows(args: argparse.Namespace) -> Windows:
    if args.quick:
        return QUICK
    return Windows(args.seconds, FULL.warmup_s, args.raw_seconds, args.warm_seconds)


def main() -> None:
    args = parse_args()
    if args.serve_profiled is not None:
        profile_api(args.serve_profiled)
        return
    command = api_command(args.api_command)
    print(
        f"eventpipe ingest benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores shared by the api, the load generator and the servers"
    )
    logs = args.output / "logs" / "ingest" if args.output else None
    with scratch_dir(PREFIX, logs) as tmp, bench_stack(tmp) as stack:
        result = measure_ingest(stack, windows(args), command, tmp)
        if args.profile:
            run_profile(stack, tmp, windows(args).run_s, args.profile_batch)
    print_result(result)
    if args.output:
        write_results(args.output, [result], quick=args.quick)
    sys.exit(0 if result.lost == 0 and all(f.passed for f in result.figures) else 1)


if __name__ == "__main__":
    main()
