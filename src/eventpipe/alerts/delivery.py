"""One delivery attempt of an alert webhook, and the retry schedule around it.

`deliver` never raises for what a customer's endpoint can do wrong (refuse, time out, point
inward); it returns an `Attempt` that says what happened, for the worker to record and retry.

DNS rebinding: checking a name and then letting the HTTP client resolve it again would let a
hostile DNS server answer "public" to the check and "127.0.0.1" to the connect. So the check
runs inside the connect: `PublicOnlyBackend` resolves once, refuses inner addresses and
connects to an address it has just checked, never to the name.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpcore
import httpx

from eventpipe.alerts.addresses import RefusedAddress, check_url, resolve_public
from eventpipe.alerts.signing import signed_headers

EXCERPT_CHARS = 500
# UTF-8 needs at most 4 bytes a character, so this many bytes always yield EXCERPT_CHARS.
EXCERPT_BYTES = 4 * EXCERPT_CHARS
USER_AGENT = "eventpipe-alerts"


@dataclass(frozen=True)
class Attempt:
    """The outcome of one POST: a status, or an error (status None) saying why there is none."""

    status: int | None
    latency_ms: float
    error: str | None
    response_excerpt: str

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def gone(self) -> bool:
        """410 Gone: the receiver asks us to stop sending to this endpoint (Standard Webhooks)."""
        return self.status == 410


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses `resolve_public` approved.

    Connecting to the IP and not the name is safe for TLS: httpcore's connection calls
    `start_tls(server_hostname=<sni_hostname extension or the URL's host>)` on the stream
    we return (httpcore/_async/connection.py, `_connect`), so SNI and the certificate check
    still use the host name of the URL. `connect_unix_socket` is left to the base class,
    which raises: the pool is built without `uds`, so it is never called.
    """

    def __init__(self, *, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve_public(host, port, allow_private=self._allow_private)
        # Every address was checked, so falling back to the next one (e.g. IPv4 after an
        # unreachable IPv6) stays safe; the last one's error is the one reported.
        for address in addresses[:-1]:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError:
                continue
        return await self._inner.connect_tcp(
            addresses[-1], port, timeout, local_address, socket_options
        )

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


# httpcore's errors as httpx's, so the client keeps httpx's contract (the same pairs that
# httpx's own transport maps, in httpx/_transports/default.py).
_HTTPX_ERRORS: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.ProtocolError: httpx.ProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
}


@contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        mapped = next((_HTTPX_ERRORS[k] for k in type(exc).__mro__ if k in _HTTPX_ERRORS), None)
        if mapped is None:
            raise
        raise mapped(str(exc)) from exc


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: httpcore.Response) -> None:
        self._response = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for part in self._response.aiter_stream():
                yield part

    async def aclose(self) -> None:
        await self._response.aclose()


class PinnedTransport(httpx.AsyncBaseTransport):
    """httpx's transport over an httpcore pool that connects through `PublicOnlyBackend`.

    httpx 0.28's `AsyncHTTPTransport` takes no network backend; the alternative of replacing
    its private `_pool` could break on any httpx release. This uses public API only: httpx's
    transport interface and httpcore's `AsyncConnectionPool(network_backend=...)`.
    """

    def __init__(self, *, allow_private: bool) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=PublicOnlyBackend(allow_private=allow_private),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = await self._pool.handle_async_request(core_request)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def webhook_client(*, timeout_s: float, allow_private: bool) -> httpx.AsyncClient:
    """An HTTP client for webhooks: checked addresses only, no redirects, nothing from the env."""
    return httpx.AsyncClient(
        transport=PinnedTransport(allow_private=allow_private),
        timeout=httpx.Timeout(timeout_s),
        # A redirect could point inward (or anywhere): a 3xx is the receiver's answer.
        follow_redirects=False,
        # No .netrc credentials, no proxy or CA settings from the environment. (httpx skips
        # env proxies anyway once a transport is given; this keeps it true if that changes.)
        trust_env=False,
        # identity: the excerpt is read raw (see _read_excerpt), so ask for it uncompressed.
        headers={"user-agent": USER_AGENT, "accept-encoding": "identity"},
    )


async def deliver(
    url: str,
    *,
    secret: str,
    msg_id: str,
    body: bytes,
    timeout_s: float,
    allow_private: bool,
    now: Callable[[], float] = time.time,
) -> Attempt:
    """POST one signed alert to `url`; network failures are reported in the Attempt, not raised.

    `timeout_s` bounds the whole attempt (resolve, connect, send, answer), not each phase.
    """
    started = time.monotonic()
    status: int | None = None
    excerpt = ""
    error: str | None = None
    try:
        check_url(url, allow_private=allow_private)
        # Signed now, not when the alert fired: a retry hours later must be fresh to verify.
        headers = signed_headers(secret, msg_id, int(now()), body)
        async with asyncio.timeout(timeout_s):
            status, excerpt = await _post(url, headers, body, timeout_s, allow_private)
    except (TimeoutError, httpx.TimeoutException):
        error = f"timed out after {float(timeout_s)} s"
    except RefusedAddress as exc:
        error = f"refused: {exc}"
    except (httpx.TransportError, httpx.InvalidURL) as exc:
        error = _describe_error(exc)
    latency_ms = (time.monotonic() - started) * 1000
    return Attempt(status=status, latency_ms=latency_ms, error=error, response_excerpt=excerpt)


async def _post(
    url: str, headers: dict[str, str], body: bytes, timeout_s: float, allow_private: bool
) -> tuple[int, str]:
    async with (
        webhook_client(timeout_s=timeout_s, allow_private=allow_private) as client,
        client.stream("POST", url, content=body, headers=headers) as response,
    ):
        return response.status_code, await _read_excerpt(response)


async def _read_excerpt(response: httpx.Response) -> str:
    # Raw bytes, at most EXCERPT_BYTES: a huge (or compressed-bomb) answer is never read whole.
    received = bytearray()
    async for chunk in response.aiter_raw():
        received += chunk
        if len(received) >= EXCERPT_BYTES:
            break
    text = bytes(received[:EXCERPT_BYTES]).decode(response.encoding or "utf-8", errors="replace")
    return text[:EXCERPT_CHARS]


def _describe_error(exc: BaseException) -> str:
    """A short cause for the attempt's record, from the innermost error httpx and anyio wrapped."""
    chain = [exc]
    while (cause := chain[-1].__cause__ or chain[-1].__context__) and cause not in chain:
        chain.append(cause)
    if any(isinstance(link, ConnectionRefusedError) for link in chain):
        return "connection refused"
    tls = next((link for link in chain if isinstance(link, ssl.SSLError)), None)
    if tls is not None:
        return f"TLS failed: {tls}"
    root = chain[-1]
    return f"{type(exc).__name__}: {root}" if str(root) else type(exc).__name__
