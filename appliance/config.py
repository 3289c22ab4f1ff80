"""The appliance's TOML configuration: schema, validation and the line of every key.

`load(path)` returns a validated `Config` or raises `ConfigError`, which lists every problem as
`FILE:LINE: KEY: message`. Nothing reads the TOML anywhere else. docs/config.md documents the schema.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Group ids live in the low byte of the packet mark (appliance.dataplane.marks).
MAX_GROUPS = 255


@dataclass(frozen=True)
class Endpoint:
    address: IPAddress
    port: int

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class ApplianceSection:
    name: str
    state_dir: Path
    timezone: str


@dataclass(frozen=True)
class WanSection:
    interface: str
    masquerade: bool


@dataclass(frozen=True)
class DnsSection:
    listen_port: int
    upstream: Endpoint
    root_hints: Path | None
    forwarders: tuple[Endpoint, ...]
    dnssec: bool
    block_ipv4: ipaddress.IPv4Address
    block_ipv6: ipaddress.IPv6Address
    block_ttl: int
    block_answer: Literal["page", "nxdomain"]


@dataclass(frozen=True)
class FastpathSection:
    queue: int
    queue_count: int
    packets_per_flow: int

    @property
    def queues(self) -> range:
        return range(self.queue, self.queue + self.queue_count)


@dataclass(frozen=True)
class Lan:
    interface: str
    group: str
    subnets: tuple[IPNetwork, ...]


@dataclass(frozen=True)
class Group:
    name: str
    id: int  # 1-based position in the file; the packet mark carries it
    fail: Literal["closed", "open"]
    internet: Literal["filtered", "allowlist"]
    # DNS settings (appliance.dnsfilter, docs/dnsfilter.md)
    safesearch: Literal["strict", "moderate", "off"]
    strip_ech: bool
    block_doh_canary: bool
    block_private_relay: bool


@dataclass(frozen=True)
class Config:
    appliance: ApplianceSection
    wan: WanSection
    dns: DnsSection
    fastpath: FastpathSection
    lans: tuple[Lan, ...]
    groups: tuple[Group, ...]

    def group(self, name: str) -> Group:
        return next(g for g in self.groups if g.name == name)


@dataclass(frozen=True)
class Problem:
    key: str
    line: int | None
    message: str


class ConfigError(Exception):
    """A configuration that must not be applied; str() lists every problem, one a line."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{_where(source, p.line)}: {p.key}: {p.message}" for p in problems))


def _where(source: str, line: int | None) -> str:
    return source if line is None else f"{source}:{line}"


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(path), [Problem("(file)", None, e.strerror or str(e))]) from e
    return parse(text, source=str(path), base_dir=path.resolve().parent)


def parse(text: str, source: str = "<config>", base_dir: Path | None = None) -> Config:
    """Validates a whole document; relative paths in it are relative to base_dir (the config's folder)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        match = re.search(r"\(at line (\d+), column \d+\)", str(e))
        line = int(match.group(1)) if match else None
        raise ConfigError(source, [Problem("(syntax)", line, f"not valid TOML: {e}")]) from e
    checker = _Checker(KeyLines(text), base_dir or Path.cwd())
    config = checker.config(doc)
    if checker.problems or config is None:
        raise ConfigError(source, checker.problems)
    return config


# --- where each key is ---------------------------------------------------------------------------

KeyPath = tuple[str | int, ...]


class KeyLines:
    """The line on which each key, table and array element of a (valid) TOML document is defined.

    tomllib reports no positions, so this walks the text with TOML's own lexical rules: strings of the
    four kinds (so brackets and `=` inside them do not count), comments, table and array-of-tables
    headers (each [[x]] is element n of x), dotted and quoted keys, inline tables and arrays.
    """

    _BARE = re.compile(r"[A-Za-z0-9_-]+")
    _SCALAR = re.compile(r"[^,\]}#\r\n]*")  # numbers, booleans, dates: up to the next delimiter

    def __init__(self, text: str) -> None:
        self._s = text
        self._i = 0
        self._line = 1
        self._lines: dict[KeyPath, int] = {}
        self._array_tables: dict[KeyPath, int] = {}  # path -> index of its latest [[element]]
        self._document()

    def line(self, path: KeyPath) -> int | None:
        """The line of the key, or of its nearest enclosing key or table that has one."""
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return None

    def _peek(self, n: int = 1) -> str:
        return self._s[self._i : self._i + n]

    def _advance(self, n: int = 1) -> None:
        self._line += self._s.count("\n", self._i, self._i + n)
        self._i += n

    def _skip(self, newlines: bool) -> None:
        while self._i < len(self._s):
            c = self._s[self._i]
            if c in " \t" or (newlines and c in "\r\n"):
                self._advance()
            elif c == "#":
                end = self._s.find("\n", self._i)
                self._advance((len(self._s) if end < 0 else end) - self._i)
            else:
                return

    def _record(self, path: KeyPath) -> None:
        # Enclosing tables are defined where they are first mentioned, e.g. [groups] by [groups.staff].
        for n in range(1, len(path) + 1):
            self._lines.setdefault(path[:n], self._line)

    def _document(self) -> None:
        table: KeyPath = ()
        while True:
            self._skip(newlines=True)
            if self._i >= len(self._s):
                return
            if self._peek(2) == "[[":
                self._advance(2)
                keys = self._key()
                parent = (*self._resolve(keys[:-1]), keys[-1])
                index = self._array_tables.get(parent, -1) + 1
                self._array_tables[parent] = index
                table = (*parent, index)
                self._record(table)
                self._skip(newlines=False)
                self._advance(2)
            elif self._peek() == "[":
                self._advance()
                table = self._resolve(self._key())
                self._record(table)
                self._skip(newlines=False)
                self._advance()
            else:
                self._key_value(table)

    def _resolve(self, keys: list[str]) -> KeyPath:
        path: KeyPath = ()
        for key in keys:
            path = (*path, key)
            if path in self._array_tables:
                path = (*path, self._array_tables[path])
        return path

    def _key_value(self, table: KeyPath) -> None:
        keys = self._key()
        self._record((*table, *keys))
        self._skip(newlines=False)
        self._advance()  # "="
        self._skip(newlines=False)
        self._value((*table, *keys))

    def _key(self) -> list[str]:
        keys = []
        while True:
            self._skip(newlines=False)
            if self._peek() in ("'", '"'):
                keys.append(tomllib.loads(f"k = {self._string()}")["k"])
            else:
                match = self._BARE.match(self._s, self._i)
                if not match:
                    raise ValueError(f"no key at line {self._line}")
                keys.append(match.group())
                self._advance(match.end() - self._i)
            self._skip(newlines=False)
            if self._peek() != ".":
                return keys
            self._advance()

    def _string(self) -> str:
        start = self._i
        quote = self._peek()
        delimiter = quote * 3 if self._peek(3) == quote * 3 else quote
        self._advance(len(delimiter))
        while True:
            if quote == '"' and self._peek() == "\\":
                self._advance(2)
            elif self._peek(len(delimiter)) == delimiter:
                self._advance(len(delimiter))
                # A multi-line string may end with up to two extra quotes before its delimiter.
                while len(delimiter) == 3 and self._peek() == quote:
                    self._advance()
                return self._s[start : self._i]
            else:
                self._advance()

    def _value(self, path: KeyPath) -> None:
        c = self._peek()
        if c in ("'", '"'):
            self._string()
        elif c == "[":
            self._advance()
            index = 0
            while True:
                self._skip(newlines=True)
                if self._peek() == "]":
                    self._advance()
                    return
                self._record((*path, index))
                self._value((*path, index))
                self._skip(newlines=True)
                if self._peek() == ",":
                    self._advance()
                index += 1
        elif c == "{":
            self._advance()
            while True:
                self._skip(newlines=True)
                if self._peek() == "}":
                    self._advance()
                    return
                self._key_value(path)
                self._skip(newlines=True)
                if self._peek() == ",":
                    self._advance()
        else:
            match = self._SCALAR.match(self._s, self._i)
            assert match is not None  # the pattern matches the empty string
            self._advance(match.end() - self._i)


# --- validation ----------------------------------------------------------------------------------

_REQUIRED = object()
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")  # Linux allows 15 bytes; VLANs look like eth0.10
_GROUP_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")  # also part of nftables chain names


def _check_int(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, not {value}")
        return int(value)

    return check


def _check_choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(repr(c) for c in choices)}, not {value!r}")
        return str(value)

    return check


def _check_ifname(value: Any) -> str:
    if not _IFNAME.fullmatch(value) or value in (".", ".."):
        raise ValueError(f"{value!r} is not a network interface name (letters, digits, _ . -, at most 15)")
    return str(value)


def _check_timezone(value: Any) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not a time zone name such as 'Europe/London'") from None
    return str(value)


def _check_address(version: int) -> Callable[[Any], Any]:
    def check(value: Any) -> IPAddress:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None
        if address.version != version:
            raise ValueError(f"{value!r} is not an IPv{version} address")
        return address

    return check


def _check_network(value: Any) -> IPNetwork:
    try:
        return ipaddress.ip_network(value)
    except ValueError as e:
        raise ValueError(f"{value!r} is not a subnet such as '10.10.0.0/24' ({e})") from None


def _check_endpoint(default_port: int | None) -> Callable[[Any], Endpoint]:
    """'192.0.2.1:53', '[2001:db8::1]:53', or (with a default port) a bare address."""

    def check(value: Any) -> Endpoint:
        example = "such as '192.0.2.53:53' or '[2001:db8::53]:53'"
        if value.startswith("["):
            host, _, rest = value[1:].partition("]")
            port_text = rest.removeprefix(":") if rest else None
        elif value.count(":") == 1:
            host, port_text = value.split(":")
        else:
            host, port_text = value, None
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{value!r} is not an address {example}") from None
        if port_text is None:
            if default_port is None:
                raise ValueError(f"{value!r} needs a port, {example}")
            return Endpoint(address, default_port)
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{value!r} has no port between 1 and 65535")
        return Endpoint(address, int(port_text))

    return check


def _check_loopback_endpoint(value: Any) -> Endpoint:
    endpoint = _check_endpoint(None)(value)
    if not endpoint.address.is_loopback:
        raise ValueError(
            f"{value!r} must be a loopback address: the appliance's own resolver listens on 127.0.0.1 and ::1"
        )
    return endpoint


@dataclass(frozen=True)
class _Field:
    kind: type  # the TOML type: str, int, bool or list (of `item`)
    default: Any = _REQUIRED
    check: Callable[[Any], Any] | None = None
    item: type | None = None  # for lists: the element type, each element passed to check
    # A path relative to the config's folder; "" means unset. "file" must exist.
    path: Literal["file", "dir"] | None = None


_SCHEMA: dict[str, dict[str, _Field]] = {
    "appliance": {
        "name": _Field(str),
        "state_dir": _Field(str, "/var/lib/appliance", path="dir"),
        "timezone": _Field(str, "Europe/London", check=_check_timezone),
    },
    "wan": {
        "interface": _Field(str, check=_check_ifname),
        "masquerade": _Field(bool, True),
    },
    "dns": {
        "listen_port": _Field(int, 53, check=_check_int(1, 65535)),
        "upstream": _Field(str, "127.0.0.1:5353", check=_check_loopback_endpoint),
        "root_hints": _Field(str, "", path="file"),
        "forwarders": _Field(list, [], check=_check_endpoint(53), item=str),
        # Default: validate unless custom root hints are used (their root is not the one the IANA
        # trust anchor signs); resolved in _Checker.config.
        "dnssec": _Field(bool, None),
        "block_ipv4": _Field(str, "192.0.2.1", check=_check_address(4)),
        "block_ipv6": _Field(str, "2001:db8::1", check=_check_address(6)),
        "block_ttl": _Field(int, 60, check=_check_int(0, 86400)),
        "block_answer": _Field(str, "page", check=_check_choice("page", "nxdomain")),
    },
    "fastpath": {
        "queue": _Field(int, 0, check=_check_int(0, 65535)),
        "queue_count": _Field(int, 1, check=_check_int(1, 64)),
        "packets_per_flow": _Field(int, 6, check=_check_int(1, 100)),
    },
}
_LAN: dict[str, _Field] = {
    "interface": _Field(str, check=_check_ifname),
    "group": _Field(str),
    "subnets": _Field(list, check=_check_network, item=str),
}
_GROUP: dict[str, _Field] = {
    "fail": _Field(str, "closed", check=_check_choice("closed", "open")),
    "internet": _Field(str, "filtered", check=_check_choice("filtered", "allowlist")),
    "safesearch": _Field(str, "strict", check=_check_choice("strict", "moderate", "off")),
    "strip_ech": _Field(bool, True),
    "block_doh_canary": _Field(bool, True),
    "block_private_relay": _Field(bool, True),
}
_TOML_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    bool: "true or false",
    list: "an array",
    dict: "a table",
}


def _key_name(path: KeyPath) -> str:
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else part)
    return name


def _is_kind(value: Any, kind: type) -> bool:
    # TOML booleans are Python bools, which are also ints.
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


class _Checker:
    def __init__(self, lines: KeyLines, base_dir: Path) -> None:
        self._lines = lines
        self._base_dir = base_dir
        self.problems: list[Problem] = []

    def problem(self, path: KeyPath, message: str) -> None:
        self.problems.append(Problem(_key_name(path), self._lines.line(path), message))

    def table(self, value: Any, path: KeyPath, fields: dict[str, _Field]) -> dict[str, Any] | None:
        """The table's values with defaults filled in; None (with problems noted) if any is bad."""
        if not isinstance(value, dict):
            self.problem(path, f"must be a table, not {value!r}")
            return None
        count = len(self.problems)
        for key in value.keys() - fields.keys():
            self.problem((*path, key), f"unknown key (known: {', '.join(fields)})")
        out = {
            key: self.field((*path, key), value.get(key, _REQUIRED), field) for key, field in fields.items()
        }
        return out if len(self.problems) == count else None

    def field(self, path: KeyPath, value: Any, field: _Field) -> Any:
        if value is _REQUIRED:
            if field.default is _REQUIRED:
                self.problem(path, "is required")
                return None
            value = field.default
        elif not _is_kind(value, field.kind):
            self.problem(path, f"must be {_TOML_TYPE_NAMES[field.kind]}, not {value!r}")
            return None
        if field.kind is list:
            items = []
            for index, item in enumerate(value):
                if field.item is not None and not _is_kind(item, field.item):
                    self.problem((*path, index), f"must be {_TOML_TYPE_NAMES[field.item]}, not {item!r}")
                else:
                    items.append(self.convert((*path, index), item, field))
            return tuple(items)
        return self.convert(path, value, field)

    def convert(self, path: KeyPath, value: Any, field: _Field) -> Any:
        if field.path is not None:
            return self.path(path, value, field.path)
        if field.check is None:
            return value
        try:
            return field.check(value)
        except ValueError as e:
            self.problem(path, str(e))
            return None

    def path(self, path: KeyPath, text: str, kind: Literal["file", "dir"]) -> Path | None:
        if not text:
            return None
        resolved = self._base_dir / Path(text).expanduser()
        if kind == "file" and not resolved.is_file():
            self.problem(path, f"no such file: {resolved}")
        return resolved

    def config(self, doc: dict[str, Any]) -> Config | None:
        known = [*_SCHEMA, "lan", "groups"]
        for key in doc.keys() - set(known):
            self.problem((key,), f"unknown section (known: {', '.join(known)})")
        sections = {name: self.table(doc.get(name, {}), (name,), fields) for name, fields in _SCHEMA.items()}
        groups = self.groups(doc.get("groups"))
        lans = self.lans(doc.get("lan"), groups)
        if groups is None or lans is None or any(s is None for s in sections.values()) or self.problems:
            return None
        wan = WanSection(**sections["wan"])  # type: ignore[arg-type]
        dns = sections["dns"]
        assert dns is not None
        if dns["dnssec"] is None:
            dns["dnssec"] = dns["root_hints"] is None
        elif dns["dnssec"] and dns["root_hints"] is not None:
            self.problem(
                ("dns", "dnssec"),
                "must be false with root_hints: the IANA trust anchor does not sign a custom root",
            )
        for index, lan in enumerate(lans):
            if lan.interface == wan.interface:
                self.problem(("lan", index, "interface"), f"{lan.interface!r} is also the WAN interface")
        if self.problems:
            return None
        return Config(
            appliance=ApplianceSection(**sections["appliance"]),  # type: ignore[arg-type]
            wan=wan,
            dns=DnsSection(**dns),
            fastpath=FastpathSection(**sections["fastpath"]),  # type: ignore[arg-type]
            lans=tuple(lans),
            groups=tuple(groups.values()),
        )

    def groups(self, value: Any) -> dict[str, Group] | None:
        if value is None:
            self.problem(("groups",), "at least one group is required, e.g. [groups.students]")
            return None
        if not isinstance(value, dict):
            self.problem(("groups",), "must be a table of groups, e.g. [groups.students]")
            return None
        if len(value) > MAX_GROUPS:
            self.problem(("groups",), f"at most {MAX_GROUPS} groups, not {len(value)}")
            return None
        groups = {}
        for number, (name, table) in enumerate(value.items(), start=1):
            if not _GROUP_NAME.fullmatch(name):
                self.problem(("groups", name), "a group name is a lower-case letter, then letters, digits, _")
                continue
            fields = self.table(table, ("groups", name), _GROUP)
            if fields is None:
                continue
            if fields["internet"] == "allowlist" and fields["fail"] == "open":
                self.problem(
                    ("groups", name, "fail"),
                    'must be "closed" when internet = "allowlist": an allowlist cannot fail open',
                )
                continue
            groups[name] = Group(name=name, id=number, **fields)
        return groups if len(groups) == len(value) else None

    def lans(self, value: Any, groups: dict[str, Group] | None) -> list[Lan] | None:
        if value is None:
            self.problem(("lan",), "at least one [[lan]] is required")
            return None
        if not isinstance(value, list):
            self.problem(("lan",), "must be an array of tables: write each as [[lan]]")
            return None
        lans: list[Lan] = []
        interfaces: set[str] = set()
        for index, table in enumerate(value):
            path: KeyPath = ("lan", index)
            fields = self.table(table, path, _LAN)
            if fields is None:
                continue
            if fields["interface"] in interfaces:
                self.problem((*path, "interface"), f"{fields['interface']!r} is already another [[lan]]")
            interfaces.add(fields["interface"])
            if not fields["subnets"]:
                self.problem((*path, "subnets"), "needs at least one subnet")
            if groups is not None and fields["group"] not in groups:
                self.problem(
                    (*path, "group"), f"no such group {fields['group']!r} (known: {', '.join(groups)})"
                )
            lans.append(Lan(**fields))
        return lans if len(lans) == len(value) else None
