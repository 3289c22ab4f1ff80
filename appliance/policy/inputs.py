"""Everything a policy is compiled from: the trust policy, the lists, the school's rules, schedules,
terms and exam schedules, and the time zone.

The working copy is read from the database; each applied generation keeps its own copy (with its
lists' entry files linked in), so a generation can be explained, diffed, rebuilt without expired
rules, or rebuilt with refreshed lists, without picking up changes nobody has applied yet."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from appliance.lists import catalogue
from appliance.policy import rules as rules_mod
from appliance.policy import timetable, trust
from appliance.policy.rules import Rule
from appliance.policy.schedules import Calendar, Schedule, Term
from appliance.policy.trust import TrustPolicy
from appliance.store import Store


@dataclass(frozen=True)
class ListRef:
    name: str
    format: str
    category: str
    path: Path  # the entry file
    domains: int
    exact: int
    pages: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": self.format,
            "category": self.category,
            "file": self.path.name,
            "domains": self.domains,
            "exact": self.exact,
            "pages": self.pages,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], lists_dir: Path) -> ListRef:
        return cls(
            d["name"], d["format"], d["category"], lists_dir / d["file"], d["domains"], d["exact"], d["pages"]
        )


@dataclass(frozen=True)
class PolicyInputs:
    zone: str
    trust: TrustPolicy
    rules: tuple[Rule, ...]
    schedules: dict[str, Schedule]
    terms: tuple[Term, ...]
    exam_schedules: dict[str, list[str]]
    lists: tuple[ListRef, ...]

    def calendar(self) -> Calendar:
        return Calendar(ZoneInfo(self.zone), self.terms, self.schedules)

    def without_expired(self, at: datetime) -> PolicyInputs:
        return replace(self, rules=tuple(r for r in self.rules if r.active(at)))

    def with_rules(self, added: list[Rule]) -> PolicyInputs:
        """These inputs with the added rules that they do not hold yet."""
        held = {r.id for r in self.rules}
        return replace(self, rules=self.rules + tuple(r for r in added if r.id not in held))

    def with_lists(self, refs: dict[str, ListRef]) -> PolicyInputs:
        """These inputs with each list that refs names replaced by that version (others kept)."""
        return replace(self, lists=tuple(refs.get(ref.name, ref) for ref in self.lists))

    def to_dict(self) -> dict[str, Any]:
        return {
            "zone": self.zone,
            "trust": {"source": self.trust.source, **self.trust.to_dict()},
            "rules": [r.to_dict() for r in self.rules],
            "schedules": {n: s.to_dict() for n, s in self.schedules.items()},
            "terms": [
                {"name": t.name, "start": t.start.isoformat(), "end": t.end.isoformat()} for t in self.terms
            ],
            "exam_schedules": self.exam_schedules,
            "lists": [ref.to_dict() for ref in self.lists],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], lists_dir: Path) -> PolicyInputs:
        trust_data = dict(d["trust"])
        source = trust_data.pop("source")
        return cls(
            zone=d["zone"],
            trust=TrustPolicy.from_dict(trust_data, source),
            rules=tuple(Rule.from_dict(r) for r in d["rules"]),
            schedules={n: Schedule.from_dict(s) for n, s in d["schedules"].items()},
            terms=tuple(
                Term(t["name"], date.fromisoformat(t["start"]), date.fromisoformat(t["end"]))
                for t in d["terms"]
            ),
            exam_schedules=d["exam_schedules"],
            lists=tuple(ListRef.from_dict(ref, lists_dir) for ref in d["lists"]),
        )


def list_refs(store: Store) -> dict[str, ListRef]:
    """The current version of every imported list in the store."""
    return {
        i.name: ListRef(
            i.name, i.format, i.category, store.lists_dir / i.entries_file, i.domains, i.exact, i.pages
        )
        for i in catalogue.all_lists(store)
        if i.entries_file
    }


def from_store(store: Store, at: datetime) -> PolicyInputs:
    """The working policy: what `policy apply` would put in force at at."""
    return PolicyInputs(
        zone=store.zone().key,
        trust=trust.load(store.dir),
        rules=tuple(r for r in rules_mod.all_rules(store) if r.active(at)),
        schedules=timetable.schedules(store),
        terms=timetable.terms(store),
        exam_schedules=timetable.exam_schedules(store),
        lists=tuple(list_refs(store).values()),
    )
