"""The appliance's state directory: the SQLite database (WAL), the table key and atomic file writes.

Everything that must survive a reboot lives under one directory (default /var/lib/appliance),
overridable with --state-dir or APPLIANCE_STATE_DIR so that tests and the lab use their own."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import secrets
import sqlite3
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

DEFAULT_STATE_DIR = Path("/var/lib/appliance")
STATE_ENV = "APPLIANCE_STATE_DIR"
KEY_FILE = "table.key"
KEY_SIZE = 16
DEFAULT_ZONE = "Europe/London"

# One schema for the whole state database, so there is one place to see what is kept.
SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    reason TEXT NOT NULL,
    before TEXT,
    after TEXT,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rules (
    id INTEGER PRIMARY KEY,
    grp TEXT NOT NULL,
    action TEXT NOT NULL,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    reason TEXT NOT NULL,
    author TEXT NOT NULL,
    created TEXT NOT NULL,
    expires TEXT,
    schedule TEXT,
    source TEXT
);
CREATE TABLE IF NOT EXISTS lists (
    name TEXT PRIMARY KEY,
    format TEXT NOT NULL,
    category TEXT NOT NULL,
    source TEXT NOT NULL,
    every_hours REAL,
    entries_file TEXT,
    domains INTEGER NOT NULL DEFAULT 0,
    exact INTEGER NOT NULL DEFAULT 0,
    pages INTEGER NOT NULL DEFAULT 0,
    source_sha256 TEXT,
    updated TEXT,
    last_attempt TEXT,
    last_error TEXT,
    problems INTEGER NOT NULL DEFAULT 0,
    problem_sample TEXT
);
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS terms (
    name TEXT PRIMARY KEY,
    start TEXT NOT NULL,
    end TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS exam_schedule (
    grp TEXT NOT NULL,
    schedule TEXT NOT NULL,
    PRIMARY KEY (grp, schedule)
);
CREATE TABLE IF NOT EXISTS exam_now (
    grp TEXT PRIMARY KEY,
    since TEXT NOT NULL,
    until TEXT
);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- The web UI (webui/): accounts, sessions, unblock requests, safeguarding alerts, e-mail to send.
CREATE TABLE IF NOT EXISTS web_users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    display_name TEXT NOT NULL,
    email TEXT NOT NULL,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    must_change_password INTEGER NOT NULL DEFAULT 0,
    disabled INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL,
    last_login TEXT
);
CREATE TABLE IF NOT EXISTS web_sessions (
    token_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES web_users(id),
    csrf TEXT NOT NULL,
    created TEXT NOT NULL,
    last_seen TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS web_api_tokens (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES web_users(id),
    label TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL,
    last_used TEXT
);
CREATE TABLE IF NOT EXISTS web_login_failures (
    key TEXT NOT NULL,
    ts TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS web_login_failures_key ON web_login_failures (key, ts);
CREATE TABLE IF NOT EXISTS unblock_requests (
    id INTEGER PRIMARY KEY,
    site TEXT NOT NULL,
    groups TEXT NOT NULL,
    reason TEXT NOT NULL,
    expires TEXT NOT NULL,
    until_label TEXT NOT NULL,
    seen_at TEXT,
    blocked_why TEXT NOT NULL,
    requester INTEGER NOT NULL REFERENCES web_users(id),
    created TEXT NOT NULL,
    status TEXT NOT NULL,
    it_by INTEGER REFERENCES web_users(id),
    it_at TEXT,
    it_note TEXT,
    dsl_by INTEGER REFERENCES web_users(id),
    dsl_at TEXT,
    dsl_note TEXT,
    refused_by INTEGER REFERENCES web_users(id),
    refused_at TEXT,
    refused_reason TEXT,
    rule_ids TEXT,
    generation TEXT,
    apply_error TEXT
);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    first_event INTEGER NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    client_ip TEXT NOT NULL,
    mac TEXT,
    grp TEXT NOT NULL,
    name TEXT NOT NULL,
    category TEXT NOT NULL,
    notified INTEGER NOT NULL DEFAULT 0,
    ack_by INTEGER REFERENCES web_users(id),
    ack_at TEXT,
    ack_note TEXT
);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts (ack_at, client_ip, name, category);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    created TEXT NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    sent TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
-- Compliance reports (appliance/compliance/reports.py): kept as made, actions appended beside them.
CREATE TABLE IF NOT EXISTS compliance_reports (
    id INTEGER PRIMARY KEY,
    created TEXT NOT NULL,
    trigger TEXT NOT NULL,
    generation TEXT,
    failures INTEGER NOT NULL,
    document TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    mailed TEXT,
    mail_error TEXT
);
CREATE TRIGGER IF NOT EXISTS compliance_reports_immutable
BEFORE UPDATE OF created, trigger, generation, failures, document, sha256 ON compliance_reports
BEGIN SELECT RAISE(ABORT, 'a compliance report is never changed'); END;
CREATE TRIGGER IF NOT EXISTS compliance_reports_kept BEFORE DELETE ON compliance_reports
BEGIN SELECT RAISE(ABORT, 'compliance reports are kept'); END;
CREATE TABLE IF NOT EXISTS compliance_actions (
    id INTEGER PRIMARY KEY,
    report INTEGER NOT NULL REFERENCES compliance_reports(id),
    finding INTEGER NOT NULL,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS compliance_actions_kept BEFORE UPDATE ON compliance_actions
BEGIN SELECT RAISE(ABORT, 'actions are appended, never changed'); END;
"""


def state_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The state directory: the explicit one (from --state-dir), else $APPLIANCE_STATE_DIR, else
    the default."""
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(STATE_ENV) or DEFAULT_STATE_DIR)


class Store:
    """The open state directory. One per process; the connection is not shared across threads."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.dir = state_dir(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE in audit.change), so a
        # change and its audit entry commit together or not at all.
        self.db = sqlite3.connect(self.dir / "state.db", timeout=30, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def lists_dir(self) -> Path:
        return self.dir / "lists"

    @property
    def policy_dir(self) -> Path:
        return self.dir / "policy"

    def key(self) -> bytes:
        """The 16-byte key for every keyed hash (tables and list stores), created on first use.

        Root-only (0600): with it, anyone could test guesses against the hashed IWF entries."""
        path = self.dir / KEY_FILE
        if not path.exists():
            # Written whole under a temporary name and linked into place, so a process starting at
            # the same moment reads the one key or none, never a part of one.
            tmp = self.dir / f".{KEY_FILE}.{os.getpid()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(KEY_SIZE))
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
            tmp.unlink()
            fsync_dir(self.dir)
        key = path.read_bytes()
        if len(key) != KEY_SIZE:
            raise ValueError(f"{path}: expected a {KEY_SIZE}-byte key, found {len(key)} bytes")
        return key

    def setting(self, key: str, default: str) -> str:
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else default

    def zone(self) -> ZoneInfo:
        """The appliance's time zone: schedules, term dates and reports are in its local time."""
        return ZoneInfo(self.setting("timezone", DEFAULT_ZONE))


def iso(when: datetime) -> str:
    """A moment as the database keeps it: UTC ISO 8601 to the microsecond, so that text order is
    time order."""
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = 0o644) -> Iterator[Path]:
    """Yields a temporary path beside path; once the caller has written it, it is fsynced and renamed
    over path, so readers see the old file or the new one, never a part. Removed on error."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    with atomic_file(path, mode) as tmp:
        tmp.write_bytes(data)


def add_state_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", help=f"state directory (default ${STATE_ENV} or {DEFAULT_STATE_DIR})")


def command(func: Callable[[argparse.Namespace, Store], int]) -> Callable[[argparse.Namespace], int]:
    """A CLI command over the store (from --state-dir): bad input and refused changes (ValueError,
    which PolicyError is) become a one-line message and exit status 2, not a traceback."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            with Store(args.state_dir) as store:
                return func(args, store)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return run
