"""Accounts and sign-in: the first administrator from the console, argon2 hashes, cookie flags,
lock-out and rate limiting, session time-outs, sign-out and forced password changes."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from test_webui_support import PASSWORD, add_user, client, csrf, make_app, post, sign_in

from appliance.store import Store, iso
from webui import accounts

ROOT = Path(__file__).resolve().parent.parent


def _create_admin(state: Path, *extra: str, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", "webui", "create-admin", "--state-dir", str(state), *extra],
        input=password + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )


def user_id(state: Path, username: str) -> int:
    with Store(state) as store:
        user = accounts.find(store, username)
    assert user is not None
    return user.id


def test_first_start_asks_for_an_administrator_from_the_console(tmp_path: Path) -> None:
    state = tmp_path / "fresh"
    app = make_app(state)
    page = client(app).get("/login").get_data(as_text=True)
    assert "No administrator yet" in page and "appliance webui create-admin" in page
    assert client(app).get("/", follow_redirects=False).headers["Location"].startswith("/login")

    weak = _create_admin(
        state, "--username", "head", "--email", "head@school.test", "--password-stdin", password="short"
    )
    assert weak.returncode == 2 and "at least 12 characters" in weak.stderr
    done = _create_admin(state, "--username", "head", "--email", "head@school.test", "--password-stdin")
    assert done.returncode == 0, done.stderr
    assert "administrator head created" in done.stdout

    c = client(app)
    assert "No administrator yet" not in c.get("/login").get_data(as_text=True)
    response = sign_in(c, "head")
    assert response.status_code == 302
    assert "Accounts" in c.get("/accounts").get_data(as_text=True)
    with Store(state) as store:
        row = store.db.execute("SELECT password_hash FROM web_users WHERE username = 'head'").fetchone()
        logged = store.db.execute(
            "SELECT action, actor FROM audit WHERE action = 'account.create'"
        ).fetchall()
    assert row["password_hash"].startswith("$argon2id$") and PASSWORD not in row["password_hash"]
    assert [(r["action"], r["actor"]) for r in logged] == [
        ("account.create", os.environ.get("SUDO_USER") or "root")
    ]


def test_session_cookie_is_secure_httponly_samesite_and_host_only(app: Flask) -> None:
    c = client(app)
    response = sign_in(c, "teacher")
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("__Host-sgw=")
    for flag in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
        assert flag in cookie
    assert "Domain=" not in cookie and "Expires=" not in cookie


def test_security_headers_on_pages_api_and_errors(app: Flask) -> None:
    c = client(app)
    sign_in(c, "teacher")
    for path in ("/login", "/requests", "/api/v1/me", "/no-such-page", "/static/style.css"):
        headers = c.get(path).headers
        csp = headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "same-origin"
        if not path.startswith("/static"):
            assert headers["Cache-Control"] == "no-store"


def test_wrong_passwords_lock_the_account_and_the_admin_can_unlock_it(app: Flask, state: Path) -> None:
    c = client(app)
    for _ in range(accounts.ACCOUNT_FAILURES):
        response = sign_in(c, "teacher", "not the password at all")
        assert response.status_code == 401
        assert "user name or password is not right" in response.get_data(as_text=True)
    locked = sign_in(c, "teacher")
    assert locked.status_code == 429
    assert "locked for 15 more minutes" in locked.get_data(as_text=True)

    admin = client(app)
    assert sign_in(admin, "admin").status_code == 302
    assert "Unlock" in admin.get("/accounts").get_data(as_text=True)
    post(admin, f"/accounts/{user_id(state, 'teacher')}/unlock", {}, "/accounts")
    assert sign_in(c, "teacher").status_code == 302


def test_unknown_user_names_are_answered_like_known_ones(app: Flask) -> None:
    c = client(app)
    known = sign_in(c, "teacher", "wrong password here")
    unknown = sign_in(c, "nobody-here", "wrong password here")
    assert known.status_code == unknown.status_code == 401
    assert known.get_data(as_text=True).replace("teacher", "X") == unknown.get_data(as_text=True).replace(
        "nobody-here", "X"
    )
    for _ in range(accounts.ACCOUNT_FAILURES):
        sign_in(c, "nobody-here", "wrong password here")
    assert "is locked" in sign_in(c, "nobody-here", "wrong password here").get_data(as_text=True)


def test_many_failures_from_one_address_are_refused_but_not_other_computers(app: Flask) -> None:
    attacker = client(app, "10.10.0.66")
    for i in range(accounts.ADDRESS_FAILURES):
        assert sign_in(attacker, f"guess{i}", "wrong password here").status_code == 401
    refused = sign_in(attacker, "teacher")
    assert refused.status_code == 429
    assert "Too many failed sign-ins from this computer" in refused.get_data(as_text=True)
    other = client(app, "10.10.0.67")
    assert sign_in(other, "teacher").status_code == 302


@pytest.mark.parametrize("column", ["last_seen", "created"])
def test_sessions_time_out_when_idle_and_absolutely(app: Flask, state: Path, column: str) -> None:
    c = client(app)
    sign_in(c, "teacher")
    assert c.get("/requests").status_code == 200
    limit = app.config["SESSION_IDLE_SECONDS" if column == "last_seen" else "SESSION_ABSOLUTE_SECONDS"]
    with Store(state) as store:
        stale = iso(datetime.now(UTC) - timedelta(seconds=limit + 60))
        store.db.execute(f"UPDATE web_sessions SET {column} = ?", (stale,))
    response = c.get("/requests")
    assert response.status_code == 302 and "expired=1" in response.headers["Location"]
    assert "signed out after a time without use" in c.get(response.headers["Location"]).get_data(as_text=True)
    with Store(state) as store:
        assert store.db.execute("SELECT COUNT(*) FROM web_sessions").fetchone()[0] == 0


def test_sign_out_ends_the_session_on_the_server(app: Flask) -> None:
    c = client(app)
    sign_in(c, "teacher")
    stolen = c.get_cookie("__Host-sgw")
    assert stolen is not None
    post(c, "/logout", {}, "/requests")
    thief = client(app)
    thief.set_cookie("__Host-sgw", stolen.value, domain="gateway.test")
    assert thief.get("/requests").status_code == 302


def test_a_first_password_must_be_changed_before_anything_else(app: Flask, state: Path) -> None:
    with Store(state) as store:
        add_user(store, "newbie", "teacher", must_change=True)
    c = client(app)
    response = sign_in(c, "newbie")
    assert response.headers["Location"] == "/account/password"
    assert c.get("/requests").headers["Location"] == "/account/password"
    assert c.get("/api/v1/me").status_code == 403
    token = csrf(c, "/account/password")
    same = c.post(
        "/account/password", data={"current": PASSWORD, "new": "short", "again": "short", "csrf_token": token}
    )
    assert same.status_code == 400 and "at least 12 characters" in same.get_data(as_text=True)
    new = "a brand new passphrase"
    done = c.post(
        "/account/password", data={"current": PASSWORD, "new": new, "again": new, "csrf_token": token}
    )
    assert done.status_code == 302
    assert c.get("/requests").status_code == 200
    assert sign_in(client(app), "newbie", PASSWORD).status_code == 401
    assert sign_in(client(app), "newbie", new).status_code == 302


def test_switched_off_accounts_cannot_sign_in_and_lose_their_sessions(app: Flask, state: Path) -> None:
    c = client(app)
    sign_in(c, "teacher")
    admin = client(app)
    sign_in(admin, "admin")
    post(
        admin,
        f"/accounts/{user_id(state, 'teacher')}",
        {"display_name": "T", "email": "teacher@school.test", "role": "teacher", "disabled": "yes"},
        "/accounts",
    )
    assert c.get("/requests").status_code == 302
    refused = sign_in(client(app), "teacher")
    assert refused.status_code == 401 and "switched off" in refused.get_data(as_text=True)


def test_the_only_administrator_cannot_be_demoted(app: Flask, state: Path) -> None:
    admin = client(app)
    sign_in(admin, "admin")
    me = user_id(state, "admin")
    post(
        admin,
        f"/accounts/{me}",
        {"display_name": "A", "email": "a@school.test", "role": "teacher"},
        "/accounts",
    )
    assert "only administrator" in admin.get("/accounts").get_data(as_text=True)
    with Store(state) as store:
        assert accounts.get(store, me).role.value == "admin"


def test_login_redirects_only_to_pages_on_this_site(app: Flask) -> None:
    for target, expected in (
        ("/requests/new?site=games.example", "/requests/new?site=games.example"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
    ):
        c = client(app)
        token = csrf(c)
        response = c.post(
            "/login", data={"username": "teacher", "password": PASSWORD, "next": target, "csrf_token": token}
        )
        assert response.headers["Location"] == expected
