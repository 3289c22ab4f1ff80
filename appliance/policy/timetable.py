"""The school's timetable as the policy sees it: named schedules, term dates and exam mode.

Exam mode puts a group on the exams group's policy (no internet beyond what the school allows for
exams). It can be scheduled per group, which is part of the policy and applied with it, or switched
on now, which takes effect at once without an apply: the data plane reads it from the database."""

from __future__ import annotations

import json
from datetime import date, datetime

from appliance.audit import Change
from appliance.policy.model import GROUPS, PolicyError, check_group
from appliance.policy.schedules import Calendar, Schedule, Term
from appliance.store import Store

EXAMS = "exams"


def schedules(store: Store) -> dict[str, Schedule]:
    return {
        r["name"]: Schedule.from_dict(json.loads(r["spec"]))
        for r in store.db.execute("SELECT name, spec FROM schedules ORDER BY name")
    }


def terms(store: Store) -> tuple[Term, ...]:
    return tuple(
        Term(r["name"], date.fromisoformat(r["start"]), date.fromisoformat(r["end"]))
        for r in store.db.execute("SELECT * FROM terms ORDER BY start")
    )


def calendar(store: Store) -> Calendar:
    return Calendar(store.zone(), terms(store), schedules(store))


def set_schedule(ch: Change, name: str, schedule: Schedule) -> None:
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise PolicyError(f"schedule name {name!r}: use letters, digits, '-' and '_'")
    row = ch.db.execute("SELECT spec FROM schedules WHERE name = ?", (name,)).fetchone()
    before = json.loads(row["spec"]) if row else None
    ch.db.execute(
        "INSERT OR REPLACE INTO schedules (name, spec) VALUES (?, ?)", (name, json.dumps(schedule.to_dict()))
    )
    ch.log("schedule.set", f"schedule {name}: {schedule}", before, schedule.to_dict())


def remove_schedule(ch: Change, name: str) -> None:
    row = ch.db.execute("SELECT spec FROM schedules WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise PolicyError(f"no schedule named {name!r}")
    users = [f"rule {r['id']}" for r in ch.db.execute("SELECT id FROM rules WHERE schedule = ?", (name,))]
    users += [
        f"exam mode for {r['grp']}"
        for r in ch.db.execute("SELECT grp FROM exam_schedule WHERE schedule = ?", (name,))
    ]
    if users:
        raise PolicyError(f"schedule {name!r} is used by {', '.join(users)}; remove those first")
    ch.db.execute("DELETE FROM schedules WHERE name = ?", (name,))
    ch.log("schedule.remove", f"schedule {name}", json.loads(row["spec"]), None)


def set_term(ch: Change, term: Term) -> None:
    row = ch.db.execute("SELECT * FROM terms WHERE name = ?", (term.name,)).fetchone()
    before = {"start": row["start"], "end": row["end"]} if row else None
    after = {"start": term.start.isoformat(), "end": term.end.isoformat()}
    ch.db.execute(
        "INSERT OR REPLACE INTO terms (name, start, end) VALUES (?, ?, ?)",
        (term.name, after["start"], after["end"]),
    )
    ch.log("term.set", f"term {term.name}: {term.start} to {term.end}", before, after)


def remove_term(ch: Change, name: str) -> None:
    row = ch.db.execute("SELECT * FROM terms WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise PolicyError(f"no term named {name!r}")
    ch.db.execute("DELETE FROM terms WHERE name = ?", (name,))
    ch.log("term.remove", f"term {name}", {"start": row["start"], "end": row["end"]}, None)


def exam_schedules(store: Store) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {g: [] for g in GROUPS}
    for r in store.db.execute("SELECT grp, schedule FROM exam_schedule ORDER BY grp, schedule"):
        out[r["grp"]].append(r["schedule"])
    return out


def schedule_exam(ch: Change, group: str, schedule: str) -> None:
    _exam_group(group)
    if not ch.db.execute("SELECT 1 FROM schedules WHERE name = ?", (schedule,)).fetchone():
        raise PolicyError(f"no schedule named {schedule!r}")
    ch.db.execute("INSERT OR IGNORE INTO exam_schedule (grp, schedule) VALUES (?, ?)", (group, schedule))
    ch.log(
        "exam.schedule",
        f"exam mode for {group} during {schedule}",
        None,
        {"group": group, "schedule": schedule},
    )


def unschedule_exam(ch: Change, group: str, schedule: str) -> None:
    cur = ch.db.execute("DELETE FROM exam_schedule WHERE grp = ? AND schedule = ?", (group, schedule))
    if not cur.rowcount:
        raise PolicyError(f"exam mode for {group} is not scheduled during {schedule!r}")
    ch.log(
        "exam.unschedule",
        f"exam mode for {group} no longer during {schedule}",
        {"group": group, "schedule": schedule},
        None,
    )


def exam_on(ch: Change, group: str, until: datetime | None) -> None:
    _exam_group(group)
    if until is not None and until <= ch.now:
        raise PolicyError("exam mode would end in the past")
    row = ch.db.execute("SELECT * FROM exam_now WHERE grp = ?", (group,)).fetchone()
    before = dict(row) if row else None
    after = {"grp": group, "since": ch.now.isoformat(), "until": until.isoformat() if until else None}
    ch.db.execute(
        "INSERT OR REPLACE INTO exam_now (grp, since, until) VALUES (?, ?, ?)",
        (group, after["since"], after["until"]),
    )
    end = f" until {until.astimezone(ch.store.zone()):%Y-%m-%d %H:%M}" if until else ""
    ch.log("exam.on", f"exam mode on for {group}{end}", before, after)


def exam_off(ch: Change, group: str) -> None:
    row = ch.db.execute("SELECT * FROM exam_now WHERE grp = ?", (group,)).fetchone()
    if row is None:
        raise PolicyError(f"exam mode is not on for {group}")
    ch.db.execute("DELETE FROM exam_now WHERE grp = ?", (group,))
    ch.log("exam.off", f"exam mode off for {group}", dict(row), None)


def exam_now(store: Store, at: datetime) -> dict[str, datetime | None]:
    """Groups switched into exam mode by hand and not yet timed out, with when it ends."""
    out = {}
    for r in store.db.execute("SELECT grp, until FROM exam_now"):
        until = datetime.fromisoformat(r["until"]) if r["until"] else None
        if until is None or at < until:
            out[r["grp"]] = until
    return out


def _exam_group(group: str) -> None:
    check_group(group)
    if group == EXAMS:
        raise PolicyError("the exams group is always on the exam policy")
