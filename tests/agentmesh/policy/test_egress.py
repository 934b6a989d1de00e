"""The SSRF guard: metadata endpoints, private ranges, DNS answers, redirects. Offline."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from agentmesh.policy import EgressDenied, EgressGuard
from agentmesh.policy.egress import EgressTarget

DNS = {
    "public.test": ["93.184.216.34"],
    "rebind.test": ["93.184.216.34", "169.254.169.254"],
    "internal.test": ["10.1.2.3"],
    "v6private.test": ["fd12::1"],
    "cgnat.test": ["100.64.1.1"],
    "api.corp.test": ["10.20.0.5"],
}


def resolver(host: str) -> Sequence[str]:
    if host not in DNS:
        raise OSError("NXDOMAIN")
    return DNS[host]


GUARD = EgressGuard(resolver=resolver)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://169.254.170.2/v2/credentials", "cloud metadata"),
        ("http://[fd00:ec2::254]/latest", "cloud metadata"),
        ("http://100.100.100.200/", "cloud metadata"),
        ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata host"),
        ("http://METADATA.GOOGLE.INTERNAL./", "cloud metadata host"),
        ("http://2852039166/", "cloud metadata"),
        ("http://0xA9FEA9FE/", "cloud metadata"),
        ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
        ("http://127.0.0.1:8080/", "loopback"),
        ("http://127.1/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://169.254.1.1/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://192.168.1.1/", "private"),
        ("http://internal.test/", "private"),
        ("http://v6private.test/", "private"),
        ("http://cgnat.test/", "private"),
        ("http://rebind.test/", "cloud metadata"),
        ("http://nowhere.test/", "does not resolve"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("gopher://public.test/", "scheme 'gopher'"),
        ("http:///nohost", "has no host"),
        ("http://public.test:99999/", "malformed URL"),
    ],
)
def test_forbidden_targets(url: str, reason: str) -> None:
    with pytest.raises(EgressDenied, match=reason) as caught:
        GUARD.check_url(url)
    assert caught.value.code == "egress_denied"


def test_public_target_returns_the_addresses_to_pin() -> None:
    target = GUARD.check_url("https://public.test:8443/x")
    assert target.addresses == ("93.184.216.34",)
    assert target.port == 8443


def test_allowed_networks_open_private_ranges_but_not_metadata() -> None:
    guard = EgressGuard(resolver=resolver, allow_networks=["10.20.0.0/16", "169.254.0.0/16"])
    assert guard.check_url("http://api.corp.test/").addresses == ("10.20.0.5",)
    guard.check_url("http://169.254.1.1/")
    with pytest.raises(EgressDenied, match="cloud metadata"):
        guard.check_url("http://169.254.169.254/")
    with pytest.raises(EgressDenied):
        guard.check_url("http://internal.test/")
    exact = EgressGuard(resolver=resolver, allow_networks=["169.254.169.254/32"])
    exact.check_url("http://169.254.169.254/")


def test_redirects_are_checked_at_every_hop() -> None:
    hops = {
        "https://public.test/start": "/next",
        "https://public.test/next": "http://169.254.169.254/",
    }
    visited: list[str] = []

    def fetch(target: EgressTarget) -> str | None:
        visited.append(target.url)
        return hops.get(target.url)

    with pytest.raises(EgressDenied, match="cloud metadata"):
        GUARD.follow_redirects("https://public.test/start", fetch)
    assert visited == ["https://public.test/start", "https://public.test/next"]
    assert GUARD.follow_redirects("https://public.test/other", fetch).url.endswith("/other")

    def loop(target: EgressTarget) -> str | None:
        return "/again"

    with pytest.raises(EgressDenied, match="redirects"):
        GUARD.follow_redirects("https://public.test/", loop)


def test_a_crashing_resolver_denies() -> None:
    def broken(host: str) -> Sequence[str]:
        raise RuntimeError("boom")

    with pytest.raises(EgressDenied, match="does not resolve"):
        EgressGuard(resolver=broken).check_url("http://public.test/")
    with pytest.raises(EgressDenied, match="no address"):
        EgressGuard(resolver=lambda host: []).check_url("http://public.test/")
