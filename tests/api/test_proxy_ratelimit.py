"""Unit tests of client identity, token buckets and the new api settings."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from weall.api.proxy import TrustedProxies, client_address, parse_address
from weall.api.ratelimit import TokenBuckets, client_key
from weall.config import load
from weall.errors import ConfigError

TRUSTED = TrustedProxies(["10.0.0.1", "192.168.0.0/16", "::1"])


def _scope(peer: str, headers: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    return {
        "client": (peer, 5555),
        "headers": [(n.lower().encode(), v.encode()) for n, v in headers or []],
    }


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        ("203.0.113.5", [("X-Forwarded-For", "1.1.1.1")], "203.0.113.5"),
        ("10.0.0.1", [("X-Forwarded-For", "198.51.100.9")], "198.51.100.9"),
        ("10.0.0.1", [("X-Forwarded-For", "6.6.6.6, 198.51.100.9")], "198.51.100.9"),
        (
            "10.0.0.1",
            [("X-Forwarded-For", "198.51.100.9, 192.168.4.4")],
            "198.51.100.9",
        ),
        (
            "10.0.0.1",
            [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "198.51.100.9")],
            "198.51.100.9",
        ),
        ("10.0.0.1", [("X-Forwarded-For", "garbage, 198.51.100.9")], "198.51.100.9"),
        ("10.0.0.1", [("X-Forwarded-For", "198.51.100.9, garbage")], "10.0.0.1"),
        ("10.0.0.1", [], "10.0.0.1"),
        ("10.0.0.1", [("X-Forwarded-For", "192.168.1.1")], "192.168.1.1"),
        ("10.0.0.1", [("Forwarded", "for=198.51.100.9")], "10.0.0.1"),
        ("::1", [("X-Forwarded-For", "[2001:db8::5]:443")], "2001:db8::5"),
        ("::ffff:10.0.0.1", [("X-Forwarded-For", "198.51.100.9:1234")], "198.51.100.9"),
    ],
    ids=[
        "untrusted-peer",
        "trusted",
        "forged-left",
        "proxy-chain",
        "two-lines",
        "garbage-left",
        "garbage-right",
        "no-header",
        "all-trusted",
        "other-header",
        "ipv6",
        "mapped-ipv4",
    ],
)
def test_client_address_xff(
    peer: str, headers: list[tuple[str, str]], expected: str
) -> None:
    address = client_address(_scope(peer, headers), TRUSTED, "x-forwarded-for")
    assert address == ipaddress.ip_address(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("for=198.51.100.9", "198.51.100.9"),
        ('for="[2001:db8::7]:80";proto=https', "2001:db8::7"),
        ("for=6.6.6.6, for=198.51.100.9;by=10.0.0.1", "198.51.100.9"),
        ("for=_hidden", "10.0.0.1"),
    ],
    ids=["plain", "ipv6-quoted", "two-elements", "obfuscated"],
)
def test_client_address_forwarded(value: str, expected: str) -> None:
    address = client_address(
        _scope("10.0.0.1", [("Forwarded", value)]), TRUSTED, "forwarded"
    )
    assert address == ipaddress.ip_address(expected)


def test_client_address_without_peer() -> None:
    assert (
        client_address({"client": None, "headers": []}, TRUSTED, "x-forwarded-for")
        is None
    )


@pytest.mark.parametrize("text", ["", "unknown", "1.2.3", "[::1", "999.1.1.1", "a:b:c"])
def test_parse_address_rejects_garbage(text: str) -> None:
    assert parse_address(text) is None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_burst_then_refill() -> None:
    clock = Clock()
    buckets = TokenBuckets(2.0, 3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)
    assert buckets.take("b") == 0.0
    clock.now = 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0


def test_token_bucket_caps_at_burst() -> None:
    clock = Clock()
    buckets = TokenBuckets(1.0, 2, clock=clock)
    buckets.take("a")
    clock.now = 1000.0
    assert [buckets.take("a") for _ in range(2)] == [0.0, 0.0]
    assert buckets.take("a") > 0


def test_token_bucket_table_is_bounded() -> None:
    buckets = TokenBuckets(1.0, 1, max_clients=10, clock=Clock())
    for index in range(100):
        buckets.take(f"client-{index}")
    assert len(buckets) == 10


def test_client_key_groups_ipv6_by_64() -> None:
    first = client_key(ipaddress.ip_address("2001:db8:1:2::1"))
    second = client_key(ipaddress.ip_address("2001:db8:1:2:ffff::9"))
    assert first == second == "2001:db8:1:2::/64"
    assert client_key(ipaddress.ip_address("198.51.100.1")) == "198.51.100.1"
    assert client_key(None) == "unknown"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WEALL_TRUSTED_PROXIES", "10.0.0.1,not-an-ip"),
        ("WEALL_FORWARDED_HEADER", "x-real-ip"),
        ("WEALL_API_HEADER_TIMEOUT_S", "0"),
        ("WEALL_API_BODY_TIMEOUT_S", "soon"),
    ],
    ids=["proxies", "header", "header-timeout", "body-timeout"],
)
def test_api_settings_are_validated(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load({name: value})
    assert caught.value.variable == name


def test_api_settings_parse() -> None:
    config = load(
        {
            "WEALL_TRUSTED_PROXIES": "10.0.0.1, 192.168.0.0/16",
            "WEALL_FORWARDED_HEADER": "forwarded",
            "WEALL_API_HEADER_TIMEOUT_S": "5",
            "WEALL_API_BODY_TIMEOUT_S": "7.5",
        }
    )
    assert config.trusted_proxies == ("10.0.0.1", "192.168.0.0/16")
    assert config.forwarded_header == "forwarded"
    assert config.api_header_timeout_s == 5.0
    assert config.api_body_timeout_s == 7.5
