"""The error statuses an operation can answer, for its OpenAPI `responses=`: every status a client
can see is documented (schemathesis checks it), each with the one error shape of core/errors.py.

The ingest routes are plain Starlette routes (FastAPI's request handling costs too much there):
`DocumentedRoute` carries their OpenAPI operation, and `install` adds them to the app's schema.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.routing import BaseRoute, Route

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
JSON = "application/json"
ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorBody"}
FASTAPI_422 = {"$ref": "#/components/schemas/HTTPValidationError"}

Operation = dict[str, Any]


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for these error statuses; 422 and 503 are added to every operation that
    reads parameters or uses a backing service by the callers' own lists."""
    return {
        status: {"model": ErrorBody, "description": DESCRIPTIONS.get(status, "Error")}
        for status in statuses
    }


# Signed-in operations: 401 without a valid token, 403 when the dashboard's cookie signs in a
# request from another site, 503 while Redis (the revocation list) or PostgreSQL is unavailable.
SIGNED_IN_ERRORS = errors(401, 403, 503)
# Signed-in operations without a project in the path, that read parameters or a body.
USER_ERRORS = errors(401, 403, 422, 503)
# Every operation under /api that needs a signed-in user and a project.
PROJECT_ERRORS = errors(401, 403, 404, 422, 503)


def raw_errors(*statuses: int) -> dict[str, Any]:
    """The OpenAPI `responses` of these error statuses, for a DocumentedRoute's operation."""
    return {
        str(status): {
            "description": DESCRIPTIONS.get(status, "Error"),
            "content": {JSON: {"schema": ERROR_SCHEMA}},
        }
        for status in statuses
    }


class DocumentedRoute(Route):
    """A plain Starlette route with its OpenAPI operation, the same for each of its methods."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        methods: Sequence[str],
        operation: Operation,
        name: str | None = None,
    ) -> None:
        super().__init__(path, endpoint, methods=list(methods), name=name)
        self.operation = operation


def install(app: FastAPI, components: dict[str, dict[str, Any]]) -> None:
    """Serve FastAPI's schema with the DocumentedRoutes' operations and the `components` they
    refer to (by section: schemas, securitySchemes), and the errors FastAPI answers itself."""
    generate = app.openapi
    completed: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        # FastAPI keeps its schema, and builds a new one only when the routes have changed.
        document = generate()
        if not any(document is done for done in completed):
            _add_documented(document, app.routes)
            sections = document.setdefault("components", {})
            for section, entries in components.items():
                sections.setdefault(section, {}).update(entries)
            _fastapi_errors(document, sections.setdefault("schemas", {}))
            completed[:] = [document]
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented extension point


def _add_documented(document: dict[str, Any], routes: Sequence[BaseRoute]) -> None:
    paths = document.setdefault("paths", {})
    for route in routes:
        if isinstance(route, DocumentedRoute) and route.include_in_schema:
            for method in sorted(route.methods or ()):
                operation = route.operation
                if method == "HEAD":  # Starlette answers HEAD for GET: the same, without a body
                    operation = {**operation, "responses": _bodiless(operation["responses"])}
                paths.setdefault(route.path, {})[method.lower()] = operation


def _bodiless(responses: dict[str, Any]) -> dict[str, Any]:
    return {status: {"description": answer["description"]} for status, answer in responses.items()}


def _fastapi_errors(document: dict[str, Any], schemas: dict[str, Any]) -> None:
    """What FastAPI itself answers, in the one error shape install_error_handlers gives it: 422
    for invalid parameters or body, and 400 for a body it cannot parse at all (not UTF-8)."""
    for operations in document["paths"].values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            content = responses.get("422", {}).get("content", {})
            if content.get(JSON, {}).get("schema") == FASTAPI_422:
                content[JSON]["schema"] = ERROR_SCHEMA
            if "requestBody" in operation and "400" not in responses:
                responses.update(raw_errors(400))
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    generated = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, schema in generated.pop("$defs", {}).items():
        schemas.setdefault(name, schema)
    schemas.setdefault("ErrorBody", generated)
