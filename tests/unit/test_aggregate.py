from __future__ import annotations

from eventpipe.domain.events import EventRecord
from eventpipe.processor.aggregate import OP_COUNT, OP_UNIQUE, event_name, plan_step


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
    step = plan_step(7, [_record("m1", "u1"), _record("m2", "u1"), _record("m3", "u2", "Buy")])
    keys = {key for _, key, _, _ in step.targets} | {seen for seen, _ in step.events}
    assert all(key.startswith("ep:{p7}:") for key in keys)
    assert [seen for seen, _ in step.events] == [
        "ep:{p7}:seen:p:m1", "ep:{p7}:seen:p:m2", "ep:{p7}:seen:p:m3",
    ]  # fmt: skip
    assert step.events[0][1] == step.events[1][1]  # same user, same name: same targets
    minute = ("h", "ep:{p7}:count:minute:p:202611251403")
    assert sum(1 for op, key, _, _ in step.targets if (op, key) == minute) == 2
    uniques = {(key, member) for op, key, member, _ in step.targets if op == OP_UNIQUE}
    assert ("ep:{p7}:users:day:p:20261125", "u2") in uniques
    assert all(ttl == 0 for op, key, _, ttl in step.targets if op == OP_COUNT and "total" in key)


def test_argv_layout() -> None:
    step = plan_step(0, [_record("m1", "u1")])
    argv = step.argv("g:t", 40, 42, 86400)
    assert argv[:5] == ["g:t", 40, 42, 86400, len(step.targets)]
    tail = argv[5 + 4 * len(step.targets) :]
    assert tail[0] == "ep:{p0}:seen:p:m1"
    assert tail[1] == 7
    assert sorted(tail[2:]) == list(range(1, 8))
