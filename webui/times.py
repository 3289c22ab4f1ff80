"""Times as the web UI stores and shows them: UTC ISO 8601 in the database, the appliance's local
time (its time zone) on pages, in e-mails and in exports."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def local(when: datetime | None, zone: ZoneInfo, with_time: bool = True) -> str:
    if when is None:
        return ""
    return when.astimezone(zone).strftime("%a %d %b %Y %H:%M" if with_time else "%a %d %b %Y")
