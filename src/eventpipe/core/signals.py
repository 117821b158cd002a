"""Graceful stop for long-running roles: SIGTERM (Kubernetes) and SIGINT (Ctrl-C) set one flag."""

from __future__ import annotations

import signal
import threading


class StopFlag:
    """Set by SIGTERM or SIGINT; loops check it between units of work and finish the current one."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def install(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, _signum: int, _frame: object) -> None:
        self._event.set()

    def set(self) -> None:
        self._event.set()

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)
