"""The school's own allow and deny rules (layer 3), each with a reason, an author and an optional
expiry and schedule. A rule is for one group or for all groups, and names either a domain (the domain
and everything under it) or a category.

Rules are checked when they are written: nothing the IWF or CTIRU lists hold, and nothing the trust
has locked, can be allowed, and the refusal says why. The compiler enforces the same order whatever
is in the database, so a rule that got in some other way still cannot open a padlocked entry."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from appliance.audit import Change
from appliance.lists import catalogue
from appliance.lists.lookup import ListLookup, ListMatch
from appliance.policy import trust
from appliance.policy.model import (
    ALL_GROUPS,
    CATEGORIES,
    GROUPS,
    PADLOCKED_CATEGORIES,
    PolicyError,
    check_category,
    check_group,
    group_label,
)
from appliance.store import Store
from fastpath.names import normalise

ACTIONS = ("allow", "deny")
KINDS = ("name", "category")


@dataclass(frozen=True)
class Rule:
    group: str
    action: str
    kind: str
    target: str
    reason: str
    author: str
    created: datetime
    expires: datetime | None = None
    schedule: str | None = None
    source: str | None = None  # e.g. the helpdesk ticket or unblock request behind the rule
    id: int | None = None

    def active(self, at: datetime) -> bool:
        """Not yet expired at at (schedules are judged separately, as they come and go)."""
        return self.expires is None or at < self.expires

    def describe(self, zone: ZoneInfo | None = None) -> str:
        what = f"{self.target} (category)" if self.kind == "category" else self.target
        text = f"{self.action} {what} for {group_label(self.group)}"
        if self.schedule:
            text += f" during {self.schedule}"
        if self.expires:
            end = self.expires.astimezone(zone or UTC)
            if end.time() == time():  # the usual case: to the end of a day
                text += f" to the end of {end.date() - timedelta(days=1)}"
            else:
                text += f" until {end:%Y-%m-%d %H:%M}"
        return text

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("created", "expires"):
            d[k] = d[k].isoformat() if d[k] else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rule:
        return cls(
            **{
                **d,
                "created": datetime.fromisoformat(d["created"]),
                "expires": datetime.fromisoformat(d["expires"]) if d["expires"] else None,
            }
        )

    @classmethod
    def from_row(cls, row: Any) -> Rule:
        return cls.from_dict(
            {
                "id": row["id"],
                "group": row["grp"],
                "action": row["action"],
                "kind": row["kind"],
                "target": row["target"],
                "reason": row["reason"],
                "author": row["author"],
                "created": row["created"],
                "expires": row["expires"],
                "schedule": row["schedule"],
                "source": row["source"],
            }
        )


def parse_expiry(text: str, zone: ZoneInfo) -> datetime:
    """A local date (the rule lasts to the end of that day) or a local date and time."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day + timedelta(days=1), time(), zone)
        when = datetime.fromisoformat(text)
    except ValueError:
        raise PolicyError(f"expiry {text!r}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None
    return when if when.tzinfo else when.replace(tzinfo=zone)


def all_rules(store: Store) -> list[Rule]:
    return [Rule.from_row(r) for r in store.db.execute("SELECT * FROM rules ORDER BY id")]


def get(store: Store, rule_id: int) -> Rule:
    row = store.db.execute("SELECT * FROM rules WHERE id = ?", (rule_id,)).fetchone()
    if row is None:
        raise PolicyError(f"no rule {rule_id} (see `appliance policy rules`)")
    return Rule.from_row(row)


def padlocked_matches(store: Store, name: str, groups: tuple[str, ...]) -> list[str]:
    """Why name cannot be opened for these groups: the padlocked lists that hold it, the lists in a
    category the trust has locked that hold it, and the trust's locked domains (lists are named, never
    their entries, which may be confidential)."""
    policy = trust.load(store.dir)
    locked = {g: policy.locked_for(g) for g in groups}
    held = [
        (i.name, i.category, store.lists_dir / i.entries_file)
        for i in catalogue.all_lists(store)
        if i.entries_file and any(i.category in categories for categories in locked.values())
    ]
    # Page entries of a trust-locked list leave the rest of their host to the school; the padlocked
    # lists' never do.
    matches = [
        m
        for m in ListLookup(store.key(), held).matches(name)
        if m.kind != "page_hosts" or m.category in PADLOCKED_CATEGORIES
    ]
    why = []
    for m in _unique_lists(matches):
        if m.category in PADLOCKED_CATEGORIES:
            why.append(f"it is on the {m.list} list")
        else:
            title = CATEGORIES[m.category].title
            why += [
                f"it is on the {m.list} list ({title}), which the trust has locked for {g}"
                for g in groups
                if m.category in locked[g]
            ]
    for g in groups:
        for domain in policy.locked_domains + policy.groups[g].locked_domains:
            if name == domain or name.endswith("." + domain):
                why.append(f"the trust has locked {domain} for {g}")
    return list(dict.fromkeys(why))


def _unique_lists(matches: list[ListMatch]) -> list[ListMatch]:
    return list({m.list: m for m in matches}.values())


def add(ch: Change, rule: Rule) -> Rule:
    """Validates and stores a rule; PolicyError says what is wrong or why the layering forbids it."""
    store = ch.store
    check_group(rule.group, allow_all=True)
    if rule.action not in ACTIONS:
        raise PolicyError(f"a rule's action is allow or deny, not {rule.action!r}")
    groups = GROUPS if rule.group == ALL_GROUPS else (rule.group,)
    target = rule.target
    if rule.kind == "category":
        category = check_category(target)
        if rule.action == "allow":
            policy = trust.load(store.dir)
            locked = [g for g in groups if category.name in policy.locked_for(g)]
            if locked:
                who = "everyone" if category.padlocked else ", ".join(locked)
                raise PolicyError(
                    f"refused: {category.title} is padlocked for {who}; no school rule can allow it"
                )
    elif rule.kind == "name":
        norm = normalise(target)
        if norm is None:
            raise PolicyError(f"{target!r} is not a valid domain name")
        target = norm
        if rule.action == "allow":
            why = padlocked_matches(store, target, groups)
            if why:
                raise PolicyError(
                    f"refused: {target} is padlocked ({'; '.join(why)}); no school rule can allow it"
                )
    else:
        raise PolicyError(f"a rule is for a name or a category, not {rule.kind!r}")
    if (
        rule.schedule is not None
        and not store.db.execute("SELECT 1 FROM schedules WHERE name = ?", (rule.schedule,)).fetchone()
    ):
        raise PolicyError(f"no schedule named {rule.schedule!r} (see `appliance policy schedules`)")
    if rule.expires is not None and rule.expires <= ch.now:
        raise PolicyError("the expiry is in the past")
    cur = ch.db.execute(
        "INSERT INTO rules (grp, action, kind, target, reason, author, created, expires, schedule, source)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            rule.group,
            rule.action,
            rule.kind,
            target,
            rule.reason,
            rule.author,
            ch.now.isoformat(),
            rule.expires.isoformat() if rule.expires else None,
            rule.schedule,
            rule.source,
        ),
    )
    stored = get(store, int(cur.lastrowid or 0))
    ch.log("rule.add", f"rule {stored.id}: {stored.describe(store.zone())}", None, stored.to_dict())
    return stored


def remove(ch: Change, rule_id: int, action: str = "rule.remove") -> Rule:
    """Deletes a rule (action "rule.expire" when it is removed because its time is up)."""
    rule = get(ch.store, rule_id)
    ch.db.execute("DELETE FROM rules WHERE id = ?", (rule_id,))
    ch.log(action, f"rule {rule.id}: {rule.describe(ch.store.zone())}", rule.to_dict(), None)
    return rule


def expired(store: Store, at: datetime) -> list[Rule]:
    return [r for r in all_rules(store) if not r.active(at)]
