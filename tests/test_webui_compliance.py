"""Compliance reports in the web UI and the API: the kept reports, a report's findings with the actions
recorded on them, the report as printed and its PDF, each checked against its hash first."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest
from flask import Flask
from test_compliance import RESULTS, document
from test_webui_support import csrf, signed_in

from appliance import audit
from appliance.compliance import render, reports
from appliance.store import Store


@pytest.fixture(scope="module")
def template(template: Path) -> Path:
    """The shared template with one compliance report kept."""
    with Store(template) as store:
        reports.save(store, document(store, RESULTS), "it", "termly test")
    return template


def test_it_and_the_dsl_see_the_reports_and_record_what_was_done(app: Flask, state: Path) -> None:
    dsl = signed_in(app, "dsl")
    listing = dsl.get("/compliance").get_data(as_text=True)
    assert re.search(r'<nav class="menu".*href="/compliance"[^>]*>Compliance</a>', listing, re.S)
    assert re.search(
        r'href="/compliance/1">1</a>.*?2 findings.*?1 passed, 3 failed, 1 not tested', listing, re.S
    )
    page = dsl.get("/compliance/1").get_data(as_text=True)
    assert '2. students: <span class="wrap">www.bbc.co.uk</span> (Educational sites (over-blocking))' in page
    assert 'HTTPS over IPv4: <span class="wrap">HTTP 200 from 203.0.113.30</span>' in page

    token = csrf(dsl, "/compliance/1")
    response = dsl.post(
        "/compliance/1/actions",
        data={"csrf_token": token, "finding": "2", "text": "Removed the deny rule for the BBC"},
    )
    assert response.status_code == 302 and response.headers["Location"].endswith("/compliance/1#finding-2")
    page = dsl.get("/compliance/1").get_data(as_text=True)
    assert "Recorded what was done about finding 2." in page
    finding = page.split('id="finding-2"')[1]
    assert "dsl, " in finding and "Removed the deny rule for the BBC" in finding
    for data, message in (
        ({"finding": "3", "text": "x"}, "Not recorded: Finding: report 1 has findings 1 to 2, not 3"),
        ({"finding": "²", "text": "x"}, "Not recorded: Finding: give the finding&#39;s number"),
        ({"finding": "1", "text": " "}, "Not recorded: What was done: please fill this in"),
    ):
        dsl.post("/compliance/1/actions", data={"csrf_token": token, **data})
        assert message in dsl.get("/compliance/1").get_data(as_text=True)
    with Store(state) as store:
        assert [a.text for a in reports.actions(store, 1)] == ["Removed the deny rule for the BBC"]
        entry = [e for e in audit.entries(store) if e.action == "compliance.action"][-1]
        assert (entry.actor, entry.reason) == ("dsl", "Removed the deny rule for the BBC")

    it = signed_in(app, "it")
    assert "2 findings" in it.get("/compliance").get_data(as_text=True)
    assert "Removed the deny rule for the BBC" in it.get("/compliance/1").get_data(as_text=True)
    teacher = signed_in(app, "teacher")
    assert teacher.get("/compliance/1").status_code == 403
    assert 'href="/compliance"' not in teacher.get("/requests").get_data(as_text=True)
    assert dsl.get("/compliance/2").status_code == 404


def test_the_report_reads_as_printed_with_only_its_own_styles_and_downloads_as_its_pdf(
    app: Flask, state: Path
) -> None:
    dsl = signed_in(app, "dsl")
    response = dsl.get("/compliance/1/report")
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "Filtering compliance report" in html
    (style,) = re.findall(r"<style>(.*?)</style>", html, re.S)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    policy = response.headers["Content-Security-Policy"]
    assert f"style-src 'sha256-{digest}';" in policy and "unsafe-inline" not in policy
    assert "script-src 'none'" in policy and "frame-ancestors 'none'" in policy

    pdf = dsl.get("/compliance/1/report.pdf")
    assert pdf.mimetype == "application/pdf"
    assert pdf.headers["Content-Disposition"] == 'attachment; filename="compliance-report-1.pdf"'
    with Store(state) as store:
        assert pdf.data == render.as_pdf(store, reports.get(store, 1))
        assert render.html(store, reports.get(store, 1)) == html


def test_the_api_lists_shows_downloads_and_records_actions(app: Flask) -> None:
    it = signed_in(app, "it")
    token = csrf(it, "/account")
    (kept,) = it.get("/api/v1/compliance").get_json()["reports"]
    assert (kept["id"], kept["failures"], kept["finding_count"], kept["action_count"]) == (1, 3, 2, 0)
    added = it.post(
        "/api/v1/compliance/1/actions",
        json={"finding": 1, "text": "Gambling rule removed"},
        headers={"X-CSRF-Token": token},
    )
    assert added.status_code == 201 and added.get_json()["by"] == "it"
    refused = it.post(
        "/api/v1/compliance/1/actions", json={"finding": True, "text": "x"}, headers={"X-CSRF-Token": token}
    )
    assert refused.status_code == 400 and "Finding" in refused.get_json()["error"]
    one = it.get("/api/v1/compliance/1").get_json()
    assert [f["number"] for f in one["findings"]] == [1, 2] and one["findings"][0][
        "target"
    ] == "casino-a.example"
    assert [(a["finding"], a["text"]) for a in one["actions"]] == [(1, "Gambling rule removed")]
    assert one["document"]["school"] == "Test Academy"
    assert it.get("/api/v1/compliance/1/pdf").data.startswith(b"%PDF")
    assert it.get("/api/v1/compliance/9").status_code == 404


def test_a_tampered_report_is_neither_shown_nor_downloaded(app: Flask, state: Path) -> None:
    with Store(state) as store:
        store.db.execute("DROP TRIGGER compliance_reports_immutable")
        store.db.execute("UPDATE compliance_reports SET document = replace(document, 'casino-a', 'casino-b')")
    dsl = signed_in(app, "dsl")
    page = dsl.get("/compliance/1").get_data(as_text=True)
    assert "This report has been tampered with" in page and "its document does not match its hash" in page
    assert "casino-b" not in page
    for path in ("/compliance/1/report", "/compliance/1/report.pdf"):
        response = dsl.get(path)
        assert response.status_code == 409 and "does not match its hash" in response.get_data(as_text=True)
    api = dsl.get("/api/v1/compliance/1")
    assert api.status_code == 409 and "does not match its hash" in api.get_json()["error"]
