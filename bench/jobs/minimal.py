"""Procrastinate's own minimal example, run as the limit's worker (`--run-minimal-worker`)."""

from __future__ import annotations

import asyncio
import logging
import os

import procrastinate

from bench.jobs.context import CONCURRENCY
from bench.jobs.noop import NOOP


def run_minimal_worker() -> None:
    """Procrastinate's own minimal example, in a child process: one no-op task, its worker with
    the library's defaults but eventpipe's concurrency and deletion of succeeded jobs."""
    logging.basicConfig(level=logging.WARNING)
    # It warns of an app made in `__main__` (where a worker elsewhere could not import its
    # tasks): here the one worker is this process.
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=os.environ["EVENTPIPE_DATABASE_URL"])
    )

    @app.task(name=NOOP)
    async def noop() -> None:
        pass

    async def work() -> None:
        async with app.open_async():
            await app.run_worker_async(concurrency=CONCURRENCY, delete_jobs="successful")

    asyncio.run(work())
