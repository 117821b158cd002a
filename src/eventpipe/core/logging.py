"""Process-wide logging: one line per record, to stderr, level from settings."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Where core.kafka sends librdkafka's own log lines.
LIBRDKAFKA_LOGGER = "eventpipe.librdkafka"
_NUMBERS = re.compile(r"\d+")


class RepeatFilter(logging.Filter):
    """Lets each kind of line through once per window; its repeats meanwhile are counted and
    reported on the next one let through.

    librdkafka logs every failed connection attempt: a broker away for a minute means hundreds of
    lines per client, which bury everything else. Lines that differ only in their numbers
    (ports, milliseconds, counters) are the same kind.
    """

    MAX_KINDS = 1000

    def __init__(self, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._window_s = window_s
        self._clock = clock
        self._kinds: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return True  # asked for everything
        message = record.getMessage()
        kind = _NUMBERS.sub("#", message)
        now = self._clock()
        shown = self._kinds.get(kind)
        if shown is not None and now - shown[0] < self._window_s:
            self._kinds[kind] = (shown[0], shown[1] + 1)
            return False
        if len(self._kinds) >= self.MAX_KINDS:
            self._kinds.clear()  # bounded memory; at worst a repeat is shown early
        self._kinds[kind] = (now, 0)
        if shown is not None and shown[1]:
            record.msg = f"{message} ({shown[1]} more like it in the last {self._window_s:.0f} s)"
            record.args = None
        return True


def configure_logging(level: str) -> None:
    """Set the root logger once per process; librdkafka's and uvicorn's loggers follow it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
