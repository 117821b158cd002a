"""One JSON error shape for every failure an HTTP client can see: {"error": {"code", "message"}}."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with its HTTP status, a stable machine code and a message for humans."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.extra = extra


def json_response(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type="application/json"
    )


# What a client is told of an error of ours: no internals.
INTERNAL_MESSAGE = "internal error; the request was not applied"


def error_body(code: str, message: str, **extra: Any) -> bytes:
    """The JSON of every error answer, for routes that write their answer as bytes."""
    return orjson.dumps({"error": {"code": code, "message": message, **extra}})


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    body = error_body(code, message, **extra)
    return Response(body, status_code=status, headers=headers, media_type="application/json")


async def _api_error(_: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)  # noqa: S101 - registered for ApiError only
    return error_response(error.status, error.code, error.message, error.headers, **error.extra)


async def _http_error(_: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)  # noqa: S101 - registered for it only
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    headers = dict(error.headers) if error.headers else None
    return error_response(error.status_code, code, str(error.detail), headers)


async def _validation_error(_: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)  # noqa: S101 - registered for it only
    problems = [
        {"loc": [str(part) for part in item["loc"]], "message": item["msg"]}
        for item in error.errors()
    ]
    first = problems[0] if problems else {"loc": [], "message": "invalid request"}
    message = f"{'.'.join(first['loc'])}: {first['message']}"
    return error_response(422, "invalid_request", message, problems=problems)


async def _client_gone(request: Request, _: Exception) -> Response:
    # The client closed its connection, or was cut for sending its body too slowly
    # (api/serve.py), before the body was in: no one to answer, and no fault of ours to log with
    # a traceback (a slowloris would make hundreds a second).
    log.debug("client gone before its body was read: %s %s", request.method, request.url.path)
    return Response(status_code=499)  # nginx's "client closed request"; never sent


async def _unexpected(request: Request, error: Exception) -> Response:
    # Log the traceback for operators; the client gets no internals.
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return error_response(500, "internal_error", INTERNAL_MESSAGE)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
