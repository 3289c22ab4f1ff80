"""Changes put straight into the live policy, without `policy apply`: rules whose time is up and
refreshed lists (both on timers), and the allow rules of an approved unblock request. Each rebuilds
the live generation's own inputs with just that change, so work the school has not applied yet
stays pending."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from appliance import audit
from appliance.lists.progress import Progress
from appliance.policy import generations, inputs, rules
from appliance.policy.generations import Generation
from appliance.policy.inputs import PolicyInputs
from appliance.policy.rules import Rule
from appliance.store import Store

SYSTEM = "system"


def _amend_live(
    store: Store,
    amend: Callable[[PolicyInputs], PolicyInputs | None],
    actor: str,
    reason: str,
    now: datetime | None,
    progress: Progress | None = None,
) -> Generation | None:
    """Applies the live generation's inputs as amend changes them (None: nothing to change). Returns
    the new generation, or None when nothing changed or no policy has been applied yet."""
    live = generations.current(store)
    if live is None:
        return None
    amended = amend(live.compiled().inputs)
    if amended is None:
        return None
    return generations.apply(store, amended, actor, reason, now, progress)


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

    def without_expired(live: PolicyInputs) -> PolicyInputs | None:
        return None if all(r.active(now) for r in live.rules) else live.without_expired(now)

    return _amend_live(store, without_expired, SYSTEM, "rules expired", now)


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

    def with_fresh_lists(live: PolicyInputs) -> PolicyInputs | None:
        held = {ref.name: ref.path.name for ref in live.lists}
        fresh = {
            n: ref
            for n, ref in inputs.list_refs(store).items()
            if n in names and n in held and held[n] != ref.path.name
        }
        return live.with_lists(fresh) if fresh else None

    return _amend_live(store, with_fresh_lists, actor, reason, now, progress)


def add_rules(
    store: Store, added: list[Rule], actor: str, reason: str, now: datetime | None = None
) -> Generation | None:
    """Puts the live policy plus these (already stored) rules in force. Returns the new generation,
    or None when no policy has been applied yet (the rules then wait for `policy apply`)."""
    return _amend_live(store, lambda live: live.with_rules(added), actor, reason, now)
