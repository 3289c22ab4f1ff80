"""Unblock requests through the web UI against the real policy code: the pre-filled form, locked
sites, the two-person approval, refusal, e-mail through a real SMTP server, the allow put in force
with its expiry, and the audit trail of every step."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from flask import Flask
from test_webui_support import Mailbox, client, csrf, free_port, signed_in, smtp_server, use_smtp

from appliance import audit
from appliance.policy import generations, rules, timetable, upkeep
from appliance.store import Store
from webui import policy_ops, sender, unblock

TEACHER, IT, DSL, ADMIN = (f"{r}@school.test" for r in ("teacher", "it", "dsl", "admin"))


def deliver(state: Path) -> None:
    """What the sender thread does every few seconds, once."""
    with Store(state) as store:
        sender.run_once(store)


def verdict(state: Path, name: str, group: str, at: datetime | None = None) -> str:
    with Store(state) as store:
        return policy_ops.explain_live(store, name, group, at or datetime.now(UTC)).action


def ask(c, site: str = "play.example", groups: tuple[str, ...] = ("students",), **extra: str):  # type: ignore[no-untyped-def]
    token = csrf(c, f"/requests/new?site={site}")
    data = {
        "csrf_token": token,
        "site": site,
        "groups": list(groups),
        "reason": "Year 9 computing: game design",
        "until": "term",
        **extra,
    }
    return c.post("/requests/new", data=data)


def request_id(response) -> int:  # type: ignore[no-untyped-def]
    assert response.status_code == 302, response.get_data(as_text=True)
    return int(response.headers["Location"].rsplit("/", 1)[1])


def decide(c, rid: int, decision: str, note: str = ""):  # type: ignore[no-untyped-def]
    token = csrf(c, f"/requests/{rid}")
    return c.post(f"/requests/{rid}/decide", data={"csrf_token": token, "decision": decision, "note": note})


def test_the_block_page_link_opens_a_filled_in_form_whose_reason_comes_from_the_policy(app: Flask) -> None:
    c = signed_in(app, "teacher")
    page = c.get("/requests/new?site=Play.Example.&group=students&layer=tls&why=teachers+said+so").get_data(
        as_text=True
    )
    assert "<h2>play.example</h2>" in page
    assert "It is in a category blocked for students: Games." in page
    assert 'name="groups" value="students" checked' in page
    assert 'name="seen_at" value="tls"' in page
    assert "teachers said so" not in page
    # Staff do not block games, so only blocked groups are offered.
    assert 'name="groups" value="staff"' not in page
    assert re.search(r"<td>staff</td>.*?Allowed.*?Not blocked\.", page, re.S)


def test_signed_out_teachers_come_back_to_the_filled_in_form_after_signing_in(app: Flask) -> None:
    c = client(app)
    link = "/requests/new?site=play.example&group=students&layer=dns"
    login = c.get(link).headers["Location"]
    token = csrf(c, login)
    response = c.post(
        login, data={"username": "teacher", "password": "correct horse battery staple", "csrf_token": token}
    )
    assert response.headers["Location"] == link


@pytest.mark.parametrize("site", ["iwf-test.example", "www.ctiru-test.example"])
def test_sites_on_the_iwf_and_ctiru_lists_cannot_be_requested(app: Flask, site: str) -> None:
    c = signed_in(app, "teacher")
    page = c.get(f"/requests/new?site={site}&group=students").get_data(as_text=True)
    assert "This site cannot be requested" in page
    assert "illegal content that every UK school must block by law" in page
    assert 'name="reason"' not in page
    for secret in ("iwf-test", "ctiru-test") if "iwf" in site else ("iwf-test",):
        assert secret not in page.replace(site, "")
    response = ask(c, site)
    assert response.status_code == 400
    assert "illegal content" in response.get_data(as_text=True)
    api = c.post(
        "/api/v1/requests",
        json={"site": site, "groups": ["students"], "reason": "x", "until": "term"},
        headers={"X-CSRF-Token": token_of(c)},
    )
    assert api.status_code == 400 and "illegal content" in api.get_json()["error"]


def token_of(c) -> str:  # type: ignore[no-untyped-def]
    return csrf(c, "/account")


def test_trust_locked_sites_say_so_per_group(app: Flask) -> None:
    c = signed_in(app, "teacher")
    page = c.get("/requests/new?site=extreme.example").get_data(as_text=True)
    assert "Locked by the trust (Extremism)." in page
    assert "The trust has locked this site for students, staff, exams, specialist and guests." in page
    assert "This site cannot be requested" in page and 'name="reason"' not in page
    # Self-harm is locked for students only: staff may still ask (the DSL decides).
    harm = c.get("/requests/new?site=harm.example").get_data(as_text=True)
    assert "Some groups cannot be requested" in harm
    assert "The trust has locked this site for students. The school cannot unblock it there" in harm
    assert 'name="groups" value="staff"' in harm and 'name="groups" value="students"' not in harm
    refused = ask(c, "harm.example", ("students",))
    assert refused.status_code == 400
    assert "The trust has locked this site for students." in refused.get_data(as_text=True)


def test_unblock_needs_it_then_a_different_dsl_and_is_audited_mailed_applied_and_expires(
    app: Flask, state: Path, mailbox: Mailbox
) -> None:
    teacher, it, dsl = (signed_in(app, u) for u in ("teacher", "it", "dsl"))
    assert verdict(state, "play.example", "students") == "block"
    rid = request_id(ask(teacher, "play.example", ("students", "guests")))
    deliver(state)
    assert "Year 9 computing" in mailbox.wait_for(TEACHER, f"Unblock request {rid} received").get_content()
    mailbox.wait_for(IT, f"Unblock request {rid} needs IT review")
    mailbox.wait_for(ADMIN, f"Unblock request {rid} needs IT review")
    assert mailbox.to(DSL) == []

    # The requester cannot decide; the DSL cannot approve before IT has reviewed.
    assert "Your decision" not in teacher.get(f"/requests/{rid}").get_data(as_text=True)
    assert decide(teacher, rid, "approve").status_code == 403
    early = decide(dsl, rid, "approve")
    assert early.status_code == 403
    assert "waiting for IT review, which your account cannot give" in early.get_data(as_text=True)
    decide(it, rid, "approve", "Only the one site; no sign-in needed")
    deliver(state)
    assert (
        "Only the one site"
        in mailbox.wait_for(DSL, f"Unblock request {rid} needs DSL approval").get_content()
    )
    mailbox.wait_for(TEACHER, f"Unblock request {rid}: IT has reviewed it")
    assert verdict(state, "play.example", "students") == "block"
    second = decide(it, rid, "approve")
    assert second.status_code == 403
    assert "waiting for DSL approval, which your account cannot give" in second.get_data(as_text=True)

    decide(dsl, rid, "approve", "Fine for the scheme of work")
    page = dsl.get(f"/requests/{rid}").get_data(as_text=True)
    assert "Approved and in force" in page
    deliver(state)
    approved = mailbox.wait_for(TEACHER, f"Unblock request {rid} approved").get_content()
    mailbox.wait_for(IT, f"Unblock request {rid} approved by the DSL")
    assert "play.example is now allowed for students, guests. It is blocked again from" in approved

    for group in ("students", "guests"):
        assert verdict(state, "play.example", group) == "allow"
        assert verdict(state, "www.play.example", group) == "allow"
    assert verdict(state, "games.example", "students") == "block"

    with Store(state) as store:
        r = unblock._pending(store, rid)
        term_end = timetable.terms(store)[0].end
        assert r.expires == datetime.combine(term_end + timedelta(days=1), time(), store.zone())
        made = [rules.get(store, i) for i in r.rule_ids]
        assert {(x.group, x.action, x.target, x.expires, x.source) for x in made} == {
            (g, "allow", "play.example", r.expires, f"unblock request {rid}") for g in ("students", "guests")
        }
        trail = [(e.action, e.actor) for e in audit.entries(store) if e.actor != "setup"]
        assert trail == [
            ("unblock.request", "teacher"),
            ("unblock.review", "it"),
            ("rule.add", "dsl"),
            ("rule.add", "dsl"),
            ("unblock.approve", "dsl"),
            ("policy.apply", "dsl"),
        ]
        assert audit.verify(store).ok

        after = r.expires + timedelta(minutes=1)
        upkeep.expire(store, after)
        assert [e.action for e in audit.entries(store)][-3:] == ["rule.expire", "rule.expire", "policy.apply"]
    assert verdict(state, "play.example", "students", after) == "block"
    with Store(state) as store:
        assert unblock._pending(store, rid).state(after) == ("ended", "Ended")


def test_nobody_decides_their_own_request(app: Flask, state: Path) -> None:
    it = signed_in(app, "it")
    rid = request_id(ask(it, "social.example"))
    assert "someone else must review" in it.get(f"/requests/{rid}").get_data(as_text=True)
    response = decide(it, rid, "approve")
    assert response.status_code == 403
    assert "cannot approve or refuse your own request" in response.get_data(as_text=True)
    with Store(state) as store:
        assert unblock._pending(store, rid).status == unblock.WAITING_IT


def test_refusal_needs_and_records_its_reason(app: Flask, state: Path, mailbox: Mailbox) -> None:
    teacher, it, dsl = (signed_in(app, u) for u in ("teacher", "it", "dsl"))
    rid = request_id(ask(teacher, "social.example"))
    decide(it, rid, "approve")
    decide(dsl, rid, "refuse", "")
    assert "Reason for refusing: please fill this in" in dsl.get(f"/requests/{rid}").get_data(as_text=True)
    decide(dsl, rid, "refuse", "Pupils can reach the same material on the school's VLE")
    page = teacher.get(f"/requests/{rid}").get_data(as_text=True)
    assert "Refused" in page and "same material on the school&#39;s VLE" in page
    deliver(state)
    assert "same material" in mailbox.wait_for(TEACHER, f"Unblock request {rid} refused").get_content()
    assert "same material" in mailbox.wait_for(IT, f"Unblock request {rid} refused by the DSL").get_content()
    assert verdict(state, "social.example", "students") == "block"
    with Store(state) as store:
        refusal = [e for e in audit.entries(store) if e.action == "unblock.refuse"]
    assert len(refusal) == 1 and refusal[0].actor == "dsl" and "VLE" in refusal[0].reason


def test_the_dsl_may_refuse_before_it_has_reviewed(app: Flask, state: Path) -> None:
    rid = request_id(ask(signed_in(app, "teacher"), "social.example"))
    decide(signed_in(app, "dsl"), rid, "refuse", "Not appropriate for this age group")
    with Store(state) as store:
        assert unblock._pending(store, rid).status == unblock.REFUSED


def test_a_second_request_for_a_waiting_site_is_refused_and_a_withdrawn_one_frees_it(app: Flask) -> None:
    teacher = signed_in(app, "teacher")
    rid = request_id(ask(teacher, "social.example"))
    again = ask(signed_in(app, "dsl"), "social.example")
    assert again.status_code == 400 and f"already a request for social.example waiting (request {rid})" in (
        again.get_data(as_text=True)
    )
    token = csrf(teacher, f"/requests/{rid}")
    teacher.post(f"/requests/{rid}/withdraw", data={"csrf_token": token})
    assert "Withdrawn" in teacher.get(f"/requests/{rid}").get_data(as_text=True)
    assert ask(signed_in(app, "dsl"), "social.example").status_code == 302


def test_teachers_see_only_their_own_requests(app: Flask, state: Path) -> None:
    rid = request_id(ask(signed_in(app, "dsl"), "social.example"))
    teacher = signed_in(app, "teacher")
    assert teacher.get(f"/requests/{rid}").status_code == 404
    assert teacher.get(f"/api/v1/requests/{rid}").status_code == 404
    assert "social.example" not in teacher.get("/requests?show=all").get_data(as_text=True)
    assert "social.example" in signed_in(app, "it").get("/requests?show=all").get_data(as_text=True)


@pytest.mark.parametrize(
    ("until_date", "message"),
    [
        ("2001-01-01", "that date has passed"),
        ("2999-01-01", "at most a year ahead"),
        ("soon", "is not a date"),
    ],
)
def test_the_end_date_must_be_sensible(app: Flask, until_date: str, message: str) -> None:
    response = ask(signed_in(app, "teacher"), until="date", until_date=until_date)
    assert response.status_code == 400 and message in response.get_data(as_text=True)


def test_a_failed_apply_leaves_the_approval_recorded_and_can_be_retried(app: Flask, state: Path) -> None:
    teacher, it, dsl = (signed_in(app, u) for u in ("teacher", "it", "dsl"))
    rid = request_id(
        ask(
            teacher,
            "social.example",
            until="date",
            until_date=(datetime.now(UTC) + timedelta(days=7)).date().isoformat(),
        )
    )
    decide(it, rid, "approve")
    current = state / "policy" / generations.CURRENT
    target = os.readlink(current)
    current.unlink()  # as on an appliance whose policy was never applied
    decide(dsl, rid, "approve")
    page = dsl.get(f"/requests/{rid}").get_data(as_text=True)
    assert "Approved, not yet in force" in page and "No filtering policy is in force yet" in page
    os.symlink(target, current)
    token = csrf(it, f"/requests/{rid}")
    it.post(f"/requests/{rid}/apply", data={"csrf_token": token})
    assert "Approved and in force" in it.get(f"/requests/{rid}").get_data(as_text=True)
    assert verdict(state, "social.example", "students") == "allow"


def test_approval_applies_only_the_request_and_leaves_other_pending_work_pending(
    app: Flask, state: Path
) -> None:
    it = signed_in(app, "it")
    token = csrf(it, "/policy/rules")
    it.post(
        "/policy/rules",
        data={
            "csrf_token": token,
            "action": "deny",
            "kind": "name",
            "target": "news.example",
            "group": "students",
            "reason": "not yet agreed",
        },
    )
    rid = request_id(ask(signed_in(app, "teacher"), "social.example"))
    decide(it, rid, "approve")
    decide(signed_in(app, "dsl"), rid, "approve")
    assert verdict(state, "social.example", "students") == "allow"
    assert verdict(state, "news.example", "students") == "allow"
    with Store(state) as store:
        assert policy_ops.has_pending(store, datetime.now(UTC))


def test_mail_waits_in_the_outbox_while_the_server_is_down_and_goes_when_it_is_back(
    app: Flask, state: Path
) -> None:
    with Store(state) as store:
        use_smtp(store, free_port())  # nothing listens there
    rid = request_id(ask(signed_in(app, "teacher"), "social.example"))
    deliver(state)
    admin = signed_in(app, "admin")
    page = admin.get("/settings").get_data(as_text=True)
    assert f"Unblock request {rid} received" in page and "cannot reach the mail server" in page
    with smtp_server() as (box, port):
        with Store(state) as store:
            use_smtp(store, port)
        deliver(state)
        box.wait_for(TEACHER, f"Unblock request {rid} received")
        box.wait_for(IT, f"Unblock request {rid} needs IT review")
    assert "Nothing waiting: every message has been sent." in admin.get("/settings").get_data(as_text=True)


def test_a_request_whose_allow_was_removed_early_says_so(app: Flask, state: Path) -> None:
    teacher, it = signed_in(app, "teacher"), signed_in(app, "it")
    rid = request_id(ask(teacher, "social.example"))
    decide(it, rid, "approve")
    decide(signed_in(app, "dsl"), rid, "approve")
    with Store(state) as store:
        (rule_id,) = unblock._pending(store, rid).rule_ids
    token = csrf(it, "/policy/rules")
    it.post(f"/policy/rules/{rule_id}/remove", data={"csrf_token": token, "reason": "pupils misused it"})
    page = teacher.get(f"/requests/{rid}").get_data(as_text=True)
    assert "Allow removed early (see the change log)" in page
