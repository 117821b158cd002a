"""Copy-paste snippets for a new write key: analytics.js in the browser, and a server SDK.

The browser snippet is Segment's own (5.2.1, as docs/sdks.md gives it): the page loads its copy of
@segment/analytics-next's standalone bundle, and reads its settings from eventpipe (`_cdn`), which
tell it to send here too. Values are JSON-quoted into the code; the page shows it escaped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# Segment's snippet 5.2.1, unchanged but for the script's src (a copy on the customer's site).
_SEGMENT = (Path(__file__).parent / "segment-snippet-5.2.1.js").read_text().strip()


@dataclass(frozen=True)
class Snippet:
    title: str
    install: str
    code: str


def browser_snippet(base_url: str, key: str) -> Snippet:
    code = (
        "<script>\n"
        "  // Serve @segment/analytics-next's dist/umd/standalone.js from your site at the path\n"
        "  // below; its settings, and every event, come from and go to eventpipe.\n"
        f"  var EVENTPIPE = {json.dumps(base_url)}, WRITE_KEY = {json.dumps(key)};\n"
        f"  {_SEGMENT}\n"
        "  analytics.load(WRITE_KEY);\n"
        "  analytics.page();\n"
        "  }}();\n"
        "</script>"
    )
    return Snippet("Browser: analytics.js", "npm install @segment/analytics-next@1.84.3", code)


def python_snippet(base_url: str, key: str) -> Snippet:
    code = (
        "from segment.analytics.client import Client\n\n"
        f"analytics = Client({json.dumps(key)}, host={json.dumps(base_url)})\n"
        'analytics.track("user-1", "Signed Up", {"plan": "pro"})\n'
        "analytics.shutdown()  # flushes before the process exits"
    )
    return Snippet("Server: Python", "pip install segment-analytics-python==2.4.0", code)


def curl_snippet(base_url: str, key: str) -> Snippet:
    body = '{"userId": "user-1", "event": "Signed Up", "properties": {"plan": "pro"}}'
    code = (
        f"curl -u '{key}:' {base_url}/v1/track \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        f"  -d '{body}'"
    )
    return Snippet("Any HTTP client: curl", "", code)


def snippets(base_url: str, key: str) -> list[Snippet]:
    return [f(base_url, key) for f in (browser_snippet, python_snippet, curl_snippet)]
