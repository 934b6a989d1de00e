"""Egress guard for tools that take URLs or hosts: the SSRF check.

A target is refused when any address its host resolves to is a cloud metadata
endpoint, loopback, link-local, private (RFC 1918 / ULA / CGNAT), unspecified,
multicast or reserved, unless an allowed network contains it. Checking every
resolved address (not the host name) defeats decimal/hex IP spellings and
names that point inside; callers must connect to the returned, checked
addresses (pinning) so a second DNS answer cannot differ, and must check every
redirect target too (:meth:`EgressGuard.follow_redirects` does it).

Resolution is injected (:data:`Resolver`), so tests run offline.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from agentmesh.policy.errors import EgressDenied

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str], Sequence[str]]

METADATA_ADDRESSES: frozenset[Address] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.123",  # AWS time sync
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
    )
)
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


def system_resolver(host: str) -> list[str]:
    """Every address ``host`` resolves to (the default; tests inject their own)."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]) for info in infos})


_LEGACY_IPV4 = re.compile(r"[0-9a-fA-FxX.]+\Z")


def _literal_address(name: str) -> Address | None:
    """An IP literal, also in legacy IPv4 spellings (``2852039166``, ``0xA9FEA9FE``, ``127.1``)."""
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        pass
    if _LEGACY_IPV4.match(name) and any(c.isdigit() for c in name):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(name))
        except OSError:
            return None
    return None


@dataclass(frozen=True, slots=True)
class EgressTarget:
    """A checked target: connect only to ``addresses``."""

    url: str
    host: str
    port: int | None
    addresses: tuple[str, ...]


def forbidden_reason(address: Address) -> str | None:
    """Why ``address`` is not a public destination, or ``None``."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return forbidden_reason(address.ipv4_mapped)
    if address in METADATA_ADDRESSES:
        return "cloud metadata endpoint"
    checks = (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("unspecified", address.is_unspecified),
        ("multicast", address.is_multicast),
        ("private", address.is_private or address in _CGNAT),
        ("reserved", address.is_reserved),
    )
    for name, hit in checks:
        if hit:
            return name
    return None


class EgressGuard:
    """Checks URLs and hosts before a tool connects.

    Args:
        resolver: host name -> addresses (default :func:`system_resolver`).
        allow_networks: CIDRs a policy explicitly allows (e.g. an internal API range).
            A metadata address is allowed only by a network naming exactly it (/32, /128).
        schemes: allowed URL schemes.
        max_redirects: for :meth:`follow_redirects`.
    """

    def __init__(
        self,
        *,
        resolver: Resolver = system_resolver,
        allow_networks: Iterable[str] = (),
        schemes: Iterable[str] = ("http", "https"),
        max_redirects: int = 5,
    ) -> None:
        self._resolve = resolver
        self._allowed: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in allow_networks
        )
        self._schemes = frozenset(schemes)
        self._max_redirects = max_redirects

    def _is_allowed(self, address: Address, reason: str) -> bool:
        for network in self._allowed:
            if address in network:
                exact = network.prefixlen == network.max_prefixlen
                return exact or reason != "cloud metadata endpoint"
        return False

    def check_host(self, host: str, *, url: str = "", port: int | None = None) -> EgressTarget:
        """Resolve ``host`` and check every address.

        Raises:
            EgressDenied: a forbidden address (named), or the host does not resolve.
        """
        name = host.strip().rstrip(".").lower()
        if name.startswith("[") and name.endswith("]"):
            name = name[1:-1]
        if not name:
            raise EgressDenied("empty host", host=host, rule="egress")
        if name in METADATA_HOSTS:
            raise EgressDenied(f"{host}: cloud metadata host", host=host, rule="egress")
        literal = _literal_address(name)
        if literal is not None:
            raw = [str(literal)]
        else:
            try:
                raw = list(self._resolve(name))
            except Exception as exc:  # fail closed: whatever the resolver does
                raise EgressDenied(
                    f"{host}: does not resolve ({exc})", host=host, rule="egress"
                ) from None
        if not raw:
            raise EgressDenied(f"{host}: resolves to no address", host=host, rule="egress")
        for text in raw:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            reason = forbidden_reason(address)
            if reason is not None and not self._is_allowed(address, reason):
                raise EgressDenied(
                    f"{host} resolves to {address} ({reason})",
                    host=host,
                    address=str(address),
                    rule="egress",
                )
        return EgressTarget(url or host, name, port, tuple(raw))

    def check_url(self, url: str) -> EgressTarget:
        """Check a URL's scheme and host.

        Raises:
            EgressDenied: bad scheme, no host, or a forbidden address.
        """
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise EgressDenied(f"malformed URL: {exc}", host="", rule="egress") from None
        if parts.scheme.lower() not in self._schemes:
            raise EgressDenied(
                f"scheme {parts.scheme!r} not allowed (allowed: {sorted(self._schemes)})",
                host=parts.hostname or "",
                rule="egress",
            )
        if not parts.hostname:
            raise EgressDenied(f"URL {url!r} has no host", host="", rule="egress")
        return self.check_host(parts.hostname, url=url, port=port)

    def follow_redirects(
        self, url: str, fetch: Callable[[EgressTarget], str | None]
    ) -> EgressTarget:
        """Check ``url``, call ``fetch(target)``; while it returns a redirect location, check it.

        ``fetch`` must connect only to ``target.addresses`` and return the
        ``Location`` of a redirect (relative allowed) or ``None`` when done.

        Raises:
            EgressDenied: any hop is forbidden, or too many redirects.
        """
        target = self.check_url(url)
        for _ in range(self._max_redirects + 1):
            location = fetch(target)
            if location is None:
                return target
            target = self.check_url(urljoin(target.url, location))
        raise EgressDenied(
            f"more than {self._max_redirects} redirects", host=target.host, rule="egress"
        )


__all__ = [
    "METADATA_ADDRESSES",
    "METADATA_HOSTS",
    "EgressGuard",
    "EgressTarget",
    "Resolver",
    "forbidden_reason",
    "system_resolver",
]
