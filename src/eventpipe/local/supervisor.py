"""What `eventpipe up` does while everything runs: a role that dies is started again, a server
it started that dies is started again over its data on the same port, each with backoff, a log
line and a count. It gives up only on a server that will not come back."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from eventpipe.core.signals import StopFlag
from eventpipe.local.process import ManagedProcess, ServerFailed
from eventpipe.local.stack import LocalStack

# Seconds before the next start, by how many starts in a row failed to last.
BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
# A role that ran this long before dying starts again at the shortest delay.
STABLE_AFTER_S = 60.0
# A server that failed to start this many times in a row is gone for good.
SERVER_ATTEMPTS = 4


def _complain(line: str) -> None:
    sys.stderr.write(f"eventpipe: {line}\n")
    sys.stderr.flush()


def backoff(failures_in_a_row: int) -> float:
    return BACKOFF_S[min(failures_in_a_row, len(BACKOFF_S)) - 1] if failures_in_a_row else 0.0


@dataclass
class _Restarts:
    """One role's or server's restarts: how many in all, how many in a row, when the next."""

    total: int = 0
    in_a_row: int = 0
    started_at: float = field(default_factory=time.monotonic)
    due_at: float | None = None


class Supervisor:
    """Keeps the roles and the servers of one `up` running until `stop` is set."""

    def __init__(
        self,
        stack: LocalStack,
        roles: list[ManagedProcess],
        start_role: Callable[[str], ManagedProcess],
    ) -> None:
        self.stack = stack
        self.roles = {role.name: role for role in roles}
        self._start_role = start_role
        self._roles = {name: _Restarts() for name in self.roles}
        self._servers = {name: _Restarts() for name in stack.processes}

    @property
    def running_roles(self) -> list[ManagedProcess]:
        return list(self.roles.values())

    def run(self, stop: StopFlag) -> int:
        """Supervise until `stop` (0), or until a server is gone for good (1)."""
        while not stop.wait(0.5):
            failure = self._servers_step(stop)
            if failure is not None:
                _complain(failure)
                return 1
            self._roles_step()
        return 0

    def _servers_step(self, stop: StopFlag) -> str | None:
        now = time.monotonic()
        for name in self.stack.dead():
            restarts = self._servers[name]
            if restarts.due_at is None:  # found dead just now
                process = self.stack.processes[name]
                restarts.in_a_row = 1
                restarts.due_at = now + backoff(1)
                _complain(
                    f"{name} exited unexpectedly with status {process.popen.returncode}; "
                    f"starting it again over its data in {backoff(1):g}s; "
                    f"last lines of {process.log_path}:\n" + process.log_tail(8)
                )
            if now < restarts.due_at or stop.is_set:
                continue
            restarts.total += 1
            try:
                self.stack.revive(name)
            except ServerFailed as error:
                if restarts.in_a_row >= SERVER_ATTEMPTS:
                    return f"{name} did not start again in {restarts.in_a_row} attempts: {error}"
                restarts.in_a_row += 1
                restarts.due_at = time.monotonic() + backoff(restarts.in_a_row)
                _complain(
                    f"{name} did not start again ({error}); "
                    f"next attempt in {backoff(restarts.in_a_row):g}s"
                )
                continue
            restarts.in_a_row, restarts.due_at = 0, None
            _complain(f"{name} is running again (restarts so far: {restarts.total})")
        return None

    def _roles_step(self) -> None:
        now = time.monotonic()
        for name, role in list(self.roles.items()):
            if role.alive():
                continue
            restarts = self._roles[name]
            if restarts.due_at is None:
                ran_s = now - restarts.started_at
                restarts.in_a_row = 1 if ran_s >= STABLE_AFTER_S else restarts.in_a_row + 1
                restarts.due_at = now + backoff(restarts.in_a_row)
                _complain(
                    f"{name} exited with status {role.popen.returncode} after {ran_s:.0f}s; "
                    f"starting it again in {backoff(restarts.in_a_row):g}s "
                    f"(restart {restarts.total + 1}); last lines of {role.log_path}:\n"
                    + role.log_tail(8)
                )
            if now < restarts.due_at:
                continue
            restarts.total += 1
            restarts.due_at = None
            restarts.started_at = now
            self.roles[name] = self._start_role(name)
