"""Pure aggregation: events of one partition in, the Redis step's arguments out. No I/O.

The keys it names are those of `eventpipe.domain.keys`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eventpipe.domain.events import EventRecord
from eventpipe.domain.keys import (
    ALL,
    DAY,
    HOUR,
    LONG_TTL_S,
    MINUTE,
    MINUTE_TTL_S,
    counts_key,
    day_counts_key,
    message_digest,
    seen_prefix,
    totals_key,
    users_key,
)

NO_TTL = 0
OP_COUNT, OP_RANK = "h", "z"


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
    """The Redis step for one partition's batch: what the script needs, in its ARGV layout.

    Events of a batch share most of their keys, so per event the step names groups, not keys: the
    group of counters its name adds one to in its minute (its name and `$all` in the minute, the
    hour and the day, and in the all-time totals: eight counters), and the pair of HyperLogLogs
    (hour, day) its user joins. Python and Lua each do per event a fraction of the work of ten
    separate targets.
    """

    # Counters (op "h": HINCRBY, "z": ZINCRBY): (op, key, member, ttl).
    targets: list[tuple[str, str, str, int]] = field(default_factory=list)
    # Per name and minute: the 1-based indices of its targets.
    groups: list[list[int]] = field(default_factory=list)
    # Per project and hour: (hour HyperLogLog key, day HyperLogLog key).
    uniques: list[tuple[str, str]] = field(default_factory=list)
    # (dedupe mark, 1-based group, 1-based uniques pair, user).
    events: list[tuple[bytes, int, int, str]] = field(default_factory=list)
    _index: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def target(self, op: str, key: str, member: str, ttl: int) -> int:
        """1-based index of the (op, key, member) target, added on first use."""
        ident = (op, key, member)
        found = self._index.get(ident)
        if found is None:
            self.targets.append((op, key, member, ttl))
            found = self._index[ident] = len(self.targets)
        return found

    def group(self, indices: list[int]) -> int:
        self.groups.append(indices)
        return len(self.groups)

    def unique_pair(self, hour_key: str, day_key: str) -> int:
        self.uniques.append((hour_key, day_key))
        return len(self.uniques)

    def argv(
        self, field_name: str, first_offset: int, next_offset: int, dedupe_ttl_s: int
    ) -> list[str | int | bytes]:
        args: list[str | int | bytes] = [
            field_name, first_offset, next_offset, dedupe_ttl_s, LONG_TTL_S,
            len(self.targets), len(self.groups), len(self.uniques),
        ]  # fmt: skip
        for target in self.targets:
            args += target
        for indices in self.groups:
            args.append(len(indices))
            args += indices
        for pair in self.uniques:
            args += pair
        for event in self.events:
            args += event
        return args


def plan_step(partition: int, records: list[EventRecord]) -> StepArgs:
    """Each event's dedupe mark, the counters its name adds one to, and where its user counts."""
    step = StepArgs()
    marks = seen_prefix(partition)
    # Keyed on the record's raw fields, so names and key strings are made once per group.
    by_name: dict[tuple[str, str, str, str | None], int] = {}
    by_hour: dict[tuple[str, str], int] = {}
    events = step.events
    for record in records:
        project, timestamp = record.project_id, record.timestamp
        name_key = (project, timestamp[:16], record.type, record.event)
        name_group = by_name.get(name_key)
        if name_group is None:
            name, minute = event_name(record), _digits(timestamp)
            total = totals_key(partition, project)
            buckets = (
                (counts_key(partition, MINUTE, project, minute), MINUTE_TTL_S),
                (counts_key(partition, HOUR, project, minute[:10]), LONG_TTL_S),
                (day_counts_key(partition, project, minute[:8]), LONG_TTL_S),
            )
            # A set of members: a track event named `$all` is the total's own member, once.
            members = dict.fromkeys((name, ALL))
            name_group = by_name[name_key] = step.group([
                *(step.target(OP_RANK, key, member, ttl)
                  for key, ttl in buckets for member in members),
                *(step.target(OP_COUNT, total, member, NO_TTL) for member in members),
            ])  # fmt: skip
        hour_key = (project, timestamp[:13])
        pair = by_hour.get(hour_key)
        if pair is None:
            hour = _digits(timestamp)[:10]
            pair = by_hour[hour_key] = step.unique_pair(
                users_key(partition, HOUR, project, hour),
                users_key(partition, DAY, project, hour[:8]),
            )
        digest = message_digest(project, record.message_id)
        events.append((marks + digest, name_group, pair, record.distinct_id))
    return step
