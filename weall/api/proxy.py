"""The client address of a request, with proxy headers trusted only from proxies.

A request's peer is the TCP address hypercorn accepted it from. Only when
that peer is in ``WEALL_TRUSTED_PROXIES`` does the node read the forwarding
header named by ``WEALL_FORWARDED_HEADER`` (``X-Forwarded-For`` or the
RFC 7239 ``Forwarded`` header). The header lists hops from the original
client to the last proxy, so the node walks it from the right, skipping
addresses of trusted proxies, and takes the first address that is not one.
Everything left of that address was written by someone the node does not
trust, so a client cannot choose its own identity by sending the header.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any, Final

__all__ = ["IpAddress", "TrustedProxies", "client_address", "parse_forwarded_for"]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A forwarding header longer than this is treated as absent hops beyond it.
MAX_HOPS: Final = 32


class TrustedProxies:
    """The networks whose forwarding headers the node believes."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks: tuple[IpNetwork, ...] = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in entries
        )

    def __bool__(self) -> bool:
        return bool(self.networks)

    def contains(self, address: IpAddress) -> bool:
        return any(address in network for network in self.networks)


def parse_address(text: str) -> IpAddress | None:
    """Parse one hop: ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1`` or ``"[::1]"``."""
    value = text.strip().strip('"').strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        value = value[1:end]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _forwarded_elements(value: str) -> list[str]:
    """Split a ``Forwarded`` value into its ``for=`` values, in order."""
    found: list[str] = []
    for element in value.split(","):
        for pair in element.split(";"):
            name, sep, item = pair.partition("=")
            if sep and name.strip().lower() == "for":
                found.append(item)
    return found


def parse_forwarded_for(header_name: str, values: Sequence[str]) -> list[str]:
    """Return the raw hop strings of every header line, leftmost first."""
    hops: list[str] = []
    for value in values:
        if header_name == "forwarded":
            hops.extend(_forwarded_elements(value))
        else:
            hops.extend(part for part in value.split(","))
    return hops[-MAX_HOPS:]


def _header_values(scope: dict[str, Any], header_name: str) -> list[str]:
    wanted = header_name.encode("latin-1")
    return [
        value.decode("latin-1")
        for name, value in scope.get("headers", [])
        if name.lower() == wanted
    ]


def client_address(
    scope: dict[str, Any], trusted: TrustedProxies, header_name: str
) -> IpAddress | None:
    """Return the client address of an ASGI ``scope``, or ``None`` without a peer.

    A hop that does not parse ends the walk at the last address that did,
    which is a trusted proxy's, so every such request shares that identity.
    """
    client = scope.get("client")
    peer = parse_address(str(client[0])) if client else None
    if peer is None or not trusted.contains(peer):
        return peer
    current = peer
    for raw in reversed(
        parse_forwarded_for(header_name, _header_values(scope, header_name))
    ):
        hop = parse_address(raw)
        if hop is None:
            return current
        current = hop
        if not trusted.contains(hop):
            return hop
    return current
