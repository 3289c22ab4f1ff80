"""The web UI's way into the policy in force, with the web UI's words for "none yet". Nothing here
decides a verdict: that is the fast path's table through appliance.policy.explain, so the web UI can
never disagree with the data plane."""

from __future__ import annotations

from datetime import datetime

from appliance.policy import generations, inputs
from appliance.policy.explain import Explainer, Explanation
from appliance.policy.generations import Generation
from appliance.store import Store
from webui.errors import InputError

NO_POLICY = (
    "No filtering policy is in force yet: IT must apply one first (Filtering policy, Review and apply)."
)


def live(store: Store) -> Generation:
    gen = generations.current(store)
    if gen is None:
        raise InputError(NO_POLICY)
    return gen


def explainer(store: Store, at: datetime) -> Explainer:
    """The policy in force, opened to explain names at at."""
    return Explainer(store, live(store), at)


def explain_live(store: Store, name: str, group: str, at: datetime) -> Explanation:
    with explainer(store, at) as ex:
        return ex.explain(name, group)


def has_pending(store: Store, at: datetime) -> bool:
    """Whether the working policy differs from the one in force (changes made but not applied)."""
    gen = generations.current(store)
    working = inputs.from_store(store, at).to_dict()
    return gen is None or working != gen.compiled().inputs.without_expired(at).to_dict()
