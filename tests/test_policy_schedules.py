"""Schedules across midnight, weekends, term boundaries and daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.policy.model import PolicyError
from appliance.policy.schedules import HORIZON, Calendar, Dated, Schedule, Term, Weekly

LONDON = ZoneInfo("Europe/London")


def calendar(**schedules: Schedule) -> Calendar:
    terms = (
        Term("Autumn 1", date(2025, 9, 3), date(2025, 10, 24)),
        Term("Autumn 2", date(2025, 11, 3), date(2025, 12, 19)),
    )
    return Calendar(LONDON, terms, dict(schedules))


def weekly(*windows: str, terms: str = "any") -> Schedule:
    return Schedule(tuple(Weekly.parse(w) for w in windows), terms=terms)


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=LONDON)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_lunch_on_weekdays_in_both_gmt_and_bst() -> None:
    cal = calendar(lunch=weekly("mon-fri 12:00-13:00"))
    assert cal.active("lunch", local(2025, 1, 15, 12, 0))  # Wednesday, GMT
    assert cal.active("lunch", local(2025, 7, 16, 12, 59))  # Wednesday, BST
    assert cal.active("lunch", utc(2025, 7, 16, 11, 30))  # 12:30 BST
    assert not cal.active("lunch", utc(2025, 7, 16, 12, 30))  # 13:30 BST
    assert not cal.active("lunch", local(2025, 7, 16, 13, 0))  # end is exclusive
    assert not cal.active("lunch", local(2025, 7, 19, 12, 30))  # Saturday


def test_window_across_midnight() -> None:
    cal = calendar(night=weekly("fri 22:00-06:00"))
    assert not cal.active("night", local(2025, 6, 13, 21, 59))  # Friday
    assert cal.active("night", local(2025, 6, 13, 22, 0))
    assert cal.active("night", local(2025, 6, 14, 0, 0))  # Saturday midnight
    assert cal.active("night", local(2025, 6, 14, 5, 59))
    assert not cal.active("night", local(2025, 6, 14, 6, 0))
    assert not cal.active("night", local(2025, 6, 15, 3, 0))  # Sunday: only Friday nights
    assert cal.next_change({"night"}, local(2025, 6, 14, 1, 0)) == local(2025, 6, 14, 6, 0)
    assert cal.next_change({"night"}, local(2025, 6, 14, 7, 0)) == local(2025, 6, 20, 22, 0)


def test_weekend_and_whole_days() -> None:
    cal = calendar(weekend=weekly("sat,sun 00:00-24:00"), long=weekly("fri-mon 09:00-10:00"))
    assert not cal.active("weekend", local(2025, 6, 13, 23, 59, 59))
    assert cal.active("weekend", local(2025, 6, 14, 0, 0))
    assert cal.active("weekend", local(2025, 6, 15, 23, 59, 59))
    assert not cal.active("weekend", local(2025, 6, 16, 0, 0))
    assert Weekly.parse("fri-mon 09:00-10:00").days == (0, 4, 5, 6)  # a range may wrap the week
    assert cal.active("long", local(2025, 6, 16, 9, 30)) and not cal.active("long", local(2025, 6, 17, 9, 30))


def test_term_boundaries() -> None:
    cal = calendar(term_lunch=weekly("daily 12:00-13:00", terms="in"), holiday=Schedule(terms="out"))
    assert not cal.active("term_lunch", local(2025, 9, 2, 12, 30))  # the day before term
    assert cal.active("term_lunch", local(2025, 9, 3, 12, 30))  # first day
    assert cal.active("term_lunch", local(2025, 10, 24, 12, 30))  # last day is in term
    assert not cal.active("term_lunch", local(2025, 10, 25, 12, 30))  # half term
    assert cal.active("holiday", local(2025, 10, 27, 8)) and not cal.active("holiday", local(2025, 11, 3, 0))
    # From the last evening of half term, the next change is the first lunch of the new half
    assert cal.next_change({"term_lunch"}, local(2025, 11, 2, 20)) == local(2025, 11, 3, 12)
    assert cal.next_change({"holiday"}, local(2025, 10, 31, 8)) == local(2025, 11, 3, 0)


def test_clocks_going_forward() -> None:
    # 30 March 2025: at 01:00 GMT London goes to 02:00 BST; 01:00-01:59 local never happens.
    cal = calendar(early=weekly("sun 01:30-02:30"), lunch=weekly("sun 12:00-13:00"))
    assert not cal.active("early", utc(2025, 3, 30, 0, 59))
    assert cal.active("early", utc(2025, 3, 30, 1, 0))  # the clock jumps to 02:00, inside the window
    assert not cal.active("early", utc(2025, 3, 30, 1, 30))  # 02:30 BST
    assert cal.next_change({"early"}, utc(2025, 3, 30, 0, 0)) == utc(2025, 3, 30, 1, 0)
    assert cal.next_change({"early"}, utc(2025, 3, 30, 1, 0)) == utc(2025, 3, 30, 1, 30)
    assert cal.next_change({"lunch"}, utc(2025, 3, 30, 0, 0)) == utc(2025, 3, 30, 11, 0)  # 12:00 BST


def test_clocks_going_back() -> None:
    # 26 October 2025: at 02:00 BST London goes back to 01:00 GMT; 01:00-01:59 happens twice.
    cal = calendar(early=weekly("sun 01:00-01:30"), lunch=weekly("sun 12:00-13:00"))
    changes, t = [], utc(2025, 10, 25, 23, 0)
    for _ in range(4):
        t = cal.next_change({"early"}, t)
        changes.append(t)
    assert changes == [
        utc(2025, 10, 26, 0, 0),
        utc(2025, 10, 26, 0, 30),
        utc(2025, 10, 26, 1, 0),
        utc(2025, 10, 26, 1, 30),
    ]
    assert cal.next_change({"lunch"}, utc(2025, 10, 26, 3)) == utc(2025, 10, 26, 12, 0)  # 12:00 GMT


def test_dated_windows_and_exam_days() -> None:
    cal = calendar(exam=Schedule(dated=(Dated.parse("2025-05-12T09:00/2025-05-12T12:00"),)))
    assert cal.active("exam", local(2025, 5, 12, 9, 0)) and not cal.active("exam", local(2025, 5, 12, 12, 0))
    assert cal.next_change({"exam"}, local(2025, 5, 11, 0)) == local(2025, 5, 12, 9)
    far = local(2025, 1, 1)
    assert cal.next_change({"exam"}, far) == far + HORIZON  # nothing within the horizon: ask again then


@pytest.mark.parametrize(
    "text, message",
    [
        ("mon-fry 12:00-13:00", "not a day"),
        ("mon 25:00-26:00", "not a time"),
        ("mon 12:00-12:00", "same time"),
        ("monday", "expected DAYS"),
        ("mon 24:00-01:00", "cannot start at 24:00"),
    ],
)
def test_bad_weekly_windows(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Weekly.parse(text)


@pytest.mark.parametrize(
    "text, message",
    [
        ("2025-05-12T12:00/2025-05-12T09:00", "ends before"),
        ("2025-05-12", "expected START/END"),
        ("2025-05-12T09:00+01:00/2025-05-12T12:00+01:00", "without a UTC offset"),
    ],
)
def test_bad_dated_windows(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Dated.parse(text)


def test_bad_terms() -> None:
    with pytest.raises(PolicyError, match="ends"):
        Term("x", date(2025, 9, 3), date(2025, 9, 1))
    with pytest.raises(PolicyError, match="terms must be"):
        Schedule(terms="sometimes")


def test_round_trip() -> None:
    s = Schedule(
        (Weekly.parse("mon-fri 12:00-13:00"), Weekly.parse("sat 22:00-24:00")),
        (Dated.parse("2025-05-12T09:00/2025-05-12T12:00"),),
        "in",
    )
    assert Schedule.from_dict(s.to_dict()) == s


times = st.integers(0, 47).map(lambda i: f"{i // 2:02d}:{30 * (i % 2):02d}")


@st.composite
def windows(draw: st.DrawFn) -> str:
    days = draw(st.sampled_from(["mon", "sat,sun", "mon-fri", "daily", "fri-mon", "sun"]))
    start, end = draw(times), draw(times)
    if start == end:
        end = "24:00"
    return f"{days} {start}-{end}"


@settings(max_examples=25, deadline=None)
@given(
    st.lists(windows(), min_size=1, max_size=3),
    st.sampled_from(["any", "in", "out"]),
    st.sampled_from(["Europe/London", "America/New_York", "Australia/Lord_Howe", "UTC"]),
    st.datetimes(datetime(2025, 1, 1), datetime(2026, 12, 31)),
)
def test_next_change_is_the_first_change(specs: list[str], terms: str, zone: str, start: datetime) -> None:
    """Checked against a minute-by-minute walk (every window edge falls on a whole minute, and Lord
    Howe's clocks move by half an hour)."""
    cal = Calendar(ZoneInfo(zone), calendar().terms, {"s": weekly(*specs, terms=terms)})
    t = start.replace(second=0, microsecond=0, tzinfo=UTC)
    change = cal.next_change({"s"}, t)
    state = cal.active("s", t)
    step = t + timedelta(minutes=1)
    while step < change:
        assert cal.active("s", step) == state, step
        step += timedelta(minutes=1)
    assert change == t + HORIZON or cal.active("s", change) != state
