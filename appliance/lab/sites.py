"""The lab's offline internet as data: its nameserver, its sites and what `lab check` probes.

Everything comes from data/internet.toml so that adding a test name never touches code."""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass
from pathlib import Path

from appliance.policy.model import CATEGORIES

INTERNET_FILE = Path(__file__).parent / "data" / "internet.toml"
SERVER_KINDS = ("web", "resolver")
# What the lab's web server listens on at every web site's address (HTTP/3 is on UDP HTTPS_PORT).
HTTP_PORT = 80
HTTPS_PORT = 443


@dataclass(frozen=True)
class Addresses:
    ipv4: str
    ipv6: str

    def address(self, family: int) -> str:
        return self.ipv4 if family == 4 else self.ipv6


@dataclass(frozen=True)
class Host(Addresses):
    name: str


@dataclass(frozen=True)
class Site(Addresses):
    names: tuple[str, ...]
    category: str | None = None  # a policy category, for names a list would put in one
    server: str = "web"
    https_alpn: tuple[str, ...] = ()
    ech_public_name: str | None = None


@dataclass(frozen=True)
class Internet:
    nameserver: Host
    sites: tuple[Site, ...]
    check_web: tuple[str, ...]
    check_resolvers: tuple[str, ...]
    resolver_query: str

    def site(self, name: str) -> Site:
        for site in self.sites:
            if name in site.names:
                return site
        raise KeyError(name)

    def name_at(self, address: str) -> str:
        """The first name served at address, or the address itself if no site has it."""
        return next((s.names[0] for s in self.sites if address in (s.ipv4, s.ipv6)), address)

    def names(self, server: str | None = None) -> list[str]:
        return [n for s in self.sites if server in (None, s.server) for n in s.names]

    def addresses(self, server: str) -> list[str]:
        """Every distinct address the given kind of server listens on, IPv4 first."""
        seen: dict[str, None] = {}
        for family in (4, 6):
            for site in self.sites:
                if site.server == server:
                    seen[site.address(family)] = None
        return list(seen)


def load_internet(path: Path = INTERNET_FILE) -> Internet:
    raw = tomllib.loads(path.read_text())
    ns = raw["nameserver"]
    nameserver = Host(name=ns["name"], ipv4=_ip(ns["ipv4"], 4), ipv6=_ip(ns["ipv6"], 6))
    sites = tuple(
        Site(
            names=tuple(s["names"]),
            category=s.get("category"),
            ipv4=_ip(s["ipv4"], 4),
            ipv6=_ip(s["ipv6"], 6),
            server=s.get("server", "web"),
            https_alpn=tuple(s.get("https_alpn", ())),
            ech_public_name=s.get("ech_public_name"),
        )
        for s in raw["site"]
    )
    check = raw["check"]
    internet = Internet(
        nameserver=nameserver,
        sites=sites,
        check_web=tuple(check["web"]),
        check_resolvers=tuple(check["resolvers"]),
        resolver_query=check["resolver_query"],
    )
    _validate(internet, path.name)
    return internet


def _ip(text: str, version: int) -> str:
    addr = ipaddress.ip_address(text)
    if addr.version != version:
        raise ValueError(f"{text} is not an IPv{version} address")
    return str(addr)


def _validate(internet: Internet, source: str) -> None:
    names = internet.names()
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"names listed twice in {source}: {', '.join(duplicates)}")
    for site in internet.sites:
        if site.server not in SERVER_KINDS:
            raise ValueError(f"{site.names[0]}: server must be one of {SERVER_KINDS}")
        if site.category is not None and site.category not in CATEGORIES:
            raise ValueError(f"{site.names[0]}: unknown category {site.category!r}")
    for name in internet.check_web:
        if internet.site(name).server != "web":
            raise ValueError(f"check.web lists {name}, which is not a web site")
    for name in internet.check_resolvers:
        if internet.site(name).server != "resolver":
            raise ValueError(f"check.resolvers lists {name}, which is not a resolver")
    # One address must not be both a web server and a resolver: both listen on TCP 443.
    if set(internet.addresses("web")) & set(internet.addresses("resolver")):
        raise ValueError("an address is used by both a web site and a resolver")
