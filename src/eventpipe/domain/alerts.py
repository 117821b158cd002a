"""Alert rules: a threshold on a live count over a window, and the endpoint that hears of it.

A rule fires when its condition turns true and resolves when it turns false; each turn is one
webhook message (`alert.firing`, `alert.resolved`), deferred in the transaction that records
the turn, so a state change is never without its message nor sent twice.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

import procrastinate
from pydantic import BaseModel, ConfigDict, Field, HttpUrl
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from eventpipe.alerts.addresses import check_resolved, check_url
from eventpipe.alerts.signing import new_secret
from eventpipe.core.queue import Queue, Task, defer_in
from eventpipe.domain.tables import AlertComparison, AlertRule, WebhookDelivery

MAX_WINDOW_MINUTES = 48 * 60  # what the minute counts keep (domain/keys.py)
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00]*$")]


class AlertRuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    event: Name | None = Field(default=None, description="an event name; none: every event")
    comparison: AlertComparison
    threshold: int = Field(ge=0, le=10**12)
    window_minutes: int = Field(ge=1, le=MAX_WINDOW_MINUTES)
    webhook_url: HttpUrl = Field(description="http(s); private addresses are refused")


class AlertRuleUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    threshold: int | None = Field(default=None, ge=0, le=10**12)
    window_minutes: int | None = Field(default=None, ge=1, le=MAX_WINDOW_MINUTES)
    enabled: bool | None = Field(default=None, description="true re-enables a disabled endpoint")


class AlertRulePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    event: str | None
    comparison: AlertComparison
    threshold: int
    window_minutes: int
    webhook_url: str
    enabled: bool
    disabled_reason: str | None
    failures_in_a_row: int
    state: str
    last_value: int | None
    last_evaluated_at: datetime | None
    last_fired_at: datetime | None
    created_at: datetime


class AlertRuleCreated(AlertRulePublic):
    webhook_secret: str = Field(description="whsec_...: shown in this answer only")


class DeliveryPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    message_id: str
    event_type: str
    attempt: int
    status: int | None
    latency_ms: float
    error: str | None
    response_excerpt: str
    outcome: str
    created_at: datetime


def breached(comparison: str, value: int, threshold: int) -> bool:
    if comparison == AlertComparison.ABOVE:
        return value > threshold
    if comparison == AlertComparison.AT_LEAST:
        return value >= threshold
    if comparison == AlertComparison.BELOW:
        return value < threshold
    return value <= threshold


def message_body(rule: AlertRule, kind: str, value: int, at: datetime) -> dict[str, Any]:
    """The webhook's JSON (Standard Webhooks style: type, timestamp, data)."""
    return {
        "type": kind,
        "timestamp": at.isoformat(),
        "data": {
            "rule_id": str(rule.id), "project_id": str(rule.project_id), "name": rule.name,
            "event": rule.event, "comparison": rule.comparison, "threshold": rule.threshold,
            "window_minutes": rule.window_minutes, "value": value,
            "window": {"from": (at - timedelta(minutes=rule.window_minutes)).isoformat(),
                       "to": at.isoformat()},
        },
    }  # fmt: skip


async def record_evaluation(
    session: AsyncSession, queue: procrastinate.App, rule: AlertRule, value: int, at: datetime
) -> str | None:
    """Store the rule's new value; on a turn, its message is deferred in the same transaction.
    The kind of message sent (or None)."""
    firing = breached(rule.comparison, value, rule.threshold)
    turned = firing != (rule.state == "firing")
    rule.last_value, rule.last_evaluated_at = value, at
    kind = None
    if turned:
        rule.state = "firing" if firing else "ok"
        kind = "alert.firing" if firing else "alert.resolved"
        if firing:
            rule.last_fired_at = at
        await defer_in(
            session, queue, Task.DELIVER_WEBHOOK, queue=Queue.WEBHOOKS, rule_id=str(rule.id),
            message_id=f"msg_{uuid.uuid4().hex}", body=message_body(rule, kind, value, at),
        )  # fmt: skip
    await session.commit()
    return kind


async def create_rule(
    session: AsyncSession, *, project_id: uuid.UUID, body: AlertRuleCreate, allow_private: bool
) -> AlertRule:
    """A new rule and its endpoint, with a new signing secret (`webhook_secret`: show it once).
    Raises RefusedAddress (eventpipe.alerts.addresses) for a URL that may not be called."""
    url = str(body.webhook_url)
    check_url(url, allow_private=allow_private)
    # A name that resolves inward now is refused now; every delivery resolves and checks again.
    await check_resolved(url, allow_private=allow_private)
    rule = AlertRule(
        id=uuid.uuid4(), project_id=project_id, name=body.name, event=body.event,
        comparison=body.comparison.value, threshold=body.threshold,
        window_minutes=body.window_minutes, webhook_url=url, webhook_secret=new_secret(),
    )  # fmt: skip
    session.add(rule)
    await session.commit()
    await session.refresh(rule)
    return rule


async def rules_of(session: AsyncSession, *, project_id: uuid.UUID) -> list[AlertRule]:
    found = await session.scalars(
        select(AlertRule).where(AlertRule.project_id == project_id).order_by(AlertRule.created_at)
    )
    return list(found)


async def enabled_rules(session: AsyncSession) -> list[AlertRule]:
    found = await session.scalars(select(AlertRule).where(AlertRule.enabled))
    return list(found)


async def rule_of(
    session: AsyncSession, *, project_id: uuid.UUID, rule_id: uuid.UUID
) -> AlertRule | None:
    rule = await session.get(AlertRule, rule_id)
    return rule if rule is not None and rule.project_id == project_id else None


async def update_rule(session: AsyncSession, rule: AlertRule, body: AlertRuleUpdate) -> None:
    for field, value in body.model_dump(exclude_none=True).items():
        setattr(rule, field, value)
    if body.enabled:
        rule.disabled_reason, rule.failures_in_a_row = None, 0
    await session.commit()


async def delete_rule(session: AsyncSession, rule: AlertRule) -> None:
    await session.execute(delete(AlertRule).where(AlertRule.id == rule.id))
    await session.commit()


async def deliveries_of(
    session: AsyncSession, *, rule_id: uuid.UUID, limit: int
) -> list[WebhookDelivery]:
    found = await session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.rule_id == rule_id)
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
    )
    return list(found)


async def disable_rule(session: AsyncSession, rule_id: uuid.UUID, reason: str) -> None:
    await session.execute(
        update(AlertRule)
        .where(AlertRule.id == rule_id)
        .values(enabled=False, disabled_reason=reason)
    )
