"""What every template can use: the school's name, the menu for the account's role, and filters that
show times in the appliance's local time and values in plain words."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Flask, current_app, request

from appliance.policy.model import CATEGORIES, group_label
from webui import db
from webui.roles import Permission, Role
from webui.security import user
from webui.times import last_day, local

# The menu: (endpoint, label, permission), in the order shown.
MENU = (
    ("requests.index", "Unblock requests", Permission.REQUEST_UNBLOCK),
    ("alerts.index", "Alerts", Permission.VIEW_ALERTS),
    ("dashboard.index", "Dashboard", Permission.VIEW_REPORTS),
    ("logs.index", "Log search", Permission.VIEW_REPORTS),
    ("policy.groups", "Filtering policy", Permission.VIEW_POLICY),
    ("compliance.index", "Compliance", Permission.VIEW_COMPLIANCE),
    ("accounts.index", "Accounts", Permission.MANAGE_ACCOUNTS),
    ("settings.index", "Settings", Permission.MANAGE_SETTINGS),
)


def school_name() -> str:
    config = current_app.config.get("APPLIANCE_CONFIG")
    return config.appliance.name if config else "School internet gateway"


def menu() -> list[tuple[str, str, bool]]:
    """(endpoint, label, is the current area) for each menu item the account may use."""
    u = user()
    if u is None or u.must_change_password:
        return []
    here = (request.endpoint or "").split(".")[0]
    return [(e, label, e.split(".")[0] == here) for e, label, p in MENU if u.can(p)]


def zone_name() -> str:
    return f"{db.store().zone().key} time"


def _localtime(when: datetime | None, with_time: bool = True) -> str:
    return local(when, db.store().zone(), with_time)


def _last_day(end: datetime) -> str:
    return last_day(end, db.store().zone())


def _category(name: str | None) -> str:
    if not name:
        return "no category (a school rule or the group's default)"
    c = CATEGORIES.get(name)
    return c.title if c else name


def _role(value: Role | str) -> str:
    return Role(value).title


def init_app(app: Flask) -> None:
    app.jinja_env.globals.update(school_name=school_name, menu=menu, zone_name=zone_name)
    filters: dict[str, Any] = {
        "localtime": _localtime,
        "last_day": _last_day,
        "category": _category,
        "group": group_label,
        "role": _role,
    }
    app.jinja_env.filters.update(filters)
