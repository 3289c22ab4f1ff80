"""What the compliance run probes: names per category, the Test Filtering names, educational sites,
circumvention endpoints, safe-search names, the categories each group must block, and (in
production) each group's probe addresses. Read from compliance.toml beside the appliance config, or
the defaults in data/testset.toml."""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.policy.model import CATEGORIES
from fastpath.names import normalise

DEFAULTS = Path(__file__).parent / "data" / "testset.toml"
FILE_NAME = "compliance.toml"
ALL = "all"


class TestSetError(ValueError):
    """A compliance.toml that cannot be used; the message names the key."""


@dataclass(frozen=True)
class TestSet:
    source: str
    categories: dict[str, tuple[str, ...]]
    swgfl: tuple[str, ...]
    educational: tuple[str, ...]
    required: dict[str, frozenset[str]]
    resolvers: tuple[str, ...]
    doh_canary: str
    private_relay: tuple[str, ...]
    ech: tuple[str, ...]
    safe_search: tuple[str, ...]
    probes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    email: tuple[str, ...] = ()

    def required_for(self, group: str) -> frozenset[str]:
        return self.required.get(ALL, frozenset()) | self.required.get(group, frozenset())

    def category_of(self, name: str) -> str | None:
        return next((c for c, names in self.categories.items() if name in names), None)


def path_beside(config_path: Path) -> Path:
    return config_path.parent / FILE_NAME


def load(path: Path | None = None) -> TestSet:
    """The test set in path, or the defaults when path is None or does not exist."""
    source = path if path is not None and path.exists() else DEFAULTS
    try:
        raw = tomllib.loads(source.read_text())
    except tomllib.TOMLDecodeError as e:
        raise TestSetError(f"{source}: not valid TOML: {e}") from None
    tests = parse(raw, str(source))
    if not any(tests.categories.values()) and not tests.educational:
        # A run with nothing to probe would report no findings: that must never look like a pass.
        raise TestSetError(f"{source}: names nothing to test ([categories] and [sites] are empty)")
    return tests


def _names(raw: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    values = raw.get(key, [])
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list):
        raise TestSetError(f"{where}.{key}: must be a list of names")
    out = []
    for value in values:
        name = normalise(value) if isinstance(value, str) else None
        if name is None:
            raise TestSetError(f"{where}.{key}: {value!r} is not a domain name")
        out.append(name)
    return tuple(out)


def _category(name: str, where: str) -> str:
    if name not in CATEGORIES:
        raise TestSetError(f"{where}: unknown category {name!r} (one of {', '.join(CATEGORIES)})")
    return name


def parse(raw: dict[str, Any], source: str) -> TestSet:
    cats = raw.get("categories", {})
    categories = {_category(c, f"[categories] {c}"): _names(cats, c, "categories") for c in cats}
    required = {
        group: frozenset(_category(c, f"[required] {group}") for c in values)
        for group, values in raw.get("required", {}).items()
    }
    sites = raw.get("sites", {})
    circ = raw.get("circumvention", {})
    canary = _names(circ, "doh_canary", "circumvention")
    probes = {}
    for group, addresses in raw.get("probes", {}).items():
        try:
            probes[group] = tuple(str(ipaddress.ip_address(a)) for a in addresses)
        except ValueError as e:
            raise TestSetError(f"[probes] {group}: {e}") from None
    return TestSet(
        source=source,
        categories=categories,
        swgfl=_names(sites, "swgfl", "sites"),
        educational=_names(sites, "educational", "sites"),
        required=required,
        resolvers=_names(circ, "resolvers", "circumvention"),
        doh_canary=canary[0] if canary else "",
        private_relay=_names(circ, "private_relay", "circumvention"),
        ech=_names(circ, "ech", "circumvention"),
        safe_search=_names(raw.get("safe_search", {}), "names", "safe_search"),
        probes=probes,
        email=tuple(raw.get("report", {}).get("email", [])),
    )
