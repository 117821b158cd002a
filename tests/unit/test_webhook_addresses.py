"""The SSRF guard: which webhook URLs and resolved addresses are refused, and why."""

from __future__ import annotations

import asyncio
import re

import pytest

from eventpipe.alerts.addresses import RefusedAddress, check_url, resolve_public

INNER = [
    ("http://0.0.0.0/", "unspecified"),
    ("http://127.0.0.1:8080/hook", "loopback"),
    ("http://127.1.2.3/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://10.0.0.1/", "private"),
    ("http://172.16.5.4/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://[fc00::1]/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://100.64.0.1/", "shared"),
    ("http://240.0.0.1/", "reserved"),
    ("http://255.255.255.255/", "reserved"),
    ("http://[::]/", "unspecified"),
    ("http://[::ffff:127.0.0.1]/", "loopback address (embedded in IPv6)"),
    ("http://[::ffff:10.1.2.3]/", "private address (embedded in IPv6)"),
    ("http://[::ffff:169.254.169.254]/", "link-local address (embedded in IPv6)"),
]


@pytest.mark.parametrize(("url", "kind"), INNER)
def test_inner_ip_literals_are_refused(url: str, kind: str) -> None:
    with pytest.raises(RefusedAddress, match=f"is an? {re.escape(kind)}"):
        check_url(url, allow_private=False)


@pytest.mark.parametrize("url", [url for url, _ in INNER])
def test_allow_private_lets_inner_ip_literals_through(url: str) -> None:
    check_url(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "https://8.8.8.8/hook",
        "http://[2606:4700:4700::1111]:8443/",
        "https://[::ffff:8.8.8.8]/",
        "https://hooks.example.com/alerts?x=1",
        "HTTPS://Hooks.Example.com:443/",
        # Host names pass here; resolve_public checks them at connect time.
        "http://localhost/",
    ],
)
def test_public_and_named_hosts_pass(url: str) -> None:
    check_url(url, allow_private=False)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/", "scheme 'ftp'"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("gopher://127.0.0.1:6379/_INFO", "scheme 'gopher'"),
        ("example.com/hook", "scheme '(none)'"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://token@example.com/", "credentials"),
        ("https://example.com@127.0.0.1/", "credentials"),
        ("https:///path-only", "no host"),
        ("https://example.com:0/", "port"),
        ("https://example.com:65536/", "port"),
        ("https://example.com:http/", "port"),
    ],
)
def test_bad_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(RefusedAddress, match=re.escape(reason)):
        check_url(url, allow_private=True)


def test_localhost_is_refused_when_resolved() -> None:
    with pytest.raises(RefusedAddress, match=r"resolves to (127\.0\.0\.1|::1), a loopback address"):
        asyncio.run(resolve_public("localhost", 80, allow_private=False))


def test_numeric_forms_of_loopback_are_refused_when_resolved() -> None:
    # 2130706433 is 127.0.0.1 as one number: no IP literal to ipaddress, but the resolver
    # (inet_aton) reads it as one, so check_url lets it pass and the connect-time check refuses.
    check_url("http://2130706433/", allow_private=False)
    with pytest.raises(RefusedAddress, match=r"resolves to 127\.0\.0\.1, a loopback address"):
        asyncio.run(resolve_public("2130706433", 80, allow_private=False))


def test_resolve_public_returns_the_addresses_when_allowed() -> None:
    found = asyncio.run(resolve_public("localhost", 80, allow_private=True))
    assert set(found) <= {"127.0.0.1", "::1"}
    assert found


def test_a_public_ip_literal_resolves_to_itself() -> None:
    # Numeric hosts never reach a DNS server: this stays a unit test without network.
    assert asyncio.run(resolve_public("8.8.8.8", 443, allow_private=False)) == ["8.8.8.8"]
