"""Toxiproxy, the fault proxy of the network fault tests: a real `toxiproxy-server` process on
loopback, driven through its HTTP API.

scripts/bootstrap.sh builds the server at `VERSION` into the cache directory. A proxy listens on
a loopback port and forwards to a server; toxics on it add latency, stall it (bytes accepted,
never answered) or reset it mid-request, and disabling it refuses connections.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import httpx

from eventpipe.core.config import Settings
from eventpipe.local.process import free_port
from tests.integration.support import wait_for

# The version scripts/bootstrap.sh builds: change both together.
VERSION = "v2.12.0"
Stream = Literal["upstream", "downstream"]
BOTH: tuple[Stream, ...] = ("upstream", "downstream")


def server_binary() -> Path:
    path = Settings().cache_dir / f"toxiproxy-{VERSION}" / "toxiproxy-server"
    assert path.is_file(), f"{path} is missing: run scripts/bootstrap.sh (it builds it with Go)"
    return path


@dataclass(frozen=True)
class Proxy:
    """One proxy: clients connect to `port` on loopback, it forwards to `upstream`."""

    api: httpx.Client
    name: str
    port: int
    upstream: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def latency(self, ms: int, jitter_ms: int = 0, streams: tuple[Stream, ...] = BOTH) -> None:
        """Every chunk waits `ms` (± `jitter_ms`) each way."""
        self._add("latency", streams, latency=ms, jitter=jitter_ms)

    def stall(self, streams: tuple[Stream, ...] = BOTH) -> None:
        """Bytes are accepted and dropped, never answered, until `clear` (`timeout` toxic at 0);
        what was dropped stays lost after."""
        self._add("timeout", streams, timeout=0)

    def reset_peer(self, after_ms: int = 0, streams: tuple[Stream, ...] = ("upstream",)) -> None:
        """The next bytes sent on any connection get it reset (TCP RST) `after_ms` later."""
        self._add("reset_peer", streams, timeout=after_ms)

    def disable(self) -> None:
        """Close every connection and refuse new ones."""
        self._update(enabled=False)

    def enable(self) -> None:
        self._update(enabled=True)

    def delete(self) -> None:
        self.api.delete(f"/proxies/{self.name}").raise_for_status()

    def clear(self) -> None:
        """Remove every toxic and enable the proxy again."""
        toxics = self.api.get(f"/proxies/{self.name}/toxics")
        toxics.raise_for_status()
        for toxic in toxics.json():
            self.api.delete(f"/proxies/{self.name}/toxics/{toxic['name']}").raise_for_status()
        self.enable()

    def _add(self, kind: str, streams: tuple[Stream, ...], **attributes: int) -> None:
        for stream in streams:
            body = {"name": f"{kind}_{stream}", "type": kind, "stream": stream,
                    "toxicity": 1.0, "attributes": attributes}  # fmt: skip
            self.api.post(f"/proxies/{self.name}/toxics", json=body).raise_for_status()

    def _update(self, **fields: object) -> None:
        self.api.patch(f"/proxies/{self.name}", json=fields).raise_for_status()


class Toxiproxy:
    """A running toxiproxy-server and its API client."""

    def __init__(self, api: httpx.Client) -> None:
        self.api = api

    def proxy(self, name: str, upstream: str, port: int | None = None) -> Proxy:
        """A new proxy to `upstream` (host:port), listening on `port` (a free one if None)."""
        port = port or free_port()
        body = {"name": name, "listen": f"127.0.0.1:{port}", "upstream": upstream,
                "enabled": True}  # fmt: skip
        self.api.post("/proxies", json=body).raise_for_status()
        return Proxy(self.api, name, port, upstream)


@contextmanager
def running_toxiproxy(log_path: Path) -> Iterator[Toxiproxy]:
    """toxiproxy-server on a free loopback port until the block ends."""
    port = free_port()
    command = [str(server_binary()), "-host", "127.0.0.1", "-port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:
            answers = partial(_answers, api, process, log_path)
            wait_for(answers, 15, "toxiproxy's API", log_path.read_text)
            yield Toxiproxy(api)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers(api: httpx.Client, process: subprocess.Popen[bytes], log_path: Path) -> bool:
    assert process.poll() is None, f"toxiproxy-server exited:\n{log_path.read_text()}"
    try:
        return api.get("/version").status_code == 200
    except httpx.TransportError:
        return False
