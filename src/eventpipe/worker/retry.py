"""When a failed job runs again: a schedule with jitter, and a job handed back at shutdown."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from procrastinate import BaseRetryStrategy, RetryDecision, exceptions
from procrastinate.jobs import Job

# A job cut short by a worker's shutdown goes back to the queue at once, however often: it did
# not fail. The cap only stops a job that somehow brings every worker down from looping forever.
MAX_HANDBACKS = 100


JITTER = 0.2


def retry_delay(
    attempt: int, schedule: Sequence[float], rng: random.Random | None = None
) -> float | None:
    """Seconds to wait before retry number `attempt` (1-based), or None: give up.

    The delay is the schedule's step times uniform(0.8, 1.2). Not AWS "full jitter"
    (uniform(0, delay)): the steps are what a customer is told to expect, so a retry may move
    by a fifth either way but never collapse to an immediate one; ±20 % still scatters the
    retries of jobs that failed together (an endpoint's outage) instead of sending them together.
    """
    if attempt < 1:
        raise ValueError("retry attempts are numbered from 1")
    if attempt > len(schedule):
        return None
    return schedule[attempt - 1] * (rng or _jitter_rng).uniform(1 - JITTER, 1 + JITTER)


# Jitter spreads retries apart; it guards no secret.
_jitter_rng = random.Random()  # noqa: S311


class Final(Exception):
    """A failure that no retry can mend: the job goes to the dead-letter place at once."""


class JitteredSchedule(BaseRetryStrategy):
    """Retry k (1-based) waits `schedule[k-1]` seconds, jittered; past the schedule the job
    fails and stays in `procrastinate_jobs` as `failed`: the dead-letter place."""

    def __init__(self, schedule: Sequence[float], rng: random.Random | None = None) -> None:
        self.schedule = tuple(schedule)
        self.rng = rng

    def will_retry(self, exception: BaseException, attempts: int) -> bool:
        if _handed_back(exception):
            return attempts < MAX_HANDBACKS
        if isinstance(exception, Final):
            return False
        return attempts < len(self.schedule)

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if not self.will_retry(exception, job.attempts):
            return None
        later = (
            None
            if _handed_back(exception)
            else retry_delay(job.attempts + 1, self.schedule, self.rng)
        )
        delay = later or 0.0
        return RetryDecision(retry_at=datetime.now(UTC) + timedelta(seconds=delay))


def _handed_back(exception: BaseException) -> bool:
    return isinstance(exception, asyncio.CancelledError | exceptions.JobAborted)
