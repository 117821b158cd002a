"""The exports page's pure helpers: sizes, progress, what an export holds, the form's checks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from eventpipe.dashboard.jobs import export_body, export_summary, progress_bar, size_text
from eventpipe.domain.exports import JobPublic, Progress
from eventpipe.domain.tables import ExportState
from eventpipe.exports.formats import ExportFormat

FORM = {"format": "csv", "from": "", "to": "", "name": "", "type": "", "user_id": "",
        "anonymous_id": "", "property": "", "value": ""}  # fmt: skip


def job(state: ExportState, rows: int, estimated: int | None) -> JobPublic:
    return JobPublic(
        id=uuid.uuid4(), project_id=uuid.uuid4(), state=state, format=ExportFormat.CSV, inputs={},
        attempts=1, progress=Progress(rows=rows, estimated=estimated), size_bytes=None,
        error=None, created_at=datetime.now(UTC), started_at=None, finished_at=None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("size", "text"),
    [(None, ""), (0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (1_234_567, "1.2 MB")],
)
def test_sizes_read_in_decimal_units(size: int | None, text: str) -> None:
    assert size_text(size) == text


def test_progress_is_rows_against_the_estimate_and_full_once_done() -> None:
    assert progress_bar(job(ExportState.RUNNING, 50, 200)) == (50, 200)
    assert progress_bar(job(ExportState.RUNNING, 500, 200)) == (200, 200)  # past the estimate
    assert progress_bar(job(ExportState.RUNNING, 5, None)) is None  # indeterminate
    assert progress_bar(job(ExportState.QUEUED, 0, None)) == (0, 1)
    assert progress_bar(job(ExportState.SUCCEEDED, 7, 3)) == (1, 1)


def test_an_export_reads_as_its_range_and_filters() -> None:
    inputs = {"from": None, "to": "2026-11-30T06:00:00+00:00",
              "filters": {"name": "Purchase", "property": "plan", "value": "pro"}}  # fmt: skip
    summary = export_summary(inputs)
    assert summary.startswith("the first event to ")
    assert summary.endswith("; name = Purchase; plan = pro")


def test_the_form_becomes_the_api_s_request_or_says_what_is_wrong() -> None:
    body = export_body({**FORM, "name": "Signup", "property": "plan", "value": "pro"})
    assert body.format == ExportFormat.CSV and body.filters.name == "Signup"
    assert body.filters.property == "plan" and body.start is None
    with pytest.raises(ValueError, match="after"):
        export_body({**FORM, "from": "2026-11-30T10:00", "to": "2026-11-30T09:00"})
    with pytest.raises(ValueError, match="format"):
        export_body({**FORM, "format": "xlsx"})
