"""Where a request comes from: the direct peer, or, behind configured trusted proxies, the right-most
``X-Forwarded-For`` hop that is not one of them.

Anyone can write ``X-Forwarded-For``; only the hops our own proxies appended can be believed. Walking the
header from the right and skipping our proxies, the first other address is the one our outermost proxy saw
connect: everything to its left was written by the client. With no trusted proxies (the default) the header
is ignored. Run uvicorn with ``proxy_headers=False`` (``lookloop serve`` does): its own proxy handling would
otherwise rewrite the peer from the header before the app sees it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from functools import lru_cache

from fastapi.requests import HTTPConnection

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

__all__ = ["client_address", "forwarded_client", "trusted_networks"]


@lru_cache(maxsize=8)
def trusted_networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


def _address(text: str) -> Address | None:
    text = text.strip().strip('"')
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "192.0.2.1:443"
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address | None, networks: Sequence[Network]) -> bool:
    return address is not None and any(address in net for net in networks)


def forwarded_client(peer: str, forwarded_for: Iterable[str], networks: Sequence[Network]) -> str:
    """The client's address from the direct ``peer`` and the ``X-Forwarded-For`` header values."""
    peer_address = _address(peer)
    if not networks or not _trusted(peer_address, networks):
        return str(peer_address) if peer_address is not None else peer
    hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
    nearest = str(peer_address)
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            # Not an address: none of our proxies wrote it, so the nearest hop we could read is the client.
            return nearest
        if not _trusted(address, networks):
            return str(address)
        nearest = str(address)
    return nearest  # every hop is one of our proxies: the left-most is the client


def client_address(connection: HTTPConnection) -> str:
    """The client's address for rate limits and sign-in back-off (cached on the request)."""
    cached = connection.scope.get("lookloop.client_address")
    if isinstance(cached, str):
        return cached
    peer = connection.client.host if connection.client else "unknown"
    entries = tuple(connection.app.state.system.settings.trusted_proxies)
    address = forwarded_client(peer, connection.headers.getlist("x-forwarded-for"), trusted_networks(entries))
    connection.scope["lookloop.client_address"] = address
    return address
