"""`eventpipe bench`: the benchmarks live in the source checkout's bench/, not in the wheel.

The command finds the checkout (above the working directory, else the one this package was
imported from when it runs from source) and runs `python -m bench` there with this interpreter.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import eventpipe


def is_checkout(directory: Path) -> bool:
    return (directory / "pyproject.toml").is_file() and (
        directory / "bench" / "__main__.py"
    ).is_file()


def find_checkout(start: Path) -> Path | None:
    """The nearest checkout at or above `start`, else the one holding this package's source."""
    for directory in (start, *start.parents):
        if is_checkout(directory):
            return directory
    # src/eventpipe/__init__.py -> the checkout two levels above src/ (an editable install).
    source = Path(eventpipe.__file__).resolve().parents[2]
    return source if is_checkout(source) else None


def run_bench(args: Sequence[str], cwd: Path) -> int:
    """`python -m bench ARGS` in the checkout; its exit status (2 when there is none)."""
    checkout = find_checkout(cwd.resolve())
    if checkout is None:
        message = "needs a source checkout (pyproject.toml and bench/) at or above this directory"
        sys.stderr.write(f"eventpipe: `eventpipe bench` {message}\n")
        return 2
    # Output paths the user gives stay relative to where they typed the command.
    command = [sys.executable, "-m", "bench", *_absolute_output(args, cwd)]
    return subprocess.call(command, cwd=checkout)  # noqa: S603 - our interpreter, the user's args


def _absolute_output(args: Sequence[str], cwd: Path) -> list[str]:
    """--output DIR (or --output=DIR) resolved against `cwd`, the rest unchanged; the default
    output (bench-results/) lands in the working directory too."""
    out, follow = [], False
    for arg in args:
        if follow:
            arg, follow = str(cwd / arg), False
        elif arg == "--output":
            follow = True
        elif arg.startswith("--output="):
            arg = f"--output={cwd / arg.split('=', 1)[1]}"
        out.append(arg)
    if not any(arg == "--output" or arg.startswith("--output=") for arg in args):
        if not any(arg in ("-h", "--help") for arg in args):
            out += ["--output", str(cwd / "bench-results" / _stamp())]
    return out


def _stamp() -> str:
    from datetime import UTC, datetime

    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
