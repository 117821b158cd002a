"""The api role: FastAPI app factory; clients are opened in the lifespan and closed after it."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from starlette.types import ASGIApp, Receive, Scope, Send

from eventpipe import __version__
from eventpipe.api import ingestdoc, openapi
from eventpipe.api.resources import close_resources, open_resources
from eventpipe.api.routes import (
    alerts,
    auth,
    events,
    exports,
    health,
    ingest,
    live,
    pixel,
    projects,
    sdksettings,
    stats,
    writekeys,
)
from eventpipe.core.config import Settings, get_settings
from eventpipe.core.errors import install_error_handlers
from eventpipe.dashboard.mount import install_dashboard


class EventpipeApi(FastAPI):
    """FastAPI, with a POST to an ingest path handed straight to its endpoint (raw ASGI, which
    answers with its own security headers and JSON errors): the middleware stack and the router
    cost a lone event about a fifth of its time in the api (api/ingestasgi.py)."""

    ingest_endpoints: dict[str, ASGIApp] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.ingest_endpoints.get(scope["path"])
            if endpoint is not None:
                scope["app"] = self
                await endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the api; `settings` defaults to the environment's."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.resources = open_resources(settings)
        # Everything built so far lives as long as the process: keep it out of the cyclic GC's
        # full collections, which otherwise stop a worker for ~100 ms (measured) under load.
        gc.freeze()
        try:
            yield
        finally:
            await close_resources(app.state.resources)

    # FastAPI's OpenTelemetry hooks look up the environment on every request (about 30 us of a
    # lone event's, measured); eventpipe exports no traces.
    off = TelemetryConfig(tracing=False, metrics=False, logs=False)
    app = EventpipeApi(title="eventpipe", version=__version__, lifespan=lifespan, telemetry=off)
    app.ingest_endpoints = {route.path: route.app for route in ingest.routes}
    install_error_handlers(app)
    # Ingest first: routes are matched in order, and /v1 carries nearly all the traffic.
    app.router.routes[:0] = ingest.routes
    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(projects.router)
    app.include_router(writekeys.router)
    app.include_router(stats.router)
    app.include_router(events.router)
    app.include_router(live.router)
    app.include_router(exports.router)
    app.include_router(alerts.router)
    app.router.routes += pixel.routes + sdksettings.routes + ingest.preflights
    # The plain routes above (ingest, pixel, SDK settings) document themselves in the schema.
    openapi.install(app, ingestdoc.COMPONENTS)
    # The dashboard at / (its pages read the JSON api above with the session cookie).
    install_dashboard(app)
    return app
