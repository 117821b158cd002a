"""Helpers shared by the integration tests: bounded waits and free ports."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable


def wait_for(
    check: Callable[[], bool],
    timeout: float = 30.0,
    what: str = "condition",
    detail: Callable[[], str] = str,
) -> None:
    """Poll `check` until it holds; fail with `detail()` (the last state seen) after `timeout`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}: {detail()}")
        time.sleep(0.05)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
