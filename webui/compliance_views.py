"""Compliance reports: the kept reports, newest first; one report's findings with what was done about
each, and a form to record more; the report itself as the DSL reads it, and its PDF."""

from __future__ import annotations

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for

from appliance.compliance import checks, render, reports
from webui import compliance, db
from webui.errors import USER_ERRORS
from webui.roles import Permission
from webui.security import csp_allowing_styles, current_user, requires

bp = Blueprint("compliance", __name__, url_prefix="/compliance")


@bp.get("")
@requires(Permission.VIEW_COMPLIANCE)
def index() -> str:
    store = db.store()
    kept = [(r, len(reports.actions(store, r.id))) for r in reports.listing(store)]
    return render_template("compliance/index.html", kept=kept)


@bp.get("/<int:report_id>")
@requires(Permission.VIEW_COMPLIANCE)
def show(report_id: int) -> str:
    store = db.store()
    report = compliance.get(store, report_id)
    return render_template(
        "compliance/show.html",
        report=report,
        problem=reports.verify(store, report),
        actions=compliance.by_finding(store, report_id),
        action_limit=compliance.ACTION_LIMIT,
        area_title=checks.area_title,
    )


@bp.get("/<int:report_id>/report")
@requires(Permission.VIEW_COMPLIANCE)
def document(report_id: int) -> Response:
    """The report as printed, on a page of its own (its own styles, not the web UI's)."""
    store = db.store()
    html = render.html(store, compliance.checked(store, report_id))
    return Response(
        html, mimetype="text/html", headers={"Content-Security-Policy": csp_allowing_styles(html)}
    )


@bp.get("/<int:report_id>/report.pdf")
@requires(Permission.VIEW_COMPLIANCE)
def pdf(report_id: int) -> Response:
    return compliance.pdf_download(db.store(), report_id)


@bp.post("/<int:report_id>/actions")
@requires(Permission.VIEW_COMPLIANCE)
def add_action(report_id: int) -> Response:
    try:
        action = compliance.add_action(db.store(), current_user(), report_id, request.form, db.now())
    except USER_ERRORS as e:
        flash(f"Not recorded: {e}", "error")
        return redirect(url_for("compliance.show", report_id=report_id))
    flash(f"Recorded what was done about finding {action.finding}.")
    return redirect(url_for("compliance.show", report_id=report_id, _anchor=f"finding-{action.finding}"))
