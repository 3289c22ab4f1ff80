"""Why a site is blocked for a group, in the terms the block page uses.

The verdict and the layer that decided come from the policy in force's explanation
(appliance.policy.explain, which takes them from the fast path's own decision). This module adds the
categories that decided, and, for plain HTTP, a block of one page on a site that is otherwise allowed:
the page table checked as the NFQUEUE consumer checks it (padlocked pages always block; pages in a
blocked category block unless a school rule allowed the site)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from appliance.lists.lookup import ListLookup
from appliance.policy import explain
from appliance.policy.live import Snapshot
from appliance.policy.model import CATEGORIES, Category, Layer
from fastpath import verdict


class Kind(enum.StrEnum):
    IWF = "iwf"  # on the IWF's list: its own wording, and it can never be asked for
    LISTED = "listed"  # on another list nobody can override (CTIRU)
    TRUST = "trust"  # locked by the trust: it cannot be unblocked at school
    SCHOOL = "school"  # a school rule blocks it
    CATEGORY = "category"  # in a category the group's policy blocks
    DEFAULT = "default"  # the group reaches only what the school allows
    ALLOWED = "allowed"  # not blocked (any more)

    @property
    def can_request(self) -> bool:
        """Whether a teacher may ask for it to be unblocked."""
        return self in (Kind.SCHOOL, Kind.CATEGORY, Kind.DEFAULT)


@dataclass(frozen=True)
class Reason:
    kind: Kind
    categories: tuple[Category, ...]  # the categories that decided, padlocked first
    exam: bool  # the group is in exam mode
    explanation: dict[str, Any]  # appliance.policy.explain.Explanation.to_dict(), for the IT details


def find(
    snapshot: Snapshot, lookup: ListLookup, site: str, group: str, at: datetime, path: bytes | None = None
) -> Reason:
    """The reason for site (normalised) for a policy group; path is the page asked for, when a
    redirect from the HTTP filter names one. PolicyError for a group the policy does not know."""
    compiled = snapshot.compiled
    e = explain.explain(
        compiled, snapshot.table, lookup, snapshot.generation, site, group, at, snapshot.exam_now
    )
    masks = compiled.masks(group, at, snapshot.exam_now)
    v = verdict.decide(snapshot.table, e.name, masks.group_policy())
    blocked, reason, bits = e.action == "block", v.reason, v.bits
    if not blocked and path is not None and v.categories & compiled.pages_bit:
        page = snapshot.pages.lookup(e.name, path)
        if page & masks.padlocked:
            blocked, reason, bits = True, verdict.Reason.PADLOCKED, page & masks.padlocked
        elif reason != verdict.Reason.SCHOOL_ALLOW and page & masks.blocked:
            blocked, reason, bits = True, verdict.Reason.CATEGORY, page & masks.blocked
    categories = tuple(
        CATEGORIES[b.category] for b in compiled.describe(bits) if b.kind == "category" and b.category
    )
    # A page-level block is never the school layer's: a school rule names whole sites.
    by_school = e.action == "block" and e.layer == Layer.SCHOOL
    kind = _kind(blocked, reason, by_school, categories)
    return Reason(kind, categories, e.policy_group != e.group, e.to_dict())


def _kind(blocked: bool, reason: verdict.Reason, by_school: bool, categories: tuple[Category, ...]) -> Kind:
    if not blocked:
        return Kind.ALLOWED
    names = {c.name for c in categories}
    if reason == verdict.Reason.PADLOCKED:
        if "iwf" in names:
            return Kind.IWF
        return Kind.LISTED if "ctiru" in names else Kind.TRUST
    if by_school:
        return Kind.SCHOOL  # a school rule denying the site or its category
    return Kind.CATEGORY if reason == verdict.Reason.CATEGORY else Kind.DEFAULT
