"""The audit trail: every change to the policy, the lists and the configuration, hash-chained.

Each entry records who, when, what, why, and the state before and after. Its hash covers those fields
and the previous entry's hash, so editing or deleting any entry breaks the chain from there on; the
head (last sequence number and hash) is also kept in a file beside the database, which catches the
removal of entries from the end. The IWF and CTIRU lists are logged by counts only, never by entry."""

from __future__ import annotations

import argparse
import contextlib
import csv
import getpass
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from appliance.store import Store, add_state_dir_argument, command, iso, write_atomic

GENESIS = "0" * 64
HEAD_FILE = "audit.head"
# Changes that add or remove a filter, for the DSL's termly report.
FILTER_ADDED = {"rule.add", "list.add"}
FILTER_REMOVED = {"rule.remove", "rule.expire", "list.remove"}
REPORT_SECTIONS = {"added": "Filters added", "removed": "Filters removed", "other": "Other changes"}


def default_actor() -> str:
    """Who is making a CLI change: the person behind sudo if there is one, else the Unix user."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


def _canonical(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


def _entry_hash(
    seq: int,
    ts: str,
    actor: str,
    action: str,
    subject: str,
    reason: str,
    before: str | None,
    after: str | None,
    prev: str,
) -> str:
    fields = [seq, ts, actor, action, subject, reason, before, after, prev]
    return hashlib.sha256(json.dumps(fields, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    seq: int
    ts: datetime
    actor: str
    action: str
    subject: str
    reason: str
    before: Any
    after: Any

    @classmethod
    def from_row(cls, row: Any) -> Entry:
        return cls(
            seq=row["seq"],
            ts=datetime.fromisoformat(row["ts"]),
            actor=row["actor"],
            action=row["action"],
            subject=row["subject"],
            reason=row["reason"],
            before=json.loads(row["before"]) if row["before"] is not None else None,
            after=json.loads(row["after"]) if row["after"] is not None else None,
        )


class Change:
    """One audited change, inside a database transaction: log() appends its entries."""

    def __init__(self, store: Store, actor: str, reason: str, now: datetime | None) -> None:
        self.store = store
        self.db = store.db
        self.actor = actor
        self.reason = reason
        self.now = now or datetime.now(UTC)
        self.logged = 0

    def log(self, action: str, subject: str, before: Any = None, after: Any = None) -> None:
        row = self.db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (row["seq"] + 1, row["hash"]) if row else (1, GENESIS)
        ts = iso(self.now)
        b, a = _canonical(before), _canonical(after)
        digest = _entry_hash(seq, ts, self.actor, action, subject, self.reason, b, a, prev)
        self.db.execute(
            "INSERT INTO audit (seq, ts, actor, action, subject, reason, before, after, prev, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, ts, self.actor, action, subject, self.reason, b, a, prev, digest),
        )
        self.logged += 1


@contextlib.contextmanager
def change(store: Store, actor: str, reason: str, now: datetime | None = None) -> Iterator[Change]:
    """A transaction for one change: the change and its audit entries commit together or not at all.

    Every state change goes through here, so nothing changes unlogged. A reason is required."""
    if not actor.strip():
        raise ValueError("a change needs a person (--by)")
    if not reason.strip():
        raise ValueError("a change needs a reason (--reason)")
    store.db.execute("BEGIN IMMEDIATE")
    try:
        ch = Change(store, actor.strip(), reason.strip(), now)
        yield ch
        store.db.execute("COMMIT")
    except BaseException:
        store.db.execute("ROLLBACK")
        raise
    if ch.logged:
        _write_head(store)


def _write_head(store: Store) -> None:
    row = store.db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    write_atomic(store.dir / HEAD_FILE, json.dumps({"seq": row["seq"], "hash": row["hash"]}).encode())


@dataclass
class Verification:
    entries: int
    head: str
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(store: Store) -> Verification:
    """Recomputes the chain. Finds edited entries, deleted ones (a gap, a broken link, or fewer
    entries than the head file records) and inserted ones."""
    problems: list[str] = []
    prev, expected_seq, hashes = GENESIS, 1, {}
    for row in store.db.execute("SELECT * FROM audit ORDER BY seq"):
        seq = row["seq"]
        if seq != expected_seq:
            problems.append(f"entries {expected_seq}..{seq - 1} are missing")
        if row["prev"] != prev:
            problems.append(f"entry {seq}: does not follow the entry before it (deleted or replaced)")
        digest = _entry_hash(
            seq,
            row["ts"],
            row["actor"],
            row["action"],
            row["subject"],
            row["reason"],
            row["before"],
            row["after"],
            row["prev"],
        )
        if digest != row["hash"]:
            problems.append(f"entry {seq}: its content does not match its hash (edited)")
        prev, expected_seq = row["hash"], seq + 1
        hashes[seq] = row["hash"]
    count = expected_seq - 1
    head_path = store.dir / HEAD_FILE
    if head_path.exists():
        head = json.loads(head_path.read_text())
        if head["seq"] > count:
            problems.append(f"the log ends at entry {count} but entry {head['seq']} was written (deleted)")
        elif hashes.get(head["seq"]) != head["hash"]:
            problems.append(f"entry {head['seq']}: differs from the recorded head (rewritten)")
    elif count:
        problems.append(f"the head file {head_path} is missing")
    return Verification(entries=count, head=prev, problems=problems)


def entries(store: Store, start: datetime | None = None, end: datetime | None = None) -> Iterator[Entry]:
    """Entries from start (inclusive) to end (exclusive), oldest first."""
    lo = iso(start or datetime.min.replace(tzinfo=UTC))
    hi = iso(end or datetime.max.replace(tzinfo=UTC))
    for row in store.db.execute("SELECT * FROM audit WHERE ts >= ? AND ts < ? ORDER BY seq", (lo, hi)):
        yield Entry.from_row(row)


def page(store: Store, limit: int, offset: int = 0) -> tuple[list[Entry], int]:
    """A page of the trail, newest first, and how many entries it holds in all."""
    total = int(store.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0])
    rows = store.db.execute("SELECT * FROM audit ORDER BY seq DESC LIMIT ? OFFSET ?", (limit, offset))
    return [Entry.from_row(r) for r in rows], total


def report(store: Store, first: date, last: date) -> dict[str, list[Entry]]:
    """The termly change report: filters added, filters removed and other changes, first..last
    inclusive in the appliance's time zone."""
    tz = store.zone()
    start = datetime.combine(first, time(), tz)
    end = datetime.combine(last + timedelta(days=1), time(), tz)
    out: dict[str, list[Entry]] = {key: [] for key in REPORT_SECTIONS}
    for e in entries(store, start, end):
        key = "added" if e.action in FILTER_ADDED else "removed" if e.action in FILTER_REMOVED else "other"
        out[key].append(e)
    return out


def _when(store_tz: ZoneInfo, ts: datetime) -> str:
    return ts.astimezone(store_tz).strftime("%Y-%m-%d %H:%M")


def report_rows(store: Store, first: date, last: date) -> list[list[str]]:
    """The termly report as a table (a header, then an entry a row, times local) for a spreadsheet."""
    sections = report(store, first, last)
    tz = store.zone()
    return [["section", "when", "who", "change", "what", "why"]] + [
        [title, _when(tz, e.ts), e.actor, e.action, e.subject, e.reason]
        for key, title in REPORT_SECTIONS.items()
        for e in sections[key]
    ]


# --- CLI -------------------------------------------------------------------------------------------


def add_change_arguments(parser: argparse.ArgumentParser) -> None:
    """--by and --reason, which every command that changes something takes."""
    parser.add_argument("--by", default=None, help="who is making the change (default: your user name)")
    parser.add_argument("--reason", required=True, help="why: recorded in the audit trail")


def actor(args: argparse.Namespace) -> str:
    return args.by or default_actor()


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("audit", help="the audit trail of changes")
    sub = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    v = sub.add_parser("verify", help="check that no entry was edited or deleted")
    v.set_defaults(func=command(_cmd_verify))
    r = sub.add_parser("report", help="filters added and removed, with reasons (the DSL's termly report)")
    r.add_argument("--from", dest="first", required=True, type=date.fromisoformat, help="YYYY-MM-DD")
    r.add_argument("--to", dest="last", required=True, type=date.fromisoformat, help="YYYY-MM-DD")
    r.add_argument("--format", choices=["text", "csv"], default="text")
    r.set_defaults(func=command(_cmd_report))
    log = sub.add_parser("log", help="the latest entries")
    log.add_argument("--last", type=int, default=20)
    log.set_defaults(func=command(_cmd_log))
    for leaf in (v, r, log):
        add_state_dir_argument(leaf)


def _cmd_verify(args: argparse.Namespace, store: Store) -> int:
    result = verify(store)
    for problem in result.problems:
        print(f"TAMPERED: {problem}")
    if result.ok:
        print(f"audit log intact: {result.entries} entries, head {result.head}")
        return 0
    return 1


def _cmd_report(args: argparse.Namespace, store: Store) -> int:
    if args.last < args.first:
        raise ValueError("--to is before --from")
    if args.format == "csv":
        csv.writer(sys.stdout).writerows(report_rows(store, args.first, args.last))
        return 0
    tz = store.zone()
    sections = report(store, args.first, args.last)
    head = verify(store)
    print(f"Filtering changes {args.first} to {args.last} ({tz.key})")
    for key, title in REPORT_SECTIONS.items():
        print(f"\n{title} ({len(sections[key])})")
        for e in sections[key]:
            print(f"  {_when(tz, e.ts)}  {e.actor}: {e.subject}\n      why: {e.reason}")
    state = "intact" if head.ok else "TAMPERED (run `appliance audit verify`)"
    print(f"\nAudit log {state}: {head.entries} entries, head {head.head}")
    return 0


def _cmd_log(args: argparse.Namespace, store: Store) -> int:
    tz = store.zone()
    latest, _ = page(store, args.last)
    for e in reversed(latest):
        print(f"{e.seq:6d}  {_when(tz, e.ts)}  {e.actor}  {e.action}: {e.subject}  (why: {e.reason})")
    return 0
