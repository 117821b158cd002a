"""The error statuses an operation can answer, for its OpenAPI `responses=`: every status a client
can see is documented (schemathesis checks it), each with the one error shape of core/errors.py."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

DESCRIPTIONS = {
    400: "Malformed request",
    401: "Missing, invalid, expired or revoked credentials",
    403: "Not allowed",
    404: "Not found, or not visible to the caller",
    409: "Conflict with the current state",
    413: "Body too large",
    415: "Unsupported media type",
    422: "Invalid parameters or body",
    429: "Too many requests; see Retry-After",
    503: "A backing service (Kafka, Redis, PostgreSQL) is unavailable; retry later",
}


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for these error statuses."""
    return {
        status: {"model": ErrorBody, "description": DESCRIPTIONS.get(status, "Error")}
        for status in statuses
    }


# Every operation under /api that needs a signed-in user and a project.
PROJECT_ERRORS = errors(401, 403, 404, 422, 503)
# Signed-in operations without a project in the path.
USER_ERRORS = errors(401, 422, 503)
