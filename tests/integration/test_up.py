"""`eventpipe up` end to end, as a user runs it: a subprocess on its own state directory."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.integration.support import free_port

UP_TIMEOUT_S = 180.0


def _descendants(pid: int) -> set[int]:
    """Every process below `pid`, read from /proc (children of children included)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead but not yet reaped by its parent.
    status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return status != "Z"


class Running:
    """A started `eventpipe up` whose stdout lines arrive on a queue."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "eventpipe", "up"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self._stderr: list[str] = []
        self._stderr_done = threading.Event()
        assert self.process.stdout is not None and self.process.stderr is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()
        threading.Thread(target=self._keep, args=(self.process.stderr,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)

    def _keep(self, stream: IO[str]) -> None:
        for line in stream:
            self._stderr.append(line)
        self._stderr_done.set()

    def stderr_lines(self) -> list[str]:
        """What `up` wrote to stderr so far (all of it once it has exited)."""
        if self.process.poll() is not None:
            self._stderr_done.wait(10)  # the reader may lag the exit by a moment
        return list(self._stderr)

    def wait_for_line(self, start: str, timeout: float) -> str:
        while True:
            line = self.lines.get(timeout=timeout)
            if line.startswith(start):
                return line


@pytest.fixture
def up_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    env["EVENTPIPE_STATE_DIR"] = str(tmp_path / "state")
    env["EVENTPIPE_HTTP_PORT"] = str(free_port())
    env["EVENTPIPE_PARTITIONS"] = "3"
    return env


@pytest.fixture
def running_up(up_env: dict[str, str]) -> Iterator[Running]:
    running = Running(up_env)
    yield running
    if running.process.poll() is None:
        # SIGTERM first: a SIGKILL would leave `up`'s servers and roles running, orphaned.
        running.process.terminate()
        try:
            running.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            running.process.kill()
            running.process.wait()


def test_up_serves_refuses_a_second_and_stops_cleanly(
    running_up: Running, up_env: dict[str, str]
) -> None:
    line = running_up.wait_for_line("eventpipe is up at ", UP_TIMEOUT_S)
    url = line.split()[4]
    assert url == f"http://127.0.0.1:{up_env['EVENTPIPE_HTTP_PORT']}"

    response = httpx.get(f"{url}/readyz", timeout=10)
    assert response.status_code == 200
    checks = response.json()["checks"]
    assert {name: c["status"] for name, c in checks.items()} == {
        "kafka": "ok",
        "redis": "ok",
        "postgres": "ok",
    }

    second_env = {**up_env, "EVENTPIPE_HTTP_PORT": str(free_port())}
    second = subprocess.run(
        [sys.executable, "-m", "eventpipe", "up"],
        env=second_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 1
    assert "already running" in second.stderr
    # The refused `up` leaves the running one's record of its servers alone.
    assert (Path(up_env["EVENTPIPE_STATE_DIR"]) / "running.json").exists()
    assert "Traceback" not in second.stderr
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200

    children = _descendants(running_up.process.pid)
    assert len(children) >= 6  # kafka, redis, postgres (and its workers), api, processor, worker
    running_up.process.send_signal(signal.SIGTERM)
    assert running_up.process.wait(timeout=60) == 0
    assert [pid for pid in children if _alive(pid)] == []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


README = Path(__file__).parents[2] / "README.md"


def first_steps() -> str:
    """The shell block of the README's "First steps", as a reader would paste it."""
    section = README.read_text().split("## First steps", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def test_the_readmes_first_steps_run_verbatim_beside_up(up_env: dict[str, str]) -> None:
    # Verbatim means the README's port too: it must be free.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", 8000)) != 0, "port 8000 is taken: stop its server"
    env = {**up_env, "EVENTPIPE_HTTP_PORT": "8000"}
    running = Running(env)
    try:
        running.wait_for_line("eventpipe is up at http://127.0.0.1:8000", UP_TIMEOUT_S)
        # No account yet: the dashboard offers the first run, and `up` printed its code.
        assert running.wait_for_line("  give the one-time setup code ", 30).split()[5]
        assert httpx.get("http://127.0.0.1:8000/").headers["location"] == "/setup"
        state = Path(env["EVENTPIPE_STATE_DIR"])
        assert (state / "running.json").stat().st_mode & 0o777 == 0o600

        # The second terminal: the same state directory, no server URL set anywhere.
        second = {k: v for k, v in env.items() if k != "EVENTPIPE_HTTP_PORT"}
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", first_steps()],
            cwd=README.parent, env=second, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
        assert done.stdout.strip().endswith('{"success":true}'), done.stdout

        # With an account, the dashboard asks to sign in; its footer says where the docs are.
        home = httpx.get("http://127.0.0.1:8000/", timeout=10, follow_redirects=True)
        assert home.status_code == 200 and "text/html" in home.headers["content-type"]
        assert home.url.path == "/signin"
        assert "/docs" in home.text and "README.md" in home.text
    finally:
        running.process.terminate()
        running.process.wait(timeout=60)
    assert running.process.returncode == 0
    assert not (state / "running.json").exists()


def test_a_file_left_by_a_killed_up_is_ignored(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    env["EVENTPIPE_STATE_DIR"] = str(tmp_path)
    # A pid above the kernel's largest: no such process, as after `up` was SIGKILLed.
    (tmp_path / "running.json").write_text(
        '{"pid": 999999999, "api_url": "http://127.0.0.1:1", "kafka_bootstrap": "127.0.0.1:1",'
        ' "redis_url": "redis://127.0.0.1:1/0", "database_url": "postgresql://x@127.0.0.1:1/x"}'
    )
    done = subprocess.run(
        [sys.executable, "-m", "eventpipe", "user", "create", "--email", "a@example.com"],
        env=env, input="a long password\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "EVENTPIPE_DATABASE_URL is not set" in done.stderr
    assert "Traceback" not in done.stderr
