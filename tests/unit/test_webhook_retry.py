"""The retry schedule of alert webhooks: ±20 % jitter around each step, then give up."""

from __future__ import annotations

import random

import pytest

from eventpipe.alerts.delivery import DEFAULT_SCHEDULE_S, retry_delay


def test_default_schedule_is_the_standard_webhooks_one() -> None:
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
