"""Alert rules of a project, each with its webhook endpoint, and the endpoint's delivery log."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from eventpipe.alerts.addresses import RefusedAddress
from eventpipe.api.deps import Member, ResourcesDep, SessionDep, Viewer
from eventpipe.api.openapi import PROJECT_ERRORS
from eventpipe.core.errors import ApiError
from eventpipe.domain import alerts
from eventpipe.domain.alerts import (
    AlertRuleCreate,
    AlertRuleCreated,
    AlertRulePublic,
    AlertRuleUpdate,
    DeliveryPublic,
    delete_rule,
    deliveries_of,
    rule_of,
    rules_of,
    update_rule,
)
from eventpipe.domain.tables import AlertRule

router = APIRouter(
    prefix="/api/projects/{project_id}/alerts", tags=["alerts"], responses=PROJECT_ERRORS
)


def _refused(error: RefusedAddress) -> ApiError:
    return ApiError(422, "refused_url", f"webhook_url is refused: {error}")


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_rule(
    body: AlertRuleCreate, access: Member, session: SessionDep, resources: ResourcesDep
) -> AlertRuleCreated:
    """Create a rule; its endpoint's signing secret is in this answer only and never again."""
    try:
        rule = await alerts.create_rule(
            session, project_id=access.project_id, body=body,
            allow_private=resources.settings.webhook_allow_private,
        )  # fmt: skip
    except RefusedAddress as error:
        raise _refused(error) from error
    public = AlertRulePublic.model_validate(rule)
    return AlertRuleCreated(**public.model_dump(), webhook_secret=rule.webhook_secret)


@router.get("")
async def list_rules(access: Viewer, session: SessionDep) -> list[AlertRulePublic]:
    """The project's rules, with each one's state and whether its endpoint is enabled."""
    return [
        AlertRulePublic.model_validate(r)
        for r in await rules_of(session, project_id=access.project_id)
    ]


async def _rule(session: SessionDep, project_id: uuid.UUID, rule_id: uuid.UUID) -> AlertRule:
    rule = await rule_of(session, project_id=project_id, rule_id=rule_id)
    if rule is None:
        raise ApiError(404, "not_found", "alert rule not found")
    return rule


@router.get("/{rule_id}")
async def get_rule(rule_id: uuid.UUID, access: Viewer, session: SessionDep) -> AlertRulePublic:
    """One rule."""
    return AlertRulePublic.model_validate(await _rule(session, access.project_id, rule_id))


@router.patch("/{rule_id}")
async def change_rule(
    rule_id: uuid.UUID, body: AlertRuleUpdate, access: Member, session: SessionDep
) -> AlertRulePublic:
    """Change a rule's name, threshold or window, or enable its endpoint again."""
    rule = await _rule(session, access.project_id, rule_id)
    await update_rule(session, rule, body)
    await session.refresh(rule)
    return AlertRulePublic.model_validate(rule)


@router.delete("/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_rule(rule_id: uuid.UUID, access: Member, session: SessionDep) -> None:
    """Delete a rule, its endpoint and its delivery log; messages still queued are dropped."""
    await delete_rule(session, await _rule(session, access.project_id, rule_id))


@router.get("/{rule_id}/deliveries")
async def list_deliveries(
    rule_id: uuid.UUID, access: Viewer, session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[DeliveryPublic]:  # fmt: skip
    """The endpoint's delivery log, newest first: every attempt, its status, latency and outcome."""
    rule = await _rule(session, access.project_id, rule_id)
    rows = await deliveries_of(session, rule_id=rule.id, limit=limit)
    return [DeliveryPublic.model_validate(row) for row in rows]
