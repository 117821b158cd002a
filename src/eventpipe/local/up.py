"""`eventpipe up`: local servers plus the api, processor and worker roles, supervised as one:
a role or server that dies is started again (local/supervisor.py)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import httpx
import psycopg

from eventpipe.core.config import Settings
from eventpipe.core.kafka import NO_SECURITY, ensure_topics, security_config
from eventpipe.core.signals import StopFlag
from eventpipe.local.process import AlreadyRunning, ManagedProcess, ServerFailed
from eventpipe.local.running import RunningStack, remove_running, write_running
from eventpipe.local.stack import LocalStack, StackUrls
from eventpipe.local.supervisor import Supervisor
from eventpipe.migrations.runner import upgrade

ROLES = ("api", "processor", "worker")
READY_TIMEOUT_S = 60.0


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _complain(line: str) -> None:
    sys.stderr.write(f"eventpipe: {line}\n")
    sys.stderr.flush()


def _role_env(settings: Settings, urls: StackUrls) -> dict[str, str]:
    env = dict(os.environ)
    if settings.kafka_bootstrap is None:
        # The Kafka `up` started talks PLAINTEXT on loopback, whatever the shell says for others.
        for name in [
            n for n in env if n.startswith(("EVENTPIPE_KAFKA_SASL", "EVENTPIPE_KAFKA_SSL"))
        ]:
            del env[name]
        env["EVENTPIPE_KAFKA_SECURITY_PROTOCOL"] = "PLAINTEXT"
    env["EVENTPIPE_KAFKA_BOOTSTRAP"] = urls.kafka_bootstrap
    env["EVENTPIPE_REDIS_URL"] = urls.redis_url
    env["EVENTPIPE_DATABASE_URL"] = urls.database_url
    return env


def _start_role(role: str, env: dict[str, str], log_dir: Path) -> ManagedProcess:
    log_path = log_dir / f"{role}.log"
    with log_path.open("ab") as log_file:
        # A session of its own: a terminal's Ctrl-C reaches `up` only, which stops roles in order.
        popen = subprocess.Popen(
            [sys.executable, "-m", "eventpipe", role],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ManagedProcess(role, popen, log_path, signal.SIGTERM)


def _first_failure(stack: LocalStack, roles: list[ManagedProcess]) -> str | None:
    try:
        stack.check()
    except ServerFailed as error:
        return str(error)
    for role in roles:
        if not role.alive():
            return (
                f"{role.name} exited ({role.popen.returncode}); last lines of {role.log_path}:\n"
                + (role.log_tail())
            )
    return None


def _api_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_ready(
    url: str, stack: LocalStack, roles: list[ManagedProcess], stop: StopFlag
) -> str | None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not stop.is_set:
        failure = _first_failure(stack, roles)
        if failure is not None:
            return failure
        if _api_ready(url):
            return None
        if time.monotonic() > deadline:
            return f"the api at {url} was not ready after {READY_TIMEOUT_S:g}s"
        stop.wait(0.2)
    return None


def _prepare(settings: Settings, urls: StackUrls) -> None:
    topics = {settings.events_topic: settings.partitions, settings.dlq_topic: settings.partitions}
    # A Kafka of its own (no EVENTPIPE_KAFKA_BOOTSTRAP) talks PLAINTEXT on loopback.
    security = security_config(settings) if settings.kafka_bootstrap else NO_SECURITY
    ensure_topics(urls.kafka_bootstrap, topics, security=security)
    upgrade(urls.database_url)


def _setup_code(settings: Settings, database_url: str) -> str | None:
    """The dashboard's one-time first-run code while no account exists (the configured one, else
    a new one), or None once there is an account."""
    with psycopg.connect(database_url) as connection:
        row = connection.execute("SELECT EXISTS (SELECT 1 FROM users)").fetchone()
    if row is not None and row[0]:
        return None
    if settings.setup_code is not None and settings.setup_code.get_secret_value():
        return settings.setup_code.get_secret_value()
    return secrets.token_urlsafe(16)


def run_up(settings: Settings, *, fast_start: bool = True) -> int:
    """Run everything until SIGTERM or Ctrl-C; returns the exit status."""
    stop = StopFlag().install()
    started = time.monotonic()
    stack = LocalStack(settings, fast_start=fast_start)
    roles: list[ManagedProcess] = []
    wrote_running = False
    try:
        urls = stack.start()
        if stop.is_set:
            return 0
        _prepare(settings, urls)
        log_dir = settings.state_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        env = _role_env(settings, urls)
        setup_code = _setup_code(settings, urls.database_url)
        if setup_code is not None:
            env["EVENTPIPE_SETUP_CODE"] = setup_code  # read by the api only
        roles = [_start_role(role, env, log_dir) for role in ROLES]
        api_url = f"http://{settings.http_host}:{settings.http_port}"
        failure = _wait_ready(api_url, stack, roles, stop)
        if failure is not None:
            _complain(failure)
            return 1
        if stop.is_set:
            return 0
        running = RunningStack(os.getpid(), api_url, **asdict(urls))
        write_running(settings.state_dir, running)
        wrote_running = True
        _say(f"eventpipe is up at {api_url} (ready in {time.monotonic() - started:.1f}s)")
        _say(
            f"  kafka {urls.kafka_bootstrap}  redis {urls.redis_url}  postgres {urls.database_url}"
        )
        _say(f"  state and logs in {settings.state_dir}; Ctrl-C stops everything")
        _say("  commands run beside it (eventpipe user, migrate, doctor, dlq) find these servers")
        if setup_code is not None:
            _say(f"  first run: open {api_url} to create the owner account; from another machine,")
            _say(f"  give the one-time setup code {setup_code} (valid until an account exists)")
        supervisor = Supervisor(stack, roles, lambda role: _start_role(role, env, log_dir))
        try:
            return supervisor.run(stop)
        finally:
            roles = supervisor.running_roles
    except (AlreadyRunning, ServerFailed) as error:
        _complain(str(error))
        return 1
    finally:
        if wrote_running:  # never another `up`'s, found running on this state directory
            remove_running(settings.state_dir)
        for role in reversed(roles):
            role.stop()
        stack.stop()
