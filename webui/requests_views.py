"""Pages for unblock requests: the pre-filled form the block page links to, the lists, and each
request with the step the viewer may take."""

from __future__ import annotations

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for

from appliance.policy.model import GROUPS
from webui import db, sender, unblock
from webui.errors import USER_ERRORS
from webui.roles import Permission
from webui.security import current_user, requires

bp = Blueprint("requests", __name__, url_prefix="/requests")


@bp.get("")
@requires(Permission.REQUEST_UNBLOCK)
def index() -> str:
    u = current_user()
    store = db.store()
    show = request.args.get("show", "mine")
    status = request.args.get("status") or None
    if status not in (None, *unblock.STATUSES):
        abort(400, description="Unknown status filter.")
    everyone = show == "all" and u.can(Permission.VIEW_REQUESTS)
    return render_template(
        "requests/index.html",
        waiting=unblock.waiting_for(store, u),
        requests=unblock.listing(store, u, mine=not everyone, status=status),
        everyone=everyone,
        status=status,
        statuses=unblock.STATUSES,
        now=db.now(),
    )


def _form(values: dict[str, object], error: str | None = None, status: int = 200) -> tuple[str, int]:
    store = db.store()
    assessment = None
    site = values.get("site")
    try:
        if site:
            assessment = unblock.assess(store, site, db.now())
    except USER_ERRORS as e:
        error = error or str(e)
    term = unblock.term_end(store, db.now().astimezone(store.zone()).date())
    page = render_template(
        "requests/new.html",
        assessment=assessment,
        values=values,
        term=term,
        groups=GROUPS,
        error=error,
        reason_limit=unblock.REASON_LIMIT,
    )
    return page, status


@bp.get("/new")
@requires(Permission.REQUEST_UNBLOCK)
def new() -> tuple[str, int]:
    args = request.args
    group = args.get("group", "")
    values = {
        "site": args.get("site", "")[:300],
        "groups": [group] if group in GROUPS else [],
        "seen_at": args.get("layer", ""),
        "until": "term",
    }
    return _form(values)


@bp.post("/new")
@requires(Permission.REQUEST_UNBLOCK)
def create() -> Response | tuple[str, int]:
    form = request.form
    values = {
        "site": form.get("site", ""),
        "groups": form.getlist("groups"),
        "reason": form.get("reason", ""),
        "until": form.get("until", ""),
        "until_date": form.get("until_date", ""),
        "seen_at": form.get("seen_at", ""),
    }
    try:
        r = unblock.create(
            db.store(),
            current_user(),
            values["site"],
            form.getlist("groups"),
            values["reason"],
            values["until"],
            values["until_date"],
            values["seen_at"],
            db.now(),
        )
    except USER_ERRORS as e:
        return _form(values, str(e), 400)
    sender.wake()
    flash(f"Request {r.id} has been sent. IT and the DSL will look at it; you will get an e-mail.")
    return redirect(url_for("requests.show", request_id=r.id))


@bp.get("/<int:request_id>")
@requires(Permission.REQUEST_UNBLOCK)
def show(request_id: int) -> str:
    u = current_user()
    r = unblock.get(db.store(), u, request_id)
    can_it = r.status == unblock.WAITING_IT and u.can(Permission.REVIEW_TECHNICAL)
    can_dsl = r.status in unblock.WAITING and u.can(Permission.APPROVE_SAFEGUARDING)
    own = r.requester.id == u.id
    return render_template(
        "requests/show.html",
        r=r,
        now=db.now(),
        can_decide=(can_it or can_dsl) and not own,
        can_approve=(can_it or (can_dsl and r.status == unblock.WAITING_DSL)) and not own,
        own=own,
        can_retry=r.status == unblock.APPROVED
        and r.generation is None
        and (u.can(Permission.REVIEW_TECHNICAL) or u.can(Permission.APPROVE_SAFEGUARDING)),
    )


@bp.post("/<int:request_id>/decide")
@requires(Permission.REVIEW_TECHNICAL, Permission.APPROVE_SAFEGUARDING)
def decide(request_id: int) -> Response | tuple[str, int]:
    decision = request.form.get("decision")
    if decision not in ("approve", "refuse"):
        abort(400, description="Choose approve or refuse.")
    try:
        r = unblock.decide(
            db.store(), current_user(), request_id, decision == "approve", request.form.get("note"), db.now()
        )
    except USER_ERRORS as e:
        flash(f"Not done: {e}", "error")
        return redirect(url_for("requests.show", request_id=request_id))
    sender.wake()
    flash(f"Request {r.id}: {r.state(db.now())[1].lower()}.")
    return redirect(url_for("requests.show", request_id=r.id))


@bp.post("/<int:request_id>/withdraw")
@requires(Permission.REQUEST_UNBLOCK)
def withdraw(request_id: int) -> Response:
    try:
        unblock.withdraw(db.store(), current_user(), request_id, db.now())
    except USER_ERRORS as e:
        flash(f"Not done: {e}", "error")
    else:
        flash(f"Request {request_id} has been withdrawn.")
    return redirect(url_for("requests.show", request_id=request_id))


@bp.post("/<int:request_id>/apply")
@requires(Permission.REVIEW_TECHNICAL, Permission.APPROVE_SAFEGUARDING)
def apply(request_id: int) -> Response:
    store = db.store()
    u = current_user()
    try:
        r = unblock.put_in_force(store, unblock.get(store, u, request_id), u, db.now())
    except USER_ERRORS as e:
        flash(f"Not done: {e}", "error")
        return redirect(url_for("requests.show", request_id=request_id))
    sender.wake()
    flash("In force now." if r.generation else f"Still not in force: {r.apply_error}")
    return redirect(url_for("requests.show", request_id=request_id))
