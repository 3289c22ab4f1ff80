"""The DSL's alerts page: open alerts first, each acknowledged with a note."""

from __future__ import annotations

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for

from webui import alerts, db
from webui.errors import USER_ERRORS
from webui.roles import Permission
from webui.security import current_user, requires

bp = Blueprint("alerts", __name__, url_prefix="/alerts")


@bp.get("")
@requires(Permission.VIEW_ALERTS)
def index() -> str:
    store = db.store()
    everything = request.args.get("show") == "all"
    return render_template(
        "alerts.html",
        alerts=alerts.listing(store, open_only=not everything),
        everything=everything,
        open_count=alerts.open_count(store),
    )


@bp.post("/<int:alert_id>/acknowledge")
@requires(Permission.VIEW_ALERTS)
def acknowledge(alert_id: int) -> Response:
    try:
        alerts.acknowledge(db.store(), current_user(), alert_id, request.form.get("note"), db.now())
    except USER_ERRORS as e:
        flash(f"Not done: {e}", "error")
    else:
        flash(f"Alert {alert_id} acknowledged.")
    return redirect(url_for("alerts.index"))
