"""What the dashboard shows: blocked attempts over time, by group and by category, the names most
blocked, how fresh each list is, and whether filtering is healthy. Shared by the page and the API."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from appliance import events
from appliance.lists import catalogue
from appliance.policy import generations, timetable
from appliance.policy.model import CATEGORIES, PADLOCKED_CATEGORIES
from appliance.store import Store
from webui import alerts

# A list is overdue when its last successful import is older than this many of its intervals.
OVERDUE_INTERVALS = 2
# Block events older than this (while filtering is on) suggest the data plane is not logging.
QUIET = timedelta(hours=24)


@dataclass(frozen=True)
class ListState:
    name: str
    category: str
    entries: int
    page_entries: int
    updated: datetime | None
    every_hours: float | None
    last_error: str | None
    state: str  # "fresh", "overdue", "failing", "never imported"


@dataclass(frozen=True)
class Health:
    generation: str | None
    applied: datetime | None
    padlocked_missing: list[str]  # padlocked categories no list feeds: nothing blocks them
    exam_mode: list[str]
    last_event: datetime | None
    problems: list[str]


@dataclass(frozen=True)
class Dashboard:
    first_day: date
    last_day: date
    total: int
    per_day: list[tuple[date, int]]
    by_group: list[tuple[str, int]]
    by_category: list[tuple[str, int]]
    top_names: list[tuple[str, int]]
    lists: list[ListState]
    health: Health

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["first_day"], d["last_day"] = self.first_day.isoformat(), self.last_day.isoformat()
        d["per_day"] = [{"day": day.isoformat(), "blocked": n} for day, n in self.per_day]
        for key in ("by_group", "by_category", "top_names"):
            d[key] = [{"name": k, "blocked": n} for k, n in d[key]]
        for item in d["lists"]:
            item["updated"] = item["updated"].isoformat() if item["updated"] else None
        for key in ("applied", "last_event"):
            d["health"][key] = d["health"][key].isoformat() if d["health"][key] else None
        return d


def list_states(store: Store, now: datetime) -> list[ListState]:
    out = []
    for i in catalogue.all_lists(store):
        if i.entries_file is None:
            state = "failing" if i.last_error else "never imported"
        elif i.last_error:
            state = "failing"
        elif (
            i.every_hours
            and i.updated
            and now - i.updated > timedelta(hours=i.every_hours * OVERDUE_INTERVALS)
        ):
            state = "overdue"
        else:
            state = "fresh"
        out.append(
            ListState(
                i.name,
                i.category,
                i.domains + i.exact,
                i.pages,
                i.updated,
                i.every_hours,
                i.last_error,
                state,
            )
        )
    return out


def health(store: Store, now: datetime) -> Health:
    live = generations.current(store)
    latest = events.latest(store)
    problems = []
    missing: list[str] = []
    if live is None:
        problems.append("No filtering policy has been applied yet.")
    else:
        fed = {ref.category for ref in live.compiled().inputs.lists}
        missing = [c for c in PADLOCKED_CATEGORIES if c not in fed]
        problems += [f"No {CATEGORIES[c].title} list is loaded: nothing blocks it." for c in missing]
        if latest is None or now - latest.ts > QUIET:
            problems.append(
                "No blocked attempt has been logged for a day: check that filtering is running "
                "(`systemctl status appliance`)."
            )
    return Health(
        generation=live.id if live else None,
        applied=datetime.fromisoformat(live.manifest["created"]) if live else None,
        padlocked_missing=missing,
        exam_mode=sorted(timetable.exam_now(store, now)),
        last_event=latest.ts if latest else None,
        problems=problems,
    )


def dashboard(store: Store, now: datetime, days: int = 14) -> Dashboard:
    zone = store.zone()
    last = now.astimezone(zone).date()
    first = last - timedelta(days=days - 1)
    start = datetime.combine(first, time(), zone)
    end = datetime.combine(last + timedelta(days=1), time(), zone)
    per_day = {first + timedelta(days=i): 0 for i in range(days)}
    for hour, n in events.per_hour(store, start, end).items():
        day = hour.astimezone(zone).date()
        if day in per_day:
            per_day[day] += n
    categories = [
        (CATEGORIES[c].title if c in CATEGORIES else (c or "No category (school rule or default)"), n)
        for c, n in events.totals(store, "category", start, end)
    ]
    return Dashboard(
        first_day=first,
        last_day=last,
        total=sum(per_day.values()),
        per_day=list(per_day.items()),
        by_group=events.totals(store, "grp", start, end),
        by_category=categories,
        # Names on confidential lists are left out: the DSL sees those as alerts.
        top_names=events.totals(store, "name", start, end, limit=20, exclude=alerts.CONFIDENTIAL),
        lists=list_states(store, now),
        health=health(store, now),
    )
