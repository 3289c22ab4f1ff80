"""What every request goes through: who is asking (session cookie or API token), whether their role
may use this page or API call, CSRF checks on every change, and the security headers on every answer.

Every view must say what it needs, with @requires(PERMISSION) or @public; a view that says neither is
refused to everyone (fail closed), and the tests check that none is left undeclared."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Flask, Response, abort, current_app, g, jsonify, redirect, request, session, url_for

from webui import db, sessions
from webui.accounts import User
from webui.roles import Permission

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
PUBLIC = "public"
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
CSP = (
    "default-src 'none'; script-src 'none'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_STYLE = re.compile(r"<style>(.*?)</style>", re.S)
# Pages that an account which must change its password may still use.
PASSWORD_CHANGE_ENDPOINTS = {"auth.password", "auth.logout", "static"}


def csp_allowing_styles(document: str) -> str:
    """The policy for a whole document served as it is printed (a compliance report), whose own
    <style> elements must apply: the same, with exactly those styles allowed by their hashes."""
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(style.encode()).digest()).decode() + "'"
        for style in _STYLE.findall(document)
    ]
    return CSP.replace("style-src 'self'", " ".join(["style-src", *hashes]))


def requires(*permissions: Permission) -> Callable[[F], F]:
    """The view needs one of these permissions."""

    def mark(view: F) -> F:
        view.permission = frozenset(permissions)  # type: ignore[attr-defined]
        return view

    return mark


def public(view: F) -> F:
    view.permission = PUBLIC  # type: ignore[attr-defined]
    return view


def required_permission(endpoint: str) -> frozenset[Permission] | str | None:
    """What the endpoint's view declared: PUBLIC, the permissions of which it needs one, or None (it
    declared nothing, which refuses everyone)."""
    if endpoint == "static":
        return PUBLIC
    view = current_app.view_functions.get(endpoint)
    return getattr(view, "permission", None)


def is_api() -> bool:
    return request.path.startswith("/api/")


def user() -> User | None:
    return g.get("user")


def current_user() -> User:
    """The signed-in account; only for views that required a permission (so there is one)."""
    u = g.get("user")
    assert u is not None
    return u


def csrf_token() -> str:
    """The token forms carry: the session's own once signed in, else one kept in the cookie."""
    if g.get("session") is not None:
        return g.session.csrf
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def begin_session(u: User) -> None:
    """Signs u in with a fresh session (a new token, so one planted before sign-in is useless)."""
    new = sessions.start(db.store(), u, db.now())
    session.clear()
    session["sid"] = new.token
    g.session, g.user = new, u


def end_session() -> None:
    token = session.get("sid")
    if token:
        sessions.end(db.store(), token)
    session.clear()
    g.session = g.user = None


def safe_next(target: str | None) -> str | None:
    """target if it is a path on this site (never another site: no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


def _identify() -> None:
    g.user = g.session = None
    g.by_token = False
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer ") and is_api():
        g.user = sessions.token_user(db.store(), header[7:].strip(), db.now())
        g.by_token = g.user is not None
        return
    token = session.get("sid")
    if token:
        cfg = current_app.config
        g.session = sessions.load(
            db.store(),
            token,
            db.now(),
            timedelta(seconds=cfg["SESSION_IDLE_SECONDS"]),
            timedelta(seconds=cfg["SESSION_ABSOLUTE_SECONDS"]),
        )
        if g.session is None:
            session.clear()
            g.session_expired = True
        else:
            g.user = g.session.user


def _refuse(status: int, message: str) -> Response:
    if is_api():
        response = jsonify(error=message)
        response.status_code = status
        return response
    abort(status, description=message)


def _check_csrf() -> Response | None:
    if request.method not in UNSAFE_METHODS or g.by_token:
        return None
    origin = request.headers.get("Origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.host:
        return _refuse(403, "This form was sent from another web site, so it was refused.")
    sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
    expected = g.session.csrf if g.session is not None else session.get("csrf", "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        return _refuse(
            400,
            "This form had expired or did not come from this site. Go back, reload the page and try again.",
        )
    return None


def _authorise() -> Response | None:
    _identify()
    if request.endpoint is None:
        return None  # no such page: a 404 follows
    needed = required_permission(request.endpoint)
    if needed is None:
        log.error("view %s declares no permission: refused", request.endpoint)
        return _refuse(403, "This page is not available.")
    u = g.user
    if u is None and needed != PUBLIC:
        if is_api():
            return _refuse(401, "Sign in, or send an API token (Authorization: Bearer ...).")
        nxt = request.full_path.rstrip("?") if request.method == "GET" else None
        return redirect(url_for("auth.login", next=nxt, expired=1 if g.get("session_expired") else None))
    refused = _check_csrf()
    if refused is not None or needed == PUBLIC or u is None:
        return refused
    if u.must_change_password and request.endpoint not in PASSWORD_CHANGE_ENDPOINTS:
        if is_api():
            return _refuse(403, "Change your password in the web UI first.")
        return redirect(url_for("auth.password"))
    assert isinstance(needed, frozenset)
    if not any(u.can(p) for p in needed):
        what = " or ".join(sorted(p.value for p in needed))
        return _refuse(403, f"Your account ({u.role.title}) may not {what}.")
    return None


def _headers(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if current_app.config.get("HSTS"):
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    app.before_request(_authorise)
    app.after_request(_headers)
    app.jinja_env.globals.update(csrf_token=csrf_token, current_user=user, Permission=Permission)
