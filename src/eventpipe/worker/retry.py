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


def jittered(delay: float, rng: random.Random) -> float:
    """±20 %: retries of jobs that failed together (an endpoint down) spread out instead of
    arriving together again, and the schedule a user reads stays recognisable."""
    return delay * rng.uniform(0.8, 1.2)


class Final(Exception):
    """A failure that no retry can mend: the job goes to the dead-letter place at once."""


class JitteredSchedule(BaseRetryStrategy):
    """Retry k (1-based) waits `schedule[k-1]` seconds, jittered; past the schedule the job
    fails and stays in `procrastinate_jobs` as `failed`: the dead-letter place."""

    def __init__(self, schedule: Sequence[float], rng: random.Random | None = None) -> None:
        self.schedule = tuple(schedule)
        self.rng = rng or random.Random()  # noqa: S311 - spreading retries, not a secret

    def will_retry(self, exception: BaseException, attempts: int) -> bool:
        if _handed_back(exception):
            return attempts < MAX_HANDBACKS
        if isinstance(exception, Final):
            return False
        return attempts < len(self.schedule)

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if not self.will_retry(exception, job.attempts):
            return None
        delay = 0.0 if _handed_back(exception) else jittered(self.schedule[job.attempts], self.rng)
        return RetryDecision(retry_at=datetime.now(UTC) + timedelta(seconds=delay))


def _handed_back(exception: BaseException) -> bool:
    return isinstance(exception, asyncio.CancelledError | exceptions.JobAborted)
