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
- `ep:{pN}:seen:<16-byte blake2b of project:messageId>`  dedupe mark         (dedupe window)
- `ep:{pN}:offsets`                                hash "<group>:<topic>" -> next offset
"""

from __future__ import annotations

from dataclasses import dataclass, field
from hashlib import blake2b

from eventpipe.domain.aggregates import ALL, tag
from eventpipe.domain.events import EventRecord

MINUTE_TTL_S = 48 * 3600
LONG_TTL_S = 90 * 86400
NO_TTL = 0
OP_COUNT, OP_RANK = "h", "z"


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
    """The Redis step for one partition's batch: what the script needs, in its ARGV layout.

    Events of a batch share most of their keys, so per event the step names groups, not keys: the
    group of counters its name adds one to in its minute (five counters), and the pair of
    HyperLogLogs (hour, day) its user joins. Python and Lua each do per event a fraction of the
    work of seven separate targets.
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


def dedupe_mark(partition: int, project_id: str, message_id: str) -> bytes:
    """The key that marks (project, messageId) as seen: a 128-bit digest, not the ids themselves.

    A mark lives for the whole dedupe window (24 h), one per event: the digest keeps it at a fixed
    16 bytes whatever the client's id (up to 100 characters) and the project's uuid (36) are.
    """
    return f"{tag(partition)}:seen:".encode() + _digest(project_id, message_id)


def _digest(project_id: str, message_id: str) -> bytes:
    return blake2b(f"{project_id}:{message_id}".encode(), digest_size=16).digest()


def plan_step(partition: int, records: list[EventRecord]) -> StepArgs:
    """Each event's dedupe mark, the counters its name adds one to, and where its user counts."""
    step = StepArgs()
    base = tag(partition)
    seen_prefix = f"{base}:seen:".encode()
    counted, users = f"{base}:count", f"{base}:users"
    # Keyed on the record's raw fields, so names and key strings are made once per group.
    by_name: dict[tuple[str, str, str, str | None], int] = {}
    by_hour: dict[tuple[str, str], int] = {}
    events = step.events
    for record in records:
        project, timestamp = record.project_id, record.timestamp
        name_key = (project, timestamp[:16], record.type, record.event)
        name_group = by_name.get(name_key)
        if name_group is None:
            name, stamp = event_name(record), _digits(timestamp)
            name_group = by_name[name_key] = step.group([
                step.target(OP_COUNT, f"{counted}:minute:{project}:{stamp}", name, MINUTE_TTL_S),
                step.target(OP_COUNT, f"{counted}:hour:{project}:{stamp[:10]}", name, LONG_TTL_S),
                step.target(OP_RANK, f"{base}:top:{project}:{stamp[:8]}", name, LONG_TTL_S),
                step.target(OP_COUNT, f"{base}:total:{project}", name, NO_TTL),
                step.target(OP_COUNT, f"{base}:total:{project}", ALL, NO_TTL),
            ])  # fmt: skip
        hour_key = (project, timestamp[:13])
        pair = by_hour.get(hour_key)
        if pair is None:
            stamp = _digits(timestamp)
            pair = by_hour[hour_key] = step.unique_pair(
                f"{users}:hour:{project}:{stamp[:10]}", f"{users}:day:{project}:{stamp[:8]}"
            )
        digest = _digest(project, record.message_id)
        events.append((seen_prefix + digest, name_group, pair, record.distinct_id))
    return step
