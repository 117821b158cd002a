"""Six calls through segment-analytics-python or rudder-sdk-python, unchanged, then a flush.

Usage: python send.py --sdk segment|rudder HOST_URL WRITE_KEY RUN_ID

Run it with the interpreter of a venv that has only that SDK installed
(requirements-segment.txt or requirements-rudder.txt). Prints one JSON line with the
messageIds the SDK assigned; exits 1 if the SDK reported a delivery error.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

# --sdk: (distribution, the SDK's package)
SDKS = {
    "segment": ("segment-analytics-python", "segment.analytics"),
    "rudder": ("rudder-sdk-python", "rudderstack.analytics"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sdk", choices=SDKS, required=True)
    parser.add_argument("host_url")
    parser.add_argument("write_key")
    parser.add_argument("run_id")
    args = parser.parse_args()
    distribution, package = SDKS[args.sdk]
    # Imported by name: each venv has only one of the two SDKs.
    client_module = importlib.import_module(f"{package}.client")
    version = importlib.import_module(f"{package}.version").VERSION

    errors: list[str] = []

    def on_error(error: Exception, batch: list[Any]) -> None:
        errors.append(f"{type(error).__name__}: {error} ({len(batch)} messages)")

    client = client_module.Client(
        args.write_key,
        host=args.host_url,
        on_error=on_error,
        upload_interval=0.05,
        max_retries=2,
        timeout=5,
    )
    user = f"user-{args.run_id}"
    calls = {
        "track": client.track(user, "Order Completed", {"revenue": 19.99, "currency": "USD"}),
        "identify": client.identify(user, {"email": "ada@example.com", "plan": "pro"}),
        "page": client.page(user, name="Pricing", properties={"path": "/pricing"}),
        "screen": client.screen(user, name="Home"),
        "group": client.group(user, f"acme-{args.run_id}", {"name": "Acme"}),
        "alias": client.alias(f"anon-{args.run_id}", user),
    }
    client.shutdown()  # flush the queue, then stop the consumer thread

    errors += [f"{kind} was not queued" for kind, (queued, _) in calls.items() if not queued]
    message_ids = {kind: message["messageId"] for kind, (_, message) in calls.items()}
    line = {"sdk": distribution, "version": version, "messageIds": message_ids}
    sys.stdout.write(json.dumps(line) + "\n")
    if errors:
        sys.stderr.write("delivery failed: " + "; ".join(errors) + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
