"""The whole unblock workflow in a real browser (Debian's chromium, driven by Playwright) against the
real server (`appliance webui serve`: gunicorn, HTTPS with the certificate it generates), with three
real accounts, a real SMTP server, and the policy's own verdicts from the compiled table.

Steps 1 and 4 of the issue's workflow ("a student hits the block page", "the student can now reach
the site") need the lab's data plane; here the student's side is the policy's verdict for the
students group (the same explain/decide the data plane uses), and the teacher starts from the link
the block page carries (docs/webui.md). Screenshots of every page go to $WEBUI_SCREENSHOTS if set."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser
from test_webui_support import Mailbox, Person, build_state, free_port, smtp_server, use_smtp

from appliance import events
from appliance.events import BlockEvent
from appliance.policy import upkeep
from appliance.store import Store
from webui import policy_ops, sender, tls

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Mailbox]]:
    """The web UI served by `appliance webui serve` on a loopback port, with mail to a local server."""
    state = build_state(tmp_path_factory.mktemp("webui-browser"))
    example = (ROOT / "examples" / "appliance.toml").read_text()
    toml = state.parent / "appliance.toml"
    toml.write_text(example.replace('state_dir = "/var/lib/appliance"', f'state_dir = "{state}"'))
    assert str(state) in toml.read_text()
    port = free_port()
    log = open(state.parent / "server.log", "w")  # noqa: SIM115 (open while the server runs)
    with smtp_server() as (box, smtp_port):
        with Store(state) as store:
            use_smtp(store, smtp_port)
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "appliance.cli",
                "webui",
                "serve",
                "--config",
                str(toml),
                "--bind",
                f"127.0.0.1:{port}",
                "--hostname",
                "127.0.0.1",
                "--threads",
                "4",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert server.poll() is None, (state.parent / "server.log").read_text()
                    assert time.monotonic() < deadline, "the web UI did not start"
                    time.sleep(0.2)
            yield f"https://127.0.0.1:{port}", state, box
        finally:
            server.terminate()
            server.wait(timeout=20)
            log.close()


def verdict(state: Path, name: str, group: str, at: datetime | None = None) -> str:
    with Store(state) as store:
        return policy_ops.explain_live(store, name, group, at or datetime.now(UTC)).action


def test_teacher_it_and_dsl_unblock_a_site_for_the_term(
    site: tuple[str, Path, Mailbox], browser: Browser
) -> None:
    base, state, mailbox = site
    assert (state / tls.DIRECTORY / "cert.pem").exists()

    # 1. A student in the lab is blocked: the block page links to the request form.
    assert verdict(state, "play.example", "students") == "block"
    link = "/requests/new?site=play.example&group=students&layer=tls"

    # 2. The teacher follows the link, signs in, and finds the form filled in.
    teacher = Person(browser, base, "teacher")
    teacher.go(link)
    teacher.shot("01-sign-in")
    teacher.sign_in()
    page = teacher.page
    assert page.url == base + link
    assert page.locator("h2", has_text="play.example").is_visible()
    assert "It is in a category blocked for students: Games." in page.inner_text("main")
    assert page.is_checked("input[name=groups][value=students]")
    teacher.shot("02-request-form-prefilled")
    page.fill(
        "textarea[name=reason]", 'Year 9 computing: designing a platform game <script>alert("x")</script>'
    )
    page.check("input[name=until][value=term]")
    page.click("button:has-text('Send request')")
    assert "Waiting for IT review" in page.inner_text("h1")
    assert 'platform game <script>alert("x")</script>' in page.inner_text("main")
    teacher.shot("03-request-sent")
    request_path = page.url.removeprefix(base)
    mailbox.wait_for("it@school.test", "needs IT review")
    mailbox.wait_for("teacher@school.test", "received")

    # 3. IT reviews the technical side, then the DSL approves the safeguarding side.
    it = Person(browser, base, "it")
    it.go("/")
    it.sign_in()
    it.go("/requests")
    assert it.page.locator("h2", has_text="Waiting for you (1)").is_visible()
    it.shot("04-requests-waiting-for-it")
    it.page.click(f"a[href='{request_path}'] >> nth=0")
    it.shot("05-request-it-review")
    it.page.fill("form:has(input[value=approve]) textarea[name=note]", "One site, no log-in needed")
    it.page.click("button:has-text('Approve: technical side is fine')")
    assert "Waiting for DSL approval" in it.page.inner_text("h1")
    assert verdict(state, "play.example", "students") == "block"
    mailbox.wait_for("dsl@school.test", "needs DSL approval")

    dsl = Person(browser, base, "dsl")
    dsl.go(request_path)
    dsl.sign_in()
    assert "One site, no log-in needed" in dsl.page.inner_text("main")
    dsl.shot("06-request-dsl-approval")
    dsl.page.click("button:has-text('Approve: put it in force')")
    assert "Approved and in force" in dsl.page.inner_text("h1")
    dsl.shot("07-request-approved")
    mailbox.wait_for("teacher@school.test", "approved")

    # 4. The student can now reach the site (the live policy's verdict for students).
    assert verdict(state, "play.example", "students") == "allow"
    assert "Approved and in force" in teacher.go(request_path).inner_text("h1")

    # 5. After the end of term the expiry timer removes the allow and the site is blocked again.
    with Store(state) as store:
        after = datetime.now(UTC) + timedelta(days=60)
        upkeep.expire(store, after)
    assert verdict(state, "play.example", "students", after) == "block"

    for person in (teacher, it, dsl):
        assert person.dialogs == [], "a script ran from entered text"
        assert person.problems == [], person.problems
        person.context.close()


PAGES = {
    "teacher": [
        "/requests",
        "/requests/new",
        "/requests/new?site=iwf-test.example&group=students",
        "/requests/new?site=extreme.example&group=students",
        "/account",
    ],
    "it": [
        "/dashboard",
        "/logs",
        "/logs?name=example",
        "/policy",
        "/policy?group=staff",
        "/policy/rules",
        "/policy/schedules",
        "/policy/exam",
        "/policy/exam/confirm?group=students&mode=on",
        "/policy/explain?name=www.play.example&group=students",
        "/policy/changes",
        "/policy/review",
        "/api/docs",
    ],
    "dsl": ["/alerts", "/alerts?show=all", "/requests?show=all"],
    "admin": ["/accounts", "/settings"],
}


def test_every_page_renders_cleanly_for_each_role(site: tuple[str, Path, Mailbox], browser: Browser) -> None:
    base, state, _ = site
    with Store(state) as store:
        now = datetime.now(UTC)
        events.record(
            store,
            [
                BlockEvent(
                    now - timedelta(minutes=m),
                    f"10.10.0.{20 + m % 5}",
                    g,
                    n,
                    "dns",
                    "CATEGORY",
                    c,
                    f"02:00:00:00:00:{m:02x}",
                )
                for m, (g, n, c) in enumerate(
                    [
                        ("students", "play.example", "games"),
                        ("students", "harm.example", "self_harm"),
                        ("students", "social.example", "social_media"),
                        ("staff", "iwf-test.example", "iwf"),
                        ("guests", "games.example", "games"),
                        ("specialist", "extreme.example", "extremism"),
                    ]
                    * 3
                )
            ],
        )
        sender.run_once(store)
    for username, paths in PAGES.items():
        person = Person(browser, base, username)
        person.go("/login")
        person.sign_in()
        for path in paths:
            response = person.page.goto(base + path)
            assert response is not None and response.status == 200, (username, path)
            assert person.page.locator("h1").count() == 1
            name = path.strip("/").replace("/", "-").replace("?", "-").replace("&", "-").replace("=", "-")
            person.shot(f"{username}-{name or 'home'}")
        assert person.problems == [], (username, person.problems)
        forbidden = person.page.goto(base + ("/accounts" if username != "admin" else "/alerts"))
        assert forbidden is not None and forbidden.status == 403
        assert "may not" in person.page.inner_text("main")
        person.shot(f"{username}-forbidden")
        person.context.close()
