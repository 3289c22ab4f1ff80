"""Searching the block log by IP address, name, group and dates, and exporting it as CSV. Shared by
the log search page and the API. Names on confidential lists (IWF, CTIRU) are shown only to accounts
that see safeguarding alerts."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from appliance import events
from appliance.events import BlockEvent
from appliance.policy.model import CATEGORIES, GROUPS
from appliance.store import Store
from webui import csvexport, fields
from webui.accounts import User
from webui.alerts import CONFIDENTIAL
from webui.errors import InputError
from webui.roles import Permission
from webui.times import local

PAGE = 100
PARAMETERS = ("ip", "name", "group", "from", "to")
WITHHELD = "(withheld: on a confidential list)"
CSV_HEADER = ["time", "client_ip", "mac", "group", "name", "category", "seen_at", "rule"]


def query(args: Mapping[str, Any], zone: ZoneInfo) -> events.Query:
    """A query from the search form or the API's parameters (ip, name, group, from, to)."""
    ip = fields.text(args.get("ip"), "IP address", 45, required=False)
    if ip:
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise InputError(f"IP address: {ip!r} is not an address such as 10.10.0.23") from None
    group = args.get("group") or None
    if group is not None:
        fields.choice(group, "Group", GROUPS)
    start = end = None
    if args.get("from"):
        start = datetime.combine(fields.day(args["from"], "From"), time(), zone)
    if args.get("to"):
        end = datetime.combine(fields.day(args["to"], "To") + timedelta(days=1), time(), zone)
    if start and end and end <= start:
        raise InputError("To: must be on or after From")
    name = fields.text(args.get("name"), "Name", 253, required=False).lower() or None
    return events.Query(client_ip=ip or None, name=name, group=group, start=start, end=end)


def shown_name(e: BlockEvent, viewer: User) -> str:
    if e.category in CONFIDENTIAL and not viewer.can(Permission.VIEW_ALERTS):
        return WITHHELD
    return e.name


def to_dict(e: BlockEvent, viewer: User) -> dict[str, Any]:
    return {
        "time": e.ts.isoformat(),
        "client_ip": e.client_ip,
        "mac": e.mac,
        "group": e.group,
        "name": shown_name(e, viewer),
        "category": e.category,
        "seen_at": e.layer,
        "rule": e.rule,
    }


def csv_rows(found: Iterator[BlockEvent], viewer: User, zone: ZoneInfo) -> Iterator[str]:
    """The export, a line at a time (the log can be large)."""

    def rows() -> Iterator[list[str]]:
        yield CSV_HEADER
        for e in found:
            category = CATEGORIES[e.category].title if e.category in CATEGORIES else (e.category or "")
            yield [
                e.ts.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
                e.client_ip,
                e.mac or "",
                e.group,
                shown_name(e, viewer),
                category,
                e.layer,
                e.rule,
            ]

    return csvexport.lines(rows())


def stream(state_dir: str, q: events.Query, viewer: User, zone: ZoneInfo) -> Iterator[str]:
    """The export of a search, read through its own connection: it is sent after the request's own
    connection has been closed."""
    with Store(state_dir) as store:
        yield from csv_rows(events.iterate(store, q), viewer, zone)


def describe(q: events.Query, zone: ZoneInfo) -> str:
    parts = []
    if q.client_ip:
        parts.append(f"IP {q.client_ip}")
    if q.name:
        parts.append(f"names containing {q.name!r}")
    if q.group:
        parts.append(f"group {q.group}")
    if q.start:
        parts.append(f"from {local(q.start, zone, with_time=False)}")
    if q.end:
        parts.append(f"to {local(q.end - timedelta(days=1), zone, with_time=False)}")
    return ", ".join(parts) or "everything"
