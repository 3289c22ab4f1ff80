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
