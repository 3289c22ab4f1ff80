"""The trust administrator's settings page: the appliance's web address, the mail server, a test
message, and the e-mail still waiting to be sent."""

from __future__ import annotations

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for

from appliance import audit
from webui import db, mail, sender, settings
from webui.errors import USER_ERRORS
from webui.roles import Permission
from webui.security import current_user, requires

bp = Blueprint("settings", __name__, url_prefix="/settings")


@bp.get("")
@requires(Permission.MANAGE_SETTINGS)
def index() -> str:
    store = db.store()
    return render_template(
        "settings.html", s=settings.load(store), waiting=mail.waiting(store), security=settings.SECURITY
    )


@bp.post("")
@requires(Permission.MANAGE_SETTINGS)
def save() -> Response:
    try:
        with audit.change(db.store(), current_user().username, "web UI and mail settings", db.now()) as ch:
            settings.save(ch, request.form.to_dict())
    except USER_ERRORS as e:
        flash(f"Not saved: {e}", "error")
    else:
        flash("Settings saved.")
    return redirect(url_for("settings.index"))


@bp.post("/test-mail")
@requires(Permission.MANAGE_SETTINGS)
def test_mail() -> Response:
    u = current_user()
    store = db.store()
    with audit.change(store, u.username, "test e-mail", db.now()) as ch:
        mail.enqueue_test(ch.db, ch.now, u)
    sender.wake()
    flash(f"A test message is on its way to {u.email}. If it does not arrive, the list below shows why.")
    return redirect(url_for("settings.index"))
