"""The trust administrator's account pages: add accounts with a first password that must be changed
at first sign-in, change roles, switch accounts off, reset passwords and clear lock-outs."""

from __future__ import annotations

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for

from appliance import audit
from webui import accounts, db
from webui.errors import USER_ERRORS
from webui.roles import Permission, Role
from webui.security import current_user, requires

bp = Blueprint("accounts", __name__, url_prefix="/accounts")


@bp.get("")
@requires(Permission.MANAGE_ACCOUNTS)
def index() -> str:
    store = db.store()
    users = accounts.all_users(store)
    return render_template(
        "accounts.html",
        users=[(u, accounts.locked_until(store, u.username, db.now())) for u in users],
        roles=list(Role),
        values=request.args,
    )


def _done(action: str, message: str) -> Response:
    flash(message)
    return redirect(url_for("accounts.index", _anchor=action))


@bp.post("")
@requires(Permission.MANAGE_ACCOUNTS)
def create() -> Response:
    f = request.form
    admin = current_user()
    try:
        with audit.change(db.store(), admin.username, "new account", db.now()) as ch:
            u = accounts.create(
                ch,
                f.get("username"),
                f.get("display_name"),
                f.get("email"),
                f.get("role"),
                f.get("password"),
                True,
            )
    except USER_ERRORS as e:
        flash(f"Account not added: {e}", "error")
        return redirect(url_for("accounts.index"))
    return _done(
        f"user-{u.id}", f"Account {u.username} added. Give them the first password; they must change it."
    )


@bp.post("/<int:user_id>")
@requires(Permission.MANAGE_ACCOUNTS)
def update(user_id: int) -> Response:
    f = request.form
    try:
        with audit.change(db.store(), current_user().username, "account details changed", db.now()) as ch:
            u = accounts.update(
                ch, user_id, f.get("display_name"), f.get("email"), f.get("role"), f.get("disabled") == "yes"
            )
    except USER_ERRORS as e:
        flash(f"Not changed: {e}", "error")
        return redirect(url_for("accounts.index"))
    return _done(f"user-{u.id}", f"Account {u.username} saved.")


@bp.post("/<int:user_id>/password")
@requires(Permission.MANAGE_ACCOUNTS)
def reset_password(user_id: int) -> Response:
    try:
        with audit.change(
            db.store(), current_user().username, "password reset by an administrator", db.now()
        ) as ch:
            accounts.set_password(ch, user_id, request.form.get("password"), must_change=True)
    except USER_ERRORS as e:
        flash(f"Password not reset: {e}", "error")
        return redirect(url_for("accounts.index"))
    return _done(f"user-{user_id}", "Password reset. They must choose their own at their next sign-in.")


@bp.post("/<int:user_id>/unlock")
@requires(Permission.MANAGE_ACCOUNTS)
def unlock(user_id: int) -> Response:
    with audit.change(db.store(), current_user().username, "sign-in lock-out cleared", db.now()) as ch:
        accounts.unlock(ch, user_id)
    return _done(f"user-{user_id}", "The account can sign in again.")
