"""When a scheduled run is due: once in each term (from the term dates in the policy's timetable),
and again whenever the policy in force has changed since the last report. The timer asks often;
the answer depends only on what is stored, so a run missed while the appliance was off happens at
the next start."""

from __future__ import annotations

from datetime import datetime

from appliance.compliance import reports
from appliance.policy import generations, timetable
from appliance.store import Store


def due(store: Store, now: datetime) -> str | None:
    """Why a run is due now (the trigger recorded in the report), or None."""
    today = now.astimezone(store.zone()).date()
    last = reports.latest(store)
    term = next((t for t in timetable.terms(store) if t.start <= today <= t.end), None)
    if term is not None:
        made = [r for r in reports.listing(store) if r.created.astimezone(store.zone()).date() >= term.start]
        if not made:
            return f"schedule: term {term.name}"
    live = generations.current(store)
    if live is not None and (last is None or last.generation != live.id):
        return f"schedule: policy generation {live.id} applied"
    return None
