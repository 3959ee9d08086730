"""Bootstrap lists published in DNS: ``/dnsaddr/<name>/p2p/<peer id>``
(docs/operations.md §6).

The libp2p ``dnsaddr`` convention: the TXT records of ``_dnsaddr.<name>`` each
hold ``dnsaddr=<multiaddr>``. A network's operators can publish the addresses of
their bootstrap nodes there and change them without handing out new bootstrap
addresses. A node keeps the records that end in the peer id its own address
pins, ``/p2p/<peer id>``: a record for another peer is someone else's entry of
the same list, and is skipped. Kept records are ``/ip4|ip6|dns4|dns6|dns/…/tcp/
<port>/p2p/<peer id>`` (then resolved like any bootstrap address) or another
``/dnsaddr/<name>/p2p/<peer id>`` (followed to :data:`MAX_DEPTH` levels, with
:data:`MAX_LOOKUPS` TXT queries in all; a nested list that cannot be read is
skipped, the named one is an error); records of other transports (QUIC,
WebSocket) and records that are not multiaddrs are skipped. At most
:data:`MAX_FOUND` addresses are kept, and a whole resolution, the names the
list gives included, has :data:`BUDGET` seconds: a list, or a DNS server, cannot
hold up the node's other dials for longer than a dial's budget.

The peer id is pinned by the operator, not by DNS: whoever answers a dial must
prove that id, so a lying DNS server can make a dial fail, never make the node
join another peer. That is why a ``/dnsaddr`` address without ``/p2p/<peer
id>`` is refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from gossipmind.core.errors import NetworkError

PREFIX = "dnsaddr="
MAX_DEPTH = 3  # /dnsaddr records naming another /dnsaddr, followed this deep
MAX_LOOKUPS = 8  # TXT queries for one bootstrap address
MAX_RECORDS = 64  # TXT records read from one name
MAX_FOUND = 8  # addresses of the peer kept from a list: resolved and dialled in turn
LOOKUP_TIMEOUT = 5.0
BUDGET = 10.0  # seconds for a whole /dnsaddr resolution, lists and listed names

TxtLookup = Callable[[str], Awaitable[list[str]]]  # a TXT name -> its records' text


async def system_txt(qname: str) -> list[str]:
    """The TXT records of ``qname``, asked of the system's DNS servers
    (``/etc/resolv.conf``)."""
    import dns.asyncresolver
    import dns.resolver

    try:
        resolver = dns.asyncresolver.Resolver()
    except (dns.resolver.NoResolverConfiguration, OSError) as exc:
        raise NetworkError(f"no DNS server is configured on this host: {exc}") from exc
    return await txt_via(resolver, qname)


async def txt_via(resolver: Any, qname: str) -> list[str]:
    """The TXT records of ``qname`` from a ``dns.asyncresolver.Resolver``: each
    record's strings joined (a record over 255 bytes is split into several), in
    the order the server gave them; none for a name that does not exist or has
    no TXT record."""
    import dns.exception
    import dns.resolver

    try:
        answer = await resolver.resolve(qname, "TXT", lifetime=LOOKUP_TIMEOUT, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:  # timeout, no server answered, SERVFAIL…
        raise NetworkError(f"cannot look up the TXT records of {qname!r}: {exc}") from exc
    return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer]


async def expand(name: str, peer: str, lookup: TxtLookup) -> list[str]:
    """The bootstrap addresses (``/ip4|ip6|dns4|dns6|dns/…/tcp/…/p2p/<peer>``, in
    the order found, without duplicates) that ``/dnsaddr/<name>/p2p/<peer>``
    stands for. :class:`NetworkError` when it stands for none, saying why."""
    from gossipmind.node.resolve import bootstrap_problem

    found: list[str] = []
    skipped = {"other peers": 0, "not TCP": 0, "unreadable": 0, "too deep": 0, "failed": 0}
    queue, seen, lookups = [(name, 0)], {name.rstrip(".").lower()}, 0
    while queue and len(found) < MAX_FOUND:
        here, depth = queue.pop(0)
        if lookups >= MAX_LOOKUPS:
            skipped["too deep"] += 1 + len(queue)
            break
        lookups += 1
        qname = f"_dnsaddr.{here}"
        try:
            records = await _lookup(lookup, qname)
        except NetworkError:
            if depth == 0:
                raise  # the list the operator named
            skipped["failed"] += 1  # a nested list: what the others give still counts
            continue
        for text in records[:MAX_RECORDS]:
            if not text.startswith(PREFIX):
                continue  # another use of the same name
            addr = text[len(PREFIX) :].strip()
            pinned = _peer_of(addr)
            if pinned is None:
                skipped["unreadable"] += 1
                continue
            if pinned != peer:
                skipped["other peers"] += 1
                continue
            why = bootstrap_problem(addr)
            if why is not None:
                skipped["not TCP" if "must have the form" in why else "unreadable"] += 1
            elif addr.startswith("/dnsaddr/"):
                nested = addr.split("/")[2]
                if depth + 1 > MAX_DEPTH:
                    skipped["too deep"] += 1
                elif (key := nested.rstrip(".").lower()) not in seen:
                    seen.add(key)
                    queue.append((nested, depth + 1))
            elif addr not in found and len(found) < MAX_FOUND:
                found.append(addr)
    if not found:
        said = ", ".join(f"{n} for {what}" for what, n in skipped.items() if n) or "no records"
        raise NetworkError(f"_dnsaddr.{name} lists no TCP address of {peer} ({said})")
    return found


async def _lookup(lookup: TxtLookup, qname: str) -> list[str]:
    with trio.move_on_after(LOOKUP_TIMEOUT):
        return await lookup(qname)
    raise NetworkError(f"looking up {qname!r} timed out ({LOOKUP_TIMEOUT:g} s)")


def _peer_of(addr: str) -> str | None:
    """The peer id an address ends with; None if it is no multiaddr or has none."""
    from multiaddr import Multiaddr
    from multiaddr.exceptions import Error as MultiaddrError

    try:
        return str(Multiaddr(addr).value_for_protocol("p2p"))
    except (ValueError, MultiaddrError):
        return None
