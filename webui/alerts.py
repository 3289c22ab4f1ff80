"""Safeguarding alerts: attempts on the IWF, CTIRU, self-harm and extremism categories, raised from the
block events the data plane logs (appliance.events), e-mailed to the DSLs and shown on their page,
where they acknowledge each one with a note.

Repeated attempts by one device on one name within an hour add to the open alert rather than raising
a new one, so a pupil retrying a page sends the DSL one message, not fifty. E-mails name the site
only for self-harm and extremism: the IWF and CTIRU lists are confidential, so those names appear only
on the page, to a signed-in DSL."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from appliance import events
from appliance.compliance.run import probe_windows
from appliance.policy.model import CATEGORIES
from appliance.store import Store, iso
from webui import accounts, fields, mail, settings
from webui.accounts import User
from webui.errors import InputError, NotFound
from webui.roles import Permission
from webui.times import local, parse

ALERT_CATEGORIES = ("iwf", "ctiru", "self_harm", "extremism")
CONFIDENTIAL = ("iwf", "ctiru")
REPEAT_WINDOW = timedelta(hours=1)
CURSOR = "alerts.last_event"


@dataclass(frozen=True)
class Alert:
    id: int
    first_seen: datetime
    last_seen: datetime
    attempts: int
    client_ip: str
    mac: str | None
    group: str
    name: str
    category: str
    ack_by: User | None
    ack_at: datetime | None
    ack_note: str | None

    @property
    def category_title(self) -> str:
        return CATEGORIES[self.category].title

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "attempts": self.attempts,
            "client_ip": self.client_ip,
            "mac": self.mac,
            "group": self.group,
            "name": self.name,
            "category": self.category,
            "acknowledged": None
            if self.ack_at is None
            else {
                "by": self.ack_by.display_name if self.ack_by else None,
                "at": self.ack_at.isoformat(),
                "note": self.ack_note,
            },
        }


@contextlib.contextmanager
def _transaction(store: Store) -> Iterator[None]:
    store.db.execute("BEGIN IMMEDIATE")
    try:
        yield
        store.db.execute("COMMIT")
    except BaseException:
        store.db.execute("ROLLBACK")
        raise


def raise_new(store: Store, now: datetime) -> int:
    """Turns block events logged since the last call into alerts and queues one e-mail to each DSL for
    the new ones; returns how many alerts are new. Attempts by compliance probes, during their runs,
    are the tests' and raise none."""
    with _transaction(store):
        after = int(store.setting(CURSOR, "0"))
        upto = events.last_id(store)
        new: list[int] = []
        for e in events.between(store, after, upto, ALERT_CATEGORIES, probe_windows(store, [])):
            row = store.db.execute(
                "SELECT id FROM alerts WHERE ack_at IS NULL AND client_ip = ? AND name = ? AND category = ?"
                " AND last_seen >= ? ORDER BY id DESC LIMIT 1",
                (e.client_ip, e.name, e.category, iso(e.ts - REPEAT_WINDOW)),
            ).fetchone()
            if row is not None:
                store.db.execute(
                    "UPDATE alerts SET attempts = attempts + 1, last_seen = MAX(last_seen, ?) WHERE id = ?",
                    (iso(e.ts), row["id"]),
                )
                continue
            cur = store.db.execute(
                "INSERT INTO alerts (first_event, first_seen, last_seen, attempts, client_ip, mac, grp, name,"
                " category) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?)",
                (e.id, iso(e.ts), iso(e.ts), e.client_ip, e.mac, e.group, e.name, e.category),
            )
            new.append(int(cur.lastrowid or 0))
        store.db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (CURSOR, str(upto)))
        if new:
            _notify(store, [get(store, i) for i in new], now)
    return len(new)


def _notify(store: Store, raised: list[Alert], now: datetime) -> None:
    zone = store.zone()
    lines = []
    for a in raised:
        name = (
            "(site name on the alerts page only: this list is confidential)"
            if a.category in CONFIDENTIAL
            else a.name
        )
        device = f", device {a.mac}" if a.mac else ""
        lines.append(
            f"- {local(a.first_seen, zone)}: {a.category_title}\n  {name}\n"
            f"  group {a.group}, IP {a.client_ip}{device}"
        )
    count = len(raised)
    mail.enqueue(
        store.db,
        now,
        accounts.with_permission(store, Permission.VIEW_ALERTS),
        f"Safeguarding alert: {count} new blocked attempt{'s' if count != 1 else ''}",
        "The filter blocked attempts that may need your attention:\n\n"
        + "\n".join(lines)
        + f"\n\nSee and acknowledge them: {settings.load(store).url}/alerts",
    )
    store.db.executemany("UPDATE alerts SET notified = 1 WHERE id = ?", [(a.id,) for a in raised])


def _from_row(store: Store, row: Any) -> Alert:
    return Alert(
        id=row["id"],
        first_seen=datetime.fromisoformat(row["first_seen"]),
        last_seen=datetime.fromisoformat(row["last_seen"]),
        attempts=row["attempts"],
        client_ip=row["client_ip"],
        mac=row["mac"],
        group=row["grp"],
        name=row["name"],
        category=row["category"],
        ack_by=accounts.get(store, row["ack_by"]) if row["ack_by"] is not None else None,
        ack_at=parse(row["ack_at"]),
        ack_note=row["ack_note"],
    )


def get(store: Store, alert_id: int) -> Alert:
    row = store.db.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
    if row is None:
        raise NotFound(f"no alert {alert_id}")
    return _from_row(store, row)


def listing(store: Store, open_only: bool, limit: int = 500) -> list[Alert]:
    """Newest first; open_only: those not yet acknowledged."""
    where = " WHERE ack_at IS NULL" if open_only else ""
    rows = store.db.execute(f"SELECT * FROM alerts{where} ORDER BY last_seen DESC LIMIT ?", (limit,))
    return [_from_row(store, r) for r in rows]


def open_count(store: Store) -> int:
    return int(store.db.execute("SELECT COUNT(*) FROM alerts WHERE ack_at IS NULL").fetchone()[0])


def acknowledge(store: Store, user: User, alert_id: int, note: object, now: datetime) -> Alert:
    """Records that user has dealt with the alert, and what they did (the note is required)."""
    text = fields.text(note, "Note", 2000, multiline=True)
    with _transaction(store):
        alert = get(store, alert_id)
        if alert.ack_at is not None:
            raise InputError(f"Alert {alert_id} was already acknowledged.")
        store.db.execute(
            "UPDATE alerts SET ack_by = ?, ack_at = ?, ack_note = ? WHERE id = ?",
            (user.id, iso(now), text, alert_id),
        )
    return get(store, alert_id)
