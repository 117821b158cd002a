from __future__ import annotations

from eventpipe.domain.events import EventRecord
from eventpipe.domain.keys import ALL, dedupe_mark
from eventpipe.processor.aggregate import (
    OP_COUNT,
    event_name,
    plan_step,
)


def _record(message_id: str, user: str, name: str = "Click", kind: str = "track") -> EventRecord:
    return EventRecord(
        project_id="p",
        message_id=message_id,
        type=kind,
        received_at="2026-11-25T14:03:59.123Z",
        timestamp="2026-11-25T14:03:59.123Z",
        day="2026-11-25",
        user_id=user,
        event=name if kind == "track" else None,
    )


def test_event_names() -> None:
    assert event_name(_record("m", "u", "Signed Up")) == "Signed Up"
    assert event_name(_record("m", "u", kind="page")) == "$page"


def test_plan_shares_targets_and_tags_every_key_with_the_partition() -> None:
    records = [_record("m1", "u1"), _record("m2", "u1"), _record("m3", "u2", "Buy")]
    step = plan_step(7, records)
    keys = [key for _, key, _, _ in step.targets] + [key for pair in step.uniques for key in pair]
    assert all(key.startswith("ep:{p7}:") for key in keys)
    assert [event[0] for event in step.events] == [
        dedupe_mark(7, "p", "m1"), dedupe_mark(7, "p", "m2"), dedupe_mark(7, "p", "m3"),
    ]  # fmt: skip
    assert all(event[0].startswith(b"ep:{p7}:seen:") for event in step.events)
    assert step.events[0][1] == step.events[1][1] != step.events[2][1]  # by name and minute
    assert step.uniques == [("ep:{p7}:users:hour:p:2026112514", "ep:{p7}:users:day:p:20261125")]
    assert [event[2:] for event in step.events] == [(1, "u1"), (1, "u1"), (1, "u2")]
    minute = ("z", "ep:{p7}:counts:minute:p:202611251403")
    assert {m for op, key, m, _ in step.targets if (op, key) == minute} == {"Click", "Buy", ALL}
    assert all(ttl == 0 for op, key, _, ttl in step.targets if op == OP_COUNT and "total" in key)


def test_a_name_group_holds_its_name_and_the_total_in_each_bucket_and_all_time() -> None:
    step = plan_step(0, [_record("m1", "u1"), _record("m2", "u2", kind="page")])
    assert len(step.groups) == 2
    for indices in step.groups:
        reached = sorted((step.targets[t - 1][0], step.targets[t - 1][1]) for t in indices)
        kinds = [":".join(key.split(":")[2:4]) for _, key in reached]
        assert (
            sorted(kinds)
            == ["counts:day"] * 2 + ["counts:hour"] * 2 + ["counts:minute"] * 2 + ["total:p"] * 2
        )
    assert {step.targets[t - 1][2] for t in step.groups[1]} == {"$page", ALL}


def test_dedupe_marks_are_per_project_and_fixed_size() -> None:
    assert dedupe_mark(1, "p", "m") != dedupe_mark(1, "q", "m")
    assert dedupe_mark(1, "p", "m" * 100) != dedupe_mark(1, "p", "m")
    assert len(dedupe_mark(1, "p", "m" * 100)) == len(dedupe_mark(1, "p", "m"))


def test_argv_layout() -> None:
    step = plan_step(0, [_record("m1", "u1")])
    argv = step.argv("g:t", 40, 42, 86400)
    assert argv[:8] == ["g:t", 40, 42, 86400, 90 * 86400, 8, 1, 1]
    rest = argv[8 + 4 * 8 :]
    assert rest[0] == 8 and sorted(rest[1:9]) == list(range(1, 9))
    assert rest[9:11] == ["ep:{p0}:users:hour:p:2026112514", "ep:{p0}:users:day:p:20261125"]
    assert rest[11:] == [dedupe_mark(0, "p", "m1"), 1, 1, "u1"]
