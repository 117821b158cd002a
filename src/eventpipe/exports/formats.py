"""Export file formats: writers that stream archive rows into CSV, NDJSON or Parquet.

A writer takes rows in `COLUMNS` order one batch at a time and keeps nothing of a batch once it is
written, so an export of any size runs in memory bounded by the batch. Times are written in UTC
whatever the time zone of the database session that read them. The JSON columns arrive as JSON
text, as the export's query reads them (`properties::text`), and are written as they are: parsing
them into Python objects only to encode them again cost most of an export's time.

CSV is RFC 4180 (comma, CRLF, double quotes doubled) in UTF-8 with a header row; JSON columns are
compact JSON text, None an empty cell. Spreadsheets evaluate a cell that starts with `=`, `+`, `-`,
`@`, tab or carriage return as a formula, and the text columns (event names, user ids) are
whatever a client sent to the public ingest endpoint. So, as OWASP recommends against CSV
injection, such a text cell gets a leading single quote: `=HYPERLINK(...)` is exported as
`'=HYPERLINK(...)`. This alters those values on purpose; NDJSON and Parquet carry them exactly.
Times, JSON and numbers are not escaped: none can start with those characters, and a quote would
corrupt them for every program that reads the file.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, BinaryIO, Protocol

import orjson

# pyarrow ships no type information; its objects are Any here.
import pyarrow as pa
import pyarrow.parquet as pq

from eventpipe.domain.search import COLUMNS
from eventpipe.domain.search import JSON_COLUMNS as SEARCH_JSON_COLUMNS

JSON_COLUMNS = frozenset(SEARCH_JSON_COLUMNS)
TIME_COLUMNS = frozenset({"timestamp", "original_timestamp", "sent_at", "received_at"})
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class ExportFormat(StrEnum):
    CSV = "csv"
    NDJSON = "ndjson"
    PARQUET = "parquet"


_MEDIA_TYPES = {
    ExportFormat.CSV: "text/csv; charset=utf-8",
    ExportFormat.NDJSON: "application/x-ndjson",
    ExportFormat.PARQUET: "application/vnd.apache.parquet",
}


def media_type(fmt: ExportFormat) -> str:
    return _MEDIA_TYPES[fmt]


def extension(fmt: ExportFormat) -> str:
    return f".{fmt.value}"


class RowWriter(Protocol):
    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        """Append a batch of rows, each a sequence of values in `COLUMNS` order."""

    def close(self) -> None:
        """Finish the file (Parquet's footer); the sink stays open."""


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _csv_text(value: str) -> str:
    return f"'{value}" if value.startswith(_FORMULA_STARTS) else value


def _csv_cell(name: str) -> Callable[[Any], Any]:
    if name in JSON_COLUMNS:
        return str  # JSON text: never a formula, since it starts with {, [, " or a digit
    if name in TIME_COLUMNS:
        return lambda value: _utc(value).isoformat()
    if name == "day":
        return date.isoformat
    if name in ("kafka_partition", "kafka_offset"):
        return int
    return _csv_text


class _CsvWriter:
    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self._cells = tuple(_csv_cell(name) for name in COLUMNS)
        self._emit([COLUMNS])

    def _emit(self, rows: Sequence[Sequence[Any]]) -> None:
        # The csv module writes text: format one batch in memory, then hand the sink its bytes.
        buffer = io.StringIO()
        csv.writer(buffer).writerows(rows)
        self._sink.write(buffer.getvalue().encode())

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        cells = self._cells
        self._emit(
            [
                [None if v is None else cell(v) for cell, v in zip(cells, row, strict=True)]
                for row in rows
            ]
        )

    def close(self) -> None:
        self._sink.flush()


def _ndjson_value(kind: str, value: Any) -> Any:
    if value is None or not kind:
        return value
    # A Fragment is written as the JSON text it holds: nested in the line, not quoted.
    return _utc(value) if kind == "time" else orjson.Fragment(value)


class _NdjsonWriter:
    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self._kinds = tuple(
            "time" if name in TIME_COLUMNS else "json" if name in JSON_COLUMNS else ""
            for name in COLUMNS
        )

    def _line(self, row: Sequence[Any]) -> bytes:
        record = {
            name: _ndjson_value(kind, value)
            for name, kind, value in zip(COLUMNS, self._kinds, row, strict=True)
        }
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        self._sink.write(b"".join(self._line(row) for row in rows))

    def close(self) -> None:
        self._sink.flush()


def _arrow_type(name: str) -> Any:
    if name in TIME_COLUMNS:
        return pa.timestamp("us", tz="UTC")
    if name == "day":
        return pa.date32()
    if name == "kafka_partition":
        return pa.int32()
    if name == "kafka_offset":
        return pa.int64()
    return pa.string()  # text, and JSON as its text


ROW_GROUP_ROWS = 50_000
PARQUET_SCHEMA = pa.schema([pa.field(name, _arrow_type(name)) for name in COLUMNS])


def _arrow_column(name: str, values: Sequence[Any]) -> Any:
    # pyarrow converts aware datetimes of any offset to the UTC instant.
    return pa.array(values, type=PARQUET_SCHEMA.field(name).type)


class ParquetRowWriter:
    """Batches gathered into row groups of `row_group_rows`: Parquet's footer keeps every row
    group's metadata (about 17 kB each here) until the file closes, so one group per 5,000-row
    batch grew the worker by 75 MB over ten million rows; 50,000-row groups hold a tenth of that,
    for the memory of one group's columns (about 35 MB of these events)."""

    def __init__(self, sink: BinaryIO, row_group_rows: int = ROW_GROUP_ROWS) -> None:
        # Given a file object (not a path), pyarrow leaves it open when the writer closes.
        self._writer = pq.ParquetWriter(sink, PARQUET_SCHEMA, compression="zstd")
        self._row_group_rows = row_group_rows
        self._pending: list[Any] = []
        self._pending_rows = 0

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return  # an empty row group would only grow the footer
        columns = zip(*rows, strict=True)
        arrays = [
            _arrow_column(name, values) for name, values in zip(COLUMNS, columns, strict=True)
        ]
        self._pending.append(pa.Table.from_arrays(arrays, schema=PARQUET_SCHEMA))
        self._pending_rows += len(rows)
        if self._pending_rows >= self._row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if self._pending_rows:
            table = pa.concat_tables(self._pending)
            self._writer.write_table(table, row_group_size=self._pending_rows)
        self._pending, self._pending_rows = [], 0

    def close(self) -> None:
        self._flush()
        self._writer.close()


_WRITERS: dict[ExportFormat, Callable[[BinaryIO], RowWriter]] = {
    ExportFormat.CSV: _CsvWriter,
    ExportFormat.NDJSON: _NdjsonWriter,
    ExportFormat.PARQUET: ParquetRowWriter,
}


def open_writer(fmt: ExportFormat, sink: BinaryIO) -> RowWriter:
    """A writer of `fmt` into `sink`; CSV writes its header row at once."""
    return _WRITERS[fmt](sink)
