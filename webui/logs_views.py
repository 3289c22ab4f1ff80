"""Log search: blocked attempts by IP address, name, group and date, a page at a time, and as CSV."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, render_template, request

from appliance import events
from appliance.policy.model import GROUPS
from webui import db, logsearch
from webui.errors import USER_ERRORS
from webui.roles import Permission
from webui.security import current_user, requires

bp = Blueprint("logs", __name__, url_prefix="/logs")


@bp.get("")
@requires(Permission.VIEW_REPORTS)
def index() -> tuple[str, int]:
    store = db.store()
    zone = store.zone()
    raw_page = request.args.get("page", "1")
    page_no = int(raw_page) if raw_page.isdigit() and 1 <= int(raw_page) <= 1_000_000 else 1
    try:
        q = logsearch.query(request.args, zone)
    except USER_ERRORS as e:
        return render_template("logs.html", error=str(e), found=None, args=request.args, groups=GROUPS), 400
    found = events.search(store, q, limit=logsearch.PAGE, offset=(page_no - 1) * logsearch.PAGE)
    total = events.count(store, q)
    viewer = current_user()
    rows = [(e, logsearch.shown_name(e, viewer)) for e in found]
    html = render_template(
        "logs.html",
        found=rows,
        total=total,
        page=page_no,
        pages=max(1, -(-total // logsearch.PAGE)),
        described=logsearch.describe(q, zone),
        args=request.args,
        search={k: request.args[k] for k in logsearch.PARAMETERS if request.args.get(k)},
        groups=GROUPS,
    )
    return html, 200


@bp.get("/export.csv")
@requires(Permission.VIEW_REPORTS)
def export() -> Response:
    store = db.store()
    zone = store.zone()
    try:
        q = logsearch.query(request.args, zone)
    except USER_ERRORS as e:
        return Response(f"error: {e}\n", status=400, mimetype="text/plain")
    viewer = current_user()
    body = logsearch.stream(current_app.config["STATE_DIR"], q, viewer, zone)
    stamp = db.now().astimezone(zone).strftime("%Y%m%d-%H%M")
    return Response(
        body,
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="blocked-{stamp}.csv"'},
    )
