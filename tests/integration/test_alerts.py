"""Alert rules against the live aggregates of a real processor, and their webhooks to a local
receiver: signed the Standard Webhooks way (checked by the official library and by the recipe in
docs/jobs.md), retried with backoff, dead-lettered, re-run by `eventpipe jobs retry`, and the
endpoint disabled after repeated failures or at once on 410."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from eventpipe.local.stack import StackUrls
from tests.integration.jobs_support import (
    FAST_JOBS,
    Receiver,
    WorkerProcess,
    jobs_env,
    start_worker,
    workers,
)
from tests.integration.pipeline_support import LivePipeline, live_pipeline
from tests.integration.support import wait_for
from tests.integration.test_ingest import Account, basic

pytestmark = pytest.mark.integration
Json = dict[str, Any]
DOCS = Path(__file__).parents[2] / "docs" / "jobs.md"


@dataclass
class Setup:
    running: LivePipeline
    http: httpx.Client
    project: str
    key: str
    receiver: Receiver
    base: Path
    worker_env: dict[str, str]

    def rule(self, path: str, **fields: Any) -> Json:
        url = f"{self.receiver.url}{path}"
        body = {"name": f"rule {path}", "comparison": "above", "threshold": 0,
                "window_minutes": 5, "webhook_url": url, **fields}  # fmt: skip
        answer = self.http.post(self.url(), json=body, headers=self.running.owner.headers)
        assert answer.status_code == 201, answer.text
        created: Json = answer.json()
        return created

    def url(self, suffix: str = "") -> str:
        return f"/api/projects/{self.project}/alerts{suffix}"

    def get(self, suffix: str) -> Any:
        answer = self.http.get(self.url(suffix), headers=self.running.owner.headers)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def deliveries(self, rule: Json) -> list[Json]:
        found: list[Json] = self.get(f"/{rule['id']}/deliveries")
        return list(reversed(found))  # oldest first

    def outcomes(self, rule: Json) -> list[str]:
        return [d["outcome"] for d in self.deliveries(rule)]

    def send(self, name: str, count: int) -> None:
        stamp = datetime.now(UTC).isoformat()
        batch = [{"type": "track", "messageId": uuid.uuid4().hex, "userId": "u", "event": name,
                  "timestamp": stamp} for _ in range(count)]  # fmt: skip
        answer = self.http.post("/v1/batch", json={"batch": batch}, headers=basic(self.key))
        assert answer.status_code == 200, answer.text

    def eventpipe(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "eventpipe", *args], env=self.worker_env,
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip


@pytest.fixture(scope="module")
def setup(stack_urls: StackUrls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("alerts")
    receiver = Receiver()
    with (
        live_pipeline(stack_urls, base, FAST_JOBS) as running,
        httpx.Client(base_url=running.url, timeout=30) as http,
    ):
        project, key = running.project_key("alerts")
        env = jobs_env(running.settings, base / "worker-state")
        yield Setup(running, http, project, key, receiver, base, env)
    receiver.close()


@pytest.fixture
def worker_factory(setup: Setup, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Workers of this test; the rules it made are deleted at its end, so the next test's
    worker evaluates its own rules only."""
    with workers() as started:
        yield lambda **env: start_worker(started, {**setup.worker_env, **env}, tmp_path)
    with psycopg.connect(setup.running.pipeline.database_url) as conn:
        conn.execute("DELETE FROM alert_rules")
    setup.receiver.answer(200)


def docs_recipe() -> Callable[[str, dict[str, str], bytes], None]:
    """The verification recipe of docs/jobs.md, run as written."""
    text = DOCS.read_text()
    match = re.search(r"<!-- recipe -->\s*```python\n(.*?)```", text, re.DOTALL)
    assert match, "docs/jobs.md has no recipe block"
    scope: dict[str, Any] = {}
    exec(match.group(1), scope)  # noqa: S102 - our own documentation, under test
    verify: Callable[[str, dict[str, str], bytes], None] = scope["verify_webhook"]
    return verify


def test_a_rule_fires_once_then_resolves_with_webhooks_that_verify(
    setup: Setup, worker_factory: Callable[..., WorkerProcess]
) -> None:
    worker_factory()
    rule = setup.rule("/fire", event="Signup", threshold=2)
    secret = rule["webhook_secret"]
    assert (
        secret.startswith("whsec_")
        and secret not in setup.http.get(setup.url(), headers=setup.running.owner.headers).text
    )
    setup.send("Signup", 3)
    wait_for(lambda: len(setup.receiver.on("/fire")) == 1, 60, "the firing webhook")
    firing = setup.receiver.on("/fire")[0]
    body = orjson.loads(firing.body)
    assert body["type"] == "alert.firing" and body["data"]["value"] == 3
    assert body["data"]["rule_id"] == rule["id"] and body["data"]["threshold"] == 2
    Webhook(secret).verify(firing.body, firing.headers)  # the official library
    docs_recipe()(secret, firing.headers, firing.body)  # the recipe users copy
    with pytest.raises(Exception, match="ignature"):
        docs_recipe()(secret, firing.headers, firing.body.replace(b"3", b"4"))
    assert setup.get(f"/{rule['id']}")["state"] == "firing"

    change = setup.http.patch(setup.url(f"/{rule['id']}"), json={"threshold": 10},
                              headers=setup.running.owner.headers)  # fmt: skip
    assert change.status_code == 200, change.text
    wait_for(lambda: len(setup.receiver.on("/fire")) == 2, 30, "the resolved webhook")
    resolved = setup.receiver.on("/fire")[1]
    assert orjson.loads(resolved.body)["type"] == "alert.resolved"
    assert resolved.headers["webhook-id"] != firing.headers["webhook-id"]
    # Judged again and again while nothing turns: no more messages.
    evaluated = setup.get(f"/{rule['id']}")["last_evaluated_at"]
    wait_for(
        lambda: setup.get(f"/{rule['id']}")["last_evaluated_at"] > evaluated, 30, "evaluations"
    )
    assert len(setup.receiver.on("/fire")) == 2
    log = setup.deliveries(rule)
    assert [(d["outcome"], d["status"], d["attempt"]) for d in log] == [
        ("delivered", 200, 1),
        ("delivered", 200, 1),
    ]


def test_a_failing_endpoint_is_retried_dead_lettered_retried_by_hand_and_disabled(
    setup: Setup, worker_factory: Callable[..., WorkerProcess]
) -> None:
    worker = worker_factory()
    setup.receiver.answer(500)
    rule = setup.rule("/fail", comparison="at_least")  # 0 >= 0: fires at the first evaluation
    wait_for(lambda: setup.outcomes(rule) == ["retrying", "retrying", "dead"], 60,
             "three attempts", lambda: str(setup.deliveries(rule)))  # fmt: skip
    arrivals = [r.at for r in setup.receiver.on("/fail")]
    assert len(arrivals) == 3
    # The schedule's 0.3 s, jittered by at most a fifth, between attempts.
    assert all(
        later - earlier >= 0.24 for earlier, later in zip(arrivals, arrivals[1:], strict=False)
    )
    assert all(d["status"] == 500 for d in setup.deliveries(rule))
    metrics = worker.metrics()
    assert 'eventpipe_jobs_total{outcome="failed",task="deliver_webhook"} 3.0' in metrics
    assert 'eventpipe_jobs_queued{queue="webhooks",status="failed"} 1.0' in metrics
    assert 'eventpipe_job_duration_seconds_count{task="deliver_webhook"} 3.0' in metrics

    listed = setup.eventpipe(
        "jobs", "list", "--status", "failed", "--task", "deliver_webhook", "--json"
    )
    assert listed.returncode == 0, listed.stderr
    jobs = [orjson.loads(line) for line in listed.stdout.splitlines()]
    mine = [j for j in jobs if j["args"]["rule_id"] == rule["id"]]
    assert len(mine) == 1 and mine[0]["attempts"] == 3
    job_id = str(mine[0]["id"])
    shown = setup.eventpipe("jobs", "show", job_id)
    assert shown.returncode == 0, shown.stderr
    assert "failed" in shown.stdout and shown.stdout.count("the endpoint answered 500") == 3

    retried = setup.eventpipe("jobs", "retry", job_id)
    assert retried.returncode == 0, retried.stderr
    wait_for(lambda: len(setup.outcomes(rule)) == 4, 30, "the fourth attempt")
    assert setup.outcomes(rule)[-1] == "disabled"  # 4 failed attempts in a row
    state = setup.get(f"/{rule['id']}")
    assert not state["enabled"] and "4 failed attempts in a row" in state["disabled_reason"]
    again = setup.eventpipe("jobs", "retry", job_id)

    def shown_again() -> str:
        return setup.eventpipe("jobs", "show", job_id).stdout

    wait_for(lambda: "not sent: the endpoint is disabled" in shown_again(), 30, "failed again")
    assert again.returncode == 0 and len(setup.receiver.on("/fail")) == 4  # disabled: not sent
    refused = setup.eventpipe("jobs", "retry", "999999999")
    assert refused.returncode == 1 and "no job 999999999" in refused.stderr


def test_a_timeout_then_a_slow_answer_are_in_the_delivery_log(
    setup: Setup, worker_factory: Callable[..., WorkerProcess]
) -> None:
    worker_factory()
    setup.receiver.answer(200, delay_s=2.0)  # past the 1 s timeout
    rule = setup.rule("/slow", comparison="at_least")
    wait_for(lambda: len(setup.deliveries(rule)) >= 1, 60, "the first attempt")
    setup.receiver.answer(200, delay_s=0.3)
    wait_for(lambda: "delivered" in setup.outcomes(rule), 30, "a delivery")
    first, second = setup.deliveries(rule)[:2]
    assert first["status"] is None and first["error"] == "timed out after 1.0 s"
    assert first["outcome"] == "retrying"
    assert second["status"] == 200 and second["latency_ms"] >= 300 and second["attempt"] == 2
    assert setup.get(f"/{rule['id']}")["failures_in_a_row"] == 0


def test_410_disables_the_endpoint_at_once(
    setup: Setup, worker_factory: Callable[..., WorkerProcess]
) -> None:
    worker_factory()
    setup.receiver.answer(410)
    rule = setup.rule("/gone", comparison="at_least")
    wait_for(lambda: setup.outcomes(rule) == ["disabled"], 60, "one attempt")
    state = setup.get(f"/{rule['id']}")
    assert not state["enabled"] and "410" in state["disabled_reason"]
    enable = setup.http.patch(setup.url(f"/{rule['id']}"), json={"enabled": True},
                              headers=setup.running.owner.headers)  # fmt: skip
    assert enable.json()["enabled"] and enable.json()["disabled_reason"] is None


def test_private_addresses_are_refused_when_not_allowed(
    setup: Setup, worker_factory: Callable[..., WorkerProcess]
) -> None:
    # This api allows them (the tests' receiver is on loopback); this worker does not, and
    # checks the address again at delivery: a name that resolves inward is refused there.
    worker_factory(EVENTPIPE_WEBHOOK_ALLOW_PRIVATE="false")
    port = setup.receiver.url.rsplit(":", 1)[1]
    rule = setup.rule("/never", comparison="at_least",
                      webhook_url=f"http://localhost:{port}/never")  # fmt: skip
    wait_for(lambda: len(setup.deliveries(rule)) >= 1, 60, "an attempt")
    first = setup.deliveries(rule)[0]
    assert first["status"] is None and "loopback" in first["error"], first
    assert setup.receiver.on("/never") == []


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/x", "http://10.1.2.3/x", "http://[::1]/x", "http://169.254.169.254/latest",
     "http://[::ffff:192.168.0.1]/x", "ftp://example.com/x", "http://user:pw@example.com/x",
     "http://localhost:8080/x"],  # the last: a name that resolves to loopback
)  # fmt: skip
def test_unsafe_webhook_urls_are_refused_at_creation(
    client: TestClient, owner: Account, project_id: str, url: str
) -> None:
    body = {
        "name": "r",
        "comparison": "above",
        "threshold": 1,
        "window_minutes": 5,
        "webhook_url": url,
    }
    answer = client.post(f"/api/projects/{project_id}/alerts", json=body, headers=owner.headers)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] in {"refused_url", "invalid_request"}
    assert client.get(f"/api/projects/{project_id}/alerts", headers=owner.headers).json() == []


def test_a_public_webhook_url_is_accepted_and_its_secret_shown_once(
    client: TestClient, owner: Account, project_id: str
) -> None:
    body = {"name": "r", "event": "Signup", "comparison": "below", "threshold": 1,
            "window_minutes": 60, "webhook_url": "https://hooks.example.com/eventpipe"}  # fmt: skip
    answer = client.post(f"/api/projects/{project_id}/alerts", json=body, headers=owner.headers)
    assert answer.status_code == 201, answer.text
    secret = answer.json()["webhook_secret"]
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", secret)
    listed = client.get(f"/api/projects/{project_id}/alerts", headers=owner.headers)
    assert secret not in listed.text and listed.json()[0]["state"] == "ok"
