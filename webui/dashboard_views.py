"""The dashboard: blocked attempts over the last fortnight, list freshness and filtering health."""

from __future__ import annotations

from flask import Blueprint, render_template

from webui import alerts, charts, db, policy_ops, reports
from webui.roles import Permission
from webui.security import current_user, requires

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")


@bp.get("")
@requires(Permission.VIEW_REPORTS)
def index() -> str:
    store = db.store()
    d = reports.dashboard(store, db.now())
    u = current_user()
    return render_template(
        "dashboard.html",
        d=d,
        per_day=charts.columns(
            "Blocked attempts per day", [(day.strftime("%d %b"), n) for day, n in d.per_day]
        ),
        by_group=charts.bars("Blocked attempts by group", d.by_group),
        by_category=charts.bars("Blocked attempts by category", d.by_category),
        open_alerts=alerts.open_count(store) if u.can(Permission.VIEW_ALERTS) else None,
        pending=policy_ops.has_pending(store, db.now()) if u.can(Permission.EDIT_POLICY) else False,
    )
