"""Server processes started by eventpipe: start, wait for readiness, stop, and lock their state."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

_TAIL_BYTES = 64 * 1024
_ROTATE_BYTES = 20 * 1024 * 1024
# Each server names this in its log when another process holds its port: worth one more try.
_PORT_CLASH = "Address already in use"


class ServerFailed(RuntimeError):
    """A local server did not start, or stopped on its own; the message carries its log tail."""

    def __init__(self, server: str, what: str, log_tail: str = "") -> None:
        self.server = server
        self.what = what
        self.log_tail = log_tail
        message = f"{server}: {what}"
        if log_tail:
            message += f"\n--- last lines of the {server} log ---\n{log_tail}"
        super().__init__(message)

    @property
    def port_clash(self) -> bool:
        """Whether the server lost its port to another process (a new port may succeed)."""
        return _PORT_CLASH in self.log_tail


class AlreadyRunning(RuntimeError):
    """The state directory is in use by another eventpipe process."""


@dataclass
class ManagedProcess:
    """A server child process, its log file, and how to stop it."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    stop_signal: signal.Signals = signal.SIGTERM
    # Where this run's lines start in the (appended) log, so a failure shows this run only.
    log_offset: int = 0
    # A lock on the server's data, held until the process has been reaped (see `lock_file`).
    lock_fd: int | None = None
    # Runs once after the process has been reaped, with its exit status.
    on_exit: Callable[[int], None] | None = None
    _finished: bool = field(default=False, init=False, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        return tail_lines(self.log_path, lines, start=self.log_offset)

    def failure(self, what: str) -> ServerFailed:
        return ServerFailed(self.name, what, self.log_tail())

    def stop(self, timeout: float = 15.0) -> None:
        """Send `stop_signal`, wait up to `timeout`, then `kill`; idempotent."""
        if self.popen.poll() is None:
            logger.debug("stopping %s (pid %d) with %s", self.name, self.pid, self.stop_signal.name)
            self._signal(self.stop_signal)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0f s: killing it", self.name, timeout)
                self.kill()
        self._finish()

    def kill(self) -> None:
        """SIGKILL the server and every process below it, and reap it (a crash, for tests)."""
        if self.popen.poll() is None:
            # Stopped, it cannot fork while its children are listed. Its process group is not
            # enough: PostgreSQL puts each child in a session of its own.
            self._signal(signal.SIGSTOP)
            doomed = descendants(self.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)  # not reaped yet: the pid is still ours
            for pid in doomed:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.popen.wait()
            _wait_gone(doomed, timeout=10.0)
        self._finish()

    def _signal(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signum)

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None
        if self.on_exit is not None:
            self.on_exit(self.popen.returncode)


def spawn(
    name: str,
    args: Sequence[str],
    *,
    log_path: Path,
    stop_signal: signal.Signals = signal.SIGTERM,
    lock_fd: int | None = None,
    cwd: Path | None = None,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
) -> ManagedProcess:
    """Start a server with stdout and stderr appended to `log_path`, in a session of its own.

    Its own session keeps a terminal's Ctrl-C away from it: the supervisor gets the signal and
    stops the servers in order. The lock fd is inherited, so the lock lasts as long as the
    server even if the supervisor dies without stopping it.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _rotate(log_path)
    with log_path.open("ab") as log:
        log.write(f"=== eventpipe: starting {name} at {time.strftime('%FT%T%z')} ===\n".encode())
        log.flush()
        offset = log.tell()
        try:
            popen = _popen(args, log, cwd=cwd, lock_fd=lock_fd, user=user, env=env)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
    logger.debug("started %s (pid %d), log in %s", name, popen.pid, log_path)
    return ManagedProcess(name, popen, log_path, stop_signal, log_offset=offset, lock_fd=lock_fd)


def _popen(
    args: Sequence[str],
    log: BinaryIO,
    *,
    cwd: Path | None,
    lock_fd: int | None,
    user: str | None,
    env: Mapping[str, str] | None,
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        start_new_session=True,
        pass_fds=() if lock_fd is None else (lock_fd,),
        user=user,
        group=user,
        extra_groups=None if user is None else [],
    )


def _rotate(log_path: Path) -> None:
    """Keep one previous log once it grows large: each start appends (Kafka's ~0.5 MB)."""
    with contextlib.suppress(FileNotFoundError):
        if log_path.stat().st_size > _ROTATE_BYTES:
            os.replace(log_path, log_path.with_name(log_path.name + ".1"))


def tail_lines(path: Path, lines: int = 20, *, start: int = 0) -> str:
    """The last `lines` lines of a log file from byte `start` on ("" if there are none)."""
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(start, size - _TAIL_BYTES))
            data = file.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def descendants(pid: int) -> list[int]:
    """The pids of every process below `pid` (children, grandchildren...), from Linux's /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat_fields(stat)
        if fields:
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    parents = [pid]
    while parents:
        kids = children.get(parents.pop(), [])
        found += kids
        parents += kids
    return found


def running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (which holds no files or memory any more)."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return bool(fields) and fields[0] != "Z"


def _stat_fields(stat: Path) -> list[str]:
    """The fields after the command name of /proc/<pid>/stat: state, ppid, ... ([] if gone)."""
    try:
        text = stat.read_text()
    except OSError:
        return []
    # The command name, in parentheses, may hold spaces and parentheses itself.
    return text[text.rindex(")") + 2 :].split()


def _wait_gone(pids: list[int], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(running(pid) for pid in pids):
        if time.monotonic() > deadline:
            logger.warning("processes %s outlived SIGKILL for %.0f s", pids, timeout)
            return
        time.sleep(0.01)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    process: ManagedProcess,
    what: str,
    interval: float = 0.05,
) -> None:
    """Poll `check` until it holds; raise ServerFailed if the process dies or `timeout` passes.

    A server that never became ready (or whose wait was interrupted) is stopped: nobody else
    holds it, so it would be left behind.
    """
    deadline = time.monotonic() + timeout
    try:
        while True:
            if not process.alive():
                status = process.popen.returncode
                raise process.failure(f"exited with status {status} while waiting until {what}")
            if check():
                return
            if time.monotonic() > deadline:
                raise process.failure(f"not {what} after {timeout:.0f} s")
            time.sleep(interval)
    except BaseException:
        process.stop()
        raise


def retry_port_clash(start: Callable[[], T], *, attempts: int = 3) -> T:
    """Run `start` again when the port it picked was taken between choosing and binding it."""
    for _ in range(attempts - 1):
        try:
            return start()
        except ServerFailed as error:
            if not error.port_clash:
                raise
            logger.info("%s lost its port to another process; retrying", error.server)
    return start()


def lock_file(path: Path, *, owner: str) -> int:
    """Take an exclusive, non-blocking flock on `path`; raise AlreadyRunning if it is held.

    The returned fd is the lock: it is released when every copy of the fd is closed (children
    that inherit it keep it). The file holds the pid of the holder, for the error message;
    `owner` names the kind of holder in that message ("" for eventpipe itself).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        os.close(fd)
        raise AlreadyRunning(_in_use(path.parent, owner, holder)) from None
    write_lock_pid(fd, os.getpid())
    return fd


def _in_use(directory: Path, owner: str, holder: str) -> str:
    who = [owner] if owner else []
    if holder.isdigit():
        who.append(f"pid {holder}")
    detail = f" ({' '.join(who)})" if who else ""
    return f"eventpipe is already running on {directory}{detail}: stop it first"


def write_lock_pid(fd: int, pid: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{pid}\n".encode(), 0)
