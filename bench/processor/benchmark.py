"""The whole processor benchmark: servers, topic, rounds, profile, freshness."""

from __future__ import annotations

import argparse
import contextlib
import uuid
from pathlib import Path

import redis

from bench.harness import scratch_dir
from bench.processor.context import Context
from bench.processor.data import make_pairs
from bench.processor.figures import ProcessorReport
from bench.processor.freshness import Launched, launch_api, measure_freshness
from bench.processor.profiling import profile_processor
from bench.processor.runs import run_rounds
from bench.processor.topic import load_topic
from bench.roles import Clock
from eventpipe.core.config import Settings
from eventpipe.local.stack import LocalStack


def run_benchmark(args: argparse.Namespace) -> ProcessorReport:
    """The whole benchmark with the options of `parse_args`, in a scratch directory of its own
    (the roles' logs copied to `args.logs`); prints only its progress."""
    with scratch_dir("eventpipe-bench-processor-", args.logs) as tmp:
        return run(args, tmp)


def run(args: argparse.Namespace, tmp: Path) -> ProcessorReport:
    clock = Clock()
    # Always servers of its own (FLUSHALL between phases): URLs from the environment are ignored.
    # A quick run takes the broker's fast start: its figures only show that each is produced.
    settings = Settings(state_dir=tmp / "stack", kafka_bootstrap=None, redis_url=None,
                        database_url=None)  # fmt: skip
    with LocalStack(settings, fast_start=args.quick) as stack:
        servers = {n: p.pid for n, p in stack.processes.items()}
        client = redis.Redis.from_url(stack.urls.redis_url)
        ctx = Context(args, stack.urls, servers, client, tmp, clock)
        try:
            return run_phases(ctx)
        finally:
            client.close()
            clock.say("stopping the servers")


def run_phases(ctx: Context) -> ProcessorReport:
    ctx.project_id = str(uuid.uuid4())
    pairs = make_pairs(ctx.args.events, ctx.project_id)
    size = sum(len(v) for _, v in pairs) / len(pairs)
    ctx.clock.say(f"servers ready; {len(pairs):,} records of {size:.0f} bytes made")
    ends = load_topic(ctx, pairs)
    with contextlib.ExitStack() as stack:
        early = launch_early(ctx, stack)
        rounds = run_rounds(ctx, ends)
        profile = freshness = None
        if ctx.args.profile_seconds > 0:
            ctx.clock.say("the processor under cProfile")
            profile = profile_processor(ctx, ends)
        if ctx.args.fresh_seconds > 0:
            ctx.clock.say("freshness: starting the api" if early is None else "freshness: the api")
            freshness = measure_freshness(ctx, early or launch_api(ctx, stack))
    return ProcessorReport(rounds, profile, freshness)


def launch_early(ctx: Context, stack: contextlib.ExitStack) -> Launched | None:
    """A quick run starts the api before the rounds, so that its start (tens of seconds on a
    busy machine) overlaps them: it disturbs their figures, which a quick run does not quote."""
    if not ctx.args.quick or ctx.args.fresh_seconds <= 0:
        return None
    ctx.clock.say("starting the api for the freshness part now (--quick)")
    return launch_api(ctx, stack)
