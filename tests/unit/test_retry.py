"""When a failed job runs again: ±20 % jitter around each step of its schedule, then the
dead-letter place; a job cut short by a shutdown goes back at once."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest
from procrastinate.jobs import Job

from eventpipe.core.config import Settings
from eventpipe.worker.retry import MAX_HANDBACKS, Final, JitteredSchedule, retry_delay

DEFAULT_SCHEDULE_S = tuple(Settings().webhook_retry_schedule_s)


def test_the_webhooks_default_schedule_is_the_standard_webhooks_one() -> None:
    # Svix's: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h.
    assert DEFAULT_SCHEDULE_S == (5, 300, 1800, 7200, 18000, 36000)


@pytest.mark.parametrize("attempt", range(1, len(DEFAULT_SCHEDULE_S) + 1))
def test_delays_stay_within_twenty_percent_of_the_step(attempt: int) -> None:
    rng = random.Random(1234)  # noqa: S311 - jitter, not security
    step = DEFAULT_SCHEDULE_S[attempt - 1]
    delays = [retry_delay(attempt, DEFAULT_SCHEDULE_S, rng) for _ in range(500)]
    assert all(d is not None and 0.8 * step <= d <= 1.2 * step for d in delays)
    # Actually jittered, and spread over most of the band rather than stuck at one value.
    values = [d for d in delays if d is not None]
    assert max(values) - min(values) > 0.3 * step


def test_a_seeded_rng_makes_delays_repeatable() -> None:
    # S311: jitter, not secrets: a seeded generator is the point.
    first = [retry_delay(n, DEFAULT_SCHEDULE_S, random.Random(7)) for n in (1, 2, 3)]  # noqa: S311
    again = [retry_delay(n, DEFAULT_SCHEDULE_S, random.Random(7)) for n in (1, 2, 3)]  # noqa: S311
    assert first == again


def test_exhausted_schedule_means_give_up() -> None:
    schedule = (1.0, 2.0)
    assert retry_delay(2, schedule) is not None
    assert retry_delay(3, schedule) is None
    assert retry_delay(len(DEFAULT_SCHEDULE_S) + 1, DEFAULT_SCHEDULE_S) is None
    assert retry_delay(1, ()) is None


def test_attempts_are_numbered_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        retry_delay(0, DEFAULT_SCHEDULE_S)


def job(attempts: int) -> Job:
    return Job(id=1, queue="q", lock=None, queueing_lock=None, task_name="t", attempts=attempts)


def test_a_failed_job_is_retried_on_the_schedule_then_dead_lettered() -> None:
    # S311: jitter, not secrets.
    strategy = JitteredSchedule((10.0, 100.0), random.Random(3))  # noqa: S311
    before = datetime.now(UTC)
    first = strategy.get_retry_decision(exception=RuntimeError("x"), job=job(0))
    second = strategy.get_retry_decision(exception=RuntimeError("x"), job=job(1))
    assert first is not None and first.retry_at is not None
    assert (
        before + timedelta(seconds=8) <= first.retry_at <= datetime.now(UTC) + timedelta(seconds=12)
    )
    assert second is not None and second.retry_at is not None
    assert second.retry_at >= before + timedelta(seconds=80)
    assert strategy.get_retry_decision(exception=RuntimeError("x"), job=job(2)) is None


def test_a_final_failure_is_dead_lettered_at_once() -> None:
    class Gone(Final):
        pass

    strategy = JitteredSchedule((10.0, 100.0))
    assert strategy.get_retry_decision(exception=Gone(), job=job(0)) is None


def test_a_job_cut_short_by_shutdown_goes_back_at_once_whatever_its_attempts() -> None:
    strategy = JitteredSchedule(())
    decision = strategy.get_retry_decision(exception=asyncio.CancelledError(), job=job(5))
    assert decision is not None and decision.retry_at is not None
    assert decision.retry_at <= datetime.now(UTC)
    assert (
        strategy.get_retry_decision(exception=asyncio.CancelledError(), job=job(MAX_HANDBACKS))
        is None
    )
