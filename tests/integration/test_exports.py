"""Exports through the real api, worker, archive and export store: each format holds exactly
the rows of its filters, a double submission is one job, download links are signed and expire,
and a worker killed (SIGKILL) or stopped (SIGTERM) in the middle of an export loses nothing."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from eventpipe.api.app import create_app
from eventpipe.auth.keys import load_keyring
from eventpipe.exports.links import signed_query
from eventpipe.local.stack import StackUrls
from eventpipe.worker.resources import close_resources, open_resources
from eventpipe.worker.upkeep import expire_exports
from tests.integration.jobs_support import (
    FAST_JOBS,
    WorkerProcess,
    jobs_env,
    start_worker,
    workers,
)
from tests.integration.pipeline_support import LivePipeline, live_pipeline
from tests.integration.s3_support import REGION
from tests.integration.support import wait_for
from tests.integration.test_ingest import basic

pytestmark = pytest.mark.integration
Json = dict[str, Any]
NOW = datetime.now(UTC).replace(microsecond=0)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def track(message_id: str, name: str, minutes_ago: int, **properties: Any) -> Json:
    at = iso(NOW - timedelta(minutes=minutes_ago))
    return {"type": "track", "messageId": message_id, "userId": f"u-{message_id}", "event": name,
            "timestamp": at, "properties": properties}  # fmt: skip


EVENTS = [
    track("e1", "Signup", 50, plan="free", note="=1+2"),
    track("e2", "Purchase", 40, plan="pro", amount=42, cart={"items": ["a", "b"]}),
    track("e3", "Purchase", 30, plan="free", amount="42", city="Zürich"),
    track("e4", "Signup", 20, plan="team"),
    track("e5", "Purchase", 10, plan="pro", amount=7),
]


@dataclass
class Setup:
    running: LivePipeline
    http: httpx.Client
    project: str
    base: Path
    worker_env: dict[str, str]

    def export(self, body: Json, project: str | None = None) -> httpx.Response:
        url = f"/api/projects/{project or self.project}/exports"
        return self.http.post(url, json=body, headers=self.running.owner.headers)

    def job(self, job_id: str) -> Json:
        answer = self.http.get(f"/api/jobs/{job_id}", headers=self.running.owner.headers)
        assert answer.status_code == 200, answer.text
        found: Json = answer.json()
        return found

    def wait_state(self, job_id: str, state: str, timeout: float = 60) -> Json:
        wait_for(lambda: self.job(job_id)["state"] == state, timeout, f"job {state}",
                 lambda: str(self.job(job_id)))  # fmt: skip
        return self.job(job_id)

    def download(self, job: Json) -> bytes:
        answer = self.http.get(job["download_url"])
        assert answer.status_code == 200, answer.text
        return answer.content


@pytest.fixture(scope="module")
def setup(stack_urls: StackUrls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("exports")
    shared = {**FAST_JOBS, "EVENTPIPE_EXPORT_DIR": str(base / "exports")}
    with (
        live_pipeline(stack_urls, base, shared) as running,
        httpx.Client(base_url=running.url, timeout=30) as http,
    ):
        project, key = running.project_key("shop")
        answer = http.post("/v1/batch", json={"batch": EVENTS}, headers=basic(key))
        assert answer.status_code == 200, answer.text
        running.wait_archived(project, len(EVENTS))
        env = jobs_env(running.settings, base / "worker-state", **shared)
        yield Setup(running, http, project, base, env)


@pytest.fixture
def worker(setup: Setup, tmp_path: Path) -> Iterator[WorkerProcess]:
    with workers() as started:
        yield start_worker(started, setup.worker_env, tmp_path)


PURCHASES = {"format": "csv", "filters": {"name": "Purchase"}}


def search_ids(setup: Setup, **params: Any) -> list[str]:
    answer = setup.http.get(
        f"/api/projects/{setup.project}/events", params=params, headers=setup.running.owner.headers
    )
    assert answer.status_code == 200, answer.text
    return sorted(event["message_id"] for event in answer.json()["events"])


def rows_of(fmt: str, data: bytes) -> list[Json]:
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(data.decode())))
    if fmt == "ndjson":
        return [orjson.loads(line) for line in data.splitlines()]
    rows: list[Json] = pq.read_table(io.BytesIO(data)).to_pylist()
    return rows


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet"])
def test_each_format_holds_exactly_the_rows_of_its_filters(
    setup: Setup, worker: WorkerProcess, fmt: str
) -> None:
    del worker
    start = iso(NOW - timedelta(minutes=45))
    body = {
        "format": fmt,
        "from": start,
        "filters": {"name": "Purchase", "property": "plan", "value": "pro"},
    }
    answer = setup.export(body)
    assert answer.status_code == 202, answer.text
    assert answer.headers["location"] == f"/api/jobs/{answer.json()['id']}"
    job = setup.wait_state(answer.json()["id"], "succeeded")
    rows = rows_of(fmt, setup.download(job))
    expected = search_ids(setup, name="Purchase", property="plan", value="pro", **{"from": start})
    assert expected == ["e2", "e5"]
    assert [row["message_id"] for row in rows] == expected  # oldest first
    assert job["progress"]["rows"] == 2 and job["size_bytes"] == len(setup.download(job))
    by_id = {row["message_id"]: row for row in rows}
    properties = by_id["e2"]["properties"]
    parsed = orjson.loads(properties) if isinstance(properties, str) else properties
    assert parsed == {"plan": "pro", "amount": 42, "cart": {"items": ["a", "b"]}}
    assert by_id["e5"]["event"] == "Purchase" and by_id["e5"]["user_id"] == "u-e5"


def test_a_csv_cell_that_would_run_as_a_formula_is_quoted(
    setup: Setup, worker: WorkerProcess
) -> None:
    del worker
    answer = setup.export({"format": "csv", "filters": {"name": "Signup"}})
    rows = rows_of("csv", setup.download(setup.wait_state(answer.json()["id"], "succeeded")))
    assert [row["message_id"] for row in rows] == ["e1", "e4"]
    assert orjson.loads(rows[0]["properties"])["note"] == "=1+2"  # JSON stays exact


def test_a_double_submission_is_the_same_job(setup: Setup, worker: WorkerProcess) -> None:
    del worker
    body = {"format": "ndjson", "to": iso(NOW), "filters": {"name": "Signup"}}
    first, second = setup.export(body), setup.export(body)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    other = setup.export({**body, "format": "csv"})
    assert other.json()["id"] != first.json()["id"]
    setup.wait_state(first.json()["id"], "succeeded")
    assert setup.export(body).json()["id"] == first.json()["id"]  # finished: still the same


def test_links_are_signed_and_expire(setup: Setup, worker: WorkerProcess) -> None:
    del worker
    answer = setup.export(
        {"format": "ndjson", "filters": {"name": "Purchase"}, "to": iso(NOW - timedelta(seconds=1))}
    )
    job = setup.wait_state(answer.json()["id"], "succeeded")
    url = job["download_url"]
    forged = url.replace("signature=", "signature=A")
    assert setup.http.get(forged).status_code == 403
    other_job = url.replace(job["id"], str(uuid.uuid4()))
    assert setup.http.get(other_job).status_code == 403
    keyring = load_keyring(setup.running.settings)
    query, _ = signed_query(keyring, uuid.UUID(job["id"]), ttl_s=60, now=0)
    expired = setup.http.get(f"/api/exports/{job['id']}/download?{query}")
    assert expired.status_code == 403 and "expired" in expired.json()["error"]["message"]
    assert setup.http.get(url).status_code == 200


def test_jobs_of_other_projects_are_not_found(setup: Setup, worker: WorkerProcess) -> None:
    del worker
    job = setup.export(
        {"format": "csv", "filters": {"name": "Signup"}, "to": iso(NOW - timedelta(seconds=2))}
    ).json()
    from tests.integration.test_ingest import sign_in

    stranger = sign_in(setup.http, setup.running.settings, f"x-{uuid.uuid4().hex[:8]}@example.com")
    assert setup.http.get(f"/api/jobs/{job['id']}", headers=stranger.headers).status_code == 404
    answer = setup.http.post(
        f"/api/projects/{setup.project}/exports", json=PURCHASES, headers=stranger.headers
    )
    assert answer.status_code == 404


BIG = 300_000


def fill_archive(database_url: str, project: str) -> None:
    """BIG rows of one project, straight into the archive: the export's input, not its subject."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            """
            INSERT INTO events (project_id, day, message_id, type, event, distinct_id, user_id,
                "timestamp", received_at, properties, version)
            SELECT %s, current_date, 'big-' || lpad(n::text, 7, '0'), 'track', 'Bulk',
                'user-' || (n %% 1000), 'user-' || (n %% 1000),
                now() - interval '1 hour' + n * interval '1 millisecond', now(),
                jsonb_build_object('n', n, 'pad', repeat('x', 40)), 1
            FROM generate_series(1, %s) AS n
            """,
            (project, BIG),
        )


@pytest.fixture(scope="module")
def big_project(setup: Setup) -> str:
    project = setup.running.project_key("bulk")[0]
    fill_archive(setup.running.pipeline.database_url, project)
    return project


def check_big_file(data: bytes) -> None:
    ids = [orjson.loads(line)["message_id"] for line in data.splitlines()]
    assert len(ids) == BIG
    assert ids == [f"big-{n:07d}" for n in range(1, BIG + 1)]


def test_a_sigkilled_worker_s_export_runs_again_and_is_published_once(
    setup: Setup, big_project: str, tmp_path: Path
) -> None:
    with workers() as started:
        first = start_worker(started, setup.worker_env, tmp_path)
        job = setup.export({"format": "ndjson", "to": iso(NOW)}, project=big_project).json()
        wait_for(lambda: setup.job(job["id"])["progress"]["rows"] > 0, 60, "rows written",
                 lambda: str(setup.job(job["id"])))  # fmt: skip
        first.kill()
        killed_at = setup.job(job["id"])
        assert killed_at["state"] == "running" and killed_at["progress"]["rows"] < BIG
        start_worker(started, setup.worker_env, tmp_path)
        done = setup.wait_state(job["id"], "succeeded", timeout=120)
    assert done["attempts"] == 2 and done["progress"]["rows"] == BIG
    assert done["progress"]["estimated"] == BIG
    check_big_file(setup.download(done))
    exports = setup.base / "exports"
    assert (exports / f"{job['id']}.ndjson").stat().st_size == done["size_bytes"]
    assert not (exports / ".partial" / f"{job['id']}.ndjson").exists()


def test_sigterm_hands_a_running_export_back_within_the_grace_period(
    setup: Setup, big_project: str, tmp_path: Path
) -> None:
    env = {**setup.worker_env, "EVENTPIPE_WORKER_SHUTDOWN_GRACE_S": "0.5"}
    with workers() as started:
        first = start_worker(started, env, tmp_path)
        job = setup.export(
            {"format": "ndjson", "to": iso(NOW - timedelta(seconds=3))}, project=big_project
        ).json()
        wait_for(lambda: setup.job(job["id"])["progress"]["rows"] > 0, 60, "rows written")
        assert first.terminate(timeout=30) == 0, first.log()
        assert setup.job(job["id"])["state"] == "queued", first.log()
        start_worker(started, env, tmp_path)
        done = setup.wait_state(job["id"], "succeeded", timeout=120)
    check_big_file(setup.download(done))


def test_an_export_to_an_s3_bucket_downloads_by_a_presigned_redirect(
    setup: Setup, s3_endpoint: str, bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    s3 = {"EVENTPIPE_EXPORT_S3_BUCKET": bucket, "EVENTPIPE_EXPORT_S3_ENDPOINT_URL": s3_endpoint,
          "EVENTPIPE_EXPORT_S3_REGION": REGION, "EVENTPIPE_EXPORT_S3_ACCESS_KEY_ID": "testing",
          "EVENTPIPE_EXPORT_S3_SECRET_ACCESS_KEY": "testing"}  # fmt: skip
    settings = setup.running.settings.model_copy(update={
        "export_s3_bucket": bucket, "export_s3_endpoint_url": s3_endpoint,
        "export_s3_region": REGION, "export_s3_access_key_id": "testing",
        "export_s3_secret_access_key": SecretStr("testing"),
    })  # fmt: skip
    env = {**setup.worker_env, **s3}
    with workers() as started, TestClient(create_app(settings)) as api:
        start_worker(started, env, tmp_path)
        headers = setup.running.owner.headers
        body = {"format": "parquet", "filters": {"name": "Purchase"}, "to": iso(NOW)}
        answer = api.post(f"/api/projects/{setup.project}/exports", json=body, headers=headers)
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["id"]

        def state() -> str:
            return str(api.get(f"/api/jobs/{job_id}", headers=headers).json()["state"])

        wait_for(lambda: state() == "succeeded", 60, "the export")
        job = api.get(f"/api/jobs/{job_id}", headers=headers).json()
        redirect = api.get(job["download_url"], follow_redirects=False)
    assert redirect.status_code == 307, redirect.text
    location = redirect.headers["location"]
    assert location.startswith(f"{s3_endpoint}/{bucket}/exports/{job_id}.parquet?")
    listed = s3_client.list_objects_v2(Bucket=bucket)["Contents"]
    assert [o["Key"] for o in listed] == [f"exports/{job_id}.parquet"]  # no partial, no spool
    fetched = httpx.get(location)
    assert fetched.status_code == 200
    assert f"eventpipe-{job_id}.parquet" in fetched.headers["content-disposition"]
    assert [r["message_id"] for r in rows_of("parquet", fetched.content)] == ["e2", "e3", "e5"]


def test_a_failing_export_shows_its_error_and_is_retried(setup: Setup, tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the export directory should be")
    env = {**setup.worker_env, "EVENTPIPE_EXPORT_DIR": str(blocked)}
    with workers() as started:
        start_worker(started, env, tmp_path)
        body = {
            "format": "csv",
            "filters": {"name": "Signup"},
            "to": iso(NOW - timedelta(seconds=4)),
        }
        job = setup.export(body).json()
        wait_for(lambda: setup.job(job["id"])["error"] is not None, 60, "the error")
    failed = setup.job(job["id"])
    assert failed["state"] == "queued" and failed["attempts"] == 1  # retried in about 10 s
    assert "NotADirectoryError" in failed["error"] and failed["download_url"] is None


def test_jobs_of_a_worker_killed_in_its_sweep_are_still_handed_back(
    setup: Setup, tmp_path: Path
) -> None:
    """A worker SIGKILLed while it ran the sweep leaves that sweep `doing`: later sweeps must not
    wait for it (only a sweep frees a dead worker's jobs)."""
    job = setup.export({"format": "csv", "filters": {"name": "Signup"},
                        "to": iso(NOW - timedelta(seconds=5))}).json()  # fmt: skip
    with psycopg.connect(setup.running.pipeline.database_url, autocommit=True) as conn:
        dead = conn.execute(
            "INSERT INTO procrastinate_workers (last_heartbeat) "
            "VALUES (now() - interval '1 hour') RETURNING id"
        ).fetchone()
        assert dead is not None
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, args, status, worker_id) "
            "VALUES ('maintenance', 'sweep_stalled', 'sweep_stalled', '{\"timestamp\": 0}', "
            "'doing', %s)",
            (dead[0],),
        )
        conn.execute(
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s "
            "WHERE task_name = 'export' AND args->>'export_id' = %s",
            (dead[0], job["id"]),
        )
    with workers() as started:
        start_worker(started, setup.worker_env, tmp_path)
        setup.wait_state(job["id"], "succeeded")


def test_a_finished_export_past_its_retention_loses_its_file_and_link(
    setup: Setup, worker: WorkerProcess
) -> None:
    del worker
    body = {
        "format": "ndjson",
        "filters": {"name": "Signup"},
        "to": iso(NOW - timedelta(seconds=6)),
    }
    job = setup.wait_state(setup.export(body).json()["id"], "succeeded")
    link = job["download_url"]
    path = setup.base / "exports" / f"{job['id']}.ndjson"
    assert path.exists()
    with psycopg.connect(setup.running.pipeline.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE exports SET finished_at = now() - interval '8 days' WHERE id = %s", (job["id"],)
        )
    settings = setup.running.settings.model_copy(update={"export_dir": setup.base / "exports"})

    async def expire() -> str:
        resources = open_resources(settings)
        try:
            return await expire_exports(resources)
        finally:
            await close_resources(resources)

    assert asyncio.run(expire()) == "1 expired"
    gone = setup.job(job["id"])
    assert gone["state"] == "expired" and gone["download_url"] is None and not path.exists()
    assert setup.http.get(link).status_code == 404
    # Expired, it no longer stands for its inputs: asking again makes a new export.
    assert setup.export(body).json()["id"] != job["id"]
