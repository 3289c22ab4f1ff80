"""Schedules: weekly windows and dated windows, limited to term time (or holidays) if asked.

Everything is in the appliance's local wall-clock time, so "12:00-13:00" is lunchtime in both GMT
and BST. A window is half-open, [start, end); one whose end is before its start runs past midnight
into the next day; "24:00" is the end of the day. When the clocks go forward, a window inside the
missing hour does not happen that day; when they go back, the repeated hour is inside the window
both times. Whether a day is in term is judged on the local date of the moment being tested."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from appliance.policy.model import PolicyError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
TERM_CONDITIONS = ("any", "in", "out")
# How far ahead next_change looks for a change before asking to be called again.
HORIZON = timedelta(days=8)
_WEEKLY = re.compile(r"^\s*(?P<days>[a-z,\-]+)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$")


def _parse_time(text: str, where: str) -> time | None:
    """A wall-clock time; None stands for 24:00, the end of the day."""
    if text == "24:00":
        return None
    try:
        return time.fromisoformat(text.zfill(5))
    except ValueError:
        raise PolicyError(f"{where}: {text!r} is not a time (HH:MM)") from None


def _parse_days(text: str, where: str) -> tuple[int, ...]:
    if text == "daily":
        return tuple(range(7))
    days: list[int] = []
    for part in text.split(","):
        ends = part.split("-")
        if len(ends) > 2 or any(e not in DAYS for e in ends):
            raise PolicyError(f"{where}: {part!r} is not a day or day range (e.g. mon-fri, sat,sun, daily)")
        first, last = DAYS.index(ends[0]), DAYS.index(ends[-1])
        days.extend((first + i) % 7 for i in range((last - first) % 7 + 1))
    return tuple(sorted(set(days)))


@dataclass(frozen=True)
class Weekly:
    days: tuple[int, ...]  # Monday = 0, the days on which the window starts
    start: time
    end: time | None  # None: 24:00

    @classmethod
    def parse(cls, text: str) -> Weekly:
        m = _WEEKLY.match(text.lower())
        if not m:
            raise PolicyError(f"weekly window {text!r}: expected DAYS HH:MM-HH:MM, e.g. mon-fri 12:00-13:00")
        start = _parse_time(m["start"], f"weekly window {text!r}")
        if start is None:
            raise PolicyError(f"weekly window {text!r}: a window cannot start at 24:00")
        end = _parse_time(m["end"], f"weekly window {text!r}")
        if end == start:
            raise PolicyError(f"weekly window {text!r}: starts and ends at the same time")
        return cls(_parse_days(m["days"], f"weekly window {text!r}"), start, end)

    def __str__(self) -> str:
        days = ",".join(DAYS[d] for d in self.days)
        end = "24:00" if self.end is None else self.end.strftime("%H:%M")
        return f"{days} {self.start:%H:%M}-{end}"

    @property
    def overnight(self) -> bool:
        return self.end is not None and self.end < self.start

    def contains(self, local: datetime) -> bool:
        t, day = local.time(), local.weekday()
        if self.overnight:
            assert self.end is not None
            return (day in self.days and t >= self.start) or ((day - 1) % 7 in self.days and t < self.end)
        return day in self.days and t >= self.start and (self.end is None or t < self.end)

    def boundaries(self, day: date) -> list[datetime]:
        """Local wall-clock times on day at which this window may open or close (naive)."""
        out = [datetime.combine(day, self.start)]
        out.append(
            datetime.combine(day + timedelta(days=1), time())
            if self.end is None
            else datetime.combine(day, self.end)
        )
        return out


@dataclass(frozen=True)
class Dated:
    start: datetime  # naive local wall-clock times
    end: datetime

    @classmethod
    def parse(cls, text: str) -> Dated:
        parts = text.split("/")
        try:
            start, end = (datetime.fromisoformat(p.strip()) for p in parts)
        except ValueError:
            raise PolicyError(
                f"dated window {text!r}: expected START/END, e.g. 2025-05-12T09:00/2025-05-12T12:00"
            ) from None
        if start.tzinfo or end.tzinfo:
            raise PolicyError(f"dated window {text!r}: give local times, without a UTC offset")
        if end <= start:
            raise PolicyError(f"dated window {text!r}: ends before it starts")
        return cls(start, end)

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%dT%H:%M}/{self.end:%Y-%m-%dT%H:%M}"


@dataclass(frozen=True)
class Schedule:
    """Active when the term condition holds and the moment is in any window (or, with no windows,
    always)."""

    weekly: tuple[Weekly, ...] = ()
    dated: tuple[Dated, ...] = ()
    terms: str = "any"

    def __post_init__(self) -> None:
        if self.terms not in TERM_CONDITIONS:
            raise PolicyError(f"terms must be one of {', '.join(TERM_CONDITIONS)}, not {self.terms!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "weekly": [str(w) for w in self.weekly],
            "dated": [str(d) for d in self.dated],
            "terms": self.terms,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schedule:
        return cls(
            tuple(Weekly.parse(w) for w in data.get("weekly", [])),
            tuple(Dated.parse(d) for d in data.get("dated", [])),
            data.get("terms", "any"),
        )

    def __str__(self) -> str:
        parts = [str(w) for w in self.weekly] + [str(d) for d in self.dated]
        when = "; ".join(parts) or "always"
        return when + {"any": "", "in": " (term time)", "out": " (outside term time)"}[self.terms]


@dataclass(frozen=True)
class Term:
    name: str
    start: date
    end: date  # inclusive

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise PolicyError(f"term {self.name!r} ends ({self.end}) before it starts ({self.start})")


@dataclass
class Calendar:
    """Named schedules evaluated in one time zone against the school's term dates."""

    zone: ZoneInfo
    terms: tuple[Term, ...] = ()
    schedules: dict[str, Schedule] = field(default_factory=dict)

    def in_term(self, day: date) -> bool:
        return any(t.start <= day <= t.end for t in self.terms)

    def active(self, name: str, at: datetime) -> bool:
        s = self.schedules[name]
        local = at.astimezone(self.zone).replace(tzinfo=None)
        if s.terms != "any" and self.in_term(local.date()) != (s.terms == "in"):
            return False
        if not s.weekly and not s.dated:
            return True
        return any(w.contains(local) for w in s.weekly) or any(d.start <= local < d.end for d in s.dated)

    def next_change(self, names: set[str] | frozenset[str], at: datetime) -> datetime:
        """The first moment after at when any of the named schedules turns on or off, or at + HORIZON
        if none does before then (call again at that moment)."""
        at = at.astimezone(UTC)
        limit = at + HORIZON
        now = {n: self.active(n, at) for n in names}
        for c in self._candidates(names, at, limit):
            if any(self.active(n, c) != was for n, was in now.items()):
                return c
        return limit

    def _candidates(self, names: set[str] | frozenset[str], at: datetime, limit: datetime) -> list[datetime]:
        """Every moment in (at, limit] at which a schedule's state can change: window edges, local
        midnights (term days) and the time zone's own transitions. Between two of these, nothing
        changes, so testing each in order finds the next change."""
        first = at.astimezone(self.zone).date() - timedelta(days=1)
        days = [first + timedelta(days=i) for i in range(HORIZON.days + 3)]
        naive: list[datetime] = [datetime.combine(d, time()) for d in days]
        for n in names:
            s = self.schedules[n]
            for w in s.weekly:
                for d in days:
                    naive.extend(w.boundaries(d))
            for dw in s.dated:
                naive.extend((dw.start, dw.end))
        out = {self._instant(t, fold) for t in naive for fold in (0, 1)}
        out.update(self._transitions(days))
        return sorted(c for c in out if at < c <= limit)

    def _instant(self, local: datetime, fold: int) -> datetime:
        return local.replace(tzinfo=self.zone, fold=fold).astimezone(UTC)

    def _transitions(self, days: list[date]) -> list[datetime]:
        """The instants at which the zone's UTC offset changes (clock changes) on these days."""
        out = []
        for d in days:
            lo = datetime.combine(d, time(), self.zone).astimezone(UTC)
            hi = lo + timedelta(days=1)
            if lo.astimezone(self.zone).utcoffset() == hi.astimezone(self.zone).utcoffset():
                continue
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                if mid.astimezone(self.zone).utcoffset() == lo.astimezone(self.zone).utcoffset():
                    lo = mid
                else:
                    hi = mid
            out.append(hi.replace(microsecond=0))
        return out
