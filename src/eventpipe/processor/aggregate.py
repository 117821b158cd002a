"""Pure aggregation: events of one partition in, the Redis step's arguments out. No I/O.

Every key of a partition carries its hash tag `{p<N>}`, so the whole step of one batch touches one
Redis Cluster slot. Per project:
- `ep:{pN}:count:minute:<project>:<YYYYmmddHHMM>`  hash event name -> count   (48 hours)
- `ep:{pN}:count:hour:<project>:<YYYYmmddHH>`      hash event name -> count   (90 days)
- `ep:{pN}:users:hour:<project>:<YYYYmmddHH>`      HyperLogLog of users       (90 days)
- `ep:{pN}:users:day:<project>:<YYYYmmdd>`         HyperLogLog of users       (90 days)
- `ep:{pN}:top:<project>:<YYYYmmdd>`               sorted set name -> count   (90 days)
- `ep:{pN}:total:<project>`                        hash event name -> count, "$all" (no expiry:
  totals are the one figure meant to last; one small hash per project and partition)
- `ep:{pN}:seen:<project>:<messageId>`             dedupe mark                (dedupe window)
- `ep:{pN}:offsets`                                hash "<group>:<topic>" -> next offset
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eventpipe.domain.aggregates import ALL, tag
from eventpipe.domain.events import EventRecord

MINUTE_TTL_S = 48 * 3600
LONG_TTL_S = 90 * 86400
NO_TTL = 0
OP_COUNT, OP_UNIQUE, OP_RANK = "h", "p", "z"


def offsets_key(partition: int) -> str:
    return f"{tag(partition)}:offsets"


def offset_field(group: str, topic: str) -> str:
    return f"{group}:{topic}"


def event_name(record: EventRecord) -> str:
    """What a count is kept under: a track's own name, else `$<type>` (PostHog's convention)."""
    if record.type == "track" and record.event:
        return record.event
    return f"${record.type}"


def _digits(timestamp: str) -> str:
    # "2026-11-25T14:03:59.123Z" -> "202611251403"
    return timestamp[0:4] + timestamp[5:7] + timestamp[8:10] + timestamp[11:13] + timestamp[14:16]


@dataclass
class StepArgs:
    """The Redis step for one partition's batch: what the script needs, in its ARGV layout."""

    targets: list[tuple[str, str, str, int]] = field(default_factory=list)
    events: list[tuple[str, list[int]]] = field(default_factory=list)
    _index: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def target(self, op: str, key: str, member: str, ttl: int) -> int:
        """1-based index of the (op, key, member) target, added on first use."""
        ident = (op, key, member)
        found = self._index.get(ident)
        if found is None:
            self.targets.append((op, key, member, ttl))
            found = self._index[ident] = len(self.targets)
        return found

    def argv(
        self, field_name: str, first_offset: int, next_offset: int, dedupe_ttl_s: int
    ) -> list[str | int]:
        args: list[str | int] = [
            field_name, first_offset, next_offset, dedupe_ttl_s, len(self.targets),
        ]  # fmt: skip
        for op, key, member, ttl in self.targets:
            args += [op, key, member, ttl]
        for seen_key, indices in self.events:
            args += [seen_key, len(indices), *indices]
        return args


def plan_step(partition: int, records: list[EventRecord]) -> StepArgs:
    """Each event's dedupe mark and the aggregate targets it adds one to."""
    step = StepArgs()
    base = tag(partition)
    for record in records:
        project, name, stamp = record.project_id, event_name(record), _digits(record.timestamp)
        minute, hour, day = stamp, stamp[:10], stamp[:8]
        user = record.distinct_id
        indices = [
            step.target(OP_COUNT, f"{base}:count:minute:{project}:{minute}", name, MINUTE_TTL_S),
            step.target(OP_COUNT, f"{base}:count:hour:{project}:{hour}", name, LONG_TTL_S),
            step.target(OP_UNIQUE, f"{base}:users:hour:{project}:{hour}", user, LONG_TTL_S),
            step.target(OP_UNIQUE, f"{base}:users:day:{project}:{day}", user, LONG_TTL_S),
            step.target(OP_RANK, f"{base}:top:{project}:{day}", name, LONG_TTL_S),
            step.target(OP_COUNT, f"{base}:total:{project}", name, NO_TTL),
            step.target(OP_COUNT, f"{base}:total:{project}", ALL, NO_TTL),
        ]
        step.events.append((f"{base}:seen:{project}:{record.message_id}", indices))
    return step
