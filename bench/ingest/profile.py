"""A cProfile of one api worker under load (`python -m bench.ingest --profile`)."""

from __future__ import annotations

import cProfile
import io
import pstats
import signal
from pathlib import Path

from bench.loadgen import LoadSpec, run_load
from bench.roles import start_api, stop_api
from bench.stack import BenchStack
from eventpipe.local.process import free_port

SERVE_PROFILED_FLAG = "--serve-profiled"


def profile_api(stats_path: Path) -> None:
    """Serve one api worker in this process under cProfile (run by `--serve-profiled`)."""
    import uvicorn

    from eventpipe.core.config import Settings
    from eventpipe.core.logging import configure_logging

    settings = Settings()
    configure_logging(settings.log_level)
    # uvicorn re-raises the SIGTERM it caught once it has shut down; with the default handler
    # that would end the process before the profile is written.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        uvicorn.run(
            "eventpipe.api.app:create_app",
            factory=True,
            host=settings.http_host,
            port=settings.http_port,
            log_level="warning",
            access_log=False,
        )
    finally:
        profiler.disable()
        profiler.dump_stats(stats_path)


def print_profile(stats_path: Path, lines: int) -> None:
    """The functions with the most time of their own, then eventpipe's by cumulative time."""
    listings = (("tottime", "all functions", ()), ("cumulative", "eventpipe's", ("/eventpipe/",)))
    for order, which, restriction in listings:
        out = io.StringIO()
        stats = pstats.Stats(str(stats_path), stream=out).sort_stats(order)
        stats.print_stats(*restriction, lines)
        text = out.getvalue()
        text = text[text.index("   ncalls") :].rstrip()
        print(f"\n--- profile of one api worker: {which}, by {order} ---")
        print(_short_paths(text))


def _short_paths(text: str) -> str:
    """Paths from the package on (eventpipe/..., fastapi/...): short, yet still telling apart
    eventpipe's modules from the libraries' (strip_dirs would drop the package too)."""
    lines = []
    for line in text.splitlines():
        head, _, location = line.rpartition(" ")
        for marker in ("/site-packages/", "/src/", "/lib/python3"):
            if marker in location:
                location = location.rsplit(marker, 1)[1]
        lines.append(f"{head} {location}" if head else line)
    return "\n".join(lines)


def run_profile(stack: BenchStack, tmp: Path, seconds: float, batch: int) -> None:
    port = free_port()
    stats = tmp / "api.prof"
    args = ["-m", "bench.ingest", SERVE_PROFILED_FLAG, str(stats)]
    env = {**stack.env, "EVENTPIPE_HTTP_PORT": str(port)}
    api = start_api(args, env, tmp / "profile.log", port)
    try:
        spec = LoadSpec(
            f"http://127.0.0.1:{port}", stack.write_key, batch, connections=16, seconds=seconds
        )
        result = run_load(spec)
    finally:
        stop_api(api)
    print(
        f"\nprofiled api (1 worker under cProfile), batch {batch}, 16 connections: "
        f"{result.events_per_s:,.0f} events/s, p99 {result.latency_ms(0.99):.1f} ms"
    )
    print_profile(stats, 20)
