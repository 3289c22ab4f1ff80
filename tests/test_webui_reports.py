"""Alerts, the dashboard and log search over real block events in SQLite (appliance.events), with
alert e-mails through a real SMTP server."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from test_compliance import RESULTS, document
from test_webui_support import Mailbox, csrf, signed_in

from appliance import audit, events
from appliance.compliance import reports
from appliance.compliance.run import probing
from appliance.events import BlockEvent
from appliance.lists import catalogue, importer
from appliance.store import Store
from webui import alerts, sender

NOW = datetime.now(UTC).replace(microsecond=0)


def event(
    name: str,
    category: str | None,
    ip: str = "10.10.0.23",
    group: str = "students",
    minutes_ago: float = 5,
    mac: str | None = "02:00:00:00:00:17",
    layer: str = "dns",
) -> BlockEvent:
    rule = "PADLOCKED" if category in ("iwf", "ctiru", "extremism", "self_harm") else "CATEGORY"
    return BlockEvent(NOW - timedelta(minutes=minutes_ago), ip, group, name, layer, rule, category, mac)


@pytest.fixture
def state(state: Path) -> Path:
    """The shared state with a mix of block events logged."""
    with Store(state) as store:
        events.ensure(store)
        events.record(
            store,
            [
                event("harm.example", "self_harm", minutes_ago=30),
                event("harm.example", "self_harm", minutes_ago=20),
                event("harm.example", "self_harm", minutes_ago=10),
                event("iwf-test.example", "iwf", ip="10.10.0.40", mac=None, layer="tls"),
                event("extreme.example", "extremism", ip="10.40.0.9", group="specialist"),
                event("play.example", "games", minutes_ago=60 * 24 * 3),
                event("play.example", "games", ip="10.10.0.24", layer="quic"),
                event("social.example", "social_media", ip="10.10.0.24"),
                event("-1+1.example", None, group="exams", ip="10.30.0.5", mac=None),
            ],
        )
    return state


def run_sender(state: Path) -> None:
    with Store(state) as store:
        sender.run_once(store)


def test_alerts_are_raised_mailed_to_the_dsl_and_acknowledged_with_a_note(
    app: Flask, state: Path, mailbox: Mailbox
) -> None:
    run_sender(state)
    message = mailbox.wait_for("dsl@school.test", "Safeguarding alert: 3 new blocked attempts")
    body = message.get_content()
    assert "harm.example" in body and "extreme.example" in body and "10.10.0.23" in body
    assert "02:00:00:00:00:17" in body and "Child sexual abuse content (IWF)" in body
    assert "iwf-test.example" not in body and "alerts page only" in body
    assert mailbox.to("it@school.test") == [] and mailbox.to("teacher@school.test") == []

    dsl = signed_in(app, "dsl")
    page = dsl.get("/alerts").get_data(as_text=True)
    assert "Not yet acknowledged (3)" in page
    assert "iwf-test.example" in page and "10.10.0.40" in page and "not known" in page
    assert "3 attempts" in page
    row = re.search(r'id="alert-(\d+)">(?:(?!</tr>).)*?3 attempts', page, re.S)
    assert row is not None
    alert_id = int(row.group(1))

    # More attempts within the hour add to the open alert; nothing new is mailed.
    with Store(state) as store:
        events.record(store, [event("harm.example", "self_harm", minutes_ago=1)])
    run_sender(state)
    assert "4 attempts" in dsl.get("/alerts").get_data(as_text=True)
    assert len(mailbox.to("dsl@school.test")) == 1

    token = csrf(dsl, "/alerts")
    dsl.post(f"/alerts/{alert_id}/acknowledge", data={"csrf_token": token, "note": ""})
    assert "Note: please fill this in" in dsl.get("/alerts").get_data(as_text=True)
    dsl.post(
        f"/alerts/{alert_id}/acknowledge",
        data={"csrf_token": token, "note": "Spoke to pupil; logged on CPOMS"},
    )
    page = dsl.get("/alerts").get_data(as_text=True)
    assert "Not yet acknowledged (2)" in page
    everything = dsl.get("/alerts?show=all").get_data(as_text=True)
    assert "Spoke to pupil; logged on CPOMS" in everything and "Dsl Tester" in everything
    again = dsl.post(
        f"/api/v1/alerts/{alert_id}/acknowledge", json={"note": "again"}, headers={"X-CSRF-Token": token}
    )
    assert again.status_code == 400 and "already acknowledged" in again.get_json()["error"]

    # After acknowledgement a new attempt is a new alert, and a new e-mail.
    with Store(state) as store:
        events.record(store, [event("harm.example", "self_harm", minutes_ago=0)])
    run_sender(state)
    assert "Not yet acknowledged (3)" in dsl.get("/alerts").get_data(as_text=True)
    mailbox.wait_for("dsl@school.test", "Safeguarding alert: 1 new blocked attempt")


def test_compliance_probes_raise_no_alerts_during_their_runs(state: Path) -> None:
    probe, pupil = "10.10.0.250", "10.10.0.77"
    with Store(state) as store:
        kept = {
            **document(store, RESULTS),
            "started": (NOW - timedelta(minutes=50)).isoformat(timespec="seconds"),
            "finished": (NOW - timedelta(minutes=40)).isoformat(timespec="seconds"),
            "probe_addresses": [probe],
        }
        reports.save(store, kept, "it", "termly test")
        events.record(
            store,
            [
                event("harm.example", "self_harm", ip=probe, minutes_ago=45),
                event("iwf-test.example", "iwf", ip=probe, minutes_ago=40),
                event("harm.example", "self_harm", ip=pupil, minutes_ago=44),
                event("extreme.example", "extremism", ip=probe, minutes_ago=35),  # after the run
            ],
        )
        sender.run_once(store)
        with probing(store, NOW.isoformat(timespec="seconds"), [probe]):
            events.record(store, [event("extreme.example", "extremism", ip=probe, minutes_ago=0)])
            sender.run_once(store)
        raised = [(a.client_ip, a.name, a.attempts) for a in alerts.listing(store, open_only=False)]
    assert [a for a in raised if a[0] == probe] == [(probe, "extreme.example", 1)]
    assert (pupil, "harm.example", 1) in raised


def test_the_dashboard_charts_blocked_attempts_and_shows_list_freshness(app: Flask, state: Path) -> None:
    with Store(state) as store:
        with audit.change(store, "setup", "a source that has gone") as ch:
            catalogue.set_source(ch, "social", str(state / "missing.txt"), 24)
        assert importer.update(store, "social", "setup", "refresh").error
        zone = store.zone()
    page = signed_in(app, "it").get("/dashboard").get_data(as_text=True)
    assert "<svg" in page and "http://" not in page.replace("http://www.w3.org", "")
    with Store(state) as store:
        days = Counter(e.ts.astimezone(zone).strftime("%d %b") for e in events.search(store, events.Query()))
    assert sum(days.values()) == 9 and len(days) >= 2
    for day, n in days.items():
        assert f"<title>{day}: {n}</title>" in page
    assert "<title>students: 7</title>" in page and "<title>specialist: 1</title>" in page
    assert "<title>Self harm: 3</title>" in page and "<title>Games: 2</title>" in page
    top = page.split("Most blocked sites")[1].split("Block lists")[0]
    assert "play.example" in top and "harm.example" in top and "iwf-test.example" not in top
    lists = page.split("Block lists")[1]
    assert re.search(r"<td>social</td>.*?failing.*?missing\.txt", lists, re.S)
    assert re.search(r"<td>games</td>.*?fresh", lists, re.S)
    assert "generation 000001" in page


def test_the_dashboard_warns_when_nothing_has_been_logged_for_a_day(app: Flask, state: Path) -> None:
    with Store(state) as store:
        store.db.execute("DELETE FROM block_events")
    page = signed_in(app, "it").get("/dashboard").get_data(as_text=True)
    assert "No blocked attempt has been logged for a day" in page


def test_log_search_filters_and_exports_csv(app: Flask) -> None:
    it = signed_in(app, "it")
    assert "<strong>9</strong> blocked attempts" in it.get("/logs").get_data(as_text=True)
    page = it.get("/logs?ip=10.10.0.24").get_data(as_text=True)
    assert "<strong>2</strong> blocked attempts matching IP 10.10.0.24" in page
    page = it.get("/logs?name=PLAY&group=students").get_data(as_text=True)
    assert "<strong>2</strong>" in page
    day = (NOW - timedelta(days=3)).date().isoformat()
    assert "<strong>1</strong>" in it.get(f"/logs?from={day}&to={day}").get_data(as_text=True)
    bad = it.get("/logs?ip=10.10.0.999")
    assert bad.status_code == 400 and "is not an address" in bad.get_data(as_text=True)
    # IWF names are withheld from IT, in the page and in the export.
    assert "iwf-test.example" not in it.get("/logs").get_data(as_text=True)

    export = it.get("/logs/export.csv?group=exams")
    assert export.headers["Content-Disposition"].startswith('attachment; filename="blocked-')
    rows = list(csv.reader(io.StringIO(export.get_data(as_text=True))))
    assert rows[0] == ["time", "client_ip", "mac", "group", "name", "category", "seen_at", "rule"]
    assert rows[1][3:5] == ["exams", "'-1+1.example"]
    everything = list(csv.reader(io.StringIO(it.get("/logs/export.csv").get_data(as_text=True))))
    assert len(everything) == 10
    assert ["(withheld: on a confidential list)", "Child sexual abuse content (IWF)"] in [
        r[4:6] for r in everything
    ]

    dsl_rows = signed_in(app, "dsl").get("/api/v1/events?ip=10.10.0.40").get_json()
    assert dsl_rows["total"] == 1 and dsl_rows["events"][0]["name"] == "iwf-test.example"
