"""The Redis key layout of the live aggregates: written here once, for the processor that writes
them, the queries that read them, the tests and the benchmarks (a drift would read zeros silently).

Every key of a Kafka partition carries its hash tag `{p<N>}`, so one batch's step touches one Redis
Cluster slot. A user's events all land in one partition (Kafka key = project and user), so
per-partition unique counts add up to the project's. Per project:

- `ep:{pN}:counts:minute:<project>:<YYYYmmddHHMM>` sorted set name -> count, and `$all` (48 hours)
- `ep:{pN}:counts:hour:<project>:<YYYYmmddHH>`     sorted set name -> count, and `$all` (90 days)
- `ep:{pN}:counts:day:<project>:<YYYYmmdd>`        sorted set name -> count, and `$all` (90 days)
- `ep:{pN}:users:hour:<project>:<YYYYmmddHH>`      HyperLogLog of users       (90 days)
- `ep:{pN}:users:day:<project>:<YYYYmmdd>`         HyperLogLog of users       (90 days)
- `ep:{pN}:total:<project>`                        hash event name -> count, and `$all` (no
  expiry: one small hash per project and partition)
- `ep:{pN}:seen:<16-byte blake2b of project:messageId>`  dedupe mark         (dedupe window)
- `ep:{pN}:offsets`                                hash "<group>:<topic>" -> next offset
- `ep:{pN}:users:merged:<project>:<resolution>:<first>:<last>`  HyperLogLog, the union of
  finished buckets, kept a minute (a cache of the queries: the union of a month is the costly part)
- `ep:live:<project>`                              stream of the project's new events (capped)

(Earlier versions kept buckets as `count:minute`/`count:hour` hashes and `top` sorted sets without
`$all`. The new names mean a processor of this layout never meets a key of the old one with the
wrong type during an upgrade; the old keys expire on their own.)

Every bucket of counts is a sorted set with its total in `$all`: a range's per-name sums are one
ZUNION per partition inside Redis, and its per-bucket totals one ZSCORE per bucket.
"""

from __future__ import annotations

from datetime import datetime
from hashlib import blake2b

ALL = "$all"
MINUTE_TTL_S = 48 * 3600
LONG_TTL_S = 90 * 86400

MINUTE, HOUR, DAY = "minute", "hour", "day"
# How a bucket of each resolution is spelled in its keys.
STAMP_FORMATS = {MINUTE: "%Y%m%d%H%M", HOUR: "%Y%m%d%H", DAY: "%Y%m%d"}


def tag(partition: int) -> str:
    """Prefix of a partition's keys: one Redis Cluster slot per partition."""
    return f"ep:{{p{partition}}}"


def stamp(moment: datetime, resolution: str) -> str:
    """The bucket of `moment` (UTC) at `resolution`, as its keys spell it."""
    return moment.strftime(STAMP_FORMATS[resolution])


def counts_key(partition: int, resolution: str, project_id: str, bucket: str) -> str:
    """Counts per event name (and `$all`) in one minute, hour or day."""
    return f"{tag(partition)}:counts:{resolution}:{project_id}:{bucket}"


def users_key(partition: int, resolution: str, project_id: str, bucket: str) -> str:
    """HyperLogLog of the users of one hour or day (`resolution` HOUR or DAY)."""
    return f"{tag(partition)}:users:{resolution}:{project_id}:{bucket}"


def day_counts_key(partition: int, project_id: str, day: str) -> str:
    """Counts per event name (and `$all`) in one day."""
    return counts_key(partition, DAY, project_id, day)


def merged_users_key(
    partition: int, project_id: str, resolution: str, first: str, last: str
) -> str:
    """Cache of the union of the users HyperLogLogs of buckets `first` to `last`, inclusive."""
    return f"{tag(partition)}:users:merged:{project_id}:{resolution}:{first}:{last}"


def totals_key(partition: int, project_id: str) -> str:
    return f"{tag(partition)}:total:{project_id}"


def seen_prefix(partition: int) -> bytes:
    return f"{tag(partition)}:seen:".encode()


def message_digest(project_id: str, message_id: str) -> bytes:
    """A 128-bit digest of (project, messageId): a fixed 16 bytes whatever the ids' lengths."""
    return blake2b(f"{project_id}:{message_id}".encode(), digest_size=16).digest()


def dedupe_mark(partition: int, project_id: str, message_id: str) -> bytes:
    """The key that marks (project, messageId) as counted, for the whole dedupe window."""
    return seen_prefix(partition) + message_digest(project_id, message_id)


def offsets_key(partition: int) -> str:
    return f"{tag(partition)}:offsets"


def offset_field(group: str, topic: str) -> str:
    return f"{group}:{topic}"


def live_key(project_id: str) -> str:
    """The project's live stream: its own slot, read by every api replica."""
    return f"ep:live:{project_id}"
