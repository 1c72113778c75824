"""The client's address behind reverse proxies the node trusts, from ``X-Forwarded-For``.

Each proxy appends the address it got the request from, so the header reads
``client, proxy1, proxy2`` and the TCP peer is the last proxy. Only entries added by
trusted proxies can be believed: walking from the right, the first address that is not
a trusted proxy is the client. A peer that is not trusted is the client itself, whatever
the header says (anyone can send one).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

HEADER = "X-Forwarded-For"


def parse_trusted(entries: Iterable[str]) -> tuple[Network, ...]:
    """The networks of ``entries`` (addresses such as ``10.0.0.5`` or CIDRs such as
    ``10.0.0.0/8``); raises ``ValueError`` naming an entry that is neither."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
    return tuple(networks)


@functools.lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return parse_trusted(entries)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(peer: str, forwarded_for: Iterable[str], trusted: Sequence[str]) -> str:
    """The address to record for a client whose TCP peer is ``peer``.

    ``forwarded_for`` holds the request's ``X-Forwarded-For`` header values (there may be
    several); ``trusted`` the proxies' addresses or CIDRs. With no trusted proxy, or a
    peer that is not one, this is ``peer``. Otherwise it is the right-most entry that is
    not a trusted proxy; when every entry is one, the left-most; an entry that is not an
    address stops the walk at the trusted hop that reported it.
    """
    if not trusted:
        return peer
    networks = _networks(tuple(trusted))
    if not _trusted(peer, networks):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    address = peer
    for hop in reversed(hops):
        try:
            ip = ipaddress.ip_address(hop)
        except ValueError:
            return address
        address = str(ip)
        if not any(ip in network for network in networks):
            return address
    return address
