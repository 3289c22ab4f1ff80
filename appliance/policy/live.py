"""The policy in force, for the data plane (DNS filter, NFQUEUE loop, block page).

    live = LivePolicy(state_dir)
    live.refresh()                      # at start, on SIGHUP and about once a second
    snap = live.snapshot                # one attribute read: a consistent table + policies
    v = fastpath.verdict.decide(snap.table, name, snap.policies["students"])

refresh() notices a new generation (the `current` link changed), exam mode switched on or off, and
schedule edges and rule expiries, and then builds a new Snapshot beside the old one and swaps it in
with one assignment: a query in flight keeps the snapshot it started with, so none is lost or
answered from a mixture. The old table is unmapped when the last reference to it goes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime

from appliance.policy import generations, timetable
from appliance.policy.compiled import CompiledPolicy, Masks
from appliance.policy.model import GROUPS
from appliance.policy.pages import PageTable
from appliance.store import Store
from fastpath import verdict
from fastpath.table import DomainTable


@dataclass(frozen=True)
class Snapshot:
    generation: str
    table: DomainTable
    pages: PageTable
    compiled: CompiledPolicy
    exam_now: frozenset[str]
    masks: dict[str, Masks]
    policies: dict[str, verdict.GroupPolicy]
    valid_until: datetime  # refresh before then, even if nothing else changes


class LivePolicy:
    def __init__(self, state_dir: str | os.PathLike[str] | None = None) -> None:
        self.store = Store(state_dir)
        self.snapshot: Snapshot | None = None

    def close(self) -> None:
        self.store.close()

    def refresh(self, now: datetime | None = None) -> bool:
        """Brings the snapshot up to date; True if it changed. With no policy applied yet the
        snapshot stays None (the data plane's fail-open or fail-closed setting decides)."""
        now = now or datetime.now(UTC)
        try:
            target = os.path.basename(os.readlink(self.store.policy_dir / generations.CURRENT))
        except FileNotFoundError:
            return False
        old = self.snapshot
        exams = timetable.exam_now(self.store, now)
        if old and old.generation == target and old.exam_now == frozenset(exams) and now < old.valid_until:
            return False
        if old and old.generation == target:
            table, pages, compiled = old.table, old.pages, old.compiled
        else:
            gen = generations.get(self.store, target)
            key = self.store.key()
            table = DomainTable.open(gen.table_path, key)
            pages = PageTable(gen.pages_path, key)
            compiled = gen.compiled()
        masks = {g: compiled.masks(g, now, frozenset(exams)) for g in GROUPS}
        ends = [until for until in exams.values() if until]
        self.snapshot = Snapshot(
            generation=target,
            table=table,
            pages=pages,
            compiled=compiled,
            exam_now=frozenset(exams),
            masks=masks,
            policies={g: m.group_policy() for g, m in masks.items()},
            valid_until=min([compiled.next_change(now), *ends]),
        )
        return True
