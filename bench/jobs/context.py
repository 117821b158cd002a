"""Servers, databases and workers: what every measure of the jobs benchmark shares."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import procrastinate
import psycopg
from psycopg import sql

from bench.cpu import OTHERS, CpuMeter, CpuUse
from bench.harness import tree_meter
from bench.roles import Clock
from eventpipe.core.config import Settings
from eventpipe.core.queue import build_app
from eventpipe.local.process import ManagedProcess, free_port

CONCURRENCY = 4
_QUIET_ENV = {"EVENTPIPE_LOG_LEVEL": "WARNING"}


@dataclass
class Context:
    args: argparse.Namespace
    tmp: Path
    clock: Clock
    cluster_url: str  # the server's `eventpipe` database: a base for the others
    redis_url: str
    servers: dict[str, int]

    def database(self, name: str) -> str:
        return f"{self.cluster_url.rpartition('/')[0]}/{name}"

    def meter(self, worker: int) -> CpuMeter:
        return tree_meter({**self.servers, "worker": worker})


def new_database(ctx: Context, name: str) -> str:
    with psycopg.connect(ctx.database("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return ctx.database(name)


def drop_database(ctx: Context, name: str) -> None:
    """Gone once measured: ten million rows are gigabytes the next size needs."""
    with psycopg.connect(ctx.database("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def worker_env(ctx: Context, database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        **_QUIET_ENV,
        "EVENTPIPE_DATABASE_URL": database_url,
        "EVENTPIPE_REDIS_URL": ctx.redis_url,
        "EVENTPIPE_WORKER_CONCURRENCY": str(CONCURRENCY),
        "EVENTPIPE_WORKER_METRICS_PORT": str(free_port()),
        "EVENTPIPE_STATE_DIR": str(ctx.tmp / "role-state"),
        "EVENTPIPE_EXPORT_DIR": str(ctx.tmp / "exports"),
    }


def queue_app(database_url: str) -> procrastinate.App:
    """An app that only defers, as the api's: one connection."""
    return build_app(Settings(database_url=database_url), pool_size=1)


def memory_kib(pid: int) -> dict[str, int]:
    """VmHWM (peak RSS) and VmRSS of a live process, from /proc."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            found[name] = int(value.split()[0])
    return found


def wait_for(check: Callable[[], bool], process: ManagedProcess, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if not process.alive():
            raise process.failure(f"exited with status {process.popen.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)


def quantile(values: Sequence[float], q: float) -> float:
    """Of sorted `values`: the nearest rank."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


Conn = psycopg.Connection[tuple[Any, ...]]


def cores_text(cpu: CpuUse, window_s: float) -> str:
    """Cores busy in the window: the parties (ours) / every other process."""
    ours = sum(v for k, v in cpu.seconds.items() if k != OTHERS)
    return f"{ours / window_s:.2f} / {cpu.seconds.get(OTHERS, 0.0) / window_s:.2f}"
