"""Alert jobs: the periodic evaluation of every enabled rule, and each webhook's delivery."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import procrastinate
from sqlalchemy import update

from eventpipe.alerts.delivery import Attempt, deliver
from eventpipe.domain.aggregates import period_counts
from eventpipe.domain.alerts import disable_rule, enabled_rules, record_evaluation
from eventpipe.domain.keys import MINUTE
from eventpipe.domain.tables import AlertRule, WebhookDelivery
from eventpipe.domain.timerange import TimeRange, floor
from eventpipe.worker.resources import WorkerResources
from eventpipe.worker.retry import Final, JitteredSchedule

log = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    """An attempt that did not reach the endpoint: the job is retried on the schedule."""


class DeliveryAbandoned(DeliveryFailed, Final):
    """The endpoint was disabled by this attempt's failure: no retry, the job is dead-lettered."""


async def count_in_window(resources: WorkerResources, rule: AlertRule, now: datetime) -> int:
    """Events (of the rule's name, or all) in the last `window_minutes` minutes, this one too."""
    end = floor(now, MINUTE) + timedelta(minutes=1)
    window = TimeRange(end - timedelta(minutes=rule.window_minutes), end, MINUTE)
    counts = await period_counts(
        resources.redis, project_id=str(rule.project_id),
        partitions=resources.settings.partitions, window=window,
    )  # fmt: skip
    if rule.event is None:
        return sum(total for _, total in counts.totals)
    return counts.by_name.get(rule.event, 0)


async def evaluate_alerts(resources: WorkerResources, queue: procrastinate.App) -> str:
    async with resources.sessions() as session:
        rules = await enabled_rules(session)
    now, turned = datetime.now(UTC), 0
    for listed in rules:
        value = await count_in_window(resources, listed, now)
        async with resources.sessions() as session:
            # Locked and re-read: a rule changed or disabled meanwhile is judged as it is now.
            rule = await session.get(AlertRule, listed.id, with_for_update=True)
            if rule is None or not rule.enabled:
                continue
            if await record_evaluation(session, queue, rule, value, now):
                turned += 1
    return f"{len(rules)} rules, {turned} turned"


def _outcome(
    attempt: Attempt, rule: AlertRule, limit: int, retrying: bool
) -> tuple[str, str | None]:
    """What this attempt makes of the message, and the reason to disable the endpoint, if any."""
    if attempt.ok:
        return "delivered", None
    if attempt.gone:
        return "disabled", "the endpoint answered 410 Gone"
    if rule.failures_in_a_row + 1 >= limit:
        return "disabled", f"{limit} failed attempts in a row"
    return ("retrying" if retrying else "dead"), None


async def deliver_webhook(
    resources: WorkerResources, strategy: JitteredSchedule, *, rule_id: str, message_id: str,
    body: dict[str, Any], attempts: int,
) -> str:  # fmt: skip
    settings = resources.settings
    async with resources.sessions() as session:
        rule = await session.get(AlertRule, uuid.UUID(rule_id))
    if rule is None:
        return "rule deleted: nothing to send to"
    if not rule.enabled:
        # Kept as a dead letter: enabled again, the endpoint gets it by `eventpipe jobs retry`.
        raise DeliveryAbandoned(f"not sent: the endpoint is disabled ({rule.disabled_reason})")
    attempt = await deliver(
        rule.webhook_url, secret=rule.webhook_secret, msg_id=message_id,
        body=orjson.dumps(body), timeout_s=settings.webhook_timeout_s,
        allow_private=settings.webhook_allow_private,
    )  # fmt: skip
    retrying = strategy.will_retry(DeliveryFailed(), attempts)
    outcome, disable = _outcome(attempt, rule, settings.webhook_failures_to_disable, retrying)
    async with resources.sessions() as session:
        session.add(WebhookDelivery(
            rule_id=rule.id, message_id=message_id, event_type=body["type"], attempt=attempts + 1,
            status=attempt.status, latency_ms=attempt.latency_ms, error=attempt.error,
            response_excerpt=attempt.response_excerpt, outcome=outcome,
        ))  # fmt: skip
        failures = 0 if attempt.ok else AlertRule.failures_in_a_row + 1
        await session.execute(
            update(AlertRule).where(AlertRule.id == rule.id).values(failures_in_a_row=failures)
        )
        if disable:
            await disable_rule(session, rule.id, disable)
        await session.commit()
    if attempt.ok or attempt.gone:
        return f"{outcome} ({attempt.status})"
    reason = attempt.error or f"the endpoint answered {attempt.status}"
    if disable:
        raise DeliveryAbandoned(f"{reason}; endpoint disabled: {disable}")
    raise DeliveryFailed(reason)
