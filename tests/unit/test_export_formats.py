from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from eventpipe.domain.search import COLUMNS
from eventpipe.exports.formats import (
    JSON_COLUMNS,
    PARQUET_SCHEMA,
    ExportFormat,
    ParquetRowWriter,
    extension,
    media_type,
    open_writer,
)

PLUS_TWO = timezone(timedelta(hours=2))
BEYOND_64_BITS = 123456789012345678901234567890


def row(**values: Any) -> tuple[Any, ...]:
    """A row as the export's query reads it: the JSON columns as JSON text."""
    assert set(values) <= set(COLUMNS)
    return tuple(
        json.dumps(values[name], separators=(",", ":"), ensure_ascii=False)
        if name in JSON_COLUMNS and values.get(name) is not None
        else values.get(name)
        for name in COLUMNS
    )


FULL = row(
    message_id="m-1", type="track", event="Über Checkout ✓", distinct_id="@alice",
    user_id='=HYPERLINK("http://evil.example","x")', anonymous_id="-1+1", group_id="\tg",
    previous_id="+p", name="\rname", category="plain",
    timestamp=datetime(2026, 3, 1, 12, 30, tzinfo=PLUS_TWO),
    sent_at=datetime(2026, 3, 1, 10, 30, 0, 250, tzinfo=UTC),
    received_at=datetime(2026, 3, 1, 10, 30, 1, tzinfo=UTC),
    properties={"cart": {"items": [1, "два", None], "ok": True}, "formula": "=1+1"},
    context={"ip": "203.0.113.9"}, integrations={},
    day=date(2026, 3, 1), kafka_partition=3, kafka_offset=2**40,
)  # fmt: skip
SPARSE = row(message_id="m-2", type="identify", event="identify", distinct_id="u-2")
QUOTED = row(
    message_id="m-3", type="track", event='say "hi",\nbye', distinct_id="u-3",
    timestamp=datetime(2026, 3, 2, tzinfo=UTC), received_at=datetime(2026, 3, 2, tzinfo=UTC),
    traits={"plan": "pro"}, day=date(2026, 3, 2), kafka_partition=0, kafka_offset=0,
)  # fmt: skip
BATCHES = [[FULL, SPARSE], [QUOTED]]


def export(fmt: ExportFormat, batches: list[list[tuple[Any, ...]]]) -> bytes:
    sink = io.BytesIO()
    writer = open_writer(fmt, sink)
    for batch in batches:
        writer.write(batch)
    writer.close()
    assert not sink.closed  # the store owns the file: closing it is not the writer's job
    return sink.getvalue()


def csv_rows(data: bytes) -> list[dict[str, str]]:
    reader = csv.reader(io.StringIO(data.decode(), newline=""))
    header = next(reader)
    assert tuple(header) == COLUMNS
    return [dict(zip(header, cells, strict=True)) for cells in reader]


def test_formats_have_their_media_type_and_extension() -> None:
    assert [(media_type(f), extension(f)) for f in ExportFormat] == [
        ("text/csv; charset=utf-8", ".csv"),
        ("application/x-ndjson", ".ndjson"),
        ("application/vnd.apache.parquet", ".parquet"),
    ]


def test_csv_escapes_formula_text_only_and_writes_json_times_and_nulls() -> None:
    data = export(ExportFormat.CSV, BATCHES)
    assert data.startswith(",".join(COLUMNS).encode() + b"\r\n")  # RFC 4180 line ends
    full, sparse, quoted = csv_rows(data)
    assert full == {
        "message_id": "m-1", "type": "track", "event": "Über Checkout ✓",
        "name": "'\rname", "category": "plain", "user_id": '\'=HYPERLINK("http://evil.example","x")',
        "anonymous_id": "'-1+1", "distinct_id": "'@alice",
        "timestamp": "2026-03-01T10:30:00+00:00", "original_timestamp": "",
        "sent_at": "2026-03-01T10:30:00.000250+00:00", "received_at": "2026-03-01T10:30:01+00:00",
        "group_id": "'\tg", "previous_id": "'+p",
        "properties": '{"cart":{"items":[1,"два",null],"ok":true},"formula":"=1+1"}',
        "traits": "", "context": '{"ip":"203.0.113.9"}', "integrations": "{}",
        "day": "2026-03-01", "kafka_partition": "3", "kafka_offset": "1099511627776",
    }  # fmt: skip
    assert set(sparse.values()) == {"m-2", "identify", "u-2", ""}
    assert sparse["event"] == "identify" and sparse["timestamp"] == sparse["properties"] == ""
    assert quoted["event"] == 'say "hi",\nbye'
    assert (quoted["traits"], quoted["kafka_offset"]) == ('{"plan":"pro"}', "0")


def test_ndjson_is_one_object_per_line_with_nested_json() -> None:
    lines = export(ExportFormat.NDJSON, BATCHES).split(b"\n")
    assert lines[-1] == b"" and len(lines) == 4
    full, sparse, quoted = (orjson.loads(line) for line in lines[:3])
    assert full == {
        "message_id": "m-1", "type": "track", "event": "Über Checkout ✓", "name": "\rname",
        "category": "plain", "user_id": '=HYPERLINK("http://evil.example","x")',
        "anonymous_id": "-1+1", "distinct_id": "@alice",
        "timestamp": "2026-03-01T10:30:00+00:00", "original_timestamp": None,
        "sent_at": "2026-03-01T10:30:00.000250+00:00", "received_at": "2026-03-01T10:30:01+00:00",
        "group_id": "\tg", "previous_id": "+p",
        "properties": {"cart": {"items": [1, "два", None], "ok": True}, "formula": "=1+1"},
        "traits": None, "context": {"ip": "203.0.113.9"}, "integrations": {},
        "day": "2026-03-01", "kafka_partition": 3, "kafka_offset": 2**40,
    }  # fmt: skip
    assert list(sparse) == list(COLUMNS)
    assert sparse == dict(zip(COLUMNS, SPARSE, strict=True))
    assert quoted["event"] == 'say "hi",\nbye' and quoted["traits"] == {"plan": "pro"}


def test_parquet_gathers_batches_into_zstd_row_groups_with_typed_columns() -> None:
    sink = io.BytesIO()
    writer = ParquetRowWriter(sink, row_group_rows=2)
    for batch in [[FULL], [SPARSE], [QUOTED], []]:
        writer.write(batch)
    writer.close()
    grouped = pq.ParquetFile(io.BytesIO(sink.getvalue())).metadata
    assert [grouped.row_group(i).num_rows for i in range(grouped.num_row_groups)] == [2, 1]
    data = export(ExportFormat.PARQUET, BATCHES)
    parquet = pq.ParquetFile(io.BytesIO(data))
    assert parquet.metadata.num_row_groups == 1  # both batches, under ROW_GROUP_ROWS
    assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
    table = pq.read_table(io.BytesIO(data))
    assert table.schema.equals(PARQUET_SCHEMA)
    full, sparse, quoted = table.to_pylist()
    # JSON columns hold JSON text; times come back as UTC instants (equal across offsets).
    assert full == {
        **dict(zip(COLUMNS, FULL, strict=True)),
        "properties": '{"cart":{"items":[1,"два",null],"ok":true},"formula":"=1+1"}',
        "context": '{"ip":"203.0.113.9"}', "integrations": "{}",
    }  # fmt: skip
    assert full["timestamp"].utcoffset() == timedelta(0)
    assert sparse == dict(zip(COLUMNS, SPARSE, strict=True))
    assert quoted["event"] == 'say "hi",\nbye' and quoted["traits"] == '{"plan":"pro"}'


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_json_text_is_written_as_it_is_even_beyond_what_orjson_reads(fmt: ExportFormat) -> None:
    data = export(fmt, [[row(message_id="m-4", properties={"id": BEYOND_64_BITS})]])
    if fmt is ExportFormat.CSV:
        written = csv_rows(data)[0]["properties"]
    elif fmt is ExportFormat.NDJSON:
        written = data.decode().split('"properties":')[1].split(',"traits"')[0]
    else:
        written = pq.read_table(io.BytesIO(data)).column("properties")[0].as_py()
    assert written == f'{{"id":{BEYOND_64_BITS}}}'


def test_an_export_without_rows_is_still_a_valid_file() -> None:
    assert csv_rows(export(ExportFormat.CSV, [[]])) == []
    assert export(ExportFormat.NDJSON, [[]]) == b""
    table = pq.read_table(io.BytesIO(export(ExportFormat.PARQUET, [[]])))
    assert table.num_rows == 0 and table.schema.equals(PARQUET_SCHEMA)
