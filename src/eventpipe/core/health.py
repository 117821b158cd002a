"""Liveness, readiness and Prometheus metrics of the roles that serve no HTTP of their own
(processor, worker), on one small port each, for Kubernetes probes and scrapers.

`/healthz` (liveness: a role stuck on a hung call gets restarted) and `/readyz` ask the role
itself; `/metrics` is the role's registry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

# (ok, what to say): the role's own answer to a probe.
Check = Callable[[], tuple[bool, str]]


class Heartbeat:
    """The time of a loop's last turn; safe to beat from any thread."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def beat(self) -> None:
        self.last = time.monotonic()

    def age(self) -> float:
        return time.monotonic() - self.last

    def liveness(self, stale_after_s: float) -> Check:
        """Alive while the loop has turned within `stale_after_s`."""

        def check() -> tuple[bool, str]:
            age = self.age()
            return age <= stale_after_s, f"last loop turn {age:.1f}s ago"

        return check


class _Handler(BaseHTTPRequestHandler):
    server: HealthServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            alive, detail = self.server.liveness()
            self._json(200 if alive else 503, "ok" if alive else "stalled", detail)
        elif path == "/readyz":
            ready, detail = self.server.readiness()
            self._json(200 if ready else 503, "ready" if ready else "unavailable", detail)
        else:
            self._json(404, "not_found", "try /healthz, /readyz or /metrics")

    def _json(self, status: int, state: str, detail: str) -> None:
        self._send(status, orjson.dumps({"status": state, "detail": detail}), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # probes every few seconds would drown the role's own log


class HealthServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        port: int,
        *,
        registry: CollectorRegistry,
        liveness: Check,
        readiness: Check,
        host: str = "0.0.0.0",  # noqa: S104 - probes come from the kubelet, not loopback
    ) -> None:
        super().__init__((host, port), _Handler)
        self.registry = registry
        self.liveness = liveness
        self.readiness = readiness


def serve_health(
    port: int, *, registry: CollectorRegistry, liveness: Check, readiness: Check
) -> HealthServer | None:
    """Serve in a daemon thread; None (logged) when the port is taken: watching must not stop
    the role itself."""
    try:
        server = HealthServer(port, registry=registry, liveness=liveness, readiness=readiness)
    except OSError as error:
        log.error("no health or metrics on port %d: %s", port, error)
        return None
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
