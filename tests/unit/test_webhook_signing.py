"""Our Standard Webhooks signatures, checked against the official library in both directions."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from eventpipe.alerts.signing import SignatureError, new_secret, sign, signed_headers, verify

MSG_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
BODY = '{"alert":"error rate above 5 %","value":7.5,"naïve":"ü"}'.encode()


def test_new_secret_is_32_random_bytes_behind_the_prefix() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert new_secret() != secret


def test_our_signature_verifies_with_the_official_library() -> None:
    secret = new_secret()
    headers = signed_headers(secret, MSG_ID, int(time.time()), BODY)
    assert headers["content-type"] == "application/json"
    assert Webhook(secret).verify(BODY, headers)["value"] == 7.5
    verify(secret, headers, BODY)


def test_known_vector_matches_the_official_library() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    timestamp = 1614265330
    theirs = Webhook(secret).sign(MSG_ID, datetime.fromtimestamp(timestamp, tz=UTC), BODY.decode())
    assert sign(secret, MSG_ID, timestamp, BODY) == theirs


def test_the_spec_example_vector() -> None:
    # The test vector of the Standard Webhooks specification's reference libraries.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected


@pytest.mark.parametrize(
    "tamper",
    ["body", "timestamp", "secret", "msg_id"],
)
def test_tampering_fails_ours_and_theirs(tamper: str) -> None:
    secret = new_secret()
    now = int(time.time())
    headers = signed_headers(secret, MSG_ID, now, BODY)
    body = BODY
    check_secret = secret
    if tamper == "body":
        body = BODY.replace(b"7.5", b"0.5")
    elif tamper == "timestamp":
        headers["webhook-timestamp"] = str(now - 1)
    elif tamper == "secret":
        check_secret = new_secret()
    else:
        headers["webhook-id"] = "msg_other"
    with pytest.raises(SignatureError, match="no matching signature"):
        verify(check_secret, headers, body)
    with pytest.raises(WebhookVerificationError):
        Webhook(check_secret).verify(body, headers)


def test_any_of_several_signatures_matches_and_header_names_ignore_case() -> None:
    secret, rotated = new_secret(), new_secret()
    now = int(time.time())
    good = sign(secret, MSG_ID, now, BODY)
    headers = {
        "Webhook-Id": MSG_ID,
        "Webhook-Timestamp": str(now),
        "Webhook-Signature": f"v2,abc v1,not-base64! {sign(rotated, MSG_ID, now, BODY)} {good}",
    }
    verify(secret, headers, BODY)


@pytest.mark.parametrize("offset_s", [-301, 301])
def test_timestamps_outside_the_tolerance_are_refused(offset_s: int) -> None:
    secret = new_secret()
    headers = signed_headers(secret, MSG_ID, 1_700_000_000, BODY)
    verify(secret, headers, BODY, now=1_700_000_000 - 300)
    with pytest.raises(SignatureError, match="more than 300 s from now"):
        verify(secret, headers, BODY, now=1_700_000_000 - offset_s)


def test_missing_or_malformed_headers_are_refused() -> None:
    secret = new_secret()
    headers = signed_headers(secret, MSG_ID, int(time.time()), BODY)
    with pytest.raises(SignatureError, match="missing"):
        verify(secret, {k: v for k, v in headers.items() if k != "webhook-id"}, BODY)
    with pytest.raises(SignatureError, match="not an integer"):
        verify(secret, headers | {"webhook-timestamp": "soon"}, BODY)
