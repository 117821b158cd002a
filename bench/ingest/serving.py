"""How the benchmark serves the api: the ONE place naming its command line.

The api's serving (worker count, server) is being tuned: change DEFAULT_API_COMMAND, or give
another with EVENTPIPE_BENCH_API_COMMAND / `--api-command` to compare two ways in one run.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence

DEFAULT_API_COMMAND: tuple[str, ...] = ("python", "-m", "eventpipe", "api", "--workers", "2")
API_COMMAND_ENV = "EVENTPIPE_BENCH_API_COMMAND"


def api_command(override: Sequence[str] | None = None) -> tuple[str, ...]:
    """The given command, else EVENTPIPE_BENCH_API_COMMAND (shell words), else the default.
    A leading `python` is this interpreter (bench.roles.python_argv)."""
    if override:
        return tuple(override)
    from_env = os.environ.get(API_COMMAND_ENV, "").strip()
    return tuple(shlex.split(from_env)) if from_env else DEFAULT_API_COMMAND


def describe(command: Sequence[str]) -> str:
    return shlex.join(command)
