"""Where a running `eventpipe up` put its servers, for the commands run beside it.

`up` starts its servers on free ports; it writes their URLs to `running.json` in its state
directory once everything is ready and removes the file when it stops. Any other command run
with the same state directory (`user`, `migrate`, `doctor`, `dlq`, ...) uses them for every URL
its environment leaves unset.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from eventpipe.core.config import Settings
from eventpipe.local.process import running as process_running

RUNNING_FILE = "running.json"


@dataclass(frozen=True)
class RunningStack:
    """What `up` wrote: the process, its api, and its servers' URLs."""

    pid: int
    api_url: str
    kafka_bootstrap: str
    redis_url: str
    database_url: str


def write_running(state_dir: Path, running: RunningStack) -> None:
    path = state_dir / RUNNING_FILE
    scratch = path.with_suffix(".tmp")
    # Owner-only: the database URL may carry a password.
    descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(asdict(running), file)
    scratch.replace(path)


def remove_running(state_dir: Path) -> None:
    (state_dir / RUNNING_FILE).unlink(missing_ok=True)


def read_running(state_dir: Path) -> RunningStack | None:
    """The stack of an `up` still running on this state directory, else None."""
    try:
        running = RunningStack(**json.loads((state_dir / RUNNING_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    # A file left by an `up` that was killed outright names a process that is gone.
    return running if process_running(running.pid) else None


def with_running_servers(settings: Settings) -> Settings:
    """`settings` with each unset server URL taken from a running `up`, if there is one."""
    unset = [
        name
        for name in ("kafka_bootstrap", "redis_url", "database_url")
        if getattr(settings, name) is None
    ]
    running = read_running(settings.state_dir) if unset else None
    if running is None:
        return settings
    # Validated as the environment's would be: the URLs become the same typed values.
    found = Settings(
        state_dir=settings.state_dir, **{name: getattr(running, name) for name in unset}
    )
    return settings.model_copy(update={name: getattr(found, name) for name in unset})
