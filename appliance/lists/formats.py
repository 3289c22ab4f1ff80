"""Line parsers for every list format. Each reads raw lines (bytes) and reports to a Sink: names,
pages and bad lines with their line numbers. They never stop at a bad line.

The Sink does the hashing and judges names, so each parser only knows its own syntax."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Protocol


class Sink(Protocol):
    def domain(self, lineno: int, name: bytes, exact: bool) -> None:
        """A name to match with (exact=False) or without its subdomains."""

    def page(self, lineno: int, url: bytes) -> None:
        """A page: host, then the path from its '/' (no scheme)."""

    def problem(self, lineno: int, message: str) -> None:
        """A bad line, skipped."""

    def skipped(self, reason: str) -> None:
        """A valid line that means nothing to a network filter (counted, not listed one by one)."""


Parser = Callable[[Iterable[bytes], Sink], None]


def _content(line: bytes, comment: bytes) -> bytes:
    i = line.find(comment)
    return (line if i < 0 else line[:i]).strip()


def parse_plain(lines: Iterable[bytes], sink: Sink) -> None:
    """One domain a line (the domain and its subdomains); '#' comments. A leading '*.' or '.' is
    accepted and means the same. UT1 and squidGuard `domains` files are in this format."""
    for lineno, line in enumerate(lines, 1):
        name = line.strip()
        if not name or name[0] == 35:  # '#': the common case, without a search
            continue
        if b"#" in name:
            name = _content(name, b"#")
        if name.startswith(b"*."):
            name = name[2:]
        elif name.startswith(b"."):
            name = name[1:]
        sink.domain(lineno, name, False)


# Names that every hosts file maps to loopback; they are not blocking entries.
_HOSTS_BOILERPLATE = {
    b"localhost",
    b"localhost.localdomain",
    b"local",
    b"broadcasthost",
    b"ip6-localhost",
    b"ip6-loopback",
    b"ip6-localnet",
    b"ip6-mcastprefix",
    b"ip6-allnodes",
    b"ip6-allrouters",
    b"ip6-allhosts",
    b"0.0.0.0",
}


def parse_hosts(lines: Iterable[bytes], sink: Sink) -> None:
    """hosts-file lines, "ADDRESS NAME [NAME...]": each name is blocked exactly, as a hosts file
    matches it (not its subdomains)."""
    for lineno, line in enumerate(lines, 1):
        fields = _content(line, b"#").split()
        if not fields:
            continue
        try:
            ipaddress.ip_address(fields[0].decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            sink.problem(lineno, "expected an IP address, then names")
            continue
        if len(fields) == 1:
            sink.problem(lineno, "an address with no names")
        for name in fields[1:]:
            if name.lower() in _HOSTS_BOILERPLATE:
                sink.skipped("hosts-file boilerplate (localhost and the like)")
            else:
                sink.domain(lineno, name, True)


_ADBLOCK_RULE = re.compile(rb"^\|\|([^\^$|/*]+)\^?\|?(?:\$(.*))?$")
# Modifiers that leave a ||domain^ rule meaning "block this domain" for a DNS filter.
_ADBLOCK_DNS_OPTIONS = {b"important", b"all", b"document", b"doc", b"popup"}
# Modifiers that change what the rule means at DNS level; such rules cannot be imported as blocks.
_ADBLOCK_UNSUPPORTED = {b"badfilter", b"denyallow", b"client", b"ctag", b"dnstype", b"dnsrewrite"}


def parse_adblock(lines: Iterable[bytes], sink: Sink) -> None:
    """AdBlock-style lists: `||domain^` rules block the domain and its subdomains. Comments ('!'),
    headers ('[Adblock Plus 2.0]') and cosmetic rules are ignored; exception rules (@@) and patterns
    that are not a whole domain are reported, since importing them as blocks would be wrong."""
    for lineno, line in enumerate(lines, 1):
        rule = line.strip()
        if not rule or rule[:1] in (b"!", b"[") or rule.startswith(b"# ") or rule == b"#":
            continue
        if b"##" in rule or b"#@#" in rule or b"#?#" in rule or b"#$#" in rule:
            sink.skipped("cosmetic (page element) rules")
            continue
        if rule.startswith(b"@@"):
            sink.problem(lineno, "exception (@@) rules are not imported: add a school allow rule instead")
            continue
        m = _ADBLOCK_RULE.match(rule)
        if not m:
            sink.problem(lineno, "not a ||domain^ rule")
            continue
        options = {o.strip().split(b"=")[0].lstrip(b"~") for o in m[2].split(b",")} if m[2] else set()
        if options & _ADBLOCK_UNSUPPORTED:
            sink.problem(
                lineno, f"unsupported modifier ${b','.join(sorted(options)).decode(errors='replace')}"
            )
        elif options - _ADBLOCK_DNS_OPTIONS:
            sink.skipped("browser-only rules (modifiers such as $script or $third-party)")
        else:
            sink.domain(lineno, m[1], False)


_SCHEME = re.compile(rb"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def parse_urls(lines: Iterable[bytes], sink: Sink) -> None:
    """One URL a line, the scheme optional: "host/path..." is a page (enforceable on plain HTTP
    only); a bare host, with no '/', is a whole-domain entry. The IWF and CTIRU lists and UT1 `urls`
    files are in this format."""
    for lineno, line in enumerate(lines, 1):
        url = line.strip()
        if not url or url[0] == 35:
            continue
        url = _SCHEME.sub(b"", url, count=1)
        url = url.split(b"#", 1)[0]  # a fragment never reaches the server
        slash = url.find(b"/")
        host = url if slash < 0 else url[:slash]
        if b"@" in host:
            host = host.rsplit(b"@", 1)[1]
        if host.count(b":") == 1:  # a port; the filter matches the host whatever the port
            host = host.split(b":")[0]
        if slash < 0:
            sink.domain(lineno, host, False)
        else:
            sink.page(lineno, host + url[slash:])


_RPZ_SPECIAL = (b".rpz-ip", b".rpz-nsip", b".rpz-nsdname", b".rpz-client-ip")
_RPZ_CLASSES = {b"in", b"ch", b"hs", b"cs"}
_TTL = re.compile(rb"^\d+[smhdw]?(\d+[smhdw])*$", re.IGNORECASE)


def _rpz_records(lines: Iterable[bytes], sink: Sink) -> Iterable[tuple[int, list[bytes]]]:
    """Zone-file records as (line number, fields), comments removed and ( ... ) joined."""
    pending: list[bytes] = []
    start = 0
    for lineno, line in enumerate(lines, 1):
        text = _content(line, b";")
        if not text and not pending:
            continue
        if not pending:
            start = lineno
            # A record starting with white space repeats the previous owner.
            fields = [b""] if line[:1] in (b" ", b"\t") else []
        else:
            fields = pending
        fields += text.replace(b"(", b" ( ").replace(b")", b" ) ").split()
        if fields.count(b"(") > fields.count(b")"):
            pending = fields
            continue
        pending = []
        yield start, [f for f in fields if f not in (b"(", b")")]
    if pending:
        sink.problem(start, "unclosed parenthesis")


def parse_rpz(lines: Iterable[bytes], sink: Sink) -> None:
    """An RPZ zone file. QNAME triggers with a blocking action (CNAME . or *., rpz-drop, or local
    data) are imported: "name" blocks that name, "*.name" the names under it (imported as the
    domain and its subdomains). Passthru (allow) rules and IP or NS triggers are reported."""
    origin: bytes | None = None
    apex: bytes | None = None
    owner = b""
    for lineno, fields in _rpz_records(lines, sink):
        if fields[0].startswith(b"$"):
            directive = fields[0].upper()
            if directive == b"$ORIGIN" and len(fields) >= 2:
                origin = fields[1].lower().rstrip(b".")
            elif directive != b"$TTL":
                sink.problem(lineno, f"unsupported directive {directive.decode(errors='replace')}")
            continue
        if fields[0]:
            owner = fields[0].lower()
            owner = (origin or b"") if owner == b"@" else owner
            if not fields[0].endswith(b".") and fields[0] != b"@" and origin:
                owner = owner + b"." + origin
            owner = owner.rstrip(b".")
        rest = fields[1:]
        while rest and (_TTL.match(rest[0]) or rest[0].lower() in _RPZ_CLASSES):
            rest = rest[1:]
        if not rest:
            sink.problem(lineno, "no record type")
            continue
        rtype, rdata = rest[0].upper(), [r.lower() for r in rest[1:]]
        if rtype == b"SOA":
            apex = apex if apex is not None else owner
            continue
        if rtype == b"NS" and owner in (apex, origin):
            continue
        zone = apex if apex is not None else origin
        if zone:
            if owner == zone or not owner.endswith(b"." + zone):
                sink.problem(lineno, "record outside the policy zone")
                continue
            trigger = owner[: -len(zone) - 1]
        else:
            trigger = owner
        if trigger.endswith(_RPZ_SPECIAL):
            sink.problem(lineno, "IP, NS and client triggers are not imported (names only)")
            continue
        if rtype == b"CNAME" and rdata[:1] == [b"rpz-passthru."]:
            sink.problem(lineno, "passthru (allow) rules are not imported: add a school allow rule instead")
            continue
        if rtype == b"CNAME" and rdata[:1] == [b"rpz-tcp-only."]:
            sink.problem(lineno, "rpz-tcp-only is not a block, so it is not imported")
            continue
        if trigger.startswith(b"*."):
            sink.domain(lineno, trigger[2:], False)
        else:
            sink.domain(lineno, trigger, True)


FORMATS: dict[str, Parser] = {
    "plain": parse_plain,
    "hosts": parse_hosts,
    "adblock": parse_adblock,
    "rpz": parse_rpz,
    "urls": parse_urls,
}
