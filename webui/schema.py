"""The web UI's tables in the appliance's state database (beside the policy's, in the same file).

Kept here until they join appliance.store.SCHEMA; every statement is idempotent, so it runs at each
start. Times are UTC ISO 8601 strings, like the rest of the database."""

from __future__ import annotations

from appliance import events
from appliance.store import Store

SCHEMA = """
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
"""


def ensure(store: Store) -> None:
    """Creates the web UI's tables, and the block events it reads, if they are not there yet."""
    events.ensure(store)
    store.db.executescript(SCHEMA)
