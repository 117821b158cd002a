"""The SSRF guard of alert webhooks: a customer's URL may only reach the public internet.

Two checks, because a URL can name an inner address in two ways. `check_url` runs when a
webhook is saved and before each attempt: it refuses odd URLs and IP literals pointing
inward. `resolve_public` runs at connect time, inside the delivery's network backend, on the
name the HTTP client actually connects to: it catches names that resolve inward (`localhost`,
`127.0.0.1.nip.io`, `2130706433`) and DNS rebinding, since its answer is the one connected to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOWED_SCHEMES = frozenset({"http", "https"})
# Carrier-grade NAT space (RFC 6598): not "private" to Python, but never a customer's server.
SHARED_NETWORK = ipaddress.IPv4Network("100.64.0.0/10")


class RefusedAddress(ValueError):
    """A webhook URL or the address it resolves to is not allowed; the message says why."""


class NotResolved(RefusedAddress):
    """The name does not resolve: refused at delivery, let through at creation."""


def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse a URL that is not plain http(s) to a host, or whose IP literal host is not public.

    Host names pass here: they are checked when connecting, by `resolve_public`.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise RefusedAddress(f"scheme {parts.scheme or '(none)'!r} is not http or https")
    # Credentials in the URL would be sent to the receiver and shown wherever the URL is.
    if "@" in parts.netloc:
        raise RefusedAddress("credentials in the URL (user:password@) are not allowed")
    host = parts.hostname
    if not host:
        raise RefusedAddress("the URL has no host")
    _check_port(parts)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    if not allow_private:
        _refuse_if_inner(address, f"{host} is")


def _check_port(parts: SplitResult) -> None:
    try:
        port = parts.port
    except ValueError:
        raise RefusedAddress("the port is not a number from 1 to 65535") from None
    if port == 0:
        raise RefusedAddress("the port is not a number from 1 to 65535")


async def resolve_public(host: str, port: int, *, allow_private: bool) -> list[str]:
    """The addresses `host` resolves to, in resolver order; refused if any one is not public.

    Refusing when any address is inner, not only the first, keeps the answer independent of
    which address a client would pick.
    """
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NotResolved(f"{host} does not resolve ({exc.strerror})") from None
    found = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not found:
        raise NotResolved(f"{host} does not resolve")
    if not allow_private:
        for text in found:
            _refuse_if_inner(ipaddress.ip_address(text), f"resolves to {text},")
    return found


async def check_resolved(url: str, *, allow_private: bool, timeout_s: float = 2.0) -> None:
    """At a rule's creation: refused if the URL's host resolves, now, to an inner address. A name
    that does not resolve yet (or not within `timeout_s`) passes: every delivery resolves and
    checks it again, and connects only to the addresses it checked."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        async with asyncio.timeout(timeout_s):
            await resolve_public(host, port, allow_private=allow_private)
    except (NotResolved, TimeoutError):
        return


def _refuse_if_inner(address: IPAddress, subject: str) -> None:
    kind = inner_kind(address)
    if kind is not None:
        raise RefusedAddress(f"{subject} {kind}")


def inner_kind(address: IPAddress) -> str | None:
    """What kind of non-public address this is (e.g. "a loopback address"), or None if public."""
    if isinstance(address, ipaddress.IPv6Address):
        # ::ffff:127.0.0.1 and 6to4's 2002:7f00:1:: reach the IPv4 address they embed.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            kind = inner_kind(embedded)
            return None if kind is None else f"{kind} (embedded in IPv6)"
        if address.is_site_local:
            return "a site-local address"
    return _ip_kind(address)


def _ip_kind(address: IPAddress) -> str | None:
    # Order matters: the specific kinds first, since Python also counts most of them private.
    checks = (
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address in SHARED_NETWORK, "a shared (carrier-grade NAT) address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        # Anything else Python does not call global (e.g. documentation ranges it may add).
        (not address.is_global, "a non-public address"),
    )
    return next((kind for matched, kind in checks if matched), None)
