"""Accounts: who they are, their role, their password (argon2id), and sign-in with rate limiting and
lock-out. Account changes are audited like any other change; password hashes never enter the log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import argon2

from appliance.audit import Change
from appliance.store import Store, iso
from webui import fields
from webui.errors import InputError, NotFound
from webui.roles import Permission, Role, allowed

MIN_PASSWORD = 12
MAX_PASSWORD = 256
# Lock-out: this many wrong passwords for one user name within the window locks it for the window.
ACCOUNT_FAILURES = 5
# Rate limit: this many failed sign-ins from one address within the window refuses it for the window.
ADDRESS_FAILURES = 20
WINDOW = timedelta(minutes=15)

_hasher = argon2.PasswordHasher()
# Verified against when the user name does not exist, so both cases take the same time.
_DUMMY_HASH = _hasher.hash("no such account: timing equaliser")


@dataclass(frozen=True)
class User:
    id: int
    username: str
    display_name: str
    email: str
    role: Role
    must_change_password: bool
    disabled: bool
    created: datetime
    last_login: datetime | None

    def can(self, permission: Permission) -> bool:
        return not self.disabled and allowed(self.role, permission)

    def summary(self) -> dict[str, Any]:
        """What the audit log and the API show about an account."""
        return {
            "id": self.id,
            "username": self.username,
            "display_name": self.display_name,
            "email": self.email,
            "role": self.role.value,
            "disabled": self.disabled,
        }

    @classmethod
    def from_row(cls, row: Any) -> User:
        return cls(
            id=row["id"],
            username=row["username"],
            display_name=row["display_name"],
            email=row["email"],
            role=Role(row["role"]),
            must_change_password=bool(row["must_change_password"]),
            disabled=bool(row["disabled"]),
            created=datetime.fromisoformat(row["created"]),
            last_login=datetime.fromisoformat(row["last_login"]) if row["last_login"] else None,
        )


class SignInRefused(Exception):
    """A sign-in that did not succeed; the message is safe to show (it never says whether the user
    name exists)."""

    def __init__(self, message: str, throttled: bool = False) -> None:
        super().__init__(message)
        self.throttled = throttled


def check_password(password: object, username: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise InputError(f"Password: at least {MIN_PASSWORD} characters (three random words make a good one)")
    if len(password) > MAX_PASSWORD:
        raise InputError(f"Password: at most {MAX_PASSWORD} characters")
    if username.lower() in password.lower():
        raise InputError("Password: must not contain the user name")
    return password


def get(store: Store, user_id: int) -> User:
    row = store.db.execute("SELECT * FROM web_users WHERE id = ?", (user_id,)).fetchone()
    if row is None:
        raise NotFound(f"no account {user_id}")
    return User.from_row(row)


def find(store: Store, username: str) -> User | None:
    row = store.db.execute("SELECT * FROM web_users WHERE username = ?", (username,)).fetchone()
    return User.from_row(row) if row else None


def all_users(store: Store) -> list[User]:
    return [User.from_row(r) for r in store.db.execute("SELECT * FROM web_users ORDER BY username")]


def with_permission(store: Store, permission: Permission) -> list[User]:
    """Active accounts that hold permission (who to notify)."""
    return [u for u in all_users(store) if u.can(permission)]


def any_admin(store: Store) -> bool:
    row = store.db.execute(
        "SELECT 1 FROM web_users WHERE role = ? AND disabled = 0", (Role.ADMIN.value,)
    ).fetchone()
    return row is not None


def create(
    ch: Change,
    username: object,
    display_name: object,
    email: object,
    role: object,
    password: object,
    must_change_password: bool,
) -> User:
    name = fields.username(username)
    display = fields.text(display_name, "Full name", 100)
    address = fields.email(email)
    role_ = Role(fields.choice(role, "Role", [r.value for r in Role]))
    secret = check_password(password, name)
    if find(ch.store, name):
        raise InputError(f"User name: {name!r} is already taken")
    cur = ch.db.execute(
        "INSERT INTO web_users (username, display_name, email, role, password_hash, must_change_password,"
        " created) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (name, display, address, role_.value, _hasher.hash(secret), int(must_change_password), iso(ch.now)),
    )
    user = get(ch.store, int(cur.lastrowid or 0))
    ch.log("account.create", f"account {name} ({role_.title})", None, user.summary())
    return user


def update(
    ch: Change, user_id: int, display_name: object, email: object, role: object, disabled: bool
) -> User:
    before = get(ch.store, user_id)
    role_ = Role(fields.choice(role, "Role", [r.value for r in Role]))
    if before.role == Role.ADMIN and (role_ != Role.ADMIN or disabled) and _admins(ch.store) == {user_id}:
        raise InputError("This is the only administrator: make another one first")
    ch.db.execute(
        "UPDATE web_users SET display_name = ?, email = ?, role = ?, disabled = ? WHERE id = ?",
        (
            fields.text(display_name, "Full name", 100),
            fields.email(email),
            role_.value,
            int(disabled),
            user_id,
        ),
    )
    if disabled:
        ch.db.execute("DELETE FROM web_sessions WHERE user_id = ?", (user_id,))
        ch.db.execute("DELETE FROM web_api_tokens WHERE user_id = ?", (user_id,))
    after = get(ch.store, user_id)
    ch.log("account.update", f"account {after.username}", before.summary(), after.summary())
    return after


def _admins(store: Store) -> set[int]:
    rows = store.db.execute("SELECT id FROM web_users WHERE role = ? AND disabled = 0", (Role.ADMIN.value,))
    return {r["id"] for r in rows}


def set_password(ch: Change, user_id: int, password: object, must_change: bool) -> None:
    """A new password; every session and API token of the account ends, so a stolen one stops working."""
    user = get(ch.store, user_id)
    secret = check_password(password, user.username)
    ch.db.execute(
        "UPDATE web_users SET password_hash = ?, must_change_password = ? WHERE id = ?",
        (_hasher.hash(secret), int(must_change), user_id),
    )
    ch.db.execute("DELETE FROM web_sessions WHERE user_id = ?", (user_id,))
    ch.db.execute("DELETE FROM web_api_tokens WHERE user_id = ?", (user_id,))
    how = "reset (to be changed at next sign-in)" if must_change else "changed"
    ch.log("account.password", f"account {user.username}: password {how}")


def unlock(ch: Change, user_id: int) -> None:
    user = get(ch.store, user_id)
    ch.db.execute("DELETE FROM web_login_failures WHERE key = ?", (_user_key(user.username),))
    ch.log("account.unlock", f"account {user.username}: sign-in lock-out cleared")


def locked_until(store: Store, username: str, now: datetime) -> datetime | None:
    """When a locked-out user name may try again, or None if it is not locked."""
    times = _failures(store, _user_key(username), now)
    return times[-ACCOUNT_FAILURES] + WINDOW if len(times) >= ACCOUNT_FAILURES else None


def sign_in(store: Store, username: str, password: str, address: str, now: datetime | None = None) -> User:
    """The account if the password is right and neither the account nor the address is locked out;
    otherwise SignInRefused. A failure counts against both the user name and the address."""
    now = now or datetime.now(UTC)
    store.db.execute("DELETE FROM web_login_failures WHERE ts < ?", (iso(now - WINDOW),))
    if len(_failures(store, _address_key(address), now)) >= ADDRESS_FAILURES:
        raise SignInRefused(
            "Too many failed sign-ins from this computer. Wait 15 minutes, then try again.", throttled=True
        )
    until = locked_until(store, username, now)
    if until is not None:
        minutes = max(1, round((until - now).total_seconds() / 60))
        raise SignInRefused(
            f"This account is locked for {minutes} more minute{'s' if minutes != 1 else ''} after too many "
            "wrong passwords. Wait, or ask your trust administrator to unlock it.",
            throttled=True,
        )
    row = store.db.execute("SELECT * FROM web_users WHERE username = ?", (username,)).fetchone()
    ok = _verify(row["password_hash"] if row else _DUMMY_HASH, password)
    if ok and row is not None and row["disabled"]:
        raise SignInRefused("This account has been switched off. Ask your trust administrator.")
    if not ok or row is None:
        store.db.executemany(
            "INSERT INTO web_login_failures (key, ts) VALUES (?, ?)",
            [(_user_key(username), iso(now)), (_address_key(address), iso(now))],
        )
        raise SignInRefused("The user name or password is not right.")
    store.db.execute("DELETE FROM web_login_failures WHERE key = ?", (_user_key(username),))
    if _hasher.check_needs_rehash(row["password_hash"]):
        store.db.execute(
            "UPDATE web_users SET password_hash = ? WHERE id = ?", (_hasher.hash(password), row["id"])
        )
    store.db.execute("UPDATE web_users SET last_login = ? WHERE id = ?", (iso(now), row["id"]))
    return get(store, row["id"])


def verify_password(store: Store, user_id: int, password: str) -> bool:
    row = store.db.execute("SELECT password_hash FROM web_users WHERE id = ?", (user_id,)).fetchone()
    return row is not None and _verify(row["password_hash"], password)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except argon2.exceptions.VerificationError:
        return False
    except argon2.exceptions.InvalidHashError:
        return False


def _failures(store: Store, key: str, now: datetime) -> list[datetime]:
    rows = store.db.execute(
        "SELECT ts FROM web_login_failures WHERE key = ? AND ts >= ? ORDER BY ts", (key, iso(now - WINDOW))
    )
    return [datetime.fromisoformat(r["ts"]) for r in rows]


def _user_key(username: str) -> str:
    return "user:" + username.lower()


def _address_key(address: str) -> str:
    return "address:" + address
