"""The JSON API: everything the pages do, for scripts and the trust's fleet tools. Authenticate with
an API token (`Authorization: Bearer sgw_...`, made on the account page) or, from a browser, the
session cookie plus the X-CSRF-Token header. Roles are checked exactly as for the pages.
webui.openapi describes every route; a test keeps the two in step."""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template, request

from appliance import audit, events
from appliance.compliance import reports as compliance_reports
from appliance.policy import diff as diff_mod
from appliance.policy import explain as explain_mod
from appliance.policy import generations, timetable
from appliance.policy.model import PolicyError
from webui import (
    accounts,
    alerts,
    compliance,
    db,
    logsearch,
    mail,
    openapi,
    policy_edits,
    policy_ops,
    reports,
    sender,
    sessions,
    unblock,
)
from webui import settings as settings_mod
from webui.errors import InputError
from webui.roles import Permission
from webui.security import current_user, public, requires

bp = Blueprint("api", __name__, url_prefix="/api")
V1 = "/v1"
MAX_LIMIT = 1000


@bp.errorhandler(InputError)
@bp.errorhandler(PolicyError)
def _bad_input(e: ValueError) -> tuple[Response, int]:
    return jsonify(error=str(e)), 400


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise InputError("send a JSON object (Content-Type: application/json)")
    return data


def _page_args() -> tuple[int, int]:
    def number(name: str, default: int, high: int) -> int:
        raw = request.args.get(name, str(default))
        if not raw.isdigit() or int(raw) > high:
            raise InputError(f"{name}: a whole number from 0 to {high}")
        return int(raw)

    return number("limit", 100, MAX_LIMIT), number("offset", 0, 10**9)


# --- about the API and the caller ------------------------------------------------------------------


@bp.get(f"{V1}/openapi.json")
@public
def spec() -> Response:
    return jsonify(openapi.document())


@bp.get("/docs")
@requires(Permission.SIGNED_IN)
def docs() -> str:
    return render_template("api_docs.html", doc=openapi.document())


@bp.get(f"{V1}/me")
@requires(Permission.SIGNED_IN)
def me() -> Response:
    u = current_user()
    return jsonify(**u.summary(), permissions=sorted(p.value for p in Permission if u.can(p)))


@bp.post(f"{V1}/me/password")
@requires(Permission.SIGNED_IN)
def change_password() -> Response:
    u, b = current_user(), _body()
    if not accounts.verify_password(db.store(), u.id, str(b.get("current", ""))):
        raise InputError("current: that is not your current password")
    with audit.change(db.store(), u.username, "changed own password", db.now()) as ch:
        accounts.set_password(ch, u.id, b.get("new"), must_change=False)
    return jsonify(changed=True, note="every session and API token of this account has ended")


@bp.get(f"{V1}/me/tokens")
@requires(Permission.SIGNED_IN)
def list_tokens() -> Response:
    found = sessions.tokens(db.store(), current_user())
    return jsonify(
        tokens=[
            {
                "id": t.id,
                "label": t.label,
                "created": t.created.isoformat(),
                "last_used": t.last_used.isoformat() if t.last_used else None,
            }
            for t in found
        ]
    )


@bp.post(f"{V1}/me/tokens")
@requires(Permission.SIGNED_IN)
def create_token() -> tuple[Response, int]:
    u = current_user()
    with audit.change(db.store(), u.username, "API token for scripts", db.now()) as ch:
        token = sessions.create_token(ch, u, _body().get("label"))
    return jsonify(token=token), 201


@bp.post(f"{V1}/me/tokens/<int:token_id>/revoke")
@requires(Permission.SIGNED_IN)
def revoke_token(token_id: int) -> Response:
    u = current_user()
    with audit.change(db.store(), u.username, "API token no longer needed", db.now()) as ch:
        sessions.revoke_token(ch, u, token_id)
    return jsonify(revoked=token_id)


# --- unblock requests ------------------------------------------------------------------------------


@bp.get(f"{V1}/requests")
@requires(Permission.REQUEST_UNBLOCK)
def list_requests() -> Response:
    u = current_user()
    store = db.store()
    found = unblock.listing(
        store, u, mine=request.args.get("show") != "all", status=request.args.get("status") or None
    )
    return jsonify(requests=[r.to_dict(db.now()) for r in found])


@bp.get(f"{V1}/requests/waiting")
@requires(Permission.REVIEW_TECHNICAL, Permission.APPROVE_SAFEGUARDING)
def waiting_requests() -> Response:
    return jsonify(requests=[r.to_dict(db.now()) for r in unblock.waiting_for(db.store(), current_user())])


@bp.get(f"{V1}/requests/check")
@requires(Permission.REQUEST_UNBLOCK)
def check_site() -> Response:
    return jsonify(unblock.assess(db.store(), request.args.get("site"), db.now()).to_dict())


@bp.post(f"{V1}/requests")
@requires(Permission.REQUEST_UNBLOCK)
def create_request() -> tuple[Response, int]:
    b = _body()
    groups = b.get("groups")
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise InputError("groups: a list of group names")
    r = unblock.create(
        db.store(),
        current_user(),
        b.get("site"),
        groups,
        b.get("reason"),
        b.get("until"),
        b.get("until_date"),
        b.get("seen_at"),
        db.now(),
    )
    sender.wake()
    return jsonify(r.to_dict(db.now())), 201


@bp.get(f"{V1}/requests/<int:request_id>")
@requires(Permission.REQUEST_UNBLOCK)
def get_request(request_id: int) -> Response:
    return jsonify(unblock.get(db.store(), current_user(), request_id).to_dict(db.now()))


@bp.post(f"{V1}/requests/<int:request_id>/decision")
@requires(Permission.REVIEW_TECHNICAL, Permission.APPROVE_SAFEGUARDING)
def decide_request(request_id: int) -> Response:
    b = _body()
    decision = b.get("decision")
    if decision not in ("approve", "refuse"):
        raise InputError('decision: "approve" or "refuse"')
    r = unblock.decide(db.store(), current_user(), request_id, decision == "approve", b.get("note"), db.now())
    sender.wake()
    return jsonify(r.to_dict(db.now()))


@bp.post(f"{V1}/requests/<int:request_id>/withdraw")
@requires(Permission.REQUEST_UNBLOCK)
def withdraw_request(request_id: int) -> Response:
    return jsonify(unblock.withdraw(db.store(), current_user(), request_id, db.now()).to_dict(db.now()))


@bp.post(f"{V1}/requests/<int:request_id>/apply")
@requires(Permission.REVIEW_TECHNICAL, Permission.APPROVE_SAFEGUARDING)
def apply_request(request_id: int) -> Response:
    store, u = db.store(), current_user()
    r = unblock.put_in_force(store, unblock.get(store, u, request_id), u, db.now())
    sender.wake()
    return jsonify(r.to_dict(db.now()))


# --- alerts, dashboard, logs -----------------------------------------------------------------------


@bp.get(f"{V1}/alerts")
@requires(Permission.VIEW_ALERTS)
def list_alerts() -> Response:
    found = alerts.listing(db.store(), open_only=request.args.get("show") != "all")
    return jsonify(alerts=[a.to_dict() for a in found])


@bp.post(f"{V1}/alerts/<int:alert_id>/acknowledge")
@requires(Permission.VIEW_ALERTS)
def acknowledge_alert(alert_id: int) -> Response:
    a = alerts.acknowledge(db.store(), current_user(), alert_id, _body().get("note"), db.now())
    return jsonify(a.to_dict())


@bp.get(f"{V1}/dashboard")
@requires(Permission.VIEW_REPORTS)
def dashboard() -> Response:
    return jsonify(reports.dashboard(db.store(), db.now()).to_dict())


@bp.get(f"{V1}/events")
@requires(Permission.VIEW_REPORTS)
def search_events() -> Response:
    store = db.store()
    zone = store.zone()
    q = logsearch.query(request.args, zone)
    viewer = current_user()
    if request.args.get("format") == "csv":
        rows = logsearch.stream(current_app.config["STATE_DIR"], q, viewer, zone)
        return Response(rows, mimetype="text/csv")
    limit, offset = _page_args()
    found = events.search(store, q, limit=limit, offset=offset)
    return jsonify(total=events.count(store, q), events=[logsearch.to_dict(e, viewer) for e in found])


# --- the filtering policy --------------------------------------------------------------------------


@bp.get(f"{V1}/policy/groups")
@requires(Permission.VIEW_POLICY)
def policy_groups() -> Response:
    states = policy_edits.groups(db.store(), current_app.config.get("APPLIANCE_CONFIG"), db.now())
    return jsonify(groups=[s.to_dict() for s in states])


@bp.get(f"{V1}/policy/rules")
@requires(Permission.VIEW_POLICY)
def policy_rules() -> Response:
    states = policy_edits.rule_states(db.store(), db.now())
    return jsonify(rules=[{**s.rule.to_dict(), "in_force": s.in_force, "removed": s.removed} for s in states])


@bp.post(f"{V1}/policy/rules")
@requires(Permission.EDIT_POLICY)
def add_policy_rule() -> tuple[Response, int]:
    rule = policy_edits.add_rule(db.store(), current_user(), _body(), db.now())
    return jsonify(rule.to_dict()), 201


@bp.post(f"{V1}/policy/rules/<int:rule_id>/remove")
@requires(Permission.EDIT_POLICY)
def remove_policy_rule(rule_id: int) -> Response:
    return jsonify(policy_edits.remove_rule(db.store(), current_user(), rule_id, _body(), db.now()).to_dict())


@bp.get(f"{V1}/policy/schedules")
@requires(Permission.VIEW_POLICY)
def policy_schedules() -> Response:
    store = db.store()
    cal = timetable.calendar(store)
    return jsonify(
        timezone=cal.zone.key,
        schedules={n: {**s.to_dict(), "on_now": cal.active(n, db.now())} for n, s in cal.schedules.items()},
        terms=[{"name": t.name, "start": t.start.isoformat(), "end": t.end.isoformat()} for t in cal.terms],
        exam_schedules=timetable.exam_schedules(store),
    )


@bp.post(f"{V1}/policy/schedules")
@requires(Permission.EDIT_POLICY)
def set_policy_schedule() -> Response:
    b = _body()
    # The API takes lists of windows; the form takes one a line.
    values = {**b, "weekly": "\n".join(b.get("weekly") or []), "dated": "\n".join(b.get("dated") or [])}
    schedule = policy_edits.set_schedule(db.store(), current_user(), values, db.now())
    return jsonify(schedule.to_dict())


@bp.post(f"{V1}/policy/schedules/<name>/remove")
@requires(Permission.EDIT_POLICY)
def remove_policy_schedule(name: str) -> Response:
    policy_edits.remove_schedule(db.store(), current_user(), name, _body(), db.now())
    return jsonify(removed=name)


@bp.post(f"{V1}/policy/terms")
@requires(Permission.EDIT_POLICY)
def set_policy_term() -> Response:
    t = policy_edits.set_term(db.store(), current_user(), _body(), db.now())
    return jsonify(name=t.name, start=t.start.isoformat(), end=t.end.isoformat())


@bp.post(f"{V1}/policy/terms/<name>/remove")
@requires(Permission.EDIT_POLICY)
def remove_policy_term(name: str) -> Response:
    policy_edits.remove_term(db.store(), current_user(), name, _body(), db.now())
    return jsonify(removed=name)


@bp.post(f"{V1}/policy/exam")
@requires(Permission.EDIT_POLICY)
def exam_mode() -> Response:
    policy_edits.exam_mode(db.store(), current_user(), _body(), db.now())
    return jsonify(
        exam_now={
            g: u.isoformat() if u else None for g, u in timetable.exam_now(db.store(), db.now()).items()
        }
    )


@bp.post(f"{V1}/policy/exam/schedule")
@requires(Permission.EDIT_POLICY)
def exam_schedule() -> Response:
    policy_edits.exam_schedule(db.store(), current_user(), _body(), db.now())
    return jsonify(exam_schedules=timetable.exam_schedules(db.store()))


@bp.get(f"{V1}/policy/explain")
@requires(Permission.VIEW_POLICY)
def explain() -> Response:
    store = db.store()
    name, group = request.args.get("name", ""), request.args.get("group", "")
    if request.args.get("pending"):
        result = explain_mod.pending(store, name, group, db.now())
    else:
        result = policy_ops.explain_live(store, name, group, db.now())
    return jsonify(result.to_dict())


@bp.get(f"{V1}/policy/diff")
@requires(Permission.VIEW_POLICY)
def diff() -> Response:
    store = db.store()
    live = generations.current(store)
    return jsonify(
        in_force=live.id if live else None,
        pending=policy_ops.has_pending(store, db.now()),
        changes=diff_mod.pending(store, db.now()),
    )


@bp.post(f"{V1}/policy/apply")
@requires(Permission.EDIT_POLICY)
def apply() -> Response:
    gen = policy_edits.apply(db.store(), current_user(), _body(), db.now())
    return jsonify(generation=gen.id)


@bp.post(f"{V1}/policy/rollback")
@requires(Permission.EDIT_POLICY)
def rollback() -> Response:
    gen = policy_edits.rollback(db.store(), current_user(), _body(), db.now())
    return jsonify(generation=gen.id)


@bp.get(f"{V1}/changes")
@requires(Permission.VIEW_POLICY)
def changes() -> Response:
    store = db.store()
    limit, offset = _page_args()
    entries, total = audit.page(store, limit, offset)
    check = audit.verify(store)
    rows = [_entry(e) for e in entries]
    return jsonify(intact=check.ok, problems=check.problems, total=total, entries=rows)


def _entry(e: audit.Entry) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "time": e.ts.isoformat(),
        "by": e.actor,
        "action": e.action,
        "what": e.subject,
        "why": e.reason,
    }


@bp.get(f"{V1}/changes/report")
@requires(Permission.VIEW_POLICY)
def changes_report() -> Response:
    try:
        first = date.fromisoformat(request.args.get("from", ""))
        last = date.fromisoformat(request.args.get("to", ""))
    except ValueError:
        raise InputError("from and to: dates as YYYY-MM-DD") from None
    if last < first:
        raise InputError("to: must be on or after from")
    sections = audit.report(db.store(), first, last)
    return jsonify({key: [_entry(e) for e in entries] for key, entries in sections.items()})


# --- compliance reports ----------------------------------------------------------------------------


@bp.get(f"{V1}/compliance")
@requires(Permission.VIEW_COMPLIANCE)
def list_compliance_reports() -> Response:
    store = db.store()
    return jsonify(reports=[compliance.summary(store, r) for r in compliance_reports.listing(store)])


@bp.get(f"{V1}/compliance/<int:report_id>")
@requires(Permission.VIEW_COMPLIANCE)
def get_compliance_report(report_id: int) -> Response:
    store = db.store()
    return jsonify(compliance.to_dict(store, compliance.checked(store, report_id)))


@bp.get(f"{V1}/compliance/<int:report_id>/pdf")
@requires(Permission.VIEW_COMPLIANCE)
def compliance_report_pdf(report_id: int) -> Response:
    return compliance.pdf_download(db.store(), report_id)


@bp.post(f"{V1}/compliance/<int:report_id>/actions")
@requires(Permission.VIEW_COMPLIANCE)
def add_compliance_action(report_id: int) -> tuple[Response, int]:
    action = compliance.add_action(db.store(), current_user(), report_id, _body(), db.now())
    return jsonify(compliance.action_dict(action)), 201


# --- accounts and settings -------------------------------------------------------------------------


@bp.get(f"{V1}/accounts")
@requires(Permission.MANAGE_ACCOUNTS)
def list_accounts() -> Response:
    store = db.store()
    out = []
    for u in accounts.all_users(store):
        locked = accounts.locked_until(store, u.username, db.now())
        out.append({**u.summary(), "locked_until": locked.isoformat() if locked else None})
    return jsonify(accounts=out)


@bp.post(f"{V1}/accounts")
@requires(Permission.MANAGE_ACCOUNTS)
def create_account() -> tuple[Response, int]:
    b = _body()
    with audit.change(db.store(), current_user().username, "new account", db.now()) as ch:
        u = accounts.create(
            ch,
            b.get("username"),
            b.get("display_name"),
            b.get("email"),
            b.get("role"),
            b.get("password"),
            True,
        )
    return jsonify(u.summary()), 201


@bp.post(f"{V1}/accounts/<int:user_id>")
@requires(Permission.MANAGE_ACCOUNTS)
def update_account(user_id: int) -> Response:
    b = _body()
    with audit.change(db.store(), current_user().username, "account details changed", db.now()) as ch:
        u = accounts.update(
            ch, user_id, b.get("display_name"), b.get("email"), b.get("role"), bool(b.get("disabled"))
        )
    return jsonify(u.summary())


@bp.post(f"{V1}/accounts/<int:user_id>/password")
@requires(Permission.MANAGE_ACCOUNTS)
def reset_password(user_id: int) -> Response:
    with audit.change(
        db.store(), current_user().username, "password reset by an administrator", db.now()
    ) as ch:
        accounts.set_password(ch, user_id, _body().get("password"), must_change=True)
    return jsonify(reset=user_id)


@bp.post(f"{V1}/accounts/<int:user_id>/unlock")
@requires(Permission.MANAGE_ACCOUNTS)
def unlock_account(user_id: int) -> Response:
    with audit.change(db.store(), current_user().username, "sign-in lock-out cleared", db.now()) as ch:
        accounts.unlock(ch, user_id)
    return jsonify(unlocked=user_id)


@bp.get(f"{V1}/settings")
@requires(Permission.MANAGE_SETTINGS)
def get_settings() -> Response:
    store = db.store()
    return jsonify(
        **settings_mod.load(store).public(),
        mail_waiting=[
            {"created": w.created.isoformat(), "to": w.recipient, "subject": w.subject, "error": w.last_error}
            for w in mail.waiting(store)
        ],
    )


@bp.post(f"{V1}/settings")
@requires(Permission.MANAGE_SETTINGS)
def save_settings() -> Response:
    with audit.change(db.store(), current_user().username, "web UI and mail settings", db.now()) as ch:
        saved = settings_mod.save(ch, _body())
    return jsonify(saved.public())


@bp.post(f"{V1}/settings/test-mail")
@requires(Permission.MANAGE_SETTINGS)
def test_mail() -> Response:
    u = current_user()
    with audit.change(db.store(), u.username, "test e-mail", db.now()) as ch:
        mail.enqueue_test(ch.db, ch.now, u)
    sender.wake()
    return jsonify(queued_to=u.email)
