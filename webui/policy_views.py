"""The filtering policy pages: groups and VLANs with their categories (padlocks on locked ones), the
school's rules, schedules and terms, exam mode, explain, the change log, and review-and-apply.

Reading needs VIEW_POLICY; every change needs EDIT_POLICY and a reason, and waits in the working
policy until it is reviewed (with the policy diff) and applied, except exam mode, which is immediate
and asks for confirmation first."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, abort, current_app, flash, redirect, render_template, request, url_for

from appliance import audit
from appliance.policy import diff, generations, timetable
from appliance.policy import explain as explain_mod
from appliance.policy.model import CATEGORIES, GROUPS
from webui import csvexport, db, policy_edits, policy_ops
from webui.errors import USER_ERRORS, InputError
from webui.roles import Permission
from webui.security import current_user, requires

bp = Blueprint("policy", __name__, url_prefix="/policy")
CHANGES_PAGE = 50


def _page(template: str, **context: Any) -> str:
    store = db.store()
    return render_template(
        template,
        pending=policy_ops.has_pending(store, db.now()),
        groups=GROUPS,
        categories=CATEGORIES,
        **context,
    )


def _edit(action: Callable[[], object], done: str, back: str) -> Response:
    """Runs one change; on a mistake in what was entered, says so and goes back to the form."""
    try:
        action()
    except USER_ERRORS as e:
        flash(f"Not changed: {e}", "error")
    else:
        flash(done)
    return redirect(back)


@bp.get("")
@requires(Permission.VIEW_POLICY)
def groups() -> str:
    store = db.store()
    states = policy_edits.groups(store, current_app.config.get("APPLIANCE_CONFIG"), db.now())
    chosen = request.args.get("group", GROUPS[0])
    return _page(
        "policy/groups.html",
        states=states,
        s=next((st for st in states if st.name == chosen), states[0]),
        has_config=current_app.config.get("APPLIANCE_CONFIG") is not None,
    )


@bp.get("/rules")
@requires(Permission.VIEW_POLICY)
def rules() -> str:
    store = db.store()
    return _page(
        "policy/rules.html",
        states=policy_edits.rule_states(store, db.now()),
        schedules=sorted(timetable.schedules(store)),
        values=request.args,
    )


@bp.post("/rules")
@requires(Permission.EDIT_POLICY)
def add_rule() -> Response:
    form = request.form
    return _edit(
        lambda: policy_edits.add_rule(db.store(), current_user(), form, db.now()),
        "Rule added. It is not in force until you review and apply the changes.",
        url_for("policy.groups", group=form.get("group"), _anchor="categories")
        if form.get("back") == "groups"
        else url_for("policy.rules"),
    )


@bp.post("/rules/<int:rule_id>/remove")
@requires(Permission.EDIT_POLICY)
def remove_rule(rule_id: int) -> Response:
    return _edit(
        lambda: policy_edits.remove_rule(db.store(), current_user(), rule_id, request.form, db.now()),
        f"Rule {rule_id} removed. It stays in force until you review and apply the changes.",
        url_for("policy.rules"),
    )


@bp.get("/schedules")
@requires(Permission.VIEW_POLICY)
def schedules() -> str:
    store = db.store()
    cal = timetable.calendar(store)
    return _page(
        "policy/schedules.html",
        schedules=[(n, s, cal.active(n, db.now())) for n, s in cal.schedules.items()],
        terms=cal.terms,
    )


@bp.post("/schedules")
@requires(Permission.EDIT_POLICY)
def set_schedule() -> Response:
    return _edit(
        lambda: policy_edits.set_schedule(db.store(), current_user(), request.form, db.now()),
        "Schedule saved. Rules that use it change when you review and apply.",
        url_for("policy.schedules"),
    )


@bp.post("/schedules/<name>/remove")
@requires(Permission.EDIT_POLICY)
def remove_schedule(name: str) -> Response:
    return _edit(
        lambda: policy_edits.remove_schedule(db.store(), current_user(), name, request.form, db.now()),
        f"Schedule {name} removed.",
        url_for("policy.schedules"),
    )


@bp.post("/terms")
@requires(Permission.EDIT_POLICY)
def set_term() -> Response:
    return _edit(
        lambda: policy_edits.set_term(db.store(), current_user(), request.form, db.now()),
        "Term dates saved.",
        url_for("policy.schedules"),
    )


@bp.post("/terms/<name>/remove")
@requires(Permission.EDIT_POLICY)
def remove_term(name: str) -> Response:
    return _edit(
        lambda: policy_edits.remove_term(db.store(), current_user(), name, request.form, db.now()),
        f"Term {name} removed.",
        url_for("policy.schedules"),
    )


@bp.get("/exam")
@requires(Permission.VIEW_POLICY)
def exam() -> str:
    store = db.store()
    return _page(
        "policy/exam.html",
        states=[s for s in policy_edits.groups(store, None, db.now()) if s.name != timetable.EXAMS],
        schedules=sorted(timetable.schedules(store)),
    )


@bp.get("/exam/confirm")
@requires(Permission.EDIT_POLICY)
def exam_confirm() -> str:
    group, mode = request.args.get("group"), request.args.get("mode")
    if group not in policy_edits.exam_groups() or mode not in ("on", "off"):
        abort(400, description="Choose a group and whether to switch exam mode on or off.")
    return _page("policy/exam_confirm.html", group=group, mode=mode)


@bp.post("/exam")
@requires(Permission.EDIT_POLICY)
def exam_switch() -> Response:
    form = request.form
    mode = "on" if form.get("mode") == "on" else "off"
    return _edit(
        lambda: policy_edits.exam_mode(db.store(), current_user(), form, db.now()),
        f"Exam mode is now {mode} for {form.get('group')}.",
        url_for("policy.exam"),
    )


@bp.post("/exam/schedule")
@requires(Permission.EDIT_POLICY)
def exam_schedule() -> Response:
    return _edit(
        lambda: policy_edits.exam_schedule(db.store(), current_user(), request.form, db.now()),
        "Exam schedule changed. It takes effect when you review and apply.",
        url_for("policy.exam"),
    )


@bp.get("/explain")
@requires(Permission.VIEW_POLICY)
def explain() -> tuple[str, int]:
    args = request.args
    result, error = None, None
    if args.get("name"):
        store = db.store()
        try:
            group = args.get("group", "")
            if group not in GROUPS:
                raise InputError("Group: choose one")
            if args.get("pending"):
                result = explain_mod.pending(store, args["name"], group, db.now())
            else:
                result = policy_ops.explain_live(store, args["name"], group, db.now())
        except USER_ERRORS as e:
            error = str(e)
    return _page("policy/explain.html", result=result, error=error, args=args), 400 if error else 200


@bp.get("/changes")
@requires(Permission.VIEW_POLICY)
def changes() -> tuple[str, int]:
    store = db.store()
    raw = request.args.get("page", "1")
    page = int(raw) if raw.isdigit() and 1 <= int(raw) <= 1_000_000 else 1
    entries, total = audit.page(store, CHANGES_PAGE, (page - 1) * CHANGES_PAGE)
    report, error = None, None
    first_raw, last_raw = request.args.get("from"), request.args.get("to")
    if first_raw and last_raw:
        try:
            first, last = date.fromisoformat(first_raw), date.fromisoformat(last_raw)
            if last < first:
                raise ValueError
            report = audit.report(store, first, last)
        except ValueError:
            error = "Report: give a From date on or before the To date."
    html = _page(
        "policy/changes.html",
        entries=entries,
        page=page,
        pages=max(1, -(-total // CHANGES_PAGE)),
        verification=audit.verify(store),
        report=report,
        sections=audit.REPORT_SECTIONS,
        error=error,
        args=request.args,
        default_from=(db.now() - timedelta(days=91)).date(),
    )
    return html, 400 if error else 200


@bp.get("/changes/report.csv")
@requires(Permission.VIEW_POLICY)
def report_csv() -> Response:
    """The termly report (filters added and removed, with reasons) for a spreadsheet."""
    store = db.store()
    try:
        first = date.fromisoformat(request.args.get("from", ""))
        last = date.fromisoformat(request.args.get("to", ""))
    except ValueError:
        abort(400, description="Report: give From and To dates.")
    return Response(
        "".join(csvexport.lines(audit.report_rows(store, first, last))),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="filtering-changes-{first}-to-{last}.csv"'},
    )


@bp.get("/review")
@requires(Permission.VIEW_POLICY)
def review() -> tuple[str, int]:
    store = db.store()
    now = db.now()
    error = None
    lines: list[str] = []
    try:
        lines = diff.pending(store, now)
    except USER_ERRORS as e:
        error = str(e)
    live = generations.current(store)
    applied = datetime.fromisoformat(live.manifest["created"]) if live else None
    return _page("policy/review.html", lines=lines, live=live, error=error, applied=applied), 200


@bp.post("/apply")
@requires(Permission.EDIT_POLICY)
def apply() -> Response:
    return _edit(
        lambda: policy_edits.apply(db.store(), current_user(), request.form, db.now()),
        "The changes are in force now.",
        url_for("policy.review"),
    )


@bp.post("/rollback")
@requires(Permission.EDIT_POLICY)
def rollback() -> Response:
    return _edit(
        lambda: policy_edits.rollback(db.store(), current_user(), request.form, db.now()),
        "The previous policy is in force again.",
        url_for("policy.review"),
    )
