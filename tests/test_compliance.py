"""`appliance compliance`: expectations from the real policy, immutable hashed reports, rendering
(HTML and a PDF read back as text and as page images), actions, the schedule and e-mail. These need
no network namespaces; tests/test_compliance_lab.py probes the lab."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image
from test_webui_support import smtp_server, use_smtp

from appliance import audit
from appliance.compliance import checks, notify, render, reports, schedule, testset
from appliance.compliance.expect import PolicyView, expect
from appliance.config import parse
from appliance.policy import generations, inputs, rules, timetable
from appliance.policy.rules import Rule
from appliance.policy.schedules import Term
from appliance.store import Store

CONFIG = """
[appliance]
name = "Test Academy"
[wan]
interface = "wan0"
[[lan]]
interface = "lan10"
group = "students"
subnets = ["10.10.0.0/24"]
[groups.students]
"""


def apply(store: Store, reason: str = "test") -> generations.Generation:
    return generations.apply(store, inputs.from_store(store, datetime.now(UTC)), "alice", reason)


def allow_category(store: Store, group: str, category: str) -> None:
    with audit.change(store, "alice", "pupils need it") as ch:
        rules.add(ch, Rule(group, "allow", "category", category, "pupils need it", "alice", ch.now))


def expectation(store: Store, group: str, name: str, category: str | None, **kw: bool):  # type: ignore[no-untyped-def]
    tests = testset.load()
    view = PolicyView(store, datetime.now(UTC))
    try:
        return expect(
            view,
            tests.required_for(group),
            kw.get("educational", False),
            kw.get("exam", False),
            group,
            name,
            category,
        )
    finally:
        view.close()


def test_expectation_follows_the_policy_and_the_standards_override_it(store: Store) -> None:
    apply(store)
    gambling = expectation(store, "students", "casino-a.example", "gambling")
    assert (
        gambling is not None and gambling.block and "Gambling must be blocked for students" in gambling.basis
    )
    # Staff: the standards say nothing about gambling, so the policy decides (trust default: blocked).
    staff = expectation(store, "staff", "casino-a.example", "gambling")
    assert staff is not None and staff.block and staff.basis == "the policy"
    allow_category(store, "students", "gambling")
    apply(store)
    broken = expectation(store, "students", "casino-a.example", "gambling")
    # Still expected blocked, and the report can say which rule opened it.
    assert (
        broken is not None
        and broken.block
        and "allowed for students by school rule 1 (pupils need it)" in broken.policy
    )
    specialist = expectation(store, "specialist", "www.bbc.co.uk", None)
    assert specialist is not None and not specialist.block
    exams = expectation(store, "exams", "www.bbc.co.uk", None, exam=True)
    assert exams is not None and exams.block and "allowlist" in exams.basis
    assert expectation(store, "students", "iwf-fixture-two.example", "iwf") is not None


def test_no_policy_and_no_standard_means_no_expectation(tmp_path: Path) -> None:
    with Store(tmp_path / "empty") as s:
        assert expectation(s, "staff", "www.tiktok.com", "social_media") is None
        required = expectation(s, "students", "testfiltering.pornhub.com", "pornography")
        assert required is not None and required.block and "no policy applied" in required.policy


def document(store: Store, results: list[checks.Result]) -> dict:
    """A report document as run.run makes it, around the given results."""
    from appliance.compliance import context

    now = datetime.now(UTC).isoformat(timespec="seconds")
    live = generations.current(store)
    return {
        "format": reports.FORMAT,
        "school": "Test Academy",
        "appliance": {"hostname": "gw1", "probed_from": "the appliance"},
        "firmware": "0.1.0",
        "policy": {
            "generation": live.id,
            "fingerprint": live.manifest["fingerprint"],
            "applied": live.manifest["created"],
        },
        "started": now,
        "finished": now,
        "timezone": "Europe/London",
        "trigger": "run by hand",
        "who": "alice",
        "groups": ["students", "staff"],
        "probe_addresses": ["10.10.0.250"],
        "testset": "test",
        "results": [r.to_dict() for r in results],
        "context": context.gather(store, datetime.now(UTC), []),
    }


RESULTS = [
    checks.Result(
        "students",
        "gambling",
        "DNS A",
        "casino-a.example",
        "blocked",
        checks.Status.FAIL,
        "203.0.113.30",
        "under-blocked: Gambling must be blocked for students",
    ),
    checks.Result(
        "students",
        "gambling",
        "HTTPS over IPv4",
        "casino-a.example",
        "blocked",
        checks.Status.FAIL,
        "HTTP 200 from 203.0.113.30",
        "under-blocked",
    ),
    checks.Result(
        "students",
        "educational",
        "DNS A",
        "www.bbc.co.uk",
        "reachable",
        checks.Status.FAIL,
        "192.0.2.1",
        "over-blocked: educational sites must stay reachable",
    ),
    checks.Result(
        "staff",
        "iwf",
        "DNS A",
        "iwf.testfiltering.com",
        "blocked",
        checks.Status.PASS,
        "192.0.2.1",
        "required",
    ),
    checks.Result(
        "staff",
        "circumvention",
        "ECH keys in the HTTPS record",
        "crypto.cloudflare.com",
        "no ech",
        checks.Status.NOT_TESTED,
        "",
        "the name publishes no ECH keys even outside the filter",
    ),
]


def test_report_is_kept_unchanged_and_its_hash_is_in_the_audit_trail(store: Store) -> None:
    apply(store)
    report = reports.save(store, document(store, RESULTS), "alice", "termly test")
    assert report.failures == 3 and len(report.findings) == 2  # two checks of one name make one finding
    logged = [e for e in audit.entries(store) if e.action == "compliance.report"]
    assert [e.after for e in logged] == [{"report": report.id, "sha256": report.sha256}]
    assert reports.verify(store, report) is None and audit.verify(store).ok
    with pytest.raises(Exception, match="never changed"):
        store.db.execute("UPDATE compliance_reports SET document = '{}' WHERE id = ?", (report.id,))
    with pytest.raises(Exception, match="kept"):
        store.db.execute("DELETE FROM compliance_reports WHERE id = ?", (report.id,))
    # Someone who gets past the triggers is still caught by the hash.
    store.db.execute("DROP TRIGGER compliance_reports_immutable")
    store.db.execute(
        "UPDATE compliance_reports SET document = replace(document, '203.0.113.30', '192.0.2.1')"
    )
    assert "edited" in (reports.verify(store, reports.get(store, report.id)) or "")


def test_actions_are_appended_and_audited_without_changing_the_report(store: Store) -> None:
    apply(store)
    report = reports.save(store, document(store, RESULTS), "alice", "termly test")
    html_before = render.html(store, report)
    action = reports.add_action(store, report, 2, "removed the deny rule for bbc", "dsl", datetime.now(UTC))
    assert [a.text for a in reports.actions(store, report.id)] == ["removed the deny rule for bbc"]
    entry = [e for e in audit.entries(store) if e.action == "compliance.action"][-1]
    assert entry.actor == "dsl" and entry.after == {"report": report.id, "finding": 2, "action": action.text}
    assert "www.bbc.co.uk" in entry.subject
    assert render.html(store, reports.get(store, report.id)) == html_before
    with pytest.raises(ValueError, match="findings 1 to 2"):
        reports.add_action(store, report, 3, "nothing", "dsl", datetime.now(UTC))
    with pytest.raises(Exception, match="never changed"):
        store.db.execute("UPDATE compliance_actions SET text = 'other'")


def test_pdf_renders_the_same_every_time_and_reads_as_a_dsl_would(store: Store, tmp_path: Path) -> None:
    counts = apply(store).manifest["enforcement"]["iwf"]
    report = reports.save(store, document(store, RESULTS), "alice", "termly test")
    html = render.html(store, report)
    assert render.html(store, reports.get(store, report.id)) == html
    pdf = render.pdf(html)
    assert render.pdf(render.html(store, reports.get(store, report.id))) == pdf
    (tmp_path / "r.pdf").write_bytes(pdf)
    text = subprocess.run(
        ["pdftotext", "-layout", str(tmp_path / "r.pdf"), "-"], capture_output=True, text=True, check=True
    ).stdout
    # In reading order (a table cell's wrapped lines one after another), for the sentences.
    flowing = subprocess.run(
        ["pdftotext", str(tmp_path / "r.pdf"), "-"], capture_output=True, text=True, check=True
    ).stdout
    for expected in (
        "Filtering compliance report",
        "Test Academy",
        "2 findings (3 failed checks)",
        "casino-a.example (Gambling): under-blocked",
        "www.bbc.co.uk (Educational sites (over-blocking)): over-blocked",
        "the name publishes no ECH keys even outside the filter",
        "Action taken",
        f"compliance action {report.id} --finding 2",
        report.sha256[:32],
    ):
        assert expected in " ".join(flowing.split()), expected
    enforcement = [line for line in text.splitlines() if line.strip().startswith("iwf (")]
    wanted = [str(counts["every_path"]), str(counts["http_only"])]
    assert enforcement and enforcement[0].split()[-2:] == wanted, enforcement
    subprocess.run(
        ["pdftoppm", "-r", "40", "-png", str(tmp_path / "r.pdf"), str(tmp_path / "page")], check=True
    )
    pages = sorted(tmp_path.glob("page*.png"))
    assert len(pages) >= 2
    first = Image.open(pages[0]).convert("RGB")
    # The verdict box is drawn in red: the first page shows the failure at a glance.
    reds = sum(1 for r, g, b in first.getdata() if r > 150 and g < 90 and b < 90)
    assert reds > 200


def test_a_group_nothing_could_be_tested_for_never_reads_as_a_pass(store: Store) -> None:
    """staff could not be probed at all (no probe address, say): with no failures anywhere, the report
    is incomplete, not a pass, and says for whom."""
    apply(store)
    passed = checks.Result(
        "students",
        "iwf",
        "DNS A",
        "iwf.testfiltering.com",
        "blocked",
        checks.Status.PASS,
        "192.0.2.1",
        "required",
    )
    unprobed = checks.Result(
        "staff", "circumvention", "all probes", "-", "-", checks.Status.NOT_TESTED, "", "no probe address"
    )
    report = reports.save(store, document(store, [passed, unprobed]), "alice", "termly test")
    assert report.failures == 0 and report.untested_groups == ["staff"]
    page = render.html(store, report)
    assert "Incomplete: nothing could be tested for staff" in page and "No findings" not in page
    both = reports.save(store, document(store, [passed, replace(passed, group="staff")]), "alice", "again")
    assert both.untested_groups == [] and "No findings" in render.html(store, both)


def test_schedule_runs_once_a_term_and_after_each_policy_change(store: Store) -> None:
    now = datetime.now(UTC)
    today = now.astimezone(store.zone()).date()
    with audit.change(store, "it", "term dates") as ch:
        timetable.set_term(ch, Term("This term", today - timedelta(days=3), today + timedelta(days=30)))
    gen = apply(store)
    assert schedule.due(store, now) == "schedule: term This term"
    reports.save(store, document(store, RESULTS), "system", "scheduled")
    assert schedule.due(store, now) is None
    allow_category(store, "staff", "gambling")
    gen2 = apply(store)
    assert gen2.id != gen.id
    assert schedule.due(store, now) == f"schedule: policy generation {gen2.id} applied"


def test_report_is_emailed_with_its_pdf(store: Store) -> None:
    with smtp_server() as (box, port):
        use_smtp(store, port)
        apply(store)
        report = reports.save(store, document(store, RESULTS), "alice", "termly test")
        config = parse(CONFIG)
        tests = testset.parse({"report": {"email": ["dsl@school.example"]}}, "test")
        assert notify.send(store, config, tests, report) is None
    assert len(box.messages) == 1
    message = box.messages[0]
    assert message["To"] == "dsl@school.example" and "2 FINDINGS" in message["Subject"]
    attachments = [p for p in message.walk() if p.get_content_type() == "application/pdf"]
    assert len(attachments) == 1 and attachments[0].get_payload(decode=True).startswith(b"%PDF")
    assert reports.get(store, report.id).mailed is not None


def test_unsent_report_is_recorded_and_retried(store: Store) -> None:
    apply(store)
    report = reports.save(store, document(store, RESULTS), "alice", "termly test")
    tests = testset.parse({"report": {"email": ["dsl@school.example"]}}, "test")
    error = notify.send(store, parse(CONFIG), tests, report)
    assert error is not None and "no mail server" in error
    assert reports.get(store, report.id).mail_error == error
    notify.retry(store, parse(CONFIG), tests)
    assert reports.get(store, report.id).mailed is None


def test_default_testset_names_only_known_categories(tmp_path: Path) -> None:
    (tmp_path / "empty.toml").write_text("[report]\nemail = []\n")
    with pytest.raises(testset.TestSetError, match="names nothing to test"):
        testset.load(tmp_path / "empty.toml")
    tests = testset.load()
    assert tests.required_for("students") >= {"iwf", "ctiru", "pornography", "gambling", "self_harm"}
    assert tests.required_for("staff") == {"iwf", "ctiru"}
    with pytest.raises(testset.TestSetError, match="unknown category"):
        testset.parse({"categories": {"adult": ["x.example"]}}, "t")
    with pytest.raises(testset.TestSetError, match="not a domain name"):
        testset.parse({"sites": {"educational": ["bad..name"]}}, "t")
