"""eventpipe's roles (api, processor, worker) as real processes of a benchmark: started through
eventpipe.local.process, waited for on their readiness, stopped leaving nothing behind."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from eventpipe.local.process import ManagedProcess, descendants, running, spawn

CHECKOUT = Path(__file__).resolve().parents[1]
_READY_TIMEOUT_S = 60.0
_STRAGGLER_TIMEOUT_S = 10.0


def python_argv(args: Sequence[str]) -> list[str]:
    """`args` with a leading "python" (or none at all) run by this interpreter: the checkout's
    environment, whatever `python` the PATH finds."""
    if args and args[0] in ("python", "python3"):
        args = args[1:]
    elif args and "/" in args[0]:
        return list(args)
    return [sys.executable, *args]


def start_role(
    name: str, args: Sequence[str], env: dict[str, str], log_path: Path
) -> ManagedProcess:
    """A role (`-m eventpipe processor`, ...) in its own session, so a stop reaches its workers."""
    return spawn(name, python_argv(args), log_path=log_path, cwd=CHECKOUT, env=env)


def wait_ready(process: ManagedProcess, url: str, timeout: float = _READY_TIMEOUT_S) -> None:
    """Poll `url` (a /readyz) until it answers 200; stop the process if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise process.failure(f"exited with status {process.popen.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    stop_api(process)
    raise process.failure(f"{url} not ready within {timeout:.0f} s")


def start_api(
    args: Sequence[str], env: dict[str, str], log_path: Path, port: int
) -> ManagedProcess:
    """An api process, waited for on its /readyz."""
    process = start_role("api", args, env, log_path)
    wait_ready(process, f"http://127.0.0.1:{port}/readyz")
    return process


def stop_api(process: ManagedProcess) -> None:
    """SIGTERM (its workers flush their producers), SIGKILL after 30 s; leave nothing behind."""
    children = descendants(process.pid)
    process.stop(30)
    # uvicorn's workers and multiprocessing's resource tracker end just after their parent.
    deadline = time.monotonic() + _STRAGGLER_TIMEOUT_S
    while any(running(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in children if running(pid)]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if left:
        raise RuntimeError(f"{process.name} processes {left} outlived their parent by 10 s: killed")


class Clock:
    """Progress lines stamped with the seconds since the benchmark began."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f} s] {message}", flush=True)
