"""One processor under cProfile, in a child process (`--run-profiled`)."""

from __future__ import annotations

import cProfile
import io
import pstats
from dataclasses import dataclass
from pathlib import Path

from bench.processor.context import Context, fresh_database, role_env
from bench.processor.rates import Rate
from bench.processor.runs import watch_processor
from bench.roles import start_role
from eventpipe.core.config import Settings


def run_profiled(stats_path: Path) -> None:
    from eventpipe.core.logging import configure_logging
    from eventpipe.core.signals import StopFlag
    from eventpipe.processor.app import Processor
    from eventpipe.processor.metrics import ProcessorMetrics

    settings = Settings()
    configure_logging(settings.log_level)
    processor = Processor(settings, StopFlag().install(), ProcessorMetrics())
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        processor.run()
    finally:
        profiler.disable()
        profiler.dump_stats(stats_path)


@dataclass(frozen=True)
class Profile:
    """The profiled processor's rate (under cProfile: slower) and the profile's top lines."""

    rate: Rate
    text: str


def profile_processor(ctx: Context, ends: list[int]) -> Profile:
    ctx.redis.flushall()
    database_url = fresh_database(ctx.urls, "bench_profile")
    env = role_env(ctx.urls, database_url, ctx.topic, ctx.tmp)
    stats = ctx.tmp / "processor.prof"
    args = ["-m", "bench.processor", "--run-profiled", str(stats)]
    process = start_role("profiled processor", args, env, ctx.tmp / "profile.log")
    try:
        meter = ctx.meter({"processor": process.pid})
        rate = watch_processor(ctx.redis, env, ends, process, meter, ctx.args.profile_seconds)
    finally:
        process.stop(30)
    return Profile(rate, profile_text(stats, ctx.args.profile_lines))


def profile_text(stats_path: Path, lines: int) -> str:
    parts = []
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        stats = pstats.Stats(str(stats_path), stream=out)
        stats.strip_dirs().sort_stats(order).print_stats(lines)
        text = out.getvalue()
        parts.append(f"--- by {order} ---\n" + text[text.index("   ncalls") :].rstrip())
    return "\n\n".join(parts)
