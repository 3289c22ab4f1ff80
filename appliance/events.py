"""The log of blocked attempts: written by the data plane, read by the web UI (alerts, dashboard,
log search) and by reports.

One row per blocked attempt:

    ts         when (UTC, ISO 8601)
    client_ip  the client's address
    mac        the client's MAC address, when the appliance saw it (same L2 segment), else NULL
    grp        the client's group (from its VLAN and subnet)
    name       the normalised name asked for (DNS query, TLS/QUIC SNI or HTTP Host)
    category   the category that blocked it (a key of appliance.policy.model.CATEGORIES; for a name in
               several, the one that decided: padlocked first), or NULL when no category did (a school
               deny rule or the group's default)
    layer      where it was seen: "dns", "tls", "quic" or "http"
    rule       the verdict's reason (fastpath.verdict.Reason name, e.g. "CATEGORY", "PADLOCKED",
               "SCHOOL_DENY", "DEFAULT")

The data plane buffers events and calls record() with a batch (one transaction, one fsync) about
once a second; it must not write per packet."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from appliance.store import Store, iso

LAYERS = ("dns", "tls", "quic", "http")

SCHEMA = """
CREATE TABLE IF NOT EXISTS block_events (
    id INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    client_ip TEXT NOT NULL,
    mac TEXT,
    grp TEXT NOT NULL,
    name TEXT NOT NULL,
    category TEXT,
    layer TEXT NOT NULL,
    rule TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS block_events_ts ON block_events (ts);
CREATE INDEX IF NOT EXISTS block_events_ip ON block_events (client_ip, ts);
"""


@dataclass(frozen=True)
class BlockEvent:
    ts: datetime
    client_ip: str
    group: str
    name: str
    layer: str
    rule: str
    category: str | None = None
    mac: str | None = None
    id: int | None = None

    @classmethod
    def from_row(cls, row: Any) -> BlockEvent:
        return cls(
            id=row["id"],
            ts=datetime.fromisoformat(row["ts"]),
            client_ip=row["client_ip"],
            mac=row["mac"],
            group=row["grp"],
            name=row["name"],
            category=row["category"],
            layer=row["layer"],
            rule=row["rule"],
        )


def ensure(store: Store) -> None:
    store.db.executescript(SCHEMA)


def record(store: Store, batch: Iterable[BlockEvent]) -> int:
    """Appends a batch of events in one transaction; returns how many."""
    rows = [(iso(e.ts), e.client_ip, e.mac, e.group, e.name, e.category, e.layer, e.rule) for e in batch]
    for row in rows:
        if row[6] not in LAYERS:
            raise ValueError(f"event layer {row[6]!r} is not one of {', '.join(LAYERS)}")
    store.db.execute("BEGIN IMMEDIATE")
    try:
        store.db.executemany(
            "INSERT INTO block_events (ts, client_ip, mac, grp, name, category, layer, rule)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        store.db.execute("COMMIT")
    except BaseException:
        store.db.execute("ROLLBACK")
        raise
    return len(rows)


@dataclass(frozen=True)
class Query:
    """A log search; every field is optional. name matches anywhere in the name (case-insensitive)."""

    client_ip: str | None = None
    name: str | None = None
    group: str | None = None
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive

    def where(self) -> tuple[str, list[Any]]:
        clauses, args = [], []
        if self.client_ip:
            clauses.append("client_ip = ?")
            args.append(self.client_ip)
        if self.name:
            escaped = self.name.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append("name LIKE ? ESCAPE '\\'")
            args.append(f"%{escaped}%")
        if self.group:
            clauses.append("grp = ?")
            args.append(self.group)
        if self.start:
            clauses.append("ts >= ?")
            args.append(iso(self.start))
        if self.end:
            clauses.append("ts < ?")
            args.append(iso(self.end))
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def search(store: Store, query: Query, limit: int | None = None, offset: int = 0) -> list[BlockEvent]:
    """Matching events, newest first."""
    where, args = query.where()
    sql = f"SELECT * FROM block_events{where} ORDER BY ts DESC, id DESC"
    if limit is not None:
        sql += " LIMIT ? OFFSET ?"
        args += [limit, offset]
    return [BlockEvent.from_row(r) for r in store.db.execute(sql, args)]


def iterate(store: Store, query: Query) -> Iterator[BlockEvent]:
    """Every matching event, newest first, without holding them all in memory (for exports)."""
    where, args = query.where()
    for row in store.db.execute(f"SELECT * FROM block_events{where} ORDER BY ts DESC, id DESC", args):
        yield BlockEvent.from_row(row)


def count(store: Store, query: Query) -> int:
    where, args = query.where()
    return int(store.db.execute(f"SELECT COUNT(*) FROM block_events{where}", args).fetchone()[0])


def per_hour(store: Store, start: datetime, end: datetime) -> dict[datetime, int]:
    """Events per UTC hour in [start, end), keyed by the hour's start (hours with none left out)."""
    rows = store.db.execute(
        "SELECT substr(ts, 1, 13) AS hour, COUNT(*) AS n FROM block_events WHERE ts >= ? AND ts < ?"
        " GROUP BY hour",
        (iso(start), iso(end)),
    )
    return {datetime.fromisoformat(r["hour"] + ":00:00+00:00"): r["n"] for r in rows}


def totals(
    store: Store, column: str, start: datetime, end: datetime, limit: int = 10, exclude: Iterable[str] = ()
) -> list[tuple[str, int]]:
    """The most frequent values of column ("grp", "category" or "name") in [start, end), most first,
    leaving out events in the categories in exclude; a NULL category is returned as ""."""
    if column not in ("grp", "category", "name"):
        raise ValueError(f"cannot total events by {column!r}")
    skip = list(exclude)
    marks = ", ".join("?" * len(skip))
    rows = store.db.execute(
        f"SELECT COALESCE({column}, '') AS value, COUNT(*) AS n FROM block_events"
        f" WHERE ts >= ? AND ts < ? AND COALESCE(category, '') NOT IN ({marks})"
        " GROUP BY value ORDER BY n DESC, value LIMIT ?",
        (iso(start), iso(end), *skip, limit),
    )
    return [(r["value"], r["n"]) for r in rows]


def last_id(store: Store) -> int:
    """The id of the newest event (0 when there is none): a cursor for between()."""
    return int(store.db.execute("SELECT COALESCE(MAX(id), 0) FROM block_events").fetchone()[0])


@dataclass(frozen=True)
class Window:
    """Blocked attempts that are not pupils' (a compliance run's probes): those from these addresses
    from start to end inclusive. Statistics and alerts leave them out."""

    start: datetime
    end: datetime
    addresses: tuple[str, ...]


def _outside(windows: Iterable[Window]) -> tuple[str, list[Any]]:
    """A condition, with its arguments, that holds for events in none of the windows."""
    clauses, args = ["1"], []
    for w in windows:
        marks = ", ".join("?" * len(w.addresses))
        clauses.append(f"NOT (ts >= ? AND ts <= ? AND client_ip IN ({marks}))")
        args += [iso(w.start), iso(w.end), *w.addresses]
    return " AND ".join(clauses), args


def between(
    store: Store, after_id: int, upto_id: int, categories: Iterable[str], outside: Iterable[Window] = ()
) -> list[BlockEvent]:
    """Events with after_id < id <= upto_id in these categories and in none of the windows, oldest
    first."""
    wanted = list(categories)
    marks = ", ".join("?" * len(wanted))
    skip, skip_args = _outside(outside)
    rows = store.db.execute(
        f"SELECT * FROM block_events WHERE id > ? AND id <= ? AND category IN ({marks}) AND {skip}"
        " ORDER BY id",
        (after_id, upto_id, *wanted, *skip_args),
    )
    return [BlockEvent.from_row(r) for r in rows]


def by_group_and_category(
    store: Store, start: datetime, end: datetime, outside: Iterable[Window] = ()
) -> list[tuple[str, str, int]]:
    """(group, category, attempts) in [start, end), leaving out the windows; a NULL category is ""."""
    skip, skip_args = _outside(outside)
    rows = store.db.execute(
        "SELECT grp, COALESCE(category, '') AS category, COUNT(*) AS n FROM block_events"
        f" WHERE ts >= ? AND ts < ? AND {skip} GROUP BY grp, category ORDER BY grp, category",
        (iso(start), iso(end), *skip_args),
    )
    return [(r["grp"], r["category"], r["n"]) for r in rows]


def latest(store: Store) -> BlockEvent | None:
    row = store.db.execute("SELECT * FROM block_events ORDER BY id DESC LIMIT 1").fetchone()
    return BlockEvent.from_row(row) if row else None
