"""Error answers: a plain page for people, {"error": "..."} for the API. Faults are logged in full
and shown only as a short apology, never as a traceback."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, render_template
from werkzeug.exceptions import HTTPException, InternalServerError

from webui.errors import NotAllowed, NotFound, Tampered
from webui.security import is_api

log = logging.getLogger(__name__)

TITLES = {
    400: "Something in that request was not right",
    401: "Please sign in",
    403: "Not allowed",
    404: "Page not found",
    405: "Not allowed",
    409: "This record has been tampered with",
    413: "Too much was sent",
    429: "Too many attempts",
    500: "Something went wrong",
}


def _answer(status: int, message: str) -> tuple[Response | str, int]:
    if is_api():
        return jsonify(error=message), status
    return render_template("error.html", title=TITLES.get(status, "Error"), message=message), status


def init_app(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _http(e: HTTPException) -> tuple[Response | str, int]:
        status = e.code or 500
        if isinstance(e, InternalServerError):
            return _answer(500, "The appliance hit a fault. It has been logged; please tell your IT team.")
        message = e.description if status in (400, 403, 429) else ""
        if status == 404:
            message = "There is no page at this address. Check the link, or use the menu above."
        elif status == 413:
            message = "What was sent is larger than the appliance accepts. Shorten it and try again."
        elif status == 405:
            message = "That action cannot be done this way."
        return _answer(status, message or TITLES.get(status, "Error"))

    @app.errorhandler(NotAllowed)
    def _not_allowed(e: NotAllowed) -> tuple[Response | str, int]:
        return _answer(403, str(e))

    @app.errorhandler(NotFound)
    def _not_found(e: NotFound) -> tuple[Response | str, int]:
        return _answer(404, f"{str(e)[:1].upper()}{str(e)[1:]}.")

    @app.errorhandler(Tampered)
    def _tampered(e: Tampered) -> tuple[Response | str, int]:
        return _answer(409, str(e))

    @app.errorhandler(Exception)
    def _fault(e: Exception) -> tuple[Response | str, int]:
        log.exception("fault while handling a request")
        return _answer(500, "The appliance hit a fault. It has been logged; please tell your IT team.")
