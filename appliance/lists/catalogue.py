"""The lists the appliance knows: their format, category, source and the state of their last import.

Adding and removing a list is an audited change. The IWF and CTIRU lists are padlocked: a school
command can add them, never remove them or point them elsewhere."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from appliance.audit import Change
from appliance.policy.model import CATEGORIES, PolicyError, check_category
from appliance.store import Store

# Formats whose lists are confidential and padlocked, and the category each always has.
PADLOCKED_FORMATS = {"iwf": "iwf", "ctiru": "ctiru"}
LIST_FORMATS = ("plain", "hosts", "adblock", "rpz", "ut1", "iwf", "ctiru")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ListInfo:
    name: str
    format: str
    category: str
    source: str
    every_hours: float | None
    entries_file: str | None
    domains: int
    exact: int
    pages: int
    source_sha256: str | None
    updated: datetime | None
    last_attempt: datetime | None
    last_error: str | None
    problems: int
    problem_sample: list[str]

    @property
    def confidential(self) -> bool:
        return self.format in PADLOCKED_FORMATS

    @property
    def padlocked(self) -> bool:
        return CATEGORIES[self.category].padlocked

    @classmethod
    def from_row(cls, row: Any) -> ListInfo:
        def when(v: str | None) -> datetime | None:
            return datetime.fromisoformat(v) if v else None

        return cls(
            name=row["name"],
            format=row["format"],
            category=row["category"],
            source=row["source"],
            every_hours=row["every_hours"],
            entries_file=row["entries_file"],
            domains=row["domains"],
            exact=row["exact"],
            pages=row["pages"],
            source_sha256=row["source_sha256"],
            updated=when(row["updated"]),
            last_attempt=when(row["last_attempt"]),
            last_error=row["last_error"],
            problems=row["problems"],
            problem_sample=json.loads(row["problem_sample"] or "[]"),
        )

    def summary(self) -> dict[str, Any]:
        """What the audit log records about a list: never its entries."""
        return {
            "name": self.name,
            "format": self.format,
            "category": self.category,
            "source": self.source,
            "every_hours": self.every_hours,
        }


def get(store: Store, name: str) -> ListInfo:
    row = store.db.execute("SELECT * FROM lists WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise PolicyError(f"no list named {name!r} (see `appliance lists stats`)")
    return ListInfo.from_row(row)


def all_lists(store: Store) -> list[ListInfo]:
    return [ListInfo.from_row(r) for r in store.db.execute("SELECT * FROM lists ORDER BY name")]


def add(
    ch: Change, name: str, fmt: str, category: str | None, source: str, every_hours: float | None
) -> ListInfo:
    if not _NAME.match(name):
        raise PolicyError(f"list name {name!r}: use lower-case letters, digits, '.', '_' and '-'")
    if fmt not in LIST_FORMATS:
        raise PolicyError(f"unknown format {fmt!r} (one of {', '.join(LIST_FORMATS)})")
    if fmt in PADLOCKED_FORMATS:
        if category not in (None, PADLOCKED_FORMATS[fmt]):
            raise PolicyError(f"the {fmt} list's category is always {PADLOCKED_FORMATS[fmt]}")
        category = PADLOCKED_FORMATS[fmt]
    elif category is None:
        raise PolicyError("give the list's category (--category)")
    elif check_category(category).padlocked:
        raise PolicyError(f"only the {category} list itself can be in the {category} category")
    if every_hours is not None and every_hours <= 0:
        raise PolicyError("--every must be a positive number of hours")
    if ch.db.execute("SELECT 1 FROM lists WHERE name = ?", (name,)).fetchone():
        raise PolicyError(f"a list named {name!r} already exists")
    ch.db.execute(
        "INSERT INTO lists (name, format, category, source, every_hours) VALUES (?, ?, ?, ?, ?)",
        (name, fmt, category, source, every_hours),
    )
    info = get(ch.store, name)
    ch.log("list.add", f"list {name} ({fmt}, {category}) from {source}", None, info.summary())
    return info


def remove(ch: Change, name: str) -> ListInfo:
    info = get(ch.store, name)
    if info.padlocked:
        raise PolicyError(f"the {info.name} list is padlocked: nobody can remove or disable it")
    ch.db.execute("DELETE FROM lists WHERE name = ?", (name,))
    ch.log("list.remove", f"list {name} ({info.format}, {info.category})", info.summary(), None)
    return info


def set_source(ch: Change, name: str, source: str, every_hours: float | None) -> ListInfo:
    before = get(ch.store, name)
    if before.padlocked:
        raise PolicyError(
            f"the {name} list is padlocked: its source is set when the appliance is provisioned"
        )
    ch.db.execute(
        "UPDATE lists SET source = ?, every_hours = ?, source_sha256 = NULL WHERE name = ?",
        (source, every_hours, name),
    )
    after = get(ch.store, name)
    ch.log("list.source", f"list {name} now from {source}", before.summary(), after.summary())
    return after
