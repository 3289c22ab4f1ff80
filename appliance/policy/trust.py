"""The trust's policy: what it padlocks, and each group's default categories.

It arrives from the trust's fleet tooling as <state>/trust.toml; no school command changes it. Without
that file the appliance uses the built-in defaults below, which follow the seed schools. The IWF and
CTIRU lists are padlocked whatever the file says: it has no way to unlock them.

    [locked]                          # every group; no school rule can open these
    categories = ["pornography", "extremism"]
    domains = ["example.org"]         # the domain and everything under it

    [groups.students]
    default = "allow"                 # what happens to names in no blocked category
    blocked = ["gambling", "games"]   # blocked unless the school allows them
    locked_categories = ["self_harm"] # locked for this group only
    locked_domains = []
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.policy.model import (
    CATEGORIES,
    GROUPS,
    PADLOCKED_CATEGORIES,
    Action,
    PolicyError,
    check_category,
    check_group,
)
from fastpath.names import normalise

TRUST_FILE = "trust.toml"

_HARMFUL = ["discrimination", "drugs", "gambling", "malware_hacking", "piracy", "violence", "misinformation"]
DEFAULTS: dict[str, Any] = {
    "locked": {"categories": ["pornography", "extremism"], "domains": []},
    "groups": {
        "students": {
            "default": "allow",
            "locked_categories": ["self_harm"],
            "blocked": [*_HARMFUL, "social_media", "games", "streaming", "doh_dot", "ads_trackers"],
        },
        "staff": {"default": "allow", "blocked": [*_HARMFUL, "self_harm", "doh_dot", "ads_trackers"]},
        # Exams: no internet, except what the school allows for the exams group (exam boards).
        "exams": {"default": "block", "blocked": [c for c in CATEGORIES if c not in PADLOCKED_CATEGORIES]},
        "specialist": {"default": "allow", "blocked": ["gambling", "piracy", "doh_dot"]},
        "guests": {
            "default": "allow",
            "blocked": [*_HARMFUL, "self_harm", "doh_dot", "ads_trackers", "streaming", "games"],
        },
    },
}


@dataclass(frozen=True)
class GroupDefaults:
    default: Action
    blocked: frozenset[str]
    locked_categories: frozenset[str]
    locked_domains: tuple[str, ...]


@dataclass(frozen=True)
class TrustPolicy:
    source: str
    locked_categories: frozenset[str]
    locked_domains: tuple[str, ...]
    groups: dict[str, GroupDefaults]

    def locked_for(self, group: str) -> frozenset[str]:
        """Every category nobody at the school can open for group, the padlocked lists included."""
        return frozenset(PADLOCKED_CATEGORIES) | self.locked_categories | self.groups[group].locked_categories

    def to_dict(self) -> dict[str, Any]:
        return {
            "locked": {"categories": sorted(self.locked_categories), "domains": list(self.locked_domains)},
            "groups": {
                g: {
                    "default": d.default.value,
                    "blocked": sorted(d.blocked),
                    "locked_categories": sorted(d.locked_categories),
                    "locked_domains": list(d.locked_domains),
                }
                for g, d in self.groups.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> TrustPolicy:
        where = source
        _only(data, {"locked", "groups"}, where)
        locked = data.get("locked", {})
        _only(locked, {"categories", "domains"}, f"{where}: [locked]")
        groups_in = data.get("groups", {})
        for g in groups_in:
            try:
                check_group(g)
            except PolicyError as e:
                raise PolicyError(f"{where}: [groups.{g}]: {e}") from None
        groups = {}
        for g in GROUPS:
            spec = groups_in.get(g, {})
            at = f"{where}: [groups.{g}]"
            _only(spec, {"default", "blocked", "locked_categories", "locked_domains"}, at)
            default = spec.get("default", "allow")
            if default not in ("allow", "block"):
                raise PolicyError(f'{at}: default must be "allow" or "block", not {default!r}')
            groups[g] = GroupDefaults(
                default=Action(default),
                blocked=_categories(spec.get("blocked", []), f"{at} blocked"),
                locked_categories=_categories(spec.get("locked_categories", []), f"{at} locked_categories"),
                locked_domains=_domains(spec.get("locked_domains", []), f"{at} locked_domains"),
            )
        return cls(
            source=source,
            locked_categories=_categories(locked.get("categories", []), f"{where}: [locked] categories"),
            locked_domains=_domains(locked.get("domains", []), f"{where}: [locked] domains"),
            groups=groups,
        )


def _only(table: Any, keys: set[str], where: str) -> None:
    if not isinstance(table, dict):
        raise PolicyError(f"{where}: expected a table")
    unknown = set(table) - keys
    if unknown:
        raise PolicyError(f"{where}: unknown key {sorted(unknown)[0]!r} (expected {', '.join(sorted(keys))})")


def _categories(values: Any, where: str) -> frozenset[str]:
    if not isinstance(values, list):
        raise PolicyError(f"{where}: expected a list of category names")
    try:
        return frozenset(check_category(v).name for v in values)
    except PolicyError as e:
        raise PolicyError(f"{where}: {e}") from None


def _domains(values: Any, where: str) -> tuple[str, ...]:
    if not isinstance(values, list):
        raise PolicyError(f"{where}: expected a list of domain names")
    out = []
    for v in values:
        name = normalise(v) if isinstance(v, str) else None
        if not name:
            raise PolicyError(f"{where}: {v!r} is not a valid domain name")
        out.append(name)
    return tuple(dict.fromkeys(out))


def load(state_dir: Path) -> TrustPolicy:
    """The trust policy in force: <state>/trust.toml, else the built-in defaults."""
    path = state_dir / TRUST_FILE
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return TrustPolicy.from_dict(DEFAULTS, "built-in defaults")
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"{path}: {e}") from None
    return TrustPolicy.from_dict(data, str(path))
