"""Worker processes and a webhook receiver, for the tests of background jobs."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from eventpipe.core.config import Settings
from tests.integration.support import api_env, free_port, wait_for

# Short clocks so a dead worker's job comes back in seconds; docs/jobs.md gives the defaults.
FAST_JOBS = {
    "EVENTPIPE_WORKER_HEARTBEAT_S": "0.5",
    "EVENTPIPE_WORKER_STALE_AFTER_S": "2",
    "EVENTPIPE_WORKER_SWEEP_EVERY_S": "1",
    "EVENTPIPE_WORKER_POLL_S": "0.5",
    "EVENTPIPE_ALERT_EVALUATE_EVERY_S": "1",
    "EVENTPIPE_WEBHOOK_ALLOW_PRIVATE": "true",
    "EVENTPIPE_WEBHOOK_TIMEOUT_S": "1",
    "EVENTPIPE_WEBHOOK_RETRY_SCHEDULE_S": "0.3,0.3",
    "EVENTPIPE_WEBHOOK_FAILURES_TO_DISABLE": "4",
    "EVENTPIPE_EXPORT_BATCH_ROWS": "2000",
}


def jobs_env(settings: Settings, state_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of a role of this test's servers, with the fast job clocks."""
    env = api_env(settings, free_port(), state_dir)
    env.update({**FAST_JOBS, "EVENTPIPE_EXPORT_DIR": str(state_dir / "exports"), **overrides})
    return env


@dataclass
class WorkerProcess:
    """`eventpipe worker` as a real process, its probes on a port of its own."""

    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] = field(init=False)
    port: int = field(init=False)

    def __post_init__(self) -> None:
        self.port = free_port()
        env = {**self.env, "EVENTPIPE_WORKER_METRICS_PORT": str(self.port)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "eventpipe", "worker"], env=env, stdout=log, stderr=log
            )
        wait_for(self.ready, 60, "the worker ready", self.log)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self) -> bool:
        assert self.process.poll() is None, f"worker exited:\n{self.log()}"
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@contextmanager
def workers() -> Iterator[list[WorkerProcess]]:
    """Started with `start_worker`; every one still running is killed at the end."""
    started: list[WorkerProcess] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


def start_worker(started: list[WorkerProcess], env: dict[str, str], base: Path) -> WorkerProcess:
    worker = WorkerProcess(env, base / f"worker-{len(started)}.log")
    started.append(worker)
    return worker


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    """A local HTTP endpoint that records every request and answers as it is told: a status,
    after a delay (past the sender's timeout, for a timeout)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status, self.delay_s = 200, 0.0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._lock:
                    receiver.received.append(
                        Received(self.path, dict(self.headers.items()), body, time.monotonic())
                    )
                    status, delay = receiver.status, receiver.delay_s
                if delay:
                    time.sleep(delay)  # the slow or silent receiver under test
                try:
                    self.send_response(status)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender gave up waiting

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, status: int, delay_s: float = 0.0) -> None:
        with self._lock:
            self.status, self.delay_s = status, delay_s

    def on(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
