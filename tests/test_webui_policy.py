"""The policy pages and the JSON API on the real policy code: categories with padlocks, rules that
wait for review, the diff, apply and rollback, exam mode with confirmation, schedules and terms,
explain, and the change log with its tamper check."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from test_webui_support import client, csrf, signed_in

from appliance import audit, config
from appliance.policy import generations
from appliance.store import Store
from webui import accounts, openapi, policy_ops, sessions
from webui.app import create_app

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "appliance.toml"


def send(c: FlaskClient, path: str, page: str, **data: str) -> str:
    """Posts a form as the browser would and returns the page it leads to (with its message)."""
    response = c.post(path, data={**data, "csrf_token": csrf(c, page)})
    assert response.status_code == 302, response.get_data(as_text=True)
    return c.get(response.headers["Location"]).get_data(as_text=True)


def add_rule(
    c: FlaskClient, action: str, target: str, reason: str, page: str = "/policy/rules", **more: str
) -> str:
    """Adds a school rule (by default on a name, for students) with the form on page."""
    fields = {"kind": "name", "group": "students", **more}
    return send(c, "/policy/rules", page, action=action, target=target, reason=reason, **fields)


def exam_mode(c: FlaskClient, mode: str, reason: str, **more: str) -> str:
    """Turns exam mode for students on or off with the form on its confirmation page."""
    page = f"/policy/exam/confirm?group=students&mode={mode}"
    return send(c, "/policy/exam", page, group="students", mode=mode, reason=reason, **more)


def verdict(state: Path, name: str, group: str) -> str:
    with Store(state) as store:
        return policy_ops.explain_live(store, name, group, datetime.now(UTC)).action


def test_groups_show_vlans_categories_and_padlocks(state: Path) -> None:
    cfg = config.load(EXAMPLE)
    cfg = dataclasses.replace(cfg, appliance=dataclasses.replace(cfg.appliance, state_dir=state))
    app = create_app(None, cfg, {"TESTING": True})
    dsl = signed_in(app, "dsl")
    page = dsl.get("/policy?group=students").get_data(as_text=True)
    overview = page.split("<tbody>")[1].split("</tbody>")[0]
    assert re.search(
        r"<strong>Students</strong>.*?eth0\.10 <span class=\"hint\">10\.10\.0\.0/22, fd00:10::/64",
        overview,
        re.S,
    )
    assert re.search(r"<strong>Guests</strong></a></td>\s*<td>none</td>", overview)
    students = page.split('id="categories"')[1]
    locked = re.findall(r'alt="Locked"[^>]*> <strong>([^<]+)</strong>', students)
    assert locked == [
        "Child sexual abuse content (IWF)",
        "Unlawful terrorist content (CTIRU)",
        "Extremism",
        "Pornography",
        "Self harm",
    ]
    assert "the law (always blocked)" in students and "the trust (locked)" in students
    assert "<th>Change</th>" not in students  # the DSL sees the policy but cannot change it
    staff = dsl.get("/policy?group=staff").get_data(as_text=True).split('id="categories"')[1]
    assert re.findall(r'alt="Locked"[^>]*> <strong>([^<]+)</strong>', staff) == locked[:4]
    assert "only sites the school allows" in page


def test_a_category_change_waits_for_review_then_applies(app: Flask, state: Path) -> None:
    it = signed_in(app, "it")
    page = add_rule(it, "allow", "games", "Games design club", "/policy", kind="category", back="groups")
    assert "Rule added. It is not in force until you review and apply" in page
    assert "Some changes are not in force yet" in page
    students = page.split('id="categories"')[1]
    assert "Categories for students" in students
    assert re.search(
        r"<strong>Games</strong>.*?Allowed.*?not in force yet.*?school rule 1: Games design club",
        students,
        re.S,
    )
    assert verdict(state, "play.example", "students") == "block"
    review = it.get("/policy/review").get_data(as_text=True)
    assert "+ rule 1: allow games (category) for students (Games design club)" in review
    assert "students: no longer blocks Games" in review
    page = send(it, "/policy/apply", "/policy/review", reason="Agreed at the IT meeting")
    assert "The changes are in force now." in page and "Nothing is waiting" in page
    assert verdict(state, "play.example", "students") == "allow"
    with Store(state) as store:
        last = list(audit.entries(store))[-2:]
    assert [(e.action, e.actor, e.reason) for e in last] == [
        ("rule.add", "it", "Games design club"),
        ("policy.apply", "it", "Agreed at the IT meeting"),
    ]
    page = send(it, "/policy/rollback", "/policy/review", reason="Parents complained", confirm="yes")
    assert "The previous policy is in force again." in page
    assert verdict(state, "play.example", "students") == "block"


def test_padlocked_sites_cannot_be_allowed_and_locked_categories_still_win(app: Flask, state: Path) -> None:
    it = signed_in(app, "it")
    page = add_rule(it, "allow", "iwf-test.example", "try")
    assert "Not changed: refused: iwf-test.example is padlocked (it is on the iwf list)" in page
    # A name in a category the trust has locked: refused too, and the verdict order keeps it blocked.
    page = add_rule(it, "allow", "extreme.example", "try")
    assert (
        "Not changed: refused: extreme.example is padlocked (it is on the extremism list (Extremism), "
        "which the trust has locked for students)"
    ) in page
    send(it, "/policy/apply", "/policy/review", reason="test")
    with Store(state) as store:
        targets = [r["target"] for r in store.db.execute("SELECT target FROM rules")]
        explained = policy_ops.explain_live(store, "extreme.example", "students", datetime.now(UTC))
    assert "iwf-test.example" not in targets and "extreme.example" not in targets
    assert explained.action == "block" and explained.layer == 2


def test_exam_mode_asks_for_confirmation_and_takes_effect_at_once(app: Flask, state: Path) -> None:
    it = signed_in(app, "it")
    confirm = it.get("/policy/exam/confirm?group=students&mode=on").get_data(as_text=True)
    assert "Everyone in students loses the internet now" in confirm
    page = exam_mode(it, "on", "GCSE mock")
    assert "tick the box to confirm" in page
    assert verdict(state, "open.example", "students") == "allow"
    page = exam_mode(it, "on", "GCSE mock", confirm="yes")
    assert "Exam mode is now on for students." in page
    with Store(state) as store:
        explained = policy_ops.explain_live(store, "open.example", "students", datetime.now(UTC))
    assert explained.action == "block" and explained.policy_group == "exams"
    page = (
        signed_in(app, "dsl").get("/policy/explain?name=open.example&group=students").get_data(as_text=True)
    )
    assert "students is in exam mode: the exams policy applies." in page
    exam_mode(it, "off", "mock over", confirm="yes")
    assert verdict(state, "open.example", "students") == "allow"


def test_schedules_and_terms_are_checked_and_saved(app: Flask) -> None:
    it = signed_in(app, "it")
    page = send(
        it,
        "/policy/schedules",
        "/policy/schedules",
        name="lunch",
        weekly="mon-fri 12:00-13:00",
        dated="",
        terms="in",
        reason="lunchtime clubs",
    )
    assert "Schedule saved" in page and "mon,tue,wed,thu,fri 12:00-13:00 (term time)" in page
    page = send(
        it, "/policy/schedules", "/policy/schedules", name="bad", weekly="someday 25:00-26:00", reason="x"
    )
    assert "Not changed: weekly window" in page
    page = send(
        it,
        "/policy/terms",
        "/policy/schedules",
        name="Spring 1",
        start="2027-01-05",
        end="2026-12-01",
        reason="x",
    )
    assert "ends (2026-12-01) before it starts (2027-01-05)" in page
    page = add_rule(it, "allow", "club.example", "chess club", schedule="lunch")
    assert "during lunch" in page
    assert "schedule &#39;lunch&#39; is used by rule" in send(
        it, "/policy/schedules/lunch/remove", "/policy/schedules", reason="x"
    )


def test_explain_shows_the_layers(app: Flask) -> None:
    page = (
        signed_in(app, "it")
        .get("/policy/explain?name=www.play.example&group=students")
        .get_data(as_text=True)
    )
    assert "www.play.example for students: BLOCKED" in page
    assert re.search(r'class="decided"><strong>4\. categories and default</strong> \(decided here\)', page)
    assert "Games: blocked for students by trust default for students" in page
    bad = signed_in(app, "it").get("/policy/explain?name=not_a..name&group=students")
    assert bad.status_code == 400 and "is not a valid domain name" in bad.get_data(as_text=True)


def test_the_change_log_reports_and_detects_tampering(app: Flask, state: Path) -> None:
    it = signed_in(app, "it")
    add_rule(it, "deny", "news.example", "fake news site", group="*")
    today = datetime.now(UTC).date().isoformat()
    page = it.get(f"/policy/changes?from={today}&to={today}").get_data(as_text=True)
    assert "The log is intact" in page
    added = page.split("Filters added")[1].split("Filters removed")[0]
    assert "deny news.example for all groups" in added and "fake news site" in added
    with Store(state) as store:
        store.db.execute("UPDATE audit SET reason = 'nothing to see' WHERE reason = 'fake news site'")
    assert "has been tampered with" in it.get("/policy/changes").get_data(as_text=True)


def test_the_api_does_what_the_pages_do_with_a_token(app: Flask, state: Path) -> None:
    with Store(state) as store:
        user = accounts.find(store, "it")
        assert user is not None
        with audit.change(store, "it", "script") as ch:
            token = sessions.create_token(ch, user, "script")
    c = client(app)
    auth = {"Authorization": f"Bearer {token}"}
    refused = c.post(
        "/api/v1/policy/rules",
        headers=auth,
        json={
            "action": "allow",
            "kind": "name",
            "target": "iwf-test.example",
            "group": "staff",
            "reason": "x",
        },
    )
    assert refused.status_code == 400 and "padlocked" in refused.get_json()["error"]
    added = c.post(
        "/api/v1/policy/rules",
        headers=auth,
        json={
            "action": "allow",
            "kind": "name",
            "target": "social.example",
            "group": "students",
            "reason": "marketing",
        },
    )
    assert added.status_code == 201 and added.get_json()["target"] == "social.example"
    diff = c.get("/api/v1/policy/diff", headers=auth).get_json()
    assert diff["pending"] is True
    assert "  social.example for students: blocked (category) -> allowed (school allow)" in diff["changes"]
    applied = c.post("/api/v1/policy/apply", headers=auth, json={"reason": "marketing lessons"})
    assert applied.status_code == 200
    assert verdict(state, "social.example", "students") == "allow"
    explained = c.get("/api/v1/policy/explain?name=social.example&group=students", headers=auth).get_json()
    assert explained["action"] == "allow" and explained["rule"]["reason"] == "marketing"
    with Store(state) as store:
        assert generations.current(store).id == applied.get_json()["generation"]  # type: ignore[union-attr]
    assert c.post("/api/v1/policy/apply", headers=auth, json={}).status_code == 400


def test_the_openapi_description_covers_every_api_route_and_nothing_else(app: Flask) -> None:
    spec = app.test_client().get("/api/v1/openapi.json").get_json()
    with app.test_request_context():
        routes = {(m, r) for m, r, _ in openapi.api_routes()}
    assert routes == set(openapi.OPERATIONS)
    described = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert len(described) == len(routes)
    assert spec["paths"]["/api/v1/requests/{request_id}/decision"]["post"]["description"] == (
        "Needs a role that may approve unblock requests (safeguarding side) or review unblock requests "
        "(technical side)."
    )
    assert spec["openapi"].startswith("3.1")
