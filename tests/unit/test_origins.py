"""Write keys' allowed origins and the CORS headers of ingest: pure logic."""

from __future__ import annotations

import msgspec
import orjson
import pytest

from eventpipe.auth.origins import normalize_origin, origin_allowed, preflight_headers
from eventpipe.domain.events import NULL
from eventpipe.ingest.context import traits_of, with_ip


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("HTTPS://Shop.Example.COM/", "https://shop.example.com"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("https://*.example.com", "https://*.example.com"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_origins_are_stored_in_one_form(given: str, stored: str) -> None:
    assert normalize_origin(given) == stored


@pytest.mark.parametrize(
    "bad", ["example.com", "https://a.b/c", "https://a.b?x=1", "https://*", "https://*.com",
            "https://a*.b.com", "javascript:alert(1)", "https://u:p@a.b", "https://a.b:0x50"],
)  # fmt: skip
def test_what_is_not_an_origin_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="origin|more than|wildcard|port"):
        normalize_origin(bad)


def test_any_origin_when_none_are_listed_and_only_listed_ones_otherwise() -> None:
    assert origin_allowed("https://anything.example", ())
    allowed = ("https://shop.example.com", "https://*.example.org:8443")
    assert origin_allowed("https://SHOP.example.com", allowed)
    assert origin_allowed("https://a.example.org:8443", allowed)
    assert not origin_allowed("https://a.example.org", allowed)
    assert not origin_allowed("https://example.org:8443", allowed)
    assert not origin_allowed("http://shop.example.com", allowed)
    assert not origin_allowed("null", allowed)


def test_a_preflight_echoes_plain_header_names_only() -> None:
    assert preflight_headers("https://a.b", "content-type,x-y")["Access-Control-Allow-Headers"] == (
        "content-type,x-y"
    )
    odd = preflight_headers("https://a.b", "a\nb")["Access-Control-Allow-Headers"]
    assert odd.startswith("Authorization")


IP = orjson.dumps("203.0.113.9")


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (NULL, {"ip": "203.0.113.9"}),
        (b"{}", {"ip": "203.0.113.9"}),
        (b'{ "locale": "de" }', {"ip": "203.0.113.9", "locale": "de"}),
        (b'{"ip": "192.0.2.1", "x": 1}', {"ip": "192.0.2.1", "x": 1}),
        # "ip" as a value or a nested key is not the client's address.
        (b'{"kind": "ip"}', {"ip": "203.0.113.9", "kind": "ip"}),
        (b'{"app": {"ip": "x"}}', {"ip": "203.0.113.9", "app": {"ip": "x"}}),
    ],
)
def test_context_ip_is_added_where_the_client_sent_none(
    context: bytes | msgspec.Raw, expected: object
) -> None:
    raw = context if isinstance(context, msgspec.Raw) else msgspec.Raw(context)
    assert orjson.loads(bytes(with_ip(raw, IP, 0))) == expected
    assert with_ip(raw, None, 0) is raw


def test_an_identify_without_traits_takes_rudderstacks_context_traits() -> None:
    context = msgspec.Raw(b'{"library": {"name": "x"}, "traits": {"plan": "pro"}}')
    assert orjson.loads(bytes(traits_of(NULL, context, 0))) == {"plan": "pro"}
    own = msgspec.Raw(b'{"plan": "free"}')
    assert traits_of(own, context, 0) is own
    assert traits_of(NULL, msgspec.Raw(b'{"traits": "no"}'), 0) is NULL
    assert traits_of(NULL, NULL, 0) is NULL
