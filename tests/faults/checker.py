"""The one checker every fault scenario ends with: each acknowledged event (the load generator
kept their messageIds) against the Kafka topic, the live aggregates and the archive.

It waits for the pipeline to settle (the processor has caught up with what Kafka holds), then
tallies sent, acknowledged, refused, in Kafka, counted, archived, duplicates and lost, prints
them, and appends them to the results file that docs/reliability.md quotes.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from eventpipe.domain.keys import ALL
from tests.faults.load import LoadResult
from tests.integration.processor_support import Pipeline, archived_ids, read_totals
from tests.integration.test_ingest import read_topic

RESULTS_ENV = "EVENTPIPE_FAULTS_RESULTS"
_DEFAULT_RESULTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "faults.jsonl"


@dataclass(frozen=True)
class Tally:
    scenario: str
    sent: int
    acknowledged: int
    refused: dict[str, int]
    in_kafka: int
    counted: int
    archived: int
    # Counted or archived more than once (client retries of refused batches included).
    duplicates: int
    # Acknowledged but missing from Kafka, the counts or the archive.
    lost: int
    # Scenario figures: seconds to notice a fault, to recover, the longest request, ...
    timings: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        refused = ", ".join(f"{k}: {v}" for k, v in sorted(self.refused.items())) or "none"
        timings = "  ".join(f"{k} {v:.2f}s" for k, v in self.timings.items())
        return (
            f"[{self.scenario}] sent {self.sent}  acknowledged {self.acknowledged}  "
            f"refused {{{refused}}}  in Kafka {self.in_kafka}  counted {self.counted}  "
            f"archived {self.archived}  duplicates {self.duplicates}  lost {self.lost}"
            + (f"  |  {timings}" if timings else "")
        )

    def assert_exact(self) -> None:
        assert self.lost == 0 and self.duplicates == 0, self.line()
        assert self.acknowledged > 0, f"nothing was acknowledged: {self.line()}"


def check(
    scenario: str,
    load: LoadResult,
    pipeline: Pipeline,
    project: str,
    *,
    timings: dict[str, float] | None = None,
    settle_timeout_s: float = 120.0,
) -> Tally:
    """Tally one scenario once the processor has caught up; print and record it."""
    in_kafka = _kafka_ids(pipeline, project)
    deadline = time.monotonic() + settle_timeout_s
    while True:
        counted = read_totals(pipeline, project).get(ALL, 0)
        archived = Counter(archived_ids(pipeline, project))
        caught_up = counted >= len(in_kafka) and set(in_kafka) <= set(archived)
        if caught_up or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    ack = load.acknowledged
    lost_ids = (ack - set(in_kafka)) | (ack - set(archived))
    shortfall = max(0, len(set(in_kafka)) - counted)
    tally = Tally(
        scenario=scenario,
        sent=len(load.sent),
        acknowledged=len(ack),
        refused=dict(load.refused),
        in_kafka=len(in_kafka),
        counted=counted,
        archived=sum(archived.values()),
        duplicates=max(0, counted - len(in_kafka)) + sum(n - 1 for n in archived.values() if n > 1),
        lost=max(len(lost_ids), shortfall),
        timings=dict(timings or {}),
    )
    print(tally.line())  # noqa: T201 - the suite's report, shown with -s and in CI logs
    _record(tally)
    return tally


def _kafka_ids(pipeline: Pipeline, project: str) -> Counter[str]:
    """Each message id of the project in the topic, with how many copies Kafka holds."""
    delivered = read_topic(pipeline.kafka_bootstrap, pipeline.topic, timeout=60)
    return Counter(d.record.message_id for d in delivered if d.record.project_id == project)


def results_path() -> Path:
    return Path(os.environ.get(RESULTS_ENV) or _DEFAULT_RESULTS)


def _record(tally: Tally) -> None:
    path = results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **asdict(tally)}
    with path.open("a") as results:
        results.write(json.dumps(entry) + "\n")
