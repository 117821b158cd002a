"""`eventpipe up` as a user runs it, while its servers and roles are killed under load: each
server comes back over its data on the same port, each role reconnects without restarting (or,
killed itself, is started again), and nothing acknowledged is lost or counted twice. `up` gives
up only on a server that will not start again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from eventpipe.local.running import read_running
from tests.faults.checker import check
from tests.faults.load import Load
from tests.integration.processor_support import Pipeline
from tests.integration.support import free_port, wait_for
from tests.integration.test_up import UP_TIMEOUT_S, Running, _alive, _cmdline, _descendants

ROLES = ("api", "processor", "worker")
# What tells each server's main process apart among `up`'s descendants.
SERVERS = {"redis": "redis-server", "postgres": "postgres -D", "kafka": "kafka.Kafka"}
PASSWORD = "a long password"


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[Running, dict[str, str]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPIPE_")}
    env.update(
        EVENTPIPE_STATE_DIR=str(tmp_path / "state"),
        EVENTPIPE_HTTP_PORT=str(free_port()),
        EVENTPIPE_PARTITIONS="3",
        EVENTPIPE_PROCESSOR_METRICS_PORT=str(free_port()),
        EVENTPIPE_WORKER_METRICS_PORT=str(free_port()),
    )
    running = Running(env)
    yield running, env
    if running.process.poll() is None:
        running.process.terminate()
        try:
            running.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            running.process.kill()
            running.process.wait()


def _pid_of(up_pid: int, needle: str) -> int:
    found = [pid for pid in _descendants(up_pid) if needle in _cmdline(pid)]
    assert found, f"no process of {needle!r} under up"
    return min(found)  # the parent: its children came later


def _role_pids(up_pid: int) -> dict[str, int]:
    return {role: _pid_of(up_pid, f"-m eventpipe {role}") for role in ROLES}


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _all_ready(env: dict[str, str]) -> bool:
    return all(
        _ready(f"http://127.0.0.1:{env[name]}")
        for name in (
            "EVENTPIPE_HTTP_PORT",
            "EVENTPIPE_PROCESSOR_METRICS_PORT",
            "EVENTPIPE_WORKER_METRICS_PORT",
        )
    )


def _write_key(url: str, env: dict[str, str]) -> tuple[str, str]:
    """An account made with the CLI beside `up`, its project and write key."""
    created = subprocess.run(
        [sys.executable, "-m", "eventpipe", "user", "create", "--email", "me@example.com"],
        env=env, input=f"{PASSWORD}\n", capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    with httpx.Client(base_url=url, timeout=10) as http:
        login = {"email": "me@example.com", "password": PASSWORD}
        token = http.post("/auth/login", json=login).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        project = http.post("/api/projects", json={"name": "web"}, headers=headers).json()["id"]
        key = http.post(
            f"/api/projects/{project}/write-keys", json={"name": "site"}, headers=headers
        ).json()["key"]
    return str(project), str(key)


def test_every_server_and_role_killed_under_up_comes_back_and_nothing_is_lost(
    up: tuple[Running, dict[str, str]],
) -> None:
    running, env = up
    running.wait_for_line("eventpipe is up at ", UP_TIMEOUT_S)
    up_pid = running.process.pid
    url = f"http://127.0.0.1:{env['EVENTPIPE_HTTP_PORT']}"
    wait_for(lambda: _all_ready(env), 60, "every role ready")
    project, key = _write_key(url, env)
    roles = _role_pids(up_pid)
    timings: dict[str, float] = {}
    load = Load(url, key, rate=300, batch=10, connections=4).start()
    try:
        wait_for(lambda: load.acknowledged_count() >= 300, 30, "load flowing")
        for server, needle in SERVERS.items():
            killed_at = time.monotonic()
            os.kill(_pid_of(up_pid, needle), signal.SIGKILL)
            wait_for(
                lambda server=server: any(  # type: ignore[misc]
                    f"{server} is running again" in line for line in running.stderr_lines()
                ),
                120, f"up to start {server} again", lambda: "".join(running.stderr_lines()[-5:]),
            )  # fmt: skip
            wait_for(lambda: _all_ready(env), 120, f"every role ready after {server}")
            timings[f"{server} back, all ready"] = time.monotonic() - killed_at
            # Every role reconnected: none was restarted.
            assert _role_pids(up_pid) == roles, f"a role restarted after {server} was killed"
            acknowledged = load.acknowledged_count()
            wait_for(
                lambda n=acknowledged: load.acknowledged_count() > n + 100,  # type: ignore[misc]
                60, f"ingest acknowledging again after {server}",
            )  # fmt: skip
        # A role killed itself is started again, with a log line and a count.
        os.kill(roles["worker"], signal.SIGKILL)
        wait_for(
            lambda: any("worker exited with status -9" in line for line in running.stderr_lines()),
            30, "up to notice the worker", lambda: "".join(running.stderr_lines()[-5:]),
        )  # fmt: skip
        wait_for(lambda: _all_ready(env), 60, "the worker started again")
        assert _pid_of(up_pid, "-m eventpipe worker") != roles["worker"]
    finally:
        result = load.stop()
    servers = read_running(Path(env["EVENTPIPE_STATE_DIR"]))
    assert servers is not None
    pipeline = Pipeline(
        servers.kafka_bootstrap, servers.redis_url, servers.database_url, "eventpipe.events"
    )
    tally = check("up: redis, postgres, kafka, worker killed", result, pipeline, project,
                  timings=timings)  # fmt: skip
    tally.assert_exact()
    assert "Traceback" not in "".join(running.stderr_lines())


def test_up_stops_everything_when_a_server_will_not_start_again(
    up: tuple[Running, dict[str, str]],
) -> None:
    running, env = up
    running.wait_for_line("eventpipe is up at ", UP_TIMEOUT_S)
    up_pid = running.process.pid
    children = _descendants(up_pid)
    # Held still while its Redis dies and its data is damaged: no restart can win the race.
    os.kill(up_pid, signal.SIGSTOP)
    try:
        os.kill(_pid_of(up_pid, SERVERS["redis"]), signal.SIGKILL)
        manifest = next((Path(env["EVENTPIPE_STATE_DIR"]) / "redis").rglob("*.manifest"))
        manifest.write_text("this is not a manifest\n")
    finally:
        os.kill(up_pid, signal.SIGCONT)
    assert running.process.wait(timeout=120) == 1
    stderr = "".join(running.stderr_lines())
    assert "redis exited unexpectedly" in stderr
    assert "redis did not start again in 4 attempts" in stderr
    assert "Traceback" not in stderr
    assert [pid for pid in children if _alive(pid)] == []
