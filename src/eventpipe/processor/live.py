"""Each applied batch's new events, appended to their projects' live streams (domain/live.py)."""

from __future__ import annotations

import logging

import redis

from eventpipe.domain import live
from eventpipe.domain.keys import live_key
from eventpipe.processor.batch import PartitionBatch
from eventpipe.processor.sinks import StepResult

log = logging.getLogger(__name__)


def new_by_project(work: PartitionBatch, result: StepResult) -> dict[str, list[bytes]]:
    """The batch's records counted for the first time, per project, in Kafka order."""
    duplicates = set(result.duplicate_positions)
    out: dict[str, list[bytes]] = {}
    for position, (record, encoded) in enumerate(zip(work.records, work.encoded, strict=True)):
        if position not in duplicates:
            out.setdefault(record.project_id, []).append(encoded)
    return out


class LivePublisher:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._failing = False

    def publish(self, applied: list[tuple[PartitionBatch, StepResult]]) -> None:
        """Best effort: the live view may miss a batch when Redis fails right after the step
        (the counts and the archive, the records of truth, are already applied)."""
        with self._redis.pipeline(transaction=False) as pipe:
            for work, result in applied:
                for project, encoded in new_by_project(work, result).items():
                    pipe.xadd(live_key(project), live.entry(len(encoded), encoded),
                              maxlen=live.MAX_ENTRIES, approximate=True)  # fmt: skip
            try:
                pipe.execute()
            except redis.RedisError as error:
                if not self._failing:
                    log.warning("live stream not updated: %s", error)
                self._failing = True
                return
        self._failing = False
