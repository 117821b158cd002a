"""The container image, built for real with buildah and run role by role.

No base image can be pulled here, so the base named by the Dockerfile's FROM lines is a stand-in:
Debian bookworm (minbase, debootstrapped from this machine's apt mirror) with Debian's Python 3.11,
committed under the exact FROM name. It is not the official image: the build proves the
Dockerfile's own steps (uv from PyPI, the locked dependencies, the project, the user, the
configuration), and the roles prove the result runs.

The built image then runs `migrate`, `api` (until /readyz answers 200), `processor` and `worker`
with `buildah run --isolation chroot` on the host network, against the local Kafka, Redis and
PostgreSQL of the integration tests; an event sent with a write key must reach the archive.

The stand-in and the built image are kept in a buildah store of their own (overlay driver) under
the cache directory, each named after a digest of its inputs, and reused while those do not change.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from eventpipe.auth.keys import generate_key_file
from eventpipe.core.config import Settings
from eventpipe.core.kafka import admin_client
from eventpipe.local.stack import StackUrls
from tests.deploy.test_container import compose_config
from tests.deploy.tools import debian_command
from tests.integration.support import delete_topics, free_port, fresh_database, wait_for
from tests.integration.test_ingest import (
    basic,
    create_project,
    create_write_key,
    post_event,
    sign_in,
)

pytestmark = [pytest.mark.deploy, pytest.mark.image, pytest.mark.timeout(3600)]

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
SUITE = "bookworm"
STANDIN_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Bump to rebuild the stand-in when the way it is made changes.
STANDIN_RECIPE = "3"
BUILD_TIMEOUT_S = 1800
ROLE_TIMEOUT_S = 120
PARTITIONS = 3


def _cache_root() -> Path:
    return Settings().cache_dir / "deploy-image"


# --- buildah, in a store of its own ----------------------------------------------------------


@dataclass
class Buildah:
    """The buildah binary and the environment that points it at the test's own store."""

    binary: str
    env: dict[str, str]

    def __call__(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.binary, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check:
            assert done.returncode == 0, (
                f"buildah {' '.join(args)} failed ({done.returncode}):\n"
                f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
            )
        return done

    def has_image(self, name: str) -> bool:
        return self("inspect", "--type", "image", name, check=False).returncode == 0

    def inspect(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self("inspect", "--type", "image", name).stdout)
        return found

    def image_size(self, name: str) -> float:
        """The size of an image's layers in the store, in MB (what `buildah images` shows)."""
        listed = json.loads(self("images", "--json", name).stdout)
        number, unit = str(listed[0]["size"]).split()
        return float(number) * {"B": 1e-6, "kB": 1e-3, "MB": 1.0, "GB": 1e3}[unit]


@pytest.fixture(scope="module")
def buildah() -> Buildah:
    binary = debian_command("buildah", "buildah")
    root = _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    conf = root / "storage.conf"
    conf.write_text(
        "[storage]\n"
        'driver = "overlay"\n'
        f'graphroot = "{root / "storage"}"\n'
        'runroot = "/run/eventpipe-deploy-buildah"\n'
    )
    env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(conf), "BUILDAH_ISOLATION": "chroot"}
    return Buildah(binary, env)


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


# --- the stand-in base ----------------------------------------------------------------------


def base_images(dockerfile: str) -> list[str]:
    """The images the FROM lines name, stages of the same file left out, in order."""
    stages: set[str] = set()
    bases: list[str] = []
    for match in re.finditer(r"(?im)^FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", dockerfile):
        image, stage = match.group(1), match.group(2)
        if image.lower() not in stages and image not in bases:
            bases.append(image)
        if stage:
            stages.add(stage.lower())
    return bases


def qualified(image: str) -> str:
    """The name Docker resolves a short image name to: docker.io/library/python:3.11-slim."""
    name = image.split("@", 1)[0]
    first = name.split("/", 1)[0]
    if "/" in name and ("." in first or ":" in first or first == "localhost"):
        return name
    return f"docker.io/{name}" if "/" in name else f"docker.io/library/{name}"


def debian_mirror() -> str:
    """The URI of this machine's apt source for Debian's main archive (not its security one)."""
    sources = Path("/etc/apt")
    for path in sorted(sources.glob("sources.list.d/*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1)
                for line in stanza.splitlines()
                if re.match(r"^[A-Za-z-]+:", line)
            )
            suites = fields.get("Suites", "").split()
            for uri in fields.get("URIs", "").split():
                if SUITE in suites and uri.rstrip("/").endswith("/debian"):
                    return uri
    lists = [sources / "sources.list", *sorted(sources.glob("sources.list.d/*.list"))]
    for path in lists:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            parts = re.sub(r"\[[^]]*\]", "", line).split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE:
                if parts[1].rstrip("/").endswith("/debian"):
                    return parts[1]
    raise AssertionError("no Debian bookworm source in /etc/apt: cannot debootstrap a stand-in")


def _make_standin(buildah: Buildah, mirror: str, names: Sequence[str], tag: str) -> None:
    """Debootstrap bookworm with Python 3.11 and commit it under `tag` and each of `names`."""
    debootstrap = debian_command("debootstrap", "debootstrap")
    work = _cache_root() / "standin.partial"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    rootfs = work / "rootfs"
    rootfs.mkdir(parents=True)
    done = subprocess.run(
        [
            debootstrap,
            "--variant=minbase",
            f"--include={','.join(STANDIN_PACKAGES)}",
            SUITE,
            str(rootfs),
            mirror,
        ],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    assert done.returncode == 0, (
        f"debootstrap failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    )
    # HTTPS from the build goes through this machine's intercepting proxy: trust what it trusts.
    (rootfs / "etc/ssl/certs/ca-certificates.crt").write_bytes(HOST_CA_BUNDLE.read_bytes())
    # The official image's interpreter is /usr/local/bin/python3.11; Debian's is in /usr/bin.
    local_bin = rootfs / "usr/local/bin"
    for link in ("python3.11", "python3", "python"):
        (local_bin / link).unlink(missing_ok=True)
        (local_bin / link).symlink_to("/usr/bin/python3.11")
    for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (rootfs / leftovers).glob("*"):
            if path.is_file():
                path.unlink()
    archive = work / "rootfs.tar"
    subprocess.run(
        ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(archive), "."],
        check=True,
        timeout=600,
    )
    container = buildah("from", "scratch").stdout.strip()
    try:
        buildah("add", container, str(archive), "/", timeout=600)
        buildah(
            "config",
            "--env",
            "PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--env",
            "LANG=C.UTF-8",
            # Stand-in only: uv and pip trust the proxy's certificate through the system bundle.
            "--env",
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
            "--env",
            "PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
            "--cmd",
            "python3",
            "--label",
            "org.opencontainers.image.description=eventpipe test stand-in: debootstrap "
            f"{SUITE} minbase with {', '.join(STANDIN_PACKAGES)}",
            container,
        )
        buildah("commit", "--format", "docker", "--rm", container, tag, timeout=600)
    except BaseException:
        buildah("rm", container, check=False)
        raise
    for name in names:
        buildah("tag", tag, qualified(name))
    subprocess.run(["rm", "-rf", str(work)], check=True)


def ensure_standin(buildah: Buildah, names: Sequence[str]) -> str:
    """The stand-in's tag, made unless a stand-in of the same inputs is in the store already;
    every name in `names` points at it afterwards."""
    mirror = debian_mirror()
    key = _digest(
        STANDIN_RECIPE.encode(),
        mirror.encode(),
        SUITE.encode(),
        ",".join(STANDIN_PACKAGES).encode(),
        HOST_CA_BUNDLE.read_bytes(),
    )
    tag = f"localhost/eventpipe-standin:{key}"
    if not buildah.has_image(tag):
        _make_standin(buildah, mirror, names, tag)
    for name in names:
        buildah("tag", tag, qualified(name))
    return tag


# --- the image --------------------------------------------------------------------------------


@dataclass
class BuiltImage:
    name: str
    base: str
    config: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


def context_files() -> list[Path]:
    """The files the .dockerignore lets into the build context (its allow-list: `!` lines)."""
    allowed = [
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    found: list[Path] = []
    for entry in allowed:
        path = REPO / entry
        if path.is_dir():
            found += sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix not in {".pyc", ".pyo"}
            )
        elif path.is_file():
            found.append(path)
    return found


@pytest.fixture(scope="module")
def image(buildah: Buildah, request: pytest.FixtureRequest) -> BuiltImage:
    dockerfile = DOCKERFILE.read_text()
    bases = base_images(dockerfile)
    assert bases == ["python:3.11-slim-bookworm"], bases
    started = time.monotonic()
    base = ensure_standin(buildah, bases)
    seconds = {"stand-in": time.monotonic() - started}
    inputs = [DOCKERFILE, REPO / ".dockerignore", *context_files()]
    key = _digest(
        base.encode(),
        *(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() for path in inputs),
    )
    name = f"localhost/eventpipe:test-{key}"
    started = time.monotonic()
    if not buildah.has_image(name):
        # A failed build leaves its working container behind; this store is the tests' own.
        buildah("rm", "--all", check=False)
        buildah(
            "bud",
            "--pull=never",
            "--layers",
            "--format",
            "docker",
            "--isolation",
            "chroot",
            "--network",
            "host",
            "--build-arg",
            "REVISION=test",
            "-f",
            str(DOCKERFILE),
            "-t",
            name,
            str(REPO),
            timeout=BUILD_TIMEOUT_S,
        )
    seconds["build"] = time.monotonic() - started
    # Images of earlier inputs go (the builder stage's cached layers stay, for the next build).
    for listed in json.loads(buildah("images", "--json").stdout):
        for other in listed.get("names") or []:
            if other.startswith("localhost/eventpipe:test-") and other != name:
                buildah("rmi", other, check=False)
    built = BuiltImage(name, base, buildah.inspect(name), seconds)
    _report(request, built, buildah)
    return built


def _report(request: pytest.FixtureRequest, built: BuiltImage, buildah: Buildah) -> None:
    """The sizes and times on the terminal (they are this test's figures to watch)."""
    base_size = buildah.image_size(built.base)
    total = buildah.image_size(built.name)
    lines = [
        f"image {built.name}: {total:.0f} MB; stand-in base {base_size:.0f} MB; "
        f"our layers {total - base_size:.0f} MB",
        "stand-in ready in {:.1f} s, image ready in {:.1f} s".format(
            built.seconds["stand-in"], built.seconds["build"]
        ),
    ]
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    for line in lines:
        if reporter is not None:
            reporter.write_line(f"\n[deploy image] {line}")
    (_cache_root() / "last-report.txt").write_text("\n".join(lines) + "\n")


# --- what the image says about itself -------------------------------------------------------


def _env(config: dict[str, Any]) -> dict[str, str]:
    pairs = config["Docker"]["config"].get("Env") or []
    return dict(pair.split("=", 1) for pair in pairs)


def test_image_runs_as_1001_with_eventpipe_api_by_default(image: BuiltImage) -> None:
    config = image.config["Docker"]["config"]
    assert config["Entrypoint"] == ["eventpipe"]
    assert config["Cmd"] == ["api"]
    assert config["User"] == "1001:1001"
    env = _env(image.config)
    assert env["EVENTPIPE_HTTP_HOST"] == "0.0.0.0"  # noqa: S104 - the image's default, as asked
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    healthcheck = config.get("Healthcheck") or {}
    assert healthcheck.get("Test", [None])[0] == "CMD", healthcheck
    assert "/healthz" in " ".join(healthcheck["Test"])
    labels = config.get("Labels") or {}
    assert labels["org.opencontainers.image.title"] == "eventpipe"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"


INSPECT_FILES = """
import json, os, shutil
print(json.dumps({
    "uid": os.getuid(),
    "which": {n: shutil.which(n) for n in ("eventpipe", "uv", "uvx", "gcc", "cc", "pip", "curl")},
    "paths": {p: os.path.exists(p) for p in (
        "/opt/uv", "/root/.cache/uv", "/root/.cache/pip", "/app/src", "/app/.venv/bin/eventpipe")},
    "writable": {p: os.access(p, os.W_OK) for p in ("/app/.venv", "/var/lib/eventpipe")},
}))
"""


def test_final_stage_holds_no_uv_compiler_or_cache(image: BuiltImage, buildah: Buildah) -> None:
    with working_container(buildah, image.name) as container:
        as_root = json.loads(
            buildah("run", "--user", "0:0", container, "--", "python", "-c", INSPECT_FILES).stdout
        )
        as_app = json.loads(buildah("run", container, "--", "python", "-c", INSPECT_FILES).stdout)
    assert as_app["uid"] == 1001
    assert as_root["which"]["eventpipe"] == "/app/.venv/bin/eventpipe"
    for tool in ("uv", "uvx", "gcc", "cc", "curl"):
        assert as_root["which"][tool] is None, f"{tool} is in the final image"
    assert as_root["paths"] == {
        "/opt/uv": False,
        "/root/.cache/uv": False,
        "/root/.cache/pip": False,
        "/app/src": False,
        "/app/.venv/bin/eventpipe": True,
    }
    # The app user may write its state directory, not its code.
    assert as_app["writable"] == {"/app/.venv": False, "/var/lib/eventpipe": True}


# --- the roles against real servers -----------------------------------------------------------


@contextlib.contextmanager
def working_container(buildah: Buildah, image_name: str) -> Iterator[str]:
    name = f"eventpipe-test-{uuid.uuid4().hex[:12]}"
    buildah("from", "--pull=never", "--name", name, image_name)
    try:
        yield name
    finally:
        buildah("rm", name, check=False)


def _env_flags(env: dict[str, str]) -> list[str]:
    flags: list[str] = []
    for name, value in env.items():
        flags += ["--env", f"{name}={value}"]
    return flags


def role_command(image: BuiltImage, role: str) -> list[str]:
    """What the image runs for `docker run IMAGE role`: its entrypoint, then the role."""
    entrypoint: list[str] = image.config["Docker"]["config"]["Entrypoint"]
    return [*entrypoint, role]


@dataclass
class Role:
    """One role running from the image (`buildah run` in a process group of its own)."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        """SIGTERM to the role's own process, as `docker stop` sends it (buildah run would SIGKILL
        it on a signal of its own); SIGKILL to the whole group if it does not exit in time."""
        if self.alive():
            for pid in role_processes(self.process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        return self.process.returncode


def role_processes(root: int) -> list[int]:
    """The eventpipe processes under `root` (a `buildah run` this test started): the role itself,
    beneath buildah's chroot runtime."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    found: list[int] = []
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor and ancestor != root:
            ancestor = parents.get(ancestor)
        if ancestor != root:
            continue
        with contextlib.suppress(OSError):
            command = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
            # buildah's own helpers carry the command in their arguments too: not them.
            if b"buildah" not in command[0] and any(p.endswith(b"/eventpipe") for p in command):
                found.append(pid)
    return found


@contextlib.contextmanager
def running_role(
    buildah: Buildah, image: BuiltImage, role: str, env: dict[str, str], logs: Path
) -> Iterator[Role]:
    with working_container(buildah, image.name) as container:
        log = logs / f"{role}.log"
        command = [
            buildah.binary,
            "run",
            "--isolation",
            "chroot",
            "--network",
            "host",
            *_env_flags(env),
            container,
            "--",
            *role_command(image, role),
        ]
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, env=buildah.env, stdout=out, stderr=out, start_new_session=True
            )
        running = Role(role, process, log)
        try:
            yield running
        finally:
            running.stop()


def run_role_once(
    buildah: Buildah, image: BuiltImage, role: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    with working_container(buildah, image.name) as container:
        return buildah(
            "run",
            "--network",
            "host",
            *_env_flags(env),
            container,
            "--",
            *role_command(image, role),
            timeout=ROLE_TIMEOUT_S,
            check=False,
        )


def compose_healthcheck(config: dict[str, Any], service: str, ports: dict[int, int]) -> list[str]:
    """The command of a compose service's CMD healthcheck, its ports moved as `ports` says."""
    test: list[str] = config["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD", test
    command = test[1:]
    for old, new in ports.items():
        assert any(f":{old}/" in part for part in command), (command, old)
        command = [part.replace(f":{old}/", f":{new}/") for part in command]
    return command


def exec_in(
    buildah: Buildah, image: BuiltImage, env: dict[str, str], command: Sequence[str]
) -> subprocess.CompletedProcess[str]:
    """A command in a fresh container of the image, on the host network: a healthcheck probe."""
    with working_container(buildah, image.name) as container:
        return buildah(
            "run", "--network", "host", *_env_flags(env), container, "--", *command, check=False
        )


def _ready(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/readyz", timeout=2.0).status_code
    except httpx.TransportError:
        return None


def _archived(database_url: str, project: str) -> list[str]:
    with psycopg.connect(database_url) as connection:
        rows = connection.execute(
            "SELECT message_id FROM events WHERE project_id = %s", (project,)
        ).fetchall()
    return [str(row[0]) for row in rows]


def test_roles_from_the_image_carry_an_event_to_the_archive(
    image: BuiltImage, buildah: Buildah, stack_urls: StackUrls, tmp_path: Path
) -> None:
    compose = compose_config(tmp_path / "compose")
    unique = uuid.uuid4().hex[:12]
    topic, dlq = f"test.image.{unique}", f"test.image.{unique}.dlq"
    keys = tmp_path / "keys"
    key_pem = generate_key_file(keys).read_text()
    with fresh_database(stack_urls.database_url, f"test_image_{unique}") as database_url:
        servers = {
            "EVENTPIPE_KAFKA_BOOTSTRAP": stack_urls.kafka_bootstrap,
            "EVENTPIPE_REDIS_URL": stack_urls.redis_url,
            "EVENTPIPE_DATABASE_URL": database_url,
            "EVENTPIPE_EVENTS_TOPIC": topic,
            "EVENTPIPE_DLQ_TOPIC": dlq,
            "EVENTPIPE_PARTITIONS": str(PARTITIONS),
            "EVENTPIPE_PASSWORD_TIME_COST": "1",
            "EVENTPIPE_PASSWORD_MEMORY_KIB": "8192",
        }
        try:
            _migrate_api_processor_worker(image, buildah, servers, key_pem, tmp_path, compose)
        finally:
            delete_topics(stack_urls.kafka_bootstrap, [topic, dlq])


def _migrate_api_processor_worker(
    image: BuiltImage,
    buildah: Buildah,
    servers: dict[str, str],
    key_pem: str,
    logs: Path,
    compose: dict[str, Any],
) -> None:
    bootstrap = servers["EVENTPIPE_KAFKA_BOOTSTRAP"]
    topics = [servers["EVENTPIPE_EVENTS_TOPIC"], servers["EVENTPIPE_DLQ_TOPIC"]]
    started = time.monotonic()
    migrated = run_role_once(buildah, image, "migrate", servers)
    assert migrated.returncode == 0, f"migrate failed:\n{migrated.stdout}\n{migrated.stderr}"
    migrate_s = time.monotonic() - started
    # The one-shot step makes the schema and the topics.
    found = set(admin_client(bootstrap).list_topics(timeout=10).topics)
    assert set(topics) <= found, migrated.stdout + migrated.stderr
    with psycopg.connect(servers["EVENTPIPE_DATABASE_URL"]) as connection:
        assert connection.execute("SELECT to_regclass('events')").fetchone() == ("events",)

    port, metrics_port, worker_port = free_port(), free_port(), free_port()
    api_env = {
        **servers,
        # Loopback only on the host network; the image's default (0.0.0.0) is checked above.
        "EVENTPIPE_HTTP_HOST": "127.0.0.1",
        "EVENTPIPE_HTTP_PORT": str(port),
        "EVENTPIPE_ENVIRONMENT": "production",
        "EVENTPIPE_JWT_PRIVATE_KEY": key_pem,
        "EVENTPIPE_WRITE_KEY_CACHE_S": "0",
    }
    processor_env = {
        **servers,
        "EVENTPIPE_PROCESSOR_GROUP": f"{servers['EVENTPIPE_EVENTS_TOPIC']}-processors",
        "EVENTPIPE_PROCESSOR_METRICS_PORT": str(metrics_port),
        "EVENTPIPE_PROCESSOR_SESSION_TIMEOUT_MS": "6000",
    }
    worker_env = {**servers, "EVENTPIPE_WORKER_METRICS_PORT": str(worker_port)}
    url = f"http://127.0.0.1:{port}"
    with (
        running_role(buildah, image, "api", api_env, logs) as api,
        running_role(buildah, image, "processor", processor_env, logs) as processor,
        running_role(buildah, image, "worker", worker_env, logs) as worker,
    ):
        started = time.monotonic()
        wait_for(
            lambda: _ready(url) == 200 or not api.alive(),
            ROLE_TIMEOUT_S,
            "the api's /readyz to answer 200",
            lambda: f"last answer {_ready(url)}; api log:\n{api.output()}",
        )
        assert api.alive(), f"api exited {api.process.returncode}:\n{api.output()}"
        ready_s = time.monotonic() - started

        # The image's own HEALTHCHECK, run in a container of the image against this api.
        probe = image.config["Docker"]["config"]["Healthcheck"]["Test"][1:]
        checked = exec_in(buildah, image, {"EVENTPIPE_HTTP_PORT": str(port)}, probe)
        assert checked.returncode == 0, checked.stderr

        settings = Settings(
            database_url=servers["EVENTPIPE_DATABASE_URL"],
            password_time_cost=1,
            password_memory_kib=8192,
        )
        message_id = f"image-{uuid.uuid4().hex}"
        with httpx.Client(base_url=url, timeout=10) as http:
            owner = sign_in(http, settings, f"owner-{uuid.uuid4().hex[:8]}@example.com")
            project = create_project(http, owner, "image")
            key = str(create_write_key(http, owner, project)["key"])
            event = {"userId": "u-1", "event": "Image Built", "messageId": message_id}
            sent = post_event(http, "/v1/track", event, key)
            assert sent.status_code == 200, sent.text
            refused = post_event(http, "/v1/track", event, headers=basic("wk_not_a_key"))
            assert refused.status_code == 401, refused.text

        started = time.monotonic()
        wait_for(
            lambda: (
                message_id in _archived(servers["EVENTPIPE_DATABASE_URL"], project)
                or not processor.alive()
            ),
            60,
            "the event in the archive table `events`",
            lambda: f"processor log:\n{processor.output()}",
        )
        assert processor.alive(), f"processor exited:\n{processor.output()}"
        archive_s = time.monotonic() - started

        # The compose file's checks of the processor and the worker, against these processes.
        probe = compose_healthcheck(compose, "processor", {9464: metrics_port})
        checked = exec_in(buildah, image, {}, probe)
        assert checked.returncode == 0, f"{checked.stderr}\n{processor.output()}"
        probe = compose_healthcheck(compose, "worker", {9465: worker_port})
        wait_for(
            lambda: exec_in(buildah, image, {}, probe).returncode == 0 or not worker.alive(),
            30,
            "the worker's /healthz",
            worker.output,
        )
        assert worker.alive(), f"worker exited:\n{worker.output()}"

    for role in (api, processor, worker):
        # A clean stop on SIGTERM: exit 0, or (uvicorn) re-raising the signal once shut down.
        log = role.output()
        clean = role.process.returncode == 0 or "exited on terminated" in log
        assert clean and "Traceback" not in log, f"{role.name} did not stop cleanly:\n{log}"
    assert "Application shutdown complete" in api.output()
    timings = f"migrate {migrate_s:.1f} s, api ready {ready_s:.1f} s, archived {archive_s:.1f} s"
    (_cache_root() / "last-roles.txt").write_text(timings + "\n")
