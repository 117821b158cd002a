"""The official server SDKs, unchanged and installed from their own registries, against a real
api and processor: each call lands exactly once in the archive and in the live totals.

Python (segment-analytics-python, rudder-sdk-python), Node (@segment/analytics-node,
@rudderstack/rudder-sdk-node) and Go (segmentio/analytics-go/v3, rudderlabs/analytics-go/v4).
Select them with `-m sdk`; the programs are in tests/integration/sdk_clients.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from eventpipe.local.stack import StackUrls
from tests.integration.pipeline_support import LivePipeline, Row, live_pipeline
from tests.integration.sdk_install import go_client, node_client, python_client

pytestmark = [pytest.mark.integration, pytest.mark.sdk]

# Each SDK: how to build the command that runs its program, and the library name it stamps.
SDKS: dict[str, tuple[Callable[[], list[str]], str]] = {
    "segment-python": (lambda: python_client("segment"), "analytics-python"),
    "rudder-python": (lambda: python_client("rudder"), "analytics-python"),
    "segment-node": (lambda: node_client("segment.mjs"), "@segment/analytics-node"),
    "rudder-node": (lambda: node_client("rudder.mjs"), "analytics-node"),
    "segment-go": (lambda: go_client("segment"), "analytics-go"),
    "rudder-go": (lambda: go_client("rudder"), "analytics-go"),
}
TOTALS = {
    "Order Completed": 1,
    "$identify": 1,
    "$page": 1,
    "$screen": 1,
    "$group": 1,
    "$alias": 1,
    "$all": 6,
}


@pytest.fixture(scope="module")
def live(stack_urls: StackUrls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePipeline]:
    with live_pipeline(stack_urls, tmp_path_factory.mktemp("sdks")) as running:
        yield running


def run_client(command: list[str], url: str, key: str, run: str) -> dict[str, Any]:
    """Run an SDK's program; the JSON line it printed (with messageIds where the SDK tells)."""
    done = subprocess.run([*command, url, key, run], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stdout}\n{done.stderr}"
    line: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return line


def assert_calls_arrived(rows: list[Row], run: str, library: str) -> None:
    by_type = {row["type"]: row for row in rows}
    assert sorted(by_type) == ["alias", "group", "identify", "page", "screen", "track"]
    user = f"user-{run}"
    track = by_type["track"]
    assert (track["event"], track["user_id"]) == ("Order Completed", user)
    assert track["properties"] == {"revenue": 19.99, "currency": "USD"}
    assert by_type["identify"]["traits"] == {"email": "ada@example.com", "plan": "pro"}
    assert by_type["page"]["name"] == "Pricing"
    assert by_type["page"]["properties"]["path"] == "/pricing"
    assert by_type["screen"]["name"] == "Home"
    assert by_type["group"]["group_id"] == f"acme-{run}"
    assert by_type["group"]["traits"] == {"name": "Acme"}
    assert (by_type["alias"]["previous_id"], by_type["alias"]["user_id"]) == (f"anon-{run}", user)
    for row in rows:
        assert row["user_id"] == user
        assert row["context"]["library"]["name"] == library
        # The server SDKs send no address: the sender's is recorded, as Segment does.
        assert row["context"]["ip"] == "127.0.0.1"
        assert row["original_timestamp"] is not None and row["sent_at"] is not None


@pytest.mark.parametrize("sdk", SDKS)
def test_every_call_of_the_sdk_lands_once_in_the_archive_and_the_live_totals(
    live: LivePipeline, sdk: str
) -> None:
    command, library = SDKS[sdk]
    project, key = live.project_key(sdk)
    run = uuid.uuid4().hex[:10]

    sent = run_client(command(), live.url, key, run)

    rows = live.wait_archived(project, 6)
    assert_calls_arrived(rows, run, library)
    if "messageIds" in sent:
        assert {row["message_id"] for row in rows} == set(sent["messageIds"].values())
    live.wait_counted(project, TOTALS)
