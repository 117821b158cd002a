"""Alert webhook delivery against a real HTTP receiver on 127.0.0.1.

The receiver is a stdlib ThreadingHTTPServer in a background thread: it records each request
and answers as told. No Kafka, Redis or PostgreSQL here.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks import Webhook

from eventpipe.alerts import delivery
from eventpipe.alerts.delivery import Attempt, deliver
from eventpipe.alerts.signing import new_secret, verify
from tests.integration.support import free_port, wait_for

SLOW_HANDLER_LIMIT_S = 30
BODY = json.dumps({"alert": "error rate", "value": 7.5, "note": "ünïcode"}).encode()


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """What the handler answers (`status`, `mode`) and what it has received."""

    port: int = 0
    status: int = 200
    # "plain", "slow" (waits past any client timeout), "big" (1 MB answer), "redirect".
    mode: str = "plain"
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/alerts"

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.requests)


@dataclass
class FixedResolver:
    """Stands in for resolve_public: answers one address and records every question."""

    address: str
    asked: list[tuple[str, int, bool]] = field(default_factory=list)

    async def __call__(self, host: str, port: int, *, allow_private: bool) -> list[str]:
        self.asked.append((host, port, allow_private))
        return [self.address]


class _ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True
    receiver: Receiver


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        receiver = cast(_ReceiverServer, self.server).receiver
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        with receiver.lock:
            headers = {name.lower(): value for name, value in self.headers.items()}
            receiver.requests.append(Received(self.path, headers, body))
        if receiver.mode == "slow":
            receiver.release.wait(SLOW_HANDLER_LIMIT_S)
        answer = ("é" * 300_000).encode() if receiver.mode == "big" else b"answer from receiver"
        self.send_response(302 if receiver.mode == "redirect" else receiver.status)
        if receiver.mode == "redirect":
            self.send_header("location", "http://169.254.169.254/latest/meta-data/")
        self.send_header("content-type", "text/plain; charset=utf-8")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = _ReceiverServer(("127.0.0.1", 0), _Handler)
    server.receiver = Receiver(port=server.server_address[1])
    # A short poll interval: shutdown() waits up to one interval for the loop to notice.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.receiver
    server.receiver.release.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def send(url: str, secret: str, *, timeout_s: float = 5.0, allow_private: bool = True) -> Attempt:
    return asyncio.run(
        deliver(
            url,
            secret=secret,
            msg_id="msg_test_1",
            body=BODY,
            timeout_s=timeout_s,
            allow_private=allow_private,
        )
    )


def test_delivered_request_verifies_with_the_official_library_and_ours(
    receiver: Receiver,
) -> None:
    secret = new_secret()
    attempt = send(receiver.url, secret)
    assert attempt.ok and attempt.status == 200 and attempt.error is None
    assert attempt.response_excerpt == "answer from receiver"
    assert attempt.latency_ms > 0
    [request] = receiver.received()
    assert request.path == "/hooks/alerts"
    assert request.body == BODY
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == "msg_test_1"
    assert Webhook(secret).verify(request.body, request.headers)["value"] == 7.5
    verify(secret, request.headers, request.body)


@pytest.mark.parametrize(("status", "gone"), [(500, False), (410, True), (404, False)])
def test_error_statuses_are_reported(receiver: Receiver, status: int, gone: bool) -> None:
    receiver.status = status
    attempt = send(receiver.url, new_secret())
    assert attempt.status == status
    assert not attempt.ok
    assert attempt.gone is gone
    assert attempt.error is None
    assert attempt.response_excerpt == "answer from receiver"


def test_a_redirect_is_reported_not_followed(receiver: Receiver) -> None:
    receiver.mode = "redirect"
    attempt = send(receiver.url, new_secret())
    assert attempt.status == 302 and not attempt.ok
    assert len(receiver.received()) == 1


def test_a_large_answer_is_cut_to_the_excerpt(receiver: Receiver) -> None:
    receiver.mode = "big"
    attempt = send(receiver.url, new_secret())
    assert attempt.ok
    assert attempt.response_excerpt == "é" * 500


def test_a_slow_receiver_times_out(receiver: Receiver) -> None:
    receiver.mode = "slow"
    attempt = send(receiver.url, new_secret(), timeout_s=0.5)
    assert attempt.status is None
    assert attempt.error == "timed out after 0.5 s"
    assert not attempt.ok
    wait_for(lambda: len(receiver.received()) == 1, timeout=5, what="the slow request recorded")


def test_a_closed_port_is_connection_refused() -> None:
    attempt = send(f"http://127.0.0.1:{free_port()}/", new_secret())
    assert attempt.status is None
    assert attempt.error == "connection refused"


def test_loopback_literal_is_refused_without_allow_private(receiver: Receiver) -> None:
    attempt = send(receiver.url, new_secret(), allow_private=False)
    assert attempt.status is None
    assert attempt.error == "refused: 127.0.0.1 is a loopback address"
    assert receiver.received() == []


def test_name_resolving_to_loopback_is_refused_at_connect_time(receiver: Receiver) -> None:
    url = f"http://localhost:{receiver.port}/hooks/alerts"
    attempt = send(url, new_secret(), allow_private=False)
    assert attempt.status is None
    assert attempt.error is not None
    assert attempt.error.startswith("refused: resolves to ")
    assert attempt.error.endswith(", a loopback address")
    assert receiver.received() == []


def test_the_connection_goes_to_the_checked_address_not_the_name(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A name that cannot resolve (.invalid) is "resolved" once by the checked resolver; the
    # request arrives, so the client connected to that answer and never resolved the name.
    resolver = FixedResolver("127.0.0.1")
    monkeypatch.setattr(delivery, "resolve_public", resolver)
    attempt = send(f"http://rebind.invalid:{receiver.port}/x", new_secret(), allow_private=False)
    assert attempt.ok, attempt.error
    assert resolver.asked == [("rebind.invalid", receiver.port, False)]
    [request] = receiver.received()
    assert request.headers["host"] == f"rebind.invalid:{receiver.port}"


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_uses_the_url_host_name_while_connecting_to_the_checked_ip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The backend connects to an IP; httpcore must still pass the URL's host name to
    # start_tls, for SNI and for the certificate check. A TLS listener records the SNI name;
    # its self-signed certificate is (rightly) refused by the client.
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(*_self_signed(tmp_path, "hooks.example.test"))
    seen: list[str | None] = []

    def record_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        seen.append(name)

    server_context.sni_callback = record_sni
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept_one() -> None:
        conn, _ = listener.accept()
        try:
            with server_context.wrap_socket(conn, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass  # the client hangs up on the untrusted certificate

    thread = threading.Thread(target=accept_one, daemon=True)
    thread.start()

    resolver = FixedResolver("127.0.0.1")
    monkeypatch.setattr(delivery, "resolve_public", resolver)
    try:
        attempt = send(f"https://hooks.example.test:{port}/", new_secret(), allow_private=False)
    finally:
        thread.join(timeout=10)
        listener.close()
    assert resolver.asked == [("hooks.example.test", port, False)]
    assert seen == ["hooks.example.test"]
    assert attempt.status is None
    assert attempt.error is not None and "CERTIFICATE_VERIFY_FAILED" in attempt.error
