"""Changes the appliance makes to the live policy by itself, on a timer: rules whose time is up,
and refreshed lists. Each rebuilds the live generation's own inputs with just that change, so work
the school has not applied yet stays pending."""

from __future__ import annotations

from datetime import UTC, datetime

from appliance import audit
from appliance.lists.progress import Progress
from appliance.policy import generations, inputs, rules
from appliance.policy.generations import Generation
from appliance.store import Store

SYSTEM = "system"


def expire(store: Store, now: datetime | None = None) -> Generation | None:
    """Deletes expired rules (logged as rule.expire) and, if the live policy holds any, applies it
    again without them. Returns the new generation, if there is one."""
    now = now or datetime.now(UTC)
    gone = rules.expired(store, now)
    if gone:
        with audit.change(store, SYSTEM, "the rule's expiry date passed", now) as ch:
            for r in gone:
                assert r.id is not None
                rules.remove(ch, r.id, "rule.expire")
    live = generations.current(store)
    if live is None:
        return None
    live_inputs = live.compiled().inputs
    if all(r.active(now) for r in live_inputs.rules):
        return None
    return generations.apply(store, live_inputs.without_expired(now), SYSTEM, "rules expired", now)


def refresh_lists(
    store: Store,
    names: list[str],
    actor: str,
    reason: str,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> Generation | None:
    """Applies the newly imported versions of these lists to the live policy (lists it does not
    hold yet wait for `policy apply`). Returns the new generation, if anything changed."""
    live = generations.current(store)
    if live is None:
        return None
    live_inputs = live.compiled().inputs
    held = {ref.name: ref.path.name for ref in live_inputs.lists}
    fresh = {
        n: ref
        for n, ref in inputs.list_refs(store).items()
        if n in names and n in held and held[n] != ref.path.name
    }
    if not fresh:
        return None
    return generations.apply(store, live_inputs.with_lists(fresh), actor, reason, now, progress)
