"""Server-side checks on every route: each view declares who may use it, each role is refused what
it may not do (pages and API), every change needs a CSRF token, and hostile input on every form is
refused or stored harmlessly, never a fault."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from test_webui_support import client, csrf, signed_in

from appliance import audit
from appliance.store import Store
from webui import accounts, openapi, security, sessions
from webui.roles import Permission, Role, allowed

TEMPLATES = Path(__file__).resolve().parent.parent / "webui" / "templates"
# Every field any form (the templates) or API call (the OpenAPI bodies) takes, so that one request can
# fill in every form.
FIELDS = sorted(
    (
        {
            n
            for t in TEMPLATES.rglob("*.html")
            for n in re.findall(r'<(?:input|textarea|select)[^>]*name="(\w+)"', t.read_text())
        }
        | {n for _, body, _ in openapi.OPERATIONS.values() if body for n in body.get("properties", {})}
    )
    - {"csrf_token", "groups"}
)
HOSTILE = [
    '<script>alert("x")</script>',
    "A" * 100_000,
    "Zoë’s “lesson” 🚀 \u202egnp.exe \u0000 nul",
    "'; DROP TABLE rules; --",
    '=HYPERLINK("http://evil.example")',
]


def routes(app: Flask) -> Iterator[tuple[str, str, str]]:
    """(method, concrete path, endpoint) for every route, with 1 or "x" for its parameters."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<int:\w+>", "1", rule.rule)
        path = re.sub(r"<\w+>", "x", path)
        for method in sorted((rule.methods or set()) & {"GET", "POST"}):
            yield method, path, rule.endpoint


def test_every_view_declares_who_may_use_it(app: Flask) -> None:
    with app.test_request_context():
        undeclared = [e for e in app.view_functions if security.required_permission(e) is None]
    assert undeclared == []


def test_public_routes_are_only_sign_in_and_the_api_description(app: Flask) -> None:
    with app.test_request_context():
        public = sorted(e for e in app.view_functions if security.required_permission(e) == security.PUBLIC)
    assert public == ["api.spec", "auth.login", "static"]


def test_signed_out_visitors_are_sent_to_sign_in_and_the_api_answers_401(app: Flask) -> None:
    c = client(app)
    token = csrf(c)
    for method, path, endpoint in routes(app):
        if endpoint in ("auth.login", "api.spec"):
            continue
        response = c.open(path, method=method, data={"csrf_token": token})
        if path.startswith("/api/"):
            assert response.status_code == 401, (method, path)
            assert "error" in response.get_json()
        else:
            assert response.status_code == 302, (method, path)
            assert response.headers["Location"].startswith("/login")


def _needed(app: Flask, endpoint: str) -> frozenset[Permission]:
    with app.test_request_context():
        needed = security.required_permission(endpoint)
    return needed if isinstance(needed, frozenset) else frozenset()


def _check_role(app: Flask, c: FlaskClient, role: Role, headers: dict[str, str], data_token: str) -> None:
    checked = 0
    for method, path, endpoint in sorted(routes(app), key=lambda r: r[2] == "auth.logout"):
        needed = _needed(app, endpoint)
        if not needed:
            continue
        if path.startswith("/api/"):
            response = c.open(path, method=method, headers=headers, json={} if method == "POST" else None)
        else:
            response = c.open(
                path, method=method, data={"csrf_token": data_token} if method == "POST" else None
            )
        may = any(allowed(role, p) for p in needed)
        assert (response.status_code == 403) != may, (role, method, path, response.status_code)
        if not may and path.startswith("/api/"):
            assert role.title in response.get_json()["error"]
        checked += 1
    assert checked > 70


@pytest.mark.parametrize("role", list(Role))
def test_each_role_is_refused_exactly_what_it_may_not_do_in_pages(app: Flask, role: Role) -> None:
    c = signed_in(app, role.value)
    token = csrf(c, "/account")
    _check_role(app, c, role, {"X-CSRF-Token": token}, token)


@pytest.mark.parametrize("role", list(Role))
def test_each_role_is_refused_exactly_what_it_may_not_do_through_api_tokens(
    app: Flask, state: Path, role: Role
) -> None:
    with Store(state) as store:
        user = accounts.find(store, role.value)
        assert user is not None
        with audit.change(store, user.username, "test") as ch:
            # Token 1 is the one the route /api/v1/me/tokens/1/revoke revokes; ours is token 2.
            sessions.create_token(ch, user, "revoked by the sweep")
            token = sessions.create_token(ch, user, "tests")
    api_only = client(app)
    headers = {"Authorization": f"Bearer {token}"}
    for method, path, endpoint in routes(app):
        if not path.startswith("/api/v1/") or not _needed(app, endpoint):
            continue
        response = api_only.open(path, method=method, headers=headers, json={} if method == "POST" else None)
        may = any(allowed(role, p) for p in _needed(app, endpoint))
        assert (response.status_code == 403) != may, (role, method, path, response.status_code)
    bad = api_only.get("/api/v1/me", headers={"Authorization": "Bearer sgw_not-a-real-token"})
    assert bad.status_code == 401


def test_every_change_needs_the_csrf_token(app: Flask, state: Path) -> None:
    c = signed_in(app, "admin")
    with Store(state) as store:
        before = store.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    posts = [(m, p) for m, p, _ in routes(app) if m == "POST"]
    assert len(posts) > 30
    for _, path in posts:
        for token in (None, "forged-token"):
            data = {"csrf_token": token} if token else {}
            if path.startswith("/api/"):
                headers = {"X-CSRF-Token": token} if token else {}
                response = c.post(path, json={"reason": "x"}, headers=headers)
            else:
                response = c.post(path, data={**data, "reason": "x"})
            assert response.status_code == 400, (path, token, response.status_code)
    with Store(state) as store:
        assert store.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == before
    assert client(app).post("/login", data={"username": "admin", "password": "x"}).status_code == 400


def test_changes_sent_from_another_site_are_refused_even_with_a_token(app: Flask) -> None:
    c = signed_in(app, "it")
    token = csrf(c, "/account")
    response = c.post(
        "/policy/rules",
        data={
            "csrf_token": token,
            "action": "allow",
            "kind": "name",
            "target": "games.example",
            "group": "students",
            "reason": "x",
        },
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert "another web site" in response.get_data(as_text=True)


@pytest.mark.parametrize("value", HOSTILE, ids=["script", "huge", "unicode", "sql", "formula"])
def test_hostile_input_on_every_form_is_refused_or_harmless(app: Flask, state: Path, value: str) -> None:
    for role in ("teacher", "it", "dsl", "admin"):
        c = signed_in(app, role)
        token = csrf(c, "/account")
        form = {name: value for name in FIELDS}
        for method, path, endpoint in routes(app):
            if method != "POST" or endpoint == "auth.logout":
                continue
            if path.startswith("/api/"):
                response = c.post(path, json={**form, "groups": [value]}, headers={"X-CSRF-Token": token})
            else:
                response = c.post(path, data={**form, "groups": value, "csrf_token": token})
            assert response.status_code < 500, (role, path, response.status_code)
        for path in (
            "/requests",
            "/policy/rules",
            "/policy/schedules",
            "/policy/changes",
            "/accounts",
            "/logs",
            "/dashboard",
            "/alerts",
            "/settings",
        ):
            page = c.get(path).get_data(as_text=True)
            assert "<script>" not in page
    with Store(state) as store:
        assert store.db.execute("SELECT COUNT(*) FROM rules").fetchone()[0] == 0
        assert audit.verify(store).ok


def test_stored_script_is_shown_as_text(app: Flask) -> None:
    c = signed_in(app, "teacher")
    token = csrf(c, "/requests/new?site=games.example&group=students")
    response = c.post(
        "/requests/new",
        data={
            "csrf_token": token,
            "site": "games.example",
            "groups": "students",
            "reason": '<script>alert("x")</script> Year 9 “games” 🚀',
            "until": "term",
        },
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    page = c.get(response.headers["Location"]).get_data(as_text=True)
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; Year 9 “games” 🚀" in page
    assert '<script>alert("x")' not in page


def test_oversized_requests_are_refused(app: Flask) -> None:
    c = signed_in(app, "teacher")
    token = csrf(c, "/account")
    response = c.post("/account/tokens", data={"csrf_token": token, "label": "x" * (2 << 20)})
    assert response.status_code == 413
    assert "larger than the appliance accepts" in response.get_data(as_text=True)
