"""Sign-in sessions and API tokens, kept on the server. The browser holds only a random token; the
database holds its SHA-256, so a copy of the database lets nobody sign in. A session ends after a
time without use (idle) or after a fixed time (absolute), at sign-out, and when the password changes."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from appliance.audit import Change
from appliance.store import Store, iso
from webui import accounts, fields
from webui.accounts import User
from webui.errors import NotFound
from webui.times import parse

# How stale last_seen may get before it is written again: a write per request is not needed.
_TOUCH = timedelta(seconds=30)
TOKEN_PREFIX = "sgw_"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    token: str
    user: User
    csrf: str


def start(store: Store, user: User, now: datetime) -> Session:
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    store.db.execute(
        "INSERT INTO web_sessions (token_hash, user_id, csrf, created, last_seen) VALUES (?, ?, ?, ?, ?)",
        (_digest(token), user.id, csrf, iso(now), iso(now)),
    )
    return Session(token, user, csrf)


def load(store: Store, token: str, now: datetime, idle: timedelta, absolute: timedelta) -> Session | None:
    """The live session for token, or None (ended, timed out, or the account switched off)."""
    row = store.db.execute("SELECT * FROM web_sessions WHERE token_hash = ?", (_digest(token),)).fetchone()
    if row is None:
        return None
    created, last_seen = parse(row["created"]), parse(row["last_seen"])
    assert created is not None and last_seen is not None
    user = accounts.get(store, row["user_id"])
    if now - last_seen > idle or now - created > absolute or user.disabled:
        end(store, token)
        return None
    if now - last_seen > _TOUCH:
        store.db.execute(
            "UPDATE web_sessions SET last_seen = ? WHERE token_hash = ?", (iso(now), _digest(token))
        )
    return Session(token, user, row["csrf"])


def end(store: Store, token: str) -> None:
    store.db.execute("DELETE FROM web_sessions WHERE token_hash = ?", (_digest(token),))


@dataclass(frozen=True)
class ApiToken:
    id: int
    label: str
    created: datetime
    last_used: datetime | None


def create_token(ch: Change, user: User, label: object) -> str:
    """A new API token for scripts, acting as user with user's role; returned once, stored hashed."""
    name = fields.text(label, "Token name", 100)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    ch.db.execute(
        "INSERT INTO web_api_tokens (user_id, label, token_hash, created) VALUES (?, ?, ?, ?)",
        (user.id, name, _digest(token), iso(ch.now)),
    )
    ch.log("account.token", f"account {user.username}: API token {name!r} created")
    return token


def tokens(store: Store, user: User) -> list[ApiToken]:
    rows = store.db.execute("SELECT * FROM web_api_tokens WHERE user_id = ? ORDER BY id", (user.id,))
    return [ApiToken(r["id"], r["label"], parse(r["created"]), parse(r["last_used"])) for r in rows]  # type: ignore[arg-type]


def revoke_token(ch: Change, user: User, token_id: int) -> None:
    row = ch.db.execute(
        "SELECT label FROM web_api_tokens WHERE id = ? AND user_id = ?", (token_id, user.id)
    ).fetchone()
    if row is None:
        raise NotFound(f"no API token {token_id}")
    ch.db.execute("DELETE FROM web_api_tokens WHERE id = ?", (token_id,))
    ch.log("account.token", f"account {user.username}: API token {row['label']!r} revoked")


def token_user(store: Store, token: str, now: datetime) -> User | None:
    row = store.db.execute(
        "SELECT id, user_id, last_used FROM web_api_tokens WHERE token_hash = ?", (_digest(token),)
    ).fetchone()
    if row is None:
        return None
    user = accounts.get(store, row["user_id"])
    if user.disabled:
        return None
    last = parse(row["last_used"])
    if last is None or now - last > _TOUCH:
        store.db.execute("UPDATE web_api_tokens SET last_used = ? WHERE id = ?", (iso(now), row["id"]))
    return user
