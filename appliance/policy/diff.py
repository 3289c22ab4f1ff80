"""`policy diff`: what applying the working policy would block or allow that the live one does not.

Both sides are real compiled generations (the working one built beside the live one, not put in
force), and name-level effects come from the fast path's own verdicts on each side's table."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from appliance.lists.entries import EntrySet, changes
from appliance.lists.progress import Progress
from appliance.policy import generations
from appliance.policy.compiled import CompiledPolicy
from appliance.policy.generations import Generation
from appliance.policy.inputs import ListRef
from appliance.policy.model import CATEGORIES, GROUPS
from appliance.store import Store
from fastpath import verdict
from fastpath.table import DomainTable


def _verdict(
    table: DomainTable | None, compiled: CompiledPolicy | None, name: str, group: str, at: datetime
) -> str:
    if table is None or compiled is None:
        return "no policy"
    v = verdict.decide(table, name, compiled.masks(group, at).group_policy())
    action = "blocked" if v.action == verdict.Action.BLOCK else "allowed"
    return f"{action} ({v.reason.name.lower().replace('_', ' ')})"


def _blocking_groups(compiled: CompiledPolicy, category: str, at: datetime) -> list[str]:
    return [
        g
        for g in GROUPS
        if category in compiled.blocked_categories(g, at) | compiled.inputs.trust.locked_for(g)
    ]


def diff(old: Generation | None, new: Generation, key: bytes, at: datetime) -> list[str]:
    """Human-readable lines, grouped under headings; an empty list when nothing would change."""
    new_c = new.compiled()
    old_c = old.compiled() if old else None
    old_in = old_c.inputs if old_c else None
    out: list[str] = []

    def section(title: str, lines: list[str]) -> None:
        if lines:
            out.append(f"{title}:")
            out.extend(f"  {line}" for line in lines)

    old_lists: dict[str, ListRef] = {r.name: r for r in old_in.lists} if old_in else {}
    new_lists = {r.name: r for r in new_c.inputs.lists}
    lines = []
    for name, ref in new_lists.items():
        blocking = _blocking_groups(new_c, ref.category, at)
        groups = "every group" if len(blocking) == len(GROUPS) else ", ".join(blocking) or "no group"
        title = CATEGORIES[ref.category].title
        if name not in old_lists:
            lines.append(
                f"+ list {name} ({title}): {ref.domains + ref.exact:,} names and {ref.pages:,} pages "
                f"now blocked for {groups}"
            )
        elif old_lists[name].path.name != ref.path.name:
            added, removed = changes(
                EntrySet.read(old_lists[name].path, key, mmap=True), EntrySet.read(ref.path, key, mmap=True)
            )
            lines.append(f"~ list {name} ({title}): +{added:,} -{removed:,} entries, blocked for {groups}")
    for name, ref in old_lists.items():
        if name not in new_lists:
            lines.append(
                f"- list {name} ({CATEGORIES[ref.category].title}): its entries are no longer blocked"
            )
    section("Lists", lines)

    old_rules = {r.id: r for r in old_in.rules} if old_in else {}
    new_rules = {r.id: r for r in new_c.inputs.rules}
    zone = new_c.calendar.zone
    lines = [
        f"+ rule {i}: {r.describe(zone)} ({r.reason})" for i, r in new_rules.items() if i not in old_rules
    ]
    lines += [f"- rule {i}: {r.describe(zone)}" for i, r in old_rules.items() if i not in new_rules]
    section("School rules", lines)

    targets = {
        r.target
        for i, r in (new_rules | old_rules).items()
        if r.kind == "name" and (i not in old_rules or i not in new_rules)
    }
    lines = []
    if targets:
        old_open = DomainTable.open(old.table_path, key) if old else contextlib.nullcontext()
        with DomainTable.open(new.table_path, key) as new_table, old_open as old_table:
            for name in sorted(targets):
                for g in GROUPS:
                    before = _verdict(old_table, old_c, name, g, at)
                    after = _verdict(new_table, new_c, name, g, at)
                    if before != after:
                        lines.append(f"{name} for {g}: {before} -> {after}")
    section("Names now treated differently", lines)

    lines = []
    for g in GROUPS:
        before = (old_c.blocked_categories(g, at) | old_c.inputs.trust.locked_for(g)) if old_c else set()
        after = new_c.blocked_categories(g, at) | new_c.inputs.trust.locked_for(g)
        if after - before:
            lines.append(f"{g}: now blocks {_titles(after - before)}")
        if before - after:
            lines.append(f"{g}: no longer blocks {_titles(before - after)}")
        if old_c and old_c.inputs.trust.groups[g].default != new_c.inputs.trust.groups[g].default:
            lines.append(f"{g}: default now {new_c.inputs.trust.groups[g].default.value}")
    section("Categories (as of now)", lines)

    lines = []
    for what, key_ in (
        ("schedules", "schedules"),
        ("terms", "terms"),
        ("exam schedules", "exam_schedules"),
        ("trust policy", "trust"),
        ("time zone", "zone"),
    ):
        if old_in is None:
            break  # nothing to compare with: the sections above say what comes into force
        before_v: Any = old_in.to_dict()[key_]
        after_v = new_c.inputs.to_dict()[key_]
        if before_v != after_v:
            lines.append(f"{what} changed: {_short(before_v)} -> {_short(after_v)}")
    section("Timetable and trust", lines)
    return out


def pending(store: Store, at: datetime, progress: Progress | None = None) -> list[str]:
    """What applying the working policy at at would change, against the policy in force."""
    with generations.preview_working(store, at, progress) as working:
        return diff(generations.current(store), working, store.key(), at)


def _titles(categories: set[str]) -> str:
    return ", ".join(CATEGORIES[c].title for c in CATEGORIES if c in categories)


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 200 else text[:197] + "..."
