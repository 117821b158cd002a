"""Liveness and readiness, for load balancers and Kubernetes probes."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from eventpipe.core.errors import json_response
from eventpipe.core.kafka import security_config
from eventpipe.core.probes import probe_kafka, probe_postgres, probe_redis

router = APIRouter(tags=["health"])


class ReadinessCheck(BaseModel):
    status: Literal["ok", "down"]
    detail: str


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, ReadinessCheck]


NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": Readiness, "description": "Kafka, Redis or PostgreSQL does not answer"}
}


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process serves requests; touches no dependency."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses=NOT_READY)
async def readyz(request: Request) -> Response:
    """Readiness: Kafka, Redis and PostgreSQL each answer; 503 while any of them does not."""
    resources = request.app.state.resources
    settings = resources.settings
    timeout = settings.probe_timeout_s
    kafka, redis, postgres = await asyncio.gather(
        probe_kafka(settings.kafka_bootstrap, timeout, security=security_config(settings)),
        probe_redis(resources.redis, timeout),
        probe_postgres(str(settings.database_url) if settings.database_url else None, timeout),
    )
    checks = {"kafka": kafka, "redis": redis, "postgres": postgres}
    ready = all(result.ok for result in checks.values())
    body = {
        "status": "ready" if ready else "unavailable",
        "checks": {name: result.as_json() for name, result in checks.items()},
    }
    return json_response(body, 200 if ready else 503)
