"""`/`: what answers here and where to go next, for a person who opens the api's URL."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from eventpipe import __version__

router = APIRouter(tags=["home"])

PAGE = f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>eventpipe</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 42rem; margin: 2rem auto">
<h1>eventpipe {__version__}</h1>
<p>This is eventpipe's api: it is running. The dashboard is not built yet; what answers here:</p>
<ul>
<li><a href="/readyz">/readyz</a>: whether Kafka, Redis and PostgreSQL answer;
  <a href="/healthz">/healthz</a>: whether this process serves requests.</li>
<li><a href="/docs">/docs</a>: the API (sign-in, projects, write keys), as
  <a href="/openapi.json">OpenAPI</a>.</li>
<li><code>POST /v1/batch</code>, <code>/v1/track</code>, ...: Segment's tracking API, for the
  official Segment and RudderStack SDKs (with a write key).</li>
</ul>
<p>Where to start: <code>README.md</code> ("First steps") in the source tree, then
<code>docs/sdks.md</code> to send events from your apps.</p>
</body>
</html>
"""


@router.get("/", response_class=HTMLResponse)
async def home() -> HTMLResponse:
    """A page saying what runs here and where the documentation is."""
    return HTMLResponse(PAGE)
