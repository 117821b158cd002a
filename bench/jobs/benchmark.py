"""The whole jobs benchmark: the servers, the no-op jobs, the exports."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from bench.jobs.context import Context
from bench.jobs.export import measure_exports
from bench.jobs.export_report import report_datasets, report_exports
from bench.jobs.noop import measure_all_jobs
from bench.jobs.noop_report import report_jobs
from bench.roles import Clock
from eventpipe.exports.formats import ExportFormat
from eventpipe.local.postgres import start_postgres
from eventpipe.local.redis import start_redis


def run(args: argparse.Namespace, tmp: Path) -> bool:
    clock = Clock()
    formats = [ExportFormat(name) for name in args.formats]
    with contextlib.ExitStack() as stack:
        redis_url, redis_process = start_redis(tmp / "stack")
        stack.callback(redis_process.stop, 30)
        cluster_url, postgres = start_postgres(tmp / "stack")
        stack.callback(postgres.stop, 60)
        stack.callback(clock.say, "stopping the servers")
        servers = {"redis": redis_process.pid, "postgres": postgres.pid}
        ctx = Context(args, tmp, clock, cluster_url, redis_url, servers)
        clock.say(f"PostgreSQL at {cluster_url}, Redis at {redis_url}")
        if args.jobs:
            report_jobs(args, measure_all_jobs(ctx))
        ok = True
        if args.rows:
            results = measure_exports(ctx, formats)
            report_datasets(results, args.sample_rows)
            ok = report_exports(results, formats)
    return ok
