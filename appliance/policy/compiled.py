"""A compiled policy: which category bit means what, and each group's masks at a given moment.

The fast-path table gives each name a 64-bit mask; the compiler decides what each bit stands for:

- a category (one bit per category any list feeds: iwf, ctiru, pornography, ...);
- "pages": the host has page-level entries (plain-HTTP only; the HTTP filter then checks the path);
- "trust": a domain the trust has locked, for all groups or for one;
- "school": a school name rule, one bit per (allow or deny, group, schedule), so that a rule for all
  groups is compiled into each group's bit and a group's own rule for the same name can shadow it.

A group's masks then follow the layers: padlocked = the IWF and CTIRU categories, the trust's locked
categories and locked domains; allow and deny = the school's name-rule bits whose schedule is on;
blocked = the trust's default categories for the group, adjusted by the school's category rules
whose schedule is on (a rule for the group beats one for all groups; at the same scope deny wins).
A group in exam mode gets the exams group's masks (and keeps its own padlocked ones)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from appliance.policy.inputs import PolicyInputs
from appliance.policy.model import ALL_GROUPS, CATEGORIES, GROUPS, Action, PolicyError
from appliance.policy.rules import Rule
from appliance.policy.schedules import Calendar
from appliance.policy.timetable import EXAMS
from fastpath import verdict

MAX_BITS = 64


@dataclass(frozen=True)
class Bit:
    index: int
    kind: str  # "category", "pages", "trust" or "school"
    category: str | None = None
    group: str | None = None  # trust: the group or "*"; school: the group
    action: str | None = None  # school: "allow" or "deny"
    schedule: str | None = None  # school: the schedule, or None for always

    def describe(self) -> str:
        if self.kind == "category":
            return CATEGORIES[self.category or ""].title
        if self.kind == "pages":
            return "has page-level entries"
        if self.kind == "trust":
            return f"locked by the trust for {'all groups' if self.group == ALL_GROUPS else self.group}"
        during = f" during {self.schedule}" if self.schedule else ""
        return f"school {self.action} for {self.group}{during}"


@dataclass(frozen=True)
class Masks:
    group: str  # the group asked about
    policy_group: str  # whose policy applies: the group, or exams in exam mode
    blocked: int
    padlocked: int
    allow: int
    deny: int
    default: Action

    @property
    def exam(self) -> bool:
        return self.policy_group != self.group

    def group_policy(self) -> verdict.GroupPolicy:
        default = verdict.Action.BLOCK if self.default == Action.BLOCK else verdict.Action.ALLOW
        return verdict.GroupPolicy(
            blocked=self.blocked,
            padlocked=self.padlocked,
            allow=self.allow,
            deny=self.deny,
            default_action=default,
        )


def name_rule_scopes(rules: tuple[Rule, ...]) -> dict[tuple[str, str, str | None], list[Rule]]:
    """For each (action, group, schedule), the name rules compiled into its bit. A rule for all
    groups is left out of a group that has its own rule for the same name that is always on or on
    the same schedule: the group's own rule is the more specific."""
    own = {(r.group, r.target, r.schedule) for r in rules if r.kind == "name" and r.group != ALL_GROUPS}
    scopes: dict[tuple[str, str, str | None], list[Rule]] = {}
    for r in rules:
        if r.kind != "name":
            continue
        for g in GROUPS if r.group == ALL_GROUPS else (r.group,):
            if r.group == ALL_GROUPS and ((g, r.target, None) in own or (g, r.target, r.schedule) in own):
                continue
            scopes.setdefault((r.action, g, r.schedule), []).append(r)
    return scopes


def assign_bits(inputs: PolicyInputs) -> tuple[Bit, ...]:
    for r in inputs.rules:
        if r.schedule is not None and r.schedule not in inputs.schedules:
            raise PolicyError(f"rule {r.id} runs during schedule {r.schedule!r}, which does not exist")
    wanted: list[dict[str, Any]] = []
    used = {ref.category for ref in inputs.lists}
    wanted += [{"kind": "category", "category": c} for c in CATEGORIES if c in used]
    if any(ref.pages for ref in inputs.lists):
        wanted.append({"kind": "pages"})
    if inputs.trust.locked_domains:
        wanted.append({"kind": "trust", "group": ALL_GROUPS})
    wanted += [{"kind": "trust", "group": g} for g in GROUPS if inputs.trust.groups[g].locked_domains]
    scopes = sorted(name_rule_scopes(inputs.rules), key=lambda s: (s[0], GROUPS.index(s[1]), s[2] or ""))
    wanted += [{"kind": "school", "action": a, "group": g, "schedule": s} for a, g, s in scopes]
    if len(wanted) > MAX_BITS:
        raise PolicyError(
            f"the policy needs {len(wanted)} category bits and the fast path has {MAX_BITS}: use fewer "
            "different schedules on name rules"
        )
    return tuple(Bit(index=i, **w) for i, w in enumerate(wanted))


class CompiledPolicy:
    """Inputs plus bit assignment: everything but the table itself."""

    def __init__(self, inputs: PolicyInputs, bits: tuple[Bit, ...]) -> None:
        self.inputs = inputs
        self.bits = bits
        self.calendar: Calendar = inputs.calendar()
        self._category = {b.category: 1 << b.index for b in bits if b.kind == "category"}
        self._trust = {b.group: 1 << b.index for b in bits if b.kind == "trust"}
        self._school = {(b.action, b.group, b.schedule): 1 << b.index for b in bits if b.kind == "school"}
        pages = [b for b in bits if b.kind == "pages"]
        self.pages_bit = 1 << pages[0].index if pages else 0

    @classmethod
    def compile(cls, inputs: PolicyInputs) -> CompiledPolicy:
        return cls(inputs, assign_bits(inputs))

    def category_bit(self, category: str) -> int:
        """The category's bit, or 0 when no list feeds it (so nothing can be in it)."""
        return self._category.get(category, 0)

    def trust_bit(self, group: str) -> int:
        return self._trust.get(group, 0)

    def school_bit(self, action: str, group: str, schedule: str | None) -> int:
        return self._school[(action, group, schedule)]

    def describe(self, mask: int) -> list[Bit]:
        return [b for b in self.bits if mask >> b.index & 1]

    def _categories(self, names: frozenset[str] | set[str]) -> int:
        mask = 0
        for c in names:
            mask |= self.category_bit(c)
        return mask

    def _on(self, schedule: str | None, at: datetime) -> bool:
        return schedule is None or self.calendar.active(schedule, at)

    def exam_mode(self, group: str, at: datetime, exam_now: frozenset[str] = frozenset()) -> bool:
        return group != EXAMS and (
            group in exam_now
            or any(self.calendar.active(s, at) for s in self.inputs.exam_schedules.get(group, []))
        )

    def padlocked(self, group: str) -> int:
        t = self.inputs.trust
        return self._categories(t.locked_for(group)) | self.trust_bit(ALL_GROUPS) | self.trust_bit(group)

    def masks(self, group: str, at: datetime, exam_now: frozenset[str] = frozenset()) -> Masks:
        g = EXAMS if self.exam_mode(group, at, exam_now) else group
        padlocked = self.padlocked(group) | self.padlocked(g)
        blocked = self._categories(self.blocked_categories(g, at))
        allow = deny = 0
        for (action, group_, schedule), bit in self._school.items():
            if group_ == g and self._on(schedule, at):
                if action == "allow":
                    allow |= bit
                else:
                    deny |= bit
        return Masks(group, g, blocked, padlocked, allow, deny, self.inputs.trust.groups[g].default)

    def blocked_categories(self, group: str, at: datetime) -> set[str]:
        """The categories group blocks at at (before padlocks): the trust's defaults, then the
        school's category rules in force."""
        blocked = set(self.inputs.trust.groups[group].blocked)
        for rule in self.category_rules(group, at):
            if rule.action == "deny":
                blocked.add(rule.target)
            else:
                blocked.discard(rule.target)
        return blocked

    def category_rules(self, group: str, at: datetime) -> list[Rule]:
        """The category rules in force for group at at, in the order they apply (the last word wins):
        all-groups rules, then the group's own; allows before denies."""
        live = [
            r
            for r in self.inputs.rules
            if r.kind == "category"
            and r.group in (ALL_GROUPS, group)
            and r.active(at)
            and self._on(r.schedule, at)
        ]
        return sorted(live, key=lambda r: (r.group != ALL_GROUPS, r.action == "deny"))

    def next_change(self, at: datetime) -> datetime:
        """When the masks may next change by themselves (a schedule edge or a rule's expiry)."""
        names = {r.schedule for r in self.inputs.rules if r.schedule}
        names.update(s for group in self.inputs.exam_schedules.values() for s in group)
        names = {n for n in names if n in self.calendar.schedules}
        edge = self.calendar.next_change(names, at)
        expiries = [r.expires for r in self.inputs.rules if r.expires and r.expires > at]
        return min([edge, *expiries])

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": self.inputs.to_dict(), "bits": [asdict(b) for b in self.bits]}
