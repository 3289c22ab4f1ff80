"""Shared helpers for the web UI tests (test_webui_*.py): a real state directory with real lists and
an applied policy, real accounts, a real SMTP server (aiosmtpd) on loopback, and signing in through
the real login form. Nothing here is mocked."""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Browser, ConsoleMessage, Page

from appliance import audit
from appliance.lists import catalogue, importer
from appliance.policy import generations, inputs, timetable
from appliance.policy.schedules import Term
from appliance.store import Store
from webui import accounts
from webui.app import create_app

PASSWORD = "correct horse battery staple"
HOST = "gateway.test"
BASE = f"https://{HOST}"
# (list name, format, category, entries): real lists imported by the real importer.
LISTS = [
    ("games", "plain", "games", ["games.example", "play.example"]),
    ("social", "plain", "social_media", ["social.example"]),
    ("iwf", "iwf", None, ["iwf-test.example"]),
    ("ctiru", "ctiru", None, ["ctiru-test.example"]),
    ("selfharm", "plain", "self_harm", ["harm.example"]),
    ("extremism", "plain", "extremism", ["extreme.example"]),
]
ROLES = {"teacher": "teacher", "it": "it", "dsl": "dsl", "admin": "admin"}


def build_state(directory: Path, today: date | None = None) -> Path:
    """A state directory with the lists above imported, a term around today and a policy applied."""
    today = today or datetime.now(UTC).date()
    sources = directory / "sources"
    sources.mkdir(parents=True)
    state = directory / "state"
    with Store(state) as store:
        with audit.change(store, "setup", "test lists") as ch:
            for name, fmt, category, entries in LISTS:
                (sources / f"{name}.txt").write_text("\n".join(entries) + "\n")
                catalogue.add(ch, name, fmt, category, str(sources / f"{name}.txt"), None)
            timetable.set_term(ch, Term("Autumn 2", today - timedelta(days=30), today + timedelta(days=40)))
        for name, *_ in LISTS:
            result = importer.update(store, name, "setup", "test lists")
            assert result.error is None, result.error
        generations.apply(store, inputs.from_store(store, datetime.now(UTC)), "setup", "first policy")
        for username, role in ROLES.items():
            add_user(store, username, role)
    return state


def copy_state(template: Path, directory: Path) -> Path:
    target = directory / "state"
    shutil.copytree(template, target, symlinks=True)
    return target


def add_user(store: Store, username: str, role: str, must_change: bool = False) -> accounts.User:
    with audit.change(store, "setup", "test account") as ch:
        return accounts.create(
            ch,
            username,
            username.capitalize() + " Tester",
            f"{username}@school.test",
            role,
            PASSWORD,
            must_change,
        )


def make_app(state: Path, **overrides: Any) -> Flask:
    app = create_app(state, overrides={"TESTING": True, **overrides})
    return app


def client(app: Flask, address: str = "10.20.0.5") -> FlaskClient:
    """A test client that talks HTTPS to the appliance, as browsers must (the cookie is Secure)."""
    c = app.test_client()
    c.environ_base.update({"wsgi.url_scheme": "https", "HTTP_HOST": HOST, "REMOTE_ADDR": address})
    return c


def csrf(c: FlaskClient, path: str = "/login") -> str:
    """The CSRF token from the form on path, as a browser would find it."""
    page = c.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def sign_in(c: FlaskClient, username: str, password: str = PASSWORD) -> Any:
    token = csrf(c)
    return c.post("/login", data={"username": username, "password": password, "csrf_token": token})


def signed_in(app: Flask, username: str) -> FlaskClient:
    c = client(app)
    response = sign_in(c, username)
    assert response.status_code == 302, response.get_data(as_text=True)
    return c


def post(c: FlaskClient, path: str, data: dict[str, Any], form_page: str = "/account") -> Any:
    """A form post with the session's CSRF token (taken from a page that has a form)."""
    return c.post(path, data={**data, "csrf_token": csrf(c, form_page)})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mailbox:
    """An aiosmtpd handler keeping every message it is sent."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self.messages.append(message)  # type: ignore[arg-type]
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        with self._lock:
            return [m for m in self.messages if m["To"] == address]

    def wait_for(self, address: str, subject_part: str, timeout: float = 10.0) -> EmailMessage:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for m in self.to(address):
                if subject_part in m["Subject"]:
                    return m
            time.sleep(0.05)
        raise AssertionError(
            f"no message to {address} about {subject_part!r}: {[m['Subject'] for m in self.messages]}"
        )


@contextmanager
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


def use_smtp(store: Store, port: int) -> None:
    """Points the appliance's mail settings at the local SMTP server (as the Settings page would)."""
    from webui import settings

    with audit.change(store, "setup", "test mail server") as ch:
        settings.save(
            ch,
            {
                "url": BASE,
                "mail_host": "127.0.0.1",
                "mail_port": str(port),
                "mail_security": "none",
                "mail_sender": "filter@school.test",
            },
        )


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class Person:
    """One member of staff in their own browser context (own cookies), noting page problems."""

    def __init__(self, browser: Browser, base: str, username: str) -> None:
        self.base = base
        self.username = username
        self.context = browser.new_context(
            ignore_https_errors=True, viewport={"width": 1280, "height": 900}, locale="en-GB"
        )
        self.page: Page = self.context.new_page()
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", self._console)
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.problems.append(message.text)

    def go(self, path: str) -> Page:
        self.page.goto(self.base + path)
        return self.page

    def sign_in(self) -> None:
        self.page.fill("input[name=username]", self.username)
        self.page.fill("input[name=password]", PASSWORD)
        self.page.click("button:has-text('Sign in')")

    def shot(self, name: str) -> None:
        folder = os.environ.get("WEBUI_SCREENSHOTS")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)
