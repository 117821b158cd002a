"""Installs the official SDKs' client programs (tests/integration/sdk_clients) from their own
registries, once per content: a venv per Python SDK, `npm ci` for the Node ones, `go build` for
the Go ones. Everything lands in the cache directory, outside the repo, and is reused by later
runs while the pins do not change."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from eventpipe.core.config import Settings

CLIENTS = Path(__file__).parent / "sdk_clients"
INSTALL_TIMEOUT_S = 600


def _digest(*paths: Path) -> str:
    sha = hashlib.sha256()
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if "node_modules" not in file.parts:
                sha.update(file.name.encode() + file.read_bytes())
    return sha.hexdigest()[:16]


def _cache(name: str, *inputs: Path) -> Path:
    return Settings().cache_dir / "sdk-clients" / f"{name}-{_digest(*inputs)}"


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
    )
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"


def _install_once(target: Path, install: list[tuple[list[str], Path | None]]) -> Path:
    """Run `install` into a scratch copy, then move it to `target` (a half install never counts)."""
    if target.exists():
        return target
    scratch = target.with_name(target.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    for command, cwd in install:
        _run([part.replace("{dir}", str(scratch)) for part in command], cwd or scratch)
    scratch.rename(target)
    return target


def python_client(sdk: str) -> list[str]:
    """The command that runs send.py with only `sdk`'s package installed (segment or rudder)."""
    requirements = CLIENTS / "python" / f"requirements-{sdk}.txt"
    venv = _install_once(
        _cache(f"python-{sdk}", requirements),
        [
            (["uv", "venv", "--quiet", "--python", sys.executable, "{dir}"], None),
            (["uv", "pip", "install", "-q", "--python", "{dir}", "-r", str(requirements)], None),
        ],
    )
    return [str(venv / "bin" / "python"), str(CLIENTS / "python" / "send.py"), "--sdk", sdk]


def npm_installed(source: Path) -> Path:
    """A copy of `source` (a package.json with its lock) with `npm ci` run in it."""
    target = _cache(f"npm-{source.name}", source)
    if not target.exists():
        scratch = target.with_name(target.name + ".partial")
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(source, scratch, ignore=shutil.ignore_patterns("node_modules"))
        # --ignore-scripts: only an optional native build of a dependency the programs never use.
        _run(
            ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
            scratch,
        )
        scratch.rename(target)
    return target


def node_client(script: str) -> list[str]:
    """`node <script>` beside its `npm ci` install of the pinned packages."""
    return ["node", str(npm_installed(CLIENTS / "node") / script)]


def go_client(name: str) -> list[str]:
    """A binary built from sdk_clients/go/<name> with the modules pinned in go.sum."""
    source = CLIENTS / "go"
    target = _cache("go", source)
    if not target.exists():
        scratch = target.with_name(target.name + ".partial")
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        # The machine's Go builds it; never fetch another toolchain.
        env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly -buildvcs=false"}
        for program in ("segment", "rudder"):
            _run(["go", "build", "-o", str(scratch / program), f"./{program}"], source, env)
        scratch.rename(target)
    return [str(target / name)]
