"""Reading and changing the filtering policy from the web UI and the API: each function checks what
was entered, then calls the policy code (appliance.policy) inside one audited change, exactly as the
`appliance policy` command does. Changes to rules, schedules and terms wait in the working policy
until someone reviews the diff and applies it; exam mode switched on or off takes effect at once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from appliance import audit
from appliance.config import Config
from appliance.policy import generations, inputs, rules, timetable
from appliance.policy.compiled import CompiledPolicy
from appliance.policy.generations import Generation
from appliance.policy.model import ALL_GROUPS, CATEGORIES, GROUPS
from appliance.policy.rules import Rule
from appliance.policy.schedules import Dated, Schedule, Term, Weekly
from appliance.policy.timetable import EXAMS
from appliance.store import Store
from webui import fields, policy_ops
from webui.accounts import User
from webui.errors import InputError

REASON = "Why (kept in the change log)"


def _reason(values: Mapping[str, Any]) -> str:
    return fields.text(values.get("reason"), REASON, 1000, multiline=True)


# --- reading ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CategoryState:
    name: str
    title: str
    description: str
    locked: bool  # padlocked or locked by the trust: nobody at the school can change it
    blocked: bool  # in the working policy (what applying would put in force)
    blocked_live: bool | None  # in the policy in force (None: no policy yet)
    rule: Rule | None  # the school category rule that decides it, if any

    @property
    def pending(self) -> bool:
        return self.blocked_live is not None and self.blocked != self.blocked_live


@dataclass(frozen=True)
class GroupState:
    name: str
    default: str
    exam_now: bool
    exam_until: datetime | None
    exam_schedules: list[str]
    lans: list[tuple[str, list[str]]]  # (interface, subnets) from the appliance's configuration
    categories: list[CategoryState]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "default": self.default,
            "exam_mode": {
                "on": self.exam_now,
                "until": self.exam_until.isoformat() if self.exam_until else None,
                "schedules": self.exam_schedules,
            },
            "vlans": [{"interface": i, "subnets": s} for i, s in self.lans],
            "categories": [
                {
                    "name": c.name,
                    "title": c.title,
                    "locked": c.locked,
                    "blocked": c.blocked,
                    "blocked_in_force": c.blocked_live,
                    "rule": c.rule.id if c.rule else None,
                }
                for c in self.categories
            ],
        }


def groups(store: Store, config: Config | None, now: datetime) -> list[GroupState]:
    working = CompiledPolicy.compile(inputs.from_store(store, now))
    live_gen = generations.current(store)
    live = live_gen.compiled() if live_gen else None
    exams = timetable.exam_now(store, now)
    scheduled = timetable.exam_schedules(store)
    out = []
    for g in GROUPS:
        blocked = working.blocked_categories(g, now)
        blocked_live = live.blocked_categories(g, now) if live else None
        locked = working.inputs.trust.locked_for(g)
        decided = {r.target: r for r in working.category_rules(g, now)}
        lans = [
            (lan.interface, [str(s) for s in lan.subnets])
            for lan in (config.lans if config else ())
            if lan.group == g
        ]
        cats = [
            CategoryState(
                name=c.name,
                title=c.title,
                description=c.description,
                locked=c.name in locked,
                blocked=c.name in blocked or c.name in locked,
                blocked_live=None if blocked_live is None else (c.name in blocked_live or c.name in locked),
                rule=decided.get(c.name),
            )
            for c in CATEGORIES.values()
        ]
        out.append(
            GroupState(
                name=g,
                default=working.inputs.trust.groups[g].default.value,
                exam_now=g in exams,
                exam_until=exams.get(g),
                exam_schedules=scheduled.get(g, []),
                lans=lans,
                categories=cats,
            )
        )
    return out


@dataclass(frozen=True)
class RuleState:
    rule: Rule
    in_force: bool  # in the live policy now
    removed: bool  # gone from the working policy but still in force until the next apply


def rule_states(store: Store, now: datetime) -> list[RuleState]:
    live_gen = generations.current(store)
    live = {r.id: r for r in live_gen.compiled().inputs.rules if r.active(now)} if live_gen else {}
    working = rules.all_rules(store)
    ids = {r.id for r in working}
    out = [RuleState(r, r.id in live, False) for r in working]
    out += [RuleState(r, True, True) for i, r in live.items() if i not in ids]
    return out


# --- changing --------------------------------------------------------------------------------------


def add_rule(store: Store, user: User, values: Mapping[str, Any], now: datetime) -> Rule:
    action = fields.choice(values.get("action"), "Allow or block", ["allow", "deny"])
    kind = fields.choice(values.get("kind"), "What", ["name", "category"])
    group = values.get("group")
    group = fields.choice(group, "Group", [*GROUPS, ALL_GROUPS])
    target = fields.text(values.get("target"), "Site or category", 253)
    if kind == "category" and target not in CATEGORIES:
        raise InputError("Category: choose one from the list")
    schedule = fields.text(values.get("schedule"), "Only during", 64, required=False) or None
    expires = None
    if values.get("expires"):
        expires = rules.parse_expiry(fields.day(values["expires"], "Until").isoformat(), store.zone())
    reason = _reason(values)
    rule = Rule(
        group=group,
        action=action,
        kind=kind,
        target=target,
        reason=reason,
        author=user.username,
        created=now,
        expires=expires,
        schedule=schedule,
        source=fields.text(values.get("ticket"), "Ticket", 100, required=False) or None,
    )
    with audit.change(store, user.username, reason, now) as ch:
        return rules.add(ch, rule)


def remove_rule(store: Store, user: User, rule_id: int, values: Mapping[str, Any], now: datetime) -> Rule:
    with audit.change(store, user.username, _reason(values), now) as ch:
        return rules.remove(ch, rule_id)


def _lines(value: Any, label: str) -> list[str]:
    text = fields.text(value, label, 2000, required=False, multiline=True)
    return [line.strip() for line in text.splitlines() if line.strip()]


def set_schedule(store: Store, user: User, values: Mapping[str, Any], now: datetime) -> Schedule:
    name = fields.text(values.get("name"), "Schedule name", 64)
    schedule = Schedule(
        tuple(Weekly.parse(w) for w in _lines(values.get("weekly"), "Weekly times")),
        tuple(Dated.parse(d) for d in _lines(values.get("dated"), "Dated times")),
        fields.choice(values.get("terms", "any"), "Term time", ["any", "in", "out"]),
    )
    with audit.change(store, user.username, _reason(values), now) as ch:
        timetable.set_schedule(ch, name, schedule)
    return schedule


def remove_schedule(store: Store, user: User, name: str, values: Mapping[str, Any], now: datetime) -> None:
    with audit.change(store, user.username, _reason(values), now) as ch:
        timetable.remove_schedule(ch, name)


def set_term(store: Store, user: User, values: Mapping[str, Any], now: datetime) -> Term:
    term = Term(
        fields.text(values.get("name"), "Term name", 64),
        fields.day(values.get("start"), "First day"),
        fields.day(values.get("end"), "Last day"),
    )
    with audit.change(store, user.username, _reason(values), now) as ch:
        timetable.set_term(ch, term)
    return term


def remove_term(store: Store, user: User, name: str, values: Mapping[str, Any], now: datetime) -> None:
    with audit.change(store, user.username, _reason(values), now) as ch:
        timetable.remove_term(ch, name)


def exam_groups() -> list[str]:
    return [g for g in GROUPS if g != EXAMS]


def exam_mode(store: Store, user: User, values: Mapping[str, Any], now: datetime) -> None:
    """Exam mode on or off now. The API and the page both need an explicit confirm, since it cuts a
    group off the internet at once."""
    group = fields.choice(values.get("group"), "Group", exam_groups())
    mode = fields.choice(values.get("mode"), "On or off", ["on", "off"])
    if str(values.get("confirm", "")).lower() not in ("yes", "true", "1"):
        raise InputError("Exam mode: tick the box to confirm")
    until = None
    if mode == "on" and values.get("until"):
        raw = fields.text(values["until"], "Until", 16)
        try:
            until = datetime.fromisoformat(raw).replace(tzinfo=store.zone())
        except ValueError:
            raise InputError(f"Until: {raw!r} is not a date and time") from None
    with audit.change(store, user.username, _reason(values), now) as ch:
        if mode == "on":
            timetable.exam_on(ch, group, until)
        else:
            timetable.exam_off(ch, group)


def exam_schedule(store: Store, user: User, values: Mapping[str, Any], now: datetime) -> None:
    group = fields.choice(values.get("group"), "Group", exam_groups())
    schedule = fields.text(values.get("schedule"), "Schedule", 64)
    add = fields.choice(values.get("mode"), "Add or remove", ["add", "remove"]) == "add"
    with audit.change(store, user.username, _reason(values), now) as ch:
        if add:
            timetable.schedule_exam(ch, group, schedule)
        else:
            timetable.unschedule_exam(ch, group, schedule)


def apply(store: Store, user: User, values: Mapping[str, Any], now: datetime) -> Generation:
    reason = _reason(values)
    if not policy_ops.has_pending(store, now):
        raise InputError("There is nothing to apply: the working policy is the one in force.")
    return generations.apply(store, inputs.from_store(store, now), user.username, reason, now)


def rollback(store: Store, user: User, values: Mapping[str, Any], now: datetime) -> Generation:
    if str(values.get("confirm", "")).lower() not in ("yes", "true", "1"):
        raise InputError("Roll back: tick the box to confirm")
    return generations.rollback(store, user.username, _reason(values), now)
