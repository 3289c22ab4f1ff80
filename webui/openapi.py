"""The OpenAPI 3.1 description of the JSON API (webui.api), served at /api/v1/openapi.json.

Each operation is described here once, keyed by method and Flask route; document() walks the
application's own routes, so the permission each needs comes from the view itself and a route with
no description fails the tests rather than going undocumented."""

from __future__ import annotations

import re
from typing import Any

from flask import current_app

from appliance.policy.model import CATEGORIES, GROUPS
from webui.roles import Permission

_S = {"type": "string"}
_DATE = {"type": "string", "format": "date"}
_REASON = {"reason": {"type": "string", "description": "why (kept in the change log)"}}
_GROUP = {"type": "string", "enum": list(GROUPS)}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


def _query(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "in": "query", "required": False, "schema": _S} for n in names]


# (method, Flask rule) -> (summary, request body schema or None, query parameter names)
OPERATIONS: dict[tuple[str, str], tuple[str, dict[str, Any] | None, tuple[str, ...]]] = {
    ("get", "/api/v1/openapi.json"): ("This description", None, ()),
    ("get", "/api/docs"): ("A readable page listing the API's operations (HTML)", None, ()),
    ("get", "/api/v1/me"): ("The account calling, its role and permissions", None, ()),
    ("post", "/api/v1/me/password"): (
        "Change your own password (ends every session and token of the account)",
        _obj(["current", "new"], current=_S, new=_S),
        (),
    ),
    ("get", "/api/v1/me/tokens"): ("Your API tokens (never the token itself)", None, ()),
    ("post", "/api/v1/me/tokens"): (
        "Create an API token; the answer holds it, once",
        _obj(["label"], label=_S),
        (),
    ),
    ("post", "/api/v1/me/tokens/<int:token_id>/revoke"): ("Revoke one of your API tokens", None, ()),
    ("get", "/api/v1/requests"): (
        "Unblock requests: yours, or everyone's with show=all (if your role may see them)",
        None,
        ("show", "status"),
    ),
    ("get", "/api/v1/requests/waiting"): ("Requests waiting for a step you may take", None, ()),
    ("get", "/api/v1/requests/check"): (
        "What the policy in force does with a site for each group, and whether it can be requested",
        None,
        ("site",),
    ),
    ("post", "/api/v1/requests"): (
        "Ask for a site to be unblocked",
        _obj(
            ["site", "groups", "reason", "until"],
            site=_S,
            groups={"type": "array", "items": _GROUP},
            reason={"type": "string", "description": "the lesson or educational purpose"},
            until={"type": "string", "enum": ["term", "date"]},
            until_date={**_DATE, "description": "the last day, with until=date"},
            seen_at={"type": "string", "enum": ["dns", "tls", "quic", "http"]},
        ),
        (),
    ),
    ("get", "/api/v1/requests/<int:request_id>"): ("One unblock request", None, ()),
    ("post", "/api/v1/requests/<int:request_id>/decision"): (
        "IT's review or the DSL's decision (which one follows from your role and the request's state)",
        _obj(
            ["decision"],
            decision={"type": "string", "enum": ["approve", "refuse"]},
            note={"type": "string", "description": "required when refusing: the reason"},
        ),
        (),
    ),
    ("post", "/api/v1/requests/<int:request_id>/withdraw"): ("Withdraw your own waiting request", None, ()),
    ("post", "/api/v1/requests/<int:request_id>/apply"): (
        "Try again to put an approved request in force",
        None,
        (),
    ),
    ("get", "/api/v1/alerts"): ("Safeguarding alerts: open ones, or all with show=all", None, ("show",)),
    ("post", "/api/v1/alerts/<int:alert_id>/acknowledge"): (
        "Acknowledge an alert with a note of what was done",
        _obj(["note"], note=_S),
        (),
    ),
    ("get", "/api/v1/dashboard"): (
        "Blocked attempts per day, by group and category, top names, list freshness and health",
        None,
        (),
    ),
    ("get", "/api/v1/events"): (
        "Search the block log (format=csv for a CSV export)",
        None,
        ("ip", "name", "group", "from", "to", "limit", "offset", "format"),
    ),
    ("get", "/api/v1/policy/groups"): ("Each group's VLANs, exam mode and categories", None, ()),
    ("get", "/api/v1/policy/rules"): ("The school's rules, and whether each is in force", None, ()),
    ("post", "/api/v1/policy/rules"): (
        "Add a school rule (pending until applied)",
        _obj(
            ["action", "kind", "target", "group", "reason"],
            action={"type": "string", "enum": ["allow", "deny"]},
            kind={"type": "string", "enum": ["name", "category"]},
            target={"type": "string", "description": f"a domain, or a category: {', '.join(CATEGORIES)}"},
            group={"type": "string", "enum": [*GROUPS, "*"]},
            expires={**_DATE, "description": "the last day"},
            schedule=_S,
            ticket=_S,
            **_REASON,
        ),
        (),
    ),
    ("post", "/api/v1/policy/rules/<int:rule_id>/remove"): (
        "Remove a school rule (pending until applied)",
        _obj(["reason"], **_REASON),
        (),
    ),
    ("get", "/api/v1/policy/schedules"): ("Schedules, term dates and exam schedules", None, ()),
    ("post", "/api/v1/policy/schedules"): (
        "Create or replace a schedule",
        _obj(
            ["name", "reason"],
            name=_S,
            weekly={"type": "array", "items": _S, "description": "e.g. mon-fri 12:00-13:00"},
            dated={"type": "array", "items": _S, "description": "e.g. 2026-05-12T09:00/2026-05-12T12:00"},
            terms={"type": "string", "enum": ["any", "in", "out"]},
            **_REASON,
        ),
        (),
    ),
    ("post", "/api/v1/policy/schedules/<name>/remove"): (
        "Remove a schedule",
        _obj(["reason"], **_REASON),
        (),
    ),
    ("post", "/api/v1/policy/terms"): (
        "Create or replace a term's dates",
        _obj(["name", "start", "end", "reason"], name=_S, start=_DATE, end=_DATE, **_REASON),
        (),
    ),
    ("post", "/api/v1/policy/terms/<name>/remove"): ("Remove a term", _obj(["reason"], **_REASON), ()),
    ("post", "/api/v1/policy/exam"): (
        "Switch exam mode on or off for a group now (confirm must be true)",
        _obj(
            ["group", "mode", "confirm", "reason"],
            group=_GROUP,
            mode={"type": "string", "enum": ["on", "off"]},
            until={"type": "string", "description": "local date and time, YYYY-MM-DDTHH:MM"},
            confirm={"type": "boolean"},
            **_REASON,
        ),
        (),
    ),
    ("post", "/api/v1/policy/exam/schedule"): (
        "Put a group's exam mode on a schedule, or take it off",
        _obj(
            ["group", "schedule", "mode", "reason"],
            group=_GROUP,
            schedule=_S,
            mode={"type": "string", "enum": ["add", "remove"]},
            **_REASON,
        ),
        (),
    ),
    ("get", "/api/v1/policy/explain"): (
        "The verdict on a name for a group and the layers behind it (pending=1: the working policy)",
        None,
        ("name", "group", "pending"),
    ),
    ("get", "/api/v1/policy/diff"): ("What applying the working policy would change", None, ()),
    ("post", "/api/v1/policy/apply"): ("Put the working policy in force", _obj(["reason"], **_REASON), ()),
    ("post", "/api/v1/policy/rollback"): (
        "Put the previous policy back in force (confirm must be true)",
        _obj(["reason", "confirm"], confirm={"type": "boolean"}, **_REASON),
        (),
    ),
    ("get", "/api/v1/changes"): (
        "The change log, newest first, and whether it is intact",
        None,
        ("limit", "offset"),
    ),
    ("get", "/api/v1/changes/report"): (
        "Filters added and removed between two dates (the DSL's termly report)",
        None,
        ("from", "to"),
    ),
    ("get", "/api/v1/compliance"): ("The kept compliance reports, newest first", None, ()),
    ("get", "/api/v1/compliance/<int:report_id>"): (
        "One compliance report: its kept document, its numbered findings and the actions recorded "
        "(409 if it no longer matches its hash or the audit trail)",
        None,
        (),
    ),
    ("get", "/api/v1/compliance/<int:report_id>/pdf"): (
        "One compliance report as the PDF the DSL receives (application/pdf)",
        None,
        (),
    ),
    ("post", "/api/v1/compliance/<int:report_id>/actions"): (
        "Record what was done about one of a report's findings (appended, never changed)",
        _obj(
            ["finding", "text"],
            finding={"type": "integer", "description": "the finding's number in the report"},
            text={"type": "string", "description": "what was done, by whom and when"},
        ),
        (),
    ),
    ("get", "/api/v1/accounts"): ("Every account", None, ()),
    ("post", "/api/v1/accounts"): (
        "Add an account (its first password must be changed at first sign-in)",
        _obj(
            ["username", "display_name", "email", "role", "password"],
            username=_S,
            display_name=_S,
            email=_S,
            role={"type": "string", "enum": ["teacher", "it", "dsl", "admin"]},
            password=_S,
        ),
        (),
    ),
    ("post", "/api/v1/accounts/<int:user_id>"): (
        "Change an account's name, e-mail, role, or switch it off",
        _obj(
            ["display_name", "email", "role"],
            display_name=_S,
            email=_S,
            role={"type": "string", "enum": ["teacher", "it", "dsl", "admin"]},
            disabled={"type": "boolean"},
        ),
        (),
    ),
    ("post", "/api/v1/accounts/<int:user_id>/password"): (
        "Reset an account's password (to be changed at next sign-in)",
        _obj(["password"], password=_S),
        (),
    ),
    ("post", "/api/v1/accounts/<int:user_id>/unlock"): ("Clear a sign-in lock-out", None, ()),
    ("get", "/api/v1/settings"): ("The web address and mail settings (never the password)", None, ()),
    ("post", "/api/v1/settings"): (
        "Change the web address or mail settings",
        {
            "type": "object",
            "properties": {
                "url": _S,
                "mail_host": _S,
                "mail_port": {"type": "integer"},
                "mail_security": {"type": "string", "enum": ["starttls", "tls", "none"]},
                "mail_username": _S,
                "mail_password": _S,
                "clear_mail_password": {"type": "boolean"},
                "mail_sender": _S,
            },
        },
        (),
    ),
    ("post", "/api/v1/settings/test-mail"): ("Send yourself a test e-mail", None, ()),
}

_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")


def _path(rule: str) -> tuple[str, list[dict[str, Any]]]:
    params = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "integer"} if conv == "int" else _S,
        }
        for conv, name in _PARAM.findall(rule)
    ]
    return _PARAM.sub(lambda m: "{" + m.group(2) + "}", rule), params


def api_routes() -> list[tuple[str, str, str]]:
    """(method, Flask rule, endpoint) of every API route of the running application."""
    out = []
    for rule in current_app.url_map.iter_rules():
        if rule.endpoint.startswith("api."):
            out += [
                (m.lower(), rule.rule, rule.endpoint)
                for m in sorted(rule.methods or ())
                if m in ("GET", "POST")
            ]
    return out


def _security(endpoint: str) -> tuple[list[dict[str, list[str]]], str]:
    needed = getattr(current_app.view_functions[endpoint], "permission", None)
    if not isinstance(needed, frozenset):
        return [], "No sign-in needed."
    if needed == {Permission.SIGNED_IN}:
        return [{"token": []}, {"session": []}], "Any signed-in account."
    names = " or ".join(sorted(p.value for p in needed))
    return [{"token": []}, {"session": []}], f"Needs a role that may {names}."


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, rule, endpoint in api_routes():
        summary, body, query = OPERATIONS[(method, rule)]
        path, params = _path(rule)
        security, who = _security(endpoint)
        op: dict[str, Any] = {
            "operationId": endpoint.removeprefix("api."),
            "summary": summary,
            "description": who,
            "security": security,
            "parameters": params + _query(*query),
            "responses": {
                "200": {"description": "done"},
                "400": {"description": "what was sent is wrong", "content": _ERROR},
                "401": {"description": "no valid session or token", "content": _ERROR},
                "403": {"description": "the role may not do this", "content": _ERROR},
                "404": {"description": "no such thing", "content": _ERROR},
                "409": {"description": "a kept record that no longer matches its hash", "content": _ERROR},
            },
        }
        if body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "School internet gateway",
            "version": "1",
            "description": "Unblock requests, alerts, reports and the filtering policy. Every change "
            "is recorded in the appliance's audit trail under the account that made it.",
        },
        "components": {
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer", "description": "an API token (account page)"},
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "__Host-sgw",
                    "description": "a browser session; changes also need the X-CSRF-Token header",
                },
            },
            "schemas": {"Error": _obj(["error"], error=_S)},
        },
        "x-roles": {p.name: p.value for p in Permission},
        "paths": paths,
    }


_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
