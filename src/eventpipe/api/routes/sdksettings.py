"""What the browser SDKs fetch before they send, served from the write key's project, so that a
page needs nothing from Segment's or RudderStack's CDN and sends every event here.

- analytics.js (`@segment/analytics-next`), loaded with `cdnURL` at eventpipe, reads
  `/v1/projects/<writeKey>/settings`: its Segment.io integration's `apiHost` points back here.
- RudderStack's JS SDK v3, loaded with `configUrl` at eventpipe, reads `/sourceConfig/`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.routing import Route

from eventpipe.api.ingestdoc import KEY_QUERY, KEY_SECURITY
from eventpipe.api.openapi import JSON, DocumentedRoute, Operation, raw_errors
from eventpipe.api.routes.ingest import (
    check_origin,
    preflight_of,
    presented_key,
    refusal,
    resolve_key,
    with_cors,
)
from eventpipe.auth.writekeys import ResolvedKey
from eventpipe.core.errors import json_response
from eventpipe.ingest.clock import iso
from eventpipe.ingest.errors import IngestError
from eventpipe.ingest.producer import KafkaUnavailable

# The SDKs cache nothing themselves; a short shared cache spares the database on busy pages.
CACHE = {"Cache-Control": "public, max-age=60"}


def public_url(request: Request) -> str:
    """Where browsers reach this api: the setting, else the URL this request came in on."""
    configured = request.app.state.resources.settings.public_url
    if configured is not None:
        return str(configured).rstrip("/")
    return f"{request.url.scheme}://{request.url.netloc}"


async def _key_for_page(request: Request, key: str | None) -> ResolvedKey:
    resolved = await resolve_key(request.app.state.resources, key)
    check_origin(request, resolved)
    return resolved


def segment_settings(write_key: str, base_url: str) -> dict[str, object]:
    """analytics.js's project settings: send here, load no other script, report nothing else.

    Keys that make analytics.js fetch more code (`plan`, `middlewareSettings`, `remotePlugins`,
    a second integration, ...) are left out: it would fetch it from eventpipe, which has none.
    """
    scheme, _, host = base_url.partition("://")
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": f"{host}/v1",
                "protocol": scheme,
                "unbundledIntegrations": [],
                "addBundledMetadata": True,
                "maybeBundledConfigIds": {},
                # keepalive: an event sent as the page unloads still arrives (no sendBeacon
                # in analytics.js); one request per event keeps the figures live.
                "deliveryStrategy": {"strategy": "standard", "config": {"keepalive": True}},
            }
        },
        # Its client-side metrics would go to Segment's own API: none.
        "metrics": {"sampleRate": 0},
    }


async def settings_of_project(request: Request) -> Response:
    """analytics.js's settings for the write key in the path."""
    write_key = request.path_params["write_key"]
    try:
        await _key_for_page(request, write_key)
        body = segment_settings(write_key, public_url(request))
        response = json_response(body, headers=CACHE)
    except (IngestError, KafkaUnavailable) as error:
        response = refusal(error)
    return with_cors(request, response)


def rudder_source_config(resolved: ResolvedKey, write_key: str) -> dict[str, object]:
    """RudderStack's source config: one enabled source, no device-mode destinations."""
    return {
        "isHosted": False,
        "source": {
            "id": resolved.key_id,
            "name": "eventpipe",
            "writeKey": write_key,
            "workspaceId": resolved.project_id,
            "enabled": True,
            "deleted": False,
            "config": {
                # The SDK's own error reports and metrics would go to RudderStack's servers.
                "statsCollection": {
                    "errors": {"enabled": False},
                    "metrics": {"enabled": False},
                },
            },
            "destinations": [],
        },
        "updatedAt": iso(datetime.now(UTC)),
    }


async def source_config(request: Request) -> Response:
    """RudderStack's source config for the write key (Basic auth or `writeKey` in the query)."""
    try:
        key = presented_key(request) or ""
        resolved = await _key_for_page(request, key)
        response = json_response(rudder_source_config(resolved, key), headers=CACHE)
    except (IngestError, KafkaUnavailable) as error:
        response = refusal(error)
    return with_cors(request, response)


# Where each route takes the write key: its path, or Basic auth (else `?writeKey=`).
_KEY_IN_PATH = {"name": "write_key", "in": "path", "required": True, "schema": {"type": "string"}}
_KEY_IN_AUTH = {"security": KEY_SECURITY, "parameters": [KEY_QUERY]}


def _operation(summary: str, key: dict[str, Any]) -> Operation:
    settings = {"description": "The settings", "content": {JSON: {"schema": {"type": "object"}}}}
    return {
        "tags": ["sdk settings"],
        "summary": summary,
        **key,
        "responses": {"200": settings, **raw_errors(401, 403, 503)},
    }


_SOURCE_CONFIG = _operation(source_config.__doc__ or "", _KEY_IN_AUTH)
routes: list[Route] = [
    DocumentedRoute(
        "/v1/projects/{write_key}/settings",
        settings_of_project,
        methods=["GET"],
        operation=_operation(settings_of_project.__doc__ or "", {"parameters": [_KEY_IN_PATH]}),
    ),
    DocumentedRoute("/sourceConfig/", source_config, methods=["GET"], operation=_SOURCE_CONFIG),
    DocumentedRoute("/sourceConfig", source_config, methods=["GET"], operation=_SOURCE_CONFIG),
]
routes += [preflight_of(route) for route in list(routes)]
