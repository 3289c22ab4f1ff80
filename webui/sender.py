"""The web UI's background work, in one thread of the serving process: raise alerts from new block
events, then send the e-mail that is waiting. It runs every MAIL_POLL_SECONDS, and at once when a
view has queued mail (wake())."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from flask import Flask, current_app

from appliance.store import Store
from webui import alerts, mail

log = logging.getLogger(__name__)
_EXTENSION = "webui.sender"


def run_once(store: Store, now: datetime | None = None) -> None:
    now = now or datetime.now(UTC)
    alerts.raise_new(store, now)
    mail.flush(store, now)


def _loop(app: Flask, wakeup: threading.Event) -> None:
    while True:
        try:
            with Store(app.config["STATE_DIR"]) as store:
                run_once(store)
        except Exception:
            log.exception("sending e-mail and raising alerts failed; trying again shortly")
        wakeup.wait(app.config["MAIL_POLL_SECONDS"])
        wakeup.clear()


def start(app: Flask) -> None:
    wakeup = threading.Event()
    app.extensions[_EXTENSION] = wakeup
    threading.Thread(target=_loop, args=(app, wakeup), name="webui-sender", daemon=True).start()


def wake() -> None:
    """Asks the sender to run now (after a change that queued mail); nothing if it is not running."""
    wakeup = current_app.extensions.get(_EXTENSION)
    if wakeup is not None:
        wakeup.set()
