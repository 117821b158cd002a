"""The local servers eventpipe needs, started together and stopped together."""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

from eventpipe.core.config import Settings
from eventpipe.local.kafka import start_kafka
from eventpipe.local.postgres import start_postgres
from eventpipe.local.process import ManagedProcess, lock_file
from eventpipe.local.redis import start_redis

logger = logging.getLogger(__name__)

# Kafka may write its archive of classes as it exits (a few seconds, once).
_STOP_TIMEOUT_S = 20.0

StartResult = tuple[str, ManagedProcess]
# Called with no port on the first start (a fresh one), and with the same port on a revival.
Starter = Callable[..., StartResult]


@dataclass(frozen=True)
class StackUrls:
    kafka_bootstrap: str
    redis_url: str
    database_url: str


class LocalStack:
    """Starts, in parallel, each of Kafka, Redis, PostgreSQL whose EVENTPIPE_* URL is unset.

    Holds an exclusive lock on the state directory from `start` until `stop`, so two eventpipe
    processes never run servers over the same data.
    """

    def __init__(self, settings: Settings, *, fast_start: bool = True) -> None:
        self.settings = settings
        self.fast_start = fast_start
        self.processes: dict[str, ManagedProcess] = {}
        self._lock_fd: int | None = None
        self._urls: StackUrls | None = None
        self._started_urls: dict[str, str] = {}

    @property
    def urls(self) -> StackUrls:
        if self._urls is None:
            raise RuntimeError("the local stack is not started")
        return self._urls

    def start(self) -> StackUrls:
        """Start the missing servers and return every URL; raises AlreadyRunning or ServerFailed."""
        if self._urls is not None:
            return self._urls
        state_dir = self.settings.state_dir.resolve()
        self._lock_fd = lock_file(state_dir / "eventpipe.lock", owner="")
        started = time.monotonic()
        try:
            urls = self._start_servers(self._starters())
        except BaseException:
            self.stop()
            raise
        if self.processes:
            names = ", ".join(self.processes)
            logger.info("started %s in %.1f s", names, time.monotonic() - started)
        self._started_urls = urls
        self._urls = self._merge(urls)
        return self._urls

    def check(self) -> None:
        """Raise ServerFailed, with its log tail, if a server this stack started has died."""
        if self._urls is None:
            return
        for process in self.processes.values():
            if not process.alive():
                raise process.failure(f"exited unexpectedly with status {process.popen.returncode}")

    def dead(self) -> list[str]:
        """The servers this stack started that are no longer running."""
        return [name for name, process in self.processes.items() if not process.alive()]

    def revive(self, name: str) -> None:
        """Start a dead server again over its data, on the port its clients already know;
        raises ServerFailed if it does not come up."""
        url = self._started_urls[name]
        port = urlsplit(url if "://" in url else f"//{url}").port  # Kafka's has no scheme
        self.processes[name].kill()  # reaps it and releases its data lock
        _, self.processes[name] = self._starters()[name](port=port)

    def stop(self) -> None:
        """Stop the servers in the reverse of their start order, then release the lock."""
        for name in reversed(list(self.processes)):
            try:
                self.processes[name].stop(_STOP_TIMEOUT_S)
            except Exception:
                logger.exception("could not stop %s", name)
        self._urls = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _starters(self) -> dict[str, Starter]:
        settings, state_dir = self.settings, self.settings.state_dir
        starters: dict[str, Starter] = {}
        if settings.kafka_bootstrap is None:
            starters["kafka"] = functools.partial(
                start_kafka, state_dir, settings.cache_dir, fast_start=self.fast_start
            )
        if settings.redis_url is None:
            starters["redis"] = functools.partial(start_redis, state_dir)
        if settings.database_url is None:
            starters["postgres"] = functools.partial(start_postgres, state_dir)
        return starters

    def _start_servers(self, starters: dict[str, Starter]) -> dict[str, str]:
        """Run the starters in parallel; record every server started even if another fails."""
        self.processes = {}
        if not starters:
            return {}
        with ThreadPoolExecutor(len(starters), thread_name_prefix="eventpipe-local") as pool:
            futures = {name: pool.submit(starter) for name, starter in starters.items()}
            try:
                wait(futures.values())
            except BaseException:
                # Ctrl-C: still wait for each thread, so that `stop` sees what it started.
                self._collect(futures)
                raise
        urls, failure = self._collect(futures)
        if failure is not None:
            raise failure
        return urls

    def _collect(
        self, futures: dict[str, Future[StartResult]]
    ) -> tuple[dict[str, str], BaseException | None]:
        urls: dict[str, str] = {}
        failure: BaseException | None = None
        for name, future in futures.items():
            try:
                urls[name], self.processes[name] = future.result()
            except BaseException as error:
                failure = failure or error
        return urls, failure

    def _merge(self, started: dict[str, str]) -> StackUrls:
        """Started servers' URLs, and the configured ones passed through unchanged."""
        settings = self.settings
        return StackUrls(
            kafka_bootstrap=settings.kafka_bootstrap or started["kafka"],
            redis_url=str(settings.redis_url) if settings.redis_url else started["redis"],
            database_url=str(settings.database_url)
            if settings.database_url
            else started["postgres"],
        )
