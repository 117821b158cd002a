from __future__ import annotations

import logging

from eventpipe.core.kafka import producer_config
from eventpipe.core.logging import LIBRDKAFKA_LOGGER, RepeatFilter


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(
        "eventpipe.librdkafka", logging.ERROR, __file__, 1, message, args, None
    )


def test_repeats_within_the_window_are_held_back_and_counted() -> None:
    clock = _Clock()
    gate = RepeatFilter(window_s=30, clock=clock)
    refused = "%s [%s] %s"
    first = _record(
        refused, "FAIL", "rdkafka#producer-1", "Connect to 127.0.0.1:9092 failed (after 0ms)"
    )
    assert gate.filter(first)
    for attempt in range(5):
        clock.now += 1
        again = _record(
            refused,
            "FAIL",
            "rdkafka#producer-1",
            f"Connect to 127.0.0.1:9092 failed (after {attempt}ms)",
        )
        assert not gate.filter(again)
    other = _record(refused, "FAIL", "rdkafka#producer-1", "Receive failed: Disconnected")
    assert gate.filter(other)  # another kind of line is not held back
    clock.now += 30
    later = _record(
        refused, "FAIL", "rdkafka#producer-1", "Connect to 127.0.0.1:9092 failed (after 7ms)"
    )
    assert gate.filter(later)
    assert later.getMessage().endswith("(after 7ms) (5 more like it in the last 30 s)")
    clock.now += 31
    quiet = _record(
        refused, "FAIL", "rdkafka#producer-1", "Connect to 127.0.0.1:9092 failed (after 1ms)"
    )
    assert gate.filter(quiet)
    assert "more like it" not in quiet.getMessage()


def test_the_memory_of_kinds_is_bounded() -> None:
    gate = RepeatFilter(window_s=30, clock=_Clock())
    for n in range(RepeatFilter.MAX_KINDS * 2):
        assert gate.filter(_record(f"line {'x' * (n % 50)} {chr(65 + n % 26) * (n // 26 + 1)}"))
    assert len(gate._kinds) <= RepeatFilter.MAX_KINDS


def test_everything_passes_when_debug_is_asked_for() -> None:
    logger = logging.getLogger("eventpipe.librdkafka.test")
    logger.setLevel(logging.DEBUG)
    try:
        gate = RepeatFilter(window_s=30, clock=_Clock())
        record = logging.LogRecord(logger.name, logging.ERROR, __file__, 1, "same", None, None)
        assert gate.filter(record) and gate.filter(record)
    finally:
        logger.setLevel(logging.NOTSET)


def test_every_kafka_client_logs_through_the_filter() -> None:
    config = producer_config("127.0.0.1:9")
    assert config["logger"].name == LIBRDKAFKA_LOGGER
    assert any(isinstance(f, RepeatFilter) for f in config["logger"].filters)
