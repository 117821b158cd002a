from __future__ import annotations

import msgspec
import pytest

from eventpipe.domain.events import EventRecord, decode_record, encode_record


def _record(version: int) -> bytes:
    record = EventRecord(
        v=version,
        project_id="p",
        message_id="m",
        type="track",
        received_at="2026-11-25T14:03:59.123Z",
        timestamp="2026-11-25T14:03:59.123Z",
        day="2026-11-25",
        user_id="u",
        event="Click",
    )
    return encode_record(record)


def test_a_record_of_this_version_reads_back() -> None:
    assert decode_record(_record(1)).message_id == "m"


@pytest.mark.parametrize("version", [0, 2, -1])
def test_another_schema_version_is_poison(version: int) -> None:
    with pytest.raises(msgspec.ValidationError, match=f"record version {version}; .* reads 1"):
        decode_record(_record(version))


def test_a_record_without_its_required_fields_is_poison() -> None:
    with pytest.raises(msgspec.ValidationError, match="project_id"):
        decode_record(b'{"v":1,"message_id":"m"}')
