"""The state database for the request being handled: one connection per request (a Store is not
shared across threads), closed when the request ends."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Flask, current_app, g

from appliance.store import Store


def store() -> Store:
    if "store" not in g:
        g.store = Store(current_app.config["STATE_DIR"])
    return g.store


def now() -> datetime:
    """The moment the request is handled, the same for every step of it."""
    if "now" not in g:
        g.now = datetime.now(UTC)
    return g.now


def init_app(app: Flask) -> None:
    @app.teardown_appcontext
    def _close(exc: BaseException | None) -> None:
        s = g.pop("store", None)
        if s is not None:
            s.close()
