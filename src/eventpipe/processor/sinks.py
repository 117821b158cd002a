"""The Redis step: one script call per batch and partition, atomic, replay-safe."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

import redis

from eventpipe.domain.events import EventRecord
from eventpipe.domain.keys import offset_field, offsets_key
from eventpipe.processor.aggregate import plan_step

STEP_SCRIPT = files("eventpipe.processor").joinpath("step.lua").read_text()


class OffsetGap(Exception):
    """Redis holds an offset short of the batch: its last writes were lost; seek back there."""

    def __init__(self, stored: int) -> None:
        super().__init__(f"Redis's stored offset {stored} is short of the batch")
        self.stored = stored


@dataclass(frozen=True)
class StepResult:
    new: int
    duplicates: int
    skipped: bool  # the whole batch was applied before (a replay after a crash)
    # Positions in the batch of the events counted before (their dedupe mark was there).
    duplicate_positions: tuple[int, ...] = ()


class RedisStep:
    def __init__(self, client: redis.Redis, *, group: str, topic: str, dedupe_ttl_s: int) -> None:
        self._redis = client
        self._field = offset_field(group, topic)
        self._dedupe_ttl_s = dedupe_ttl_s
        self._script = client.register_script(STEP_SCRIPT)

    def apply(
        self, partition: int, records: list[EventRecord], first_offset: int, next_offset: int
    ) -> StepResult:
        """Apply one partition's batch; `first_offset` -1 accepts a gap (retention deleted it)."""
        answer = self.apply_many([(partition, records, first_offset, next_offset)])[0]
        if isinstance(answer, OffsetGap):
            raise answer
        return answer

    def apply_many(
        self, works: list[tuple[int, list[EventRecord], int, int]]
    ) -> list[StepResult | OffsetGap]:
        """`apply` for several partitions in one round trip; each step stays atomic on its own.

        `works` holds (partition, records, first_offset, next_offset) tuples.
        """
        with self._redis.pipeline(transaction=False) as pipe:
            for partition, records, first_offset, next_offset in works:
                argv = plan_step(partition, records).argv(
                    self._field, first_offset, next_offset, self._dedupe_ttl_s
                )
                self._script(keys=[offsets_key(partition)], args=argv, client=pipe)
            answers = pipe.execute()
        results: list[StepResult | OffsetGap] = []
        for (new, duplicates, *positions), work in zip(answers, works, strict=True):
            if new == -1:
                results.append(OffsetGap(int(duplicates)))
            else:
                skipped = new == 0 and duplicates == 0 and bool(work[1])
                dups = tuple(int(p) for p in positions)
                results.append(StepResult(int(new), int(duplicates), skipped, dups))
        return results

    def stored_offset(self, partition: int) -> int | None:
        value = self._redis.hget(offsets_key(partition), self._field)
        return int(value) if isinstance(value, bytes | str) else None
