"""Compliance reports for the pages and the API: the kept reports (appliance.compliance.reports),
each checked against its hash and the audit trail before its contents are shown or downloaded, and
what was done about their findings, appended under the account that records it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flask import Response

from appliance.compliance import render, reports
from appliance.store import Store
from webui import fields
from webui.accounts import User
from webui.errors import InputError, NotFound, Tampered

ACTION_LIMIT = 2000


def get(store: Store, report_id: int) -> reports.Stored:
    try:
        return reports.get(store, report_id)
    except ValueError:
        raise NotFound(f"no compliance report {report_id}") from None


def checked(store: Store, report_id: int) -> reports.Stored:
    """The report, refused if it no longer matches its hash or the audit trail."""
    report = get(store, report_id)
    wrong = reports.verify(store, report)
    if wrong:
        raise Tampered(f"This report is not shown: {wrong}. Tell the trust's IT team.")
    return report


def pdf_download(store: Store, report_id: int) -> Response:
    report = checked(store, report_id)
    return Response(
        render.as_pdf(store, report),
        mimetype="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{report.stem}.pdf"'},
    )


def by_finding(store: Store, report_id: int) -> dict[int, list[reports.Action]]:
    """The actions recorded on the report, by finding number, oldest first."""
    out: dict[int, list[reports.Action]] = {}
    for a in reports.actions(store, report_id):
        out.setdefault(a.finding, []).append(a)
    return out


def _finding(value: object) -> int:
    raw = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    text = fields.text(raw, "Finding", 6)
    if not text.isdecimal():
        raise InputError("Finding: give the finding's number, as in the report")
    return int(text)


def add_action(
    store: Store, user: User, report_id: int, values: Mapping[str, Any], now: datetime
) -> reports.Action:
    """Records what was done about one finding (values: finding, text)."""
    report = get(store, report_id)
    number = _finding(values.get("finding"))
    text = fields.text(values.get("text"), "What was done", ACTION_LIMIT, multiline=True)
    try:
        return reports.add_action(store, report, number, text, user.username, now)
    except ValueError as e:  # a finding the report does not have
        raise InputError(f"Finding: {e}") from None


def action_dict(a: reports.Action) -> dict[str, Any]:
    return {"id": a.id, "finding": a.finding, "time": a.ts.isoformat(), "by": a.actor, "text": a.text}


def summary(store: Store, report: reports.Stored) -> dict[str, Any]:
    return {
        "id": report.id,
        "created": report.created.isoformat(),
        "trigger": report.trigger,
        "who": report.document["who"],
        "policy_generation": report.generation,
        "failures": report.failures,
        "finding_count": len(report.findings),
        "action_count": len(reports.actions(store, report.id)),
        "sha256": report.sha256,
        "mailed": report.mailed.isoformat() if report.mailed else None,
        "mail_error": report.mail_error,
    }


def to_dict(store: Store, report: reports.Stored) -> dict[str, Any]:
    """Everything about a checked report: the kept document, its findings numbered, the actions."""
    return {
        **summary(store, report),
        "findings": [{"number": n, **f} for n, f in enumerate(report.findings, start=1)],
        "actions": [action_dict(a) for a in reports.actions(store, report.id)],
        "document": report.document,
    }
