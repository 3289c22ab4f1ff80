"""What each group should get for each name: the policy in force says (through `policy explain`, the
verdict of the fast path on the generation's own table), and the standards can say more.

The standards win where they speak: the categories a group must block (compliance.toml [required];
the IWF and CTIRU lists for everyone), educational sites that must stay reachable, and exam groups,
which reach nothing but their allowlist (names a school rule allows for them). So a policy that
allows gambling for students is a failure even though the filter does what the policy says, and the
report names the rule that did it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from appliance.policy import explain, generations, timetable
from appliance.policy.model import CATEGORIES, GROUPS
from appliance.store import Store


@dataclass(frozen=True)
class Expectation:
    block: bool
    basis: str  # why this is expected: the standard that requires it, or "the policy"
    policy: str  # what the policy in force says and why, in one line


class PolicyView:
    """The generation in force, opened once to explain many names (nothing before the first apply)."""

    def __init__(self, store: Store, at: datetime) -> None:
        self.at = at
        self.generation = generations.current(store)
        self._explainer = explain.Explainer(store, self.generation, at) if self.generation else None

    def close(self) -> None:
        if self._explainer is not None:
            self._explainer.close()

    def explain(self, name: str, group: str) -> explain.Explanation | None:
        if self._explainer is None or group not in GROUPS:
            return None
        return self._explainer.explain(name, group)

    def in_exam_mode(self, group: str) -> bool:
        ex = self._explainer
        return ex is not None and group in GROUPS and ex.compiled.exam_mode(group, self.at, ex.exam_now)


def summary(e: explain.Explanation | None) -> str:
    if e is None:
        return "no policy applied for this group"
    decided = next((s for s in e.steps if s.decided), None)
    findings = "; ".join(decided.findings) if decided and decided.findings else e.reason.lower()
    where = f"{decided.title}: " if decided else ""
    return f"policy {e.generation}: {e.action} ({where}{findings})"


def expect(
    view: PolicyView,
    required: frozenset[str],
    educational: bool,
    exam: bool,
    group: str,
    name: str,
    category: str | None,
) -> Expectation | None:
    """The expectation for name in group, or None when neither the policy nor a standard says."""
    e = view.explain(name, group)
    said = summary(e)
    if exam or (e is not None and e.policy_group == timetable.EXAMS):
        allowlisted = e is not None and e.reason == "SCHOOL_ALLOW"
        basis = "exam groups reach nothing but their allowlist"
        return Expectation(not allowlisted, basis + (" (allowlisted)" if allowlisted else ""), said)
    if category is not None and category in required:
        return Expectation(True, f"{CATEGORIES[category].title} must be blocked for {group}", said)
    if educational:
        return Expectation(False, "educational sites must stay reachable", said)
    if e is None:
        return None
    return Expectation(e.action == "block", "the policy", said)
