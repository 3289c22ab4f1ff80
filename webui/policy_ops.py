"""The web UI's way into appliance.policy: the same functions `appliance policy ...` uses (explain,
diff, apply, rollback), wired to a store. Nothing here decides a verdict: that is the fast path's
table through appliance.policy.explain, so the web UI can never disagree with the data plane."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from appliance.lists.lookup import ListLookup
from appliance.policy import diff, explain, generations, inputs, timetable
from appliance.policy.compiled import CompiledPolicy
from appliance.policy.explain import Explanation
from appliance.policy.generations import Generation
from appliance.policy.rules import Rule
from appliance.store import Store
from fastpath.table import DomainTable
from webui.errors import InputError

NO_POLICY = (
    "No filtering policy is in force yet: IT must apply one first (Filtering policy, Review and apply)."
)


def live(store: Store) -> Generation:
    gen = generations.current(store)
    if gen is None:
        raise InputError(NO_POLICY)
    return gen


def explain_in(store: Store, gen: Generation, name: str, group: str, at: datetime) -> Explanation:
    compiled = gen.compiled()
    key = store.key()
    lookup = ListLookup(key, [(r.name, r.category, r.path) for r in compiled.inputs.lists])
    with DomainTable.open(gen.table_path, key) as table:
        return explain.explain(
            compiled, table, lookup, gen.id, name, group, at, frozenset(timetable.exam_now(store, at))
        )


def explain_live(store: Store, name: str, group: str, at: datetime) -> Explanation:
    return explain_in(store, live(store), name, group, at)


def explain_pending(store: Store, name: str, group: str, at: datetime) -> Explanation:
    """The verdict the working policy (not yet applied) would give."""
    compiled = CompiledPolicy.compile(inputs.from_store(store, at))
    with generations.preview(store, compiled, at) as gen:
        return explain_in(store, gen, name, group, at)


def has_pending(store: Store, at: datetime) -> bool:
    """Whether the working policy differs from the one in force (changes made but not applied)."""
    gen = generations.current(store)
    working = inputs.from_store(store, at).to_dict()
    return gen is None or working != gen.compiled().inputs.without_expired(at).to_dict()


def pending_diff(store: Store, at: datetime) -> list[str]:
    compiled = CompiledPolicy.compile(inputs.from_store(store, at))
    with generations.preview(store, compiled, at) as pending:
        return diff.diff(generations.current(store), pending, store.key(), at)


def apply_working(store: Store, actor: str, reason: str, at: datetime) -> Generation:
    return generations.apply(store, inputs.from_store(store, at), actor, reason, at)


def apply_rules(store: Store, added: list[Rule], actor: str, reason: str, at: datetime) -> Generation:
    """Puts the live policy plus these (already stored) rules in force, leaving any other pending work
    pending, as appliance.policy.upkeep does for expiries."""
    current = live(store).compiled().inputs
    held = {r.id for r in current.rules}
    new = tuple(r for r in added if r.id not in held)
    return generations.apply(store, replace(current, rules=current.rules + new), actor, reason, at)


def rollback(store: Store, actor: str, reason: str, at: datetime) -> Generation:
    return generations.rollback(store, actor, reason, at)
