"""What a report shows besides the test results, gathered when it is made (so that the stored report
never depends on what happens later): the term's filtering changes with reasons and its unblock
decisions (both from the audit trail), blocked attempts by group and category, safeguarding alerts
raised and acknowledged, and how many IWF and CTIRU entries are enforced at domain and page level."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from appliance import audit, events
from appliance.policy import generations, timetable
from appliance.policy.model import CATEGORIES, PADLOCKED_CATEGORIES
from appliance.store import Store, iso

# Without term dates, the report covers this many days.
DEFAULT_PERIOD = timedelta(days=91)
UNBLOCK_DECISIONS = {"unblock.approve": "granted", "unblock.refuse": "refused"}
FILTER_CHANGES = audit.FILTER_ADDED | audit.FILTER_REMOVED | {"policy.apply", "policy.rollback"}


def period(store: Store, now: datetime) -> tuple[date, date, str]:
    """The term being reported on: the one that contains today, else the latest that has begun;
    without term dates, the last DEFAULT_PERIOD."""
    today = now.astimezone(store.zone()).date()
    begun = [t for t in timetable.terms(store) if t.start <= today]
    if begun:
        term = next((t for t in begun if t.end >= today), max(begun, key=lambda t: t.start))
        return term.start, min(term.end, today), f"term {term.name}"
    return today - DEFAULT_PERIOD, today, "no term dates set: the last 91 days"


def _entry(e: audit.Entry, zone: Any) -> dict[str, str]:
    return {
        "when": e.ts.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
        "who": e.actor,
        "action": e.action,
        "what": e.subject,
        "why": e.reason,
    }


def gather(store: Store, now: datetime, probe_windows: list[events.Window]) -> dict[str, Any]:
    """probe_windows: when and from where compliance runs probed; their blocked attempts are left out
    of the statistics (they are the probes', not pupils')."""
    zone = store.zone()
    first, last, label = period(store, now)
    start = datetime.combine(first, time(), zone)
    end = datetime.combine(last + timedelta(days=1), time(), zone)
    changes, unblocks = [], []
    for e in audit.entries(store, start, end):
        if e.action in FILTER_CHANGES:
            changes.append(_entry(e, zone))
        elif e.action in UNBLOCK_DECISIONS:
            unblocks.append({**_entry(e, zone), "decision": UNBLOCK_DECISIONS[e.action]})
    events.ensure(store)
    blocked = events.by_group_and_category(store, start, end, probe_windows)
    return {
        "period": {"first": first.isoformat(), "last": last.isoformat(), "label": label},
        "changes": changes,
        "unblocks": unblocks,
        "blocked": [{"group": g, "category": c, "count": n} for g, c, n in blocked],
        "alerts": _alerts(store, start, end),
        "enforcement": _enforcement(store),
    }


def _alerts(store: Store, start: datetime, end: datetime) -> dict[str, Any]:
    """Safeguarding alerts, which the web UI raises: none are recorded until it has accounts."""
    if store.db.execute("SELECT 1 FROM web_users LIMIT 1").fetchone() is None:
        return {"recorded": False, "by_category": []}
    rows = store.db.execute(
        "SELECT category, COUNT(*) AS raised, COUNT(ack_at) AS acknowledged FROM alerts"
        " WHERE first_seen >= ? AND first_seen < ? GROUP BY category ORDER BY category",
        (iso(start), iso(end)),
    )
    return {
        "recorded": True,
        "by_category": [
            {"category": r["category"], "raised": r["raised"], "acknowledged": r["acknowledged"]}
            for r in rows
        ],
    }


def _enforcement(store: Store) -> list[dict[str, Any]]:
    """Per IWF and CTIRU list in force: entries enforced on every path (whole domains, at DNS, TLS,
    QUIC and HTTP) and page entries (plain HTTP only)."""
    live = generations.current(store)
    if live is None:
        return []
    refs = {ref.name: ref for ref in live.compiled().inputs.lists}
    return [
        {
            "list": name,
            "category": refs[name].category,
            "domain_level": counts["every_path"],
            "page_level": counts["http_only"],
        }
        for name, counts in live.manifest["enforcement"].items()
        if name in refs and refs[name].category in PADLOCKED_CATEGORIES
    ]


def category_title(name: str) -> str:
    return CATEGORIES[name].title if name in CATEGORIES else "No category (school rule or default)"
