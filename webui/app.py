"""The application factory: configuration, security hooks, and the blueprints."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from flask import Flask

from appliance import events
from appliance.config import Config
from appliance.store import Store, state_dir
from webui import (
    accounts_views,
    alerts_views,
    api,
    auth,
    compliance_views,
    dashboard_views,
    db,
    errors_views,
    logs_views,
    policy_views,
    requests_views,
    security,
    sender,
    settings_views,
    template_helpers,
)

BLUEPRINTS = (
    auth,
    requests_views,
    alerts_views,
    dashboard_views,
    logs_views,
    policy_views,
    compliance_views,
    accounts_views,
    settings_views,
    api,
)

SECRET_FILE = "webui-secret.key"
DEFAULTS: dict[str, Any] = {
    "SESSION_COOKIE_NAME": "__Host-sgw",
    "SESSION_COOKIE_SECURE": True,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_PATH": "/",
    "SESSION_IDLE_SECONDS": 30 * 60,
    "SESSION_ABSOLUTE_SECONDS": 12 * 3600,
    "MAX_CONTENT_LENGTH": 1 << 20,
    "HSTS": False,
    "MAIL_SENDER": False,  # start the background thread that sends e-mail and raises alerts
    "MAIL_POLL_SECONDS": 10.0,
}


def secret_key(directory: Path) -> bytes:
    """The key that signs the session cookie, created on first start, readable by root only."""
    path = directory / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def create_app(
    state: str | os.PathLike[str] | None = None,
    appliance_config: Config | None = None,
    overrides: dict[str, Any] | None = None,
) -> Flask:
    """The application for the state directory (default: the config's, else $APPLIANCE_STATE_DIR or
    /var/lib/appliance). appliance_config, when given, supplies the school's name and its VLANs."""
    directory = state_dir(state or (appliance_config.appliance.state_dir if appliance_config else None))
    app = Flask(__name__)
    app.config.update(DEFAULTS)
    app.config.update(STATE_DIR=str(directory), APPLIANCE_CONFIG=appliance_config)
    app.config.update(overrides or {})
    with Store(directory) as store:
        events.ensure(store)  # the dashboard, log search and alerts read it
        app.config["SECRET_KEY"] = secret_key(store.dir)

    db.init_app(app)
    security.init_app(app)
    template_helpers.init_app(app)
    errors_views.init_app(app)
    for module in BLUEPRINTS:
        app.register_blueprint(module.bp)
    if app.config["MAIL_SENDER"]:
        sender.start(app)
    return app
