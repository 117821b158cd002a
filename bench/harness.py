"""What every benchmark's run shares: its scratch directory and its CPU meter."""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from bench.cpu import CpuMeter, tree_cpu_s

# This process as a party: alone (time.process_time, every thread), since the roles it starts
# are parties of their own.
BENCH = "bench"


def tree_meter(pids: Mapping[str, int]) -> CpuMeter:
    """The CPU of each named process tree, and of this process as `bench`."""
    parties: dict[str, Callable[[], float]] = {
        name: functools.partial(tree_cpu_s, pid) for name, pid in pids.items()
    }
    parties[BENCH] = time.process_time
    return CpuMeter(parties)


@contextlib.contextmanager
def scratch_dir(prefix: str, logs: Path | None) -> Iterator[Path]:
    """A temporary directory, its logs copied to `logs` (if given) whatever happens."""
    # librdkafka's retry notices (a broker that just started) are not the benchmark's output.
    logging.getLogger("eventpipe.librdkafka").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        try:
            yield Path(tmp)
        finally:
            if logs is not None:
                logs.mkdir(parents=True, exist_ok=True)
                for log in Path(tmp).glob("*.log"):
                    shutil.copy(log, logs / log.name)


def run_in_tmp(prefix: str, logs: Path | None, run: Callable[[Path], bool]) -> None:
    """`run` in a scratch directory; exits 0 when it answers True (every benchmark's main ends
    so)."""
    with scratch_dir(prefix, logs) as tmp:
        ok = run(tmp)
    sys.exit(0 if ok else 1)
