"""Times as the web UI reads and shows them: read from the database (where appliance.store.iso writes
them), shown in the appliance's local time (its time zone) on pages, in e-mails and in exports."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo


def parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def local(when: datetime | None, zone: ZoneInfo, with_time: bool = True) -> str:
    if when is None:
        return ""
    return when.astimezone(zone).strftime("%d %b %Y %H:%M" if with_time else "%a %d %b %Y")


def last_day(end: datetime, zone: ZoneInfo) -> str:
    """The last local day before end, an exclusive end such as midnight after an allow's last day."""
    return local(end - timedelta(microseconds=1), zone, with_time=False)
