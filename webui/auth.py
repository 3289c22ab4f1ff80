"""Signing in and out, and each person's own account: password and API tokens."""

from __future__ import annotations

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for

from appliance import audit
from webui import accounts, db, sessions
from webui.accounts import SignInRefused
from webui.errors import USER_ERRORS, InputError
from webui.roles import Permission
from webui.security import begin_session, current_user, end_session, public, requires, safe_next

bp = Blueprint("auth", __name__)


@bp.get("/")
@requires(Permission.SIGNED_IN)
def home() -> Response:
    u = current_user()
    if u.can(Permission.VIEW_REPORTS):
        return redirect(url_for("dashboard.index"))
    return redirect(url_for("requests.index"))


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> Response | str | tuple[str, int]:
    store = db.store()
    nxt = safe_next(request.values.get("next"))
    if request.method == "GET":
        notice = (
            "You were signed out after a time without use. Please sign in again."
            if request.args.get("expired")
            else None
        )
        return render_template(
            "login.html", next=nxt, notice=notice, first_start=not accounts.any_admin(store), username=""
        )
    username = request.form.get("username", "")[:64]
    try:
        u = accounts.sign_in(store, username, request.form.get("password", ""), request.remote_addr or "")
    except SignInRefused as e:
        page = render_template(
            "login.html", next=nxt, error=str(e), first_start=False, username=username, notice=None
        )
        return page, 429 if e.throttled else 401
    begin_session(u)
    if u.must_change_password:  # then on to where they were going (say the block page's link)
        return redirect(url_for("auth.password", next=nxt))
    return redirect(nxt or url_for("auth.home"))


@bp.post("/logout")
@requires(Permission.SIGNED_IN)
def logout() -> Response:
    end_session()
    flash("You have signed out.")
    return redirect(url_for("auth.login"))


@bp.get("/account")
@requires(Permission.SIGNED_IN)
def account() -> str:
    u = current_user()
    return render_template("account.html", user=u, tokens=sessions.tokens(db.store(), u), new_token=None)


@bp.route("/account/password", methods=["GET", "POST"])
@requires(Permission.SIGNED_IN)
def password() -> Response | str | tuple[str, int]:
    u = current_user()
    nxt = safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("password.html", user=u, next=nxt)
    store = db.store()
    try:
        if not accounts.verify_password(store, u.id, request.form.get("current", "")):
            raise InputError("Current password: that is not your current password")
        new = request.form.get("new", "")
        if new != request.form.get("again", ""):
            raise InputError("New password: the two copies are not the same")
        with audit.change(store, u.username, "changed own password", db.now()) as ch:
            accounts.set_password(ch, u.id, new, must_change=False)
    except USER_ERRORS as e:
        return render_template("password.html", user=u, error=str(e), next=nxt), 400
    # Changing the password ended every session, this one too: start a fresh one.
    begin_session(accounts.get(store, u.id))
    flash("Your password has been changed.")
    return redirect(nxt or url_for("auth.home"))


@bp.post("/account/tokens")
@requires(Permission.SIGNED_IN)
def create_token() -> str | tuple[str, int]:
    u = current_user()
    store = db.store()
    try:
        with audit.change(store, u.username, "API token for scripts", db.now()) as ch:
            token = sessions.create_token(ch, u, request.form.get("label"))
    except USER_ERRORS as e:
        return render_template("account.html", user=u, tokens=sessions.tokens(store, u), error=str(e)), 400
    return render_template("account.html", user=u, tokens=sessions.tokens(store, u), new_token=token)


@bp.post("/account/tokens/<int:token_id>/revoke")
@requires(Permission.SIGNED_IN)
def revoke_token(token_id: int) -> Response:
    u = current_user()
    with audit.change(db.store(), u.username, "API token no longer needed", db.now()) as ch:
        sessions.revoke_token(ch, u, token_id)
    flash("The API token has been revoked: scripts using it will stop working.")
    return redirect(url_for("auth.account"))
