"""A clinic's own time as pure rules: the site's program clock across daylight saving, the
rule for local times that do not exist or happen twice, holidays, closures and make-ups, and
reminders in the patient's own zone. No Temporal here."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clinical.assessment import Assessment, ContactWindow
from clinical.attendance import SessionRecord, SessionStatus
from clinical.careplan import plan_care, week_sessions
from clinical.clock import ProgramClock, first_monday_after
from clinical.closures import MakeUp, is_make_up, make_up, split_closed
from clinical.phases import Phase
from clinical.placement import place_enrolment
from clinical.protocol import ProgramCatalog, ProgramProtocol
from clinical.reminders import send_time
from clinical.sites import Closure, ClosureCalendar, Site, SiteDirectory, SiteError, YearlyHoliday
from tests.support import PROGRAMS, make_enrolment

NY = ZoneInfo("America/New_York")
LA = ZoneInfo("America/Los_Angeles")


def clock_at(local: datetime, seconds_per_day: float = 86400) -> ProgramClock:
    return ProgramClock.starting_at(local.astimezone(UTC), seconds_per_day, str(local.tzinfo))


# --- the program clock ---------------------------------------------------------------------


def test_an_evening_group_stays_at_six_across_both_daylight_saving_changes() -> None:
    clock = clock_at(datetime(2027, 1, 13, 20, 15, tzinfo=NY))
    assert clock.origin_date == date(2027, 1, 13)  # the site's date, not UTC's (01:15 next day)
    times = {}
    for when in (date(2027, 1, 14), date(2027, 4, 15), date(2027, 11, 11)):
        day = (when - clock.origin_date).days + 18 / 24
        times[when] = (clock.calendar(day), clock.instant(day))
    assert [t.strftime("%H:%M %z") for t, _ in times.values()] == [
        "18:00 -0500",
        "18:00 -0400",
        "18:00 -0500",
    ]
    assert [i.strftime("%H:%M") for _, i in times.values()] == ["23:00", "22:00", "23:00"]
    # The day of the spring change is 23 real hours long, the autumn one 25.
    spring = (date(2027, 3, 14) - clock.origin_date).days
    autumn = (date(2027, 11, 7) - clock.origin_date).days
    assert clock.instant(spring + 1) - clock.instant(spring) == timedelta(hours=23)
    assert clock.instant(autumn + 1) - clock.instant(autumn) == timedelta(hours=25)


def test_a_time_in_the_spring_gap_moves_on_and_a_doubled_time_is_the_first() -> None:
    clock = clock_at(datetime(2027, 3, 1, 9, tzinfo=NY))
    spring = (date(2027, 3, 14) - clock.origin_date).days
    gap = clock.calendar(spring + 2.5 / 24)  # 02:30 does not exist that night
    assert (gap.hour, gap.minute, gap.utcoffset()) == (3, 30, timedelta(hours=-4))
    assert clock.instant(spring + 2.5 / 24) == datetime(2027, 3, 14, 7, 30, tzinfo=UTC)
    autumn = (date(2027, 11, 7) - clock.origin_date).days
    twice = clock.calendar(autumn + 1.5 / 24)  # 01:30 happens twice: the first, daylight time
    assert (twice.hour, twice.utcoffset()) == (1, timedelta(hours=-4))
    assert clock.instant(autumn + 1.5 / 24) == datetime(2027, 11, 7, 5, 30, tzinfo=UTC)


@settings(max_examples=200, deadline=None)
@given(
    start=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2030, 12, 31)),
    days=st.floats(min_value=0, max_value=700, allow_nan=False),
    zone=st.sampled_from(["America/New_York", "America/Los_Angeles", "Europe/London", "UTC"]),
    seconds_per_day=st.sampled_from([86400.0, 3600.0, 2.5]),
)
def test_instants_and_program_days_round_trip(
    start: datetime, days: float, zone: str, seconds_per_day: float
) -> None:
    clock = ProgramClock.starting_at(start.replace(tzinfo=UTC), seconds_per_day, zone)
    # Away from the gap (where the rule moves a time on), day -> instant -> day is exact.
    wall = clock.calendar(days)
    if wall.replace(tzinfo=None) == datetime.combine(clock.origin_date, time(0)) + timedelta(
        days=days
    ):
        assert clock.day(clock.instant(days)) == pytest.approx(days, abs=1e-6)
        assert clock.calendar_day(wall) == pytest.approx(days, abs=1e-6)
    assert clock.local_date(days) == clock.origin_date + timedelta(days=int(days))


def test_a_journey_from_before_zones_computes_exactly_what_it_did() -> None:
    """No zone: UTC, with the arithmetic the recorded histories were made with."""
    now = datetime(2027, 1, 13, 23, 30, tzinfo=UTC)
    clock = ProgramClock.starting_at(now, 120.0)
    midnight = datetime(2027, 1, 13, tzinfo=UTC)
    fraction = (now - midnight).total_seconds() / 86400
    assert clock.origin_instant == now - timedelta(seconds=fraction * 120.0)
    for day in (0.0, 1.375, 100.75, 365.4166):
        assert clock.instant(day) == clock.origin_instant + timedelta(seconds=day * 120.0)
        assert clock.calendar(day) == midnight + timedelta(days=day)
    assert clock.zone == "UTC"


def test_the_first_treatment_monday_is_a_monday_at_the_site_whatever_the_weekday() -> None:
    for offset in range(7):
        enrolled = datetime(2027, 1, 4, 21, 30, tzinfo=NY) + timedelta(days=offset)
        clock = clock_at(enrolled)
        monday = first_monday_after(0.9, clock.origin_date.weekday())
        assert clock.calendar(monday).strftime("%a %H:%M") == "Mon 00:00"
        assert 1 <= monday <= 7


# --- sites and holidays --------------------------------------------------------------------


def test_yearly_holidays_fall_on_their_dates() -> None:
    thanksgiving = YearlyHoliday(name="Thanksgiving", month=11, weekday="thu", nth=4)
    memorial = YearlyHoliday(name="Memorial Day", month=5, weekday="mon", nth=-1)
    leap = YearlyHoliday(name="Leap day", date="02-29")
    assert thanksgiving.in_year(2027) == date(2027, 11, 25)
    assert memorial.in_year(2027) == date(2027, 5, 31)
    assert (leap.in_year(2028), leap.in_year(2027)) == (date(2028, 2, 29), None)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('zone = "America/Nowhere"', "'America/Nowhere' is not an IANA time zone"),
        ('zone = "UTC"\nholidays = [{ name = "x y", date = "02-30" }]', "'02-30' is not a date"),
        (
            'zone = "UTC"\nholidays = [{ name = "Odd day", month = 13, weekday = "mon", nth = 1 }]',
            "month",
        ),
        ('zone = "UTC"\nholidays = [{ name = "Half", date = "12-25", nth = 1 }]', "not both"),
        ('zone = "UTC"\nopens = "9"', "opens"),
    ],
)
def test_a_broken_sites_file_is_refused_in_one_line_naming_the_field(
    tmp_path: Path, body: str, message: str
) -> None:
    path = tmp_path / "sites.toml"
    path.write_text(f'[sites.north]\nname = "North"\n{body}\n')
    with pytest.raises(SiteError) as refused:
        SiteDirectory.load(path)
    assert message in str(refused.value) and "north" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_an_unknown_site_is_refused_naming_the_known_ones() -> None:
    sites = SiteDirectory.load(PROGRAMS / "sites.toml")
    with pytest.raises(SiteError, match=r"site: 'west' is not a site of this clinic \(sites: "):
        sites.get("west")
    assert sites.get("north").zone == "America/New_York"
    assert sites.get("south").zone == "America/Los_Angeles"


# --- closures and make-ups -----------------------------------------------------------------


def _first_week(commitments: list[dict[str, str]] | None = None):
    protocol = ProgramCatalog(PROGRAMS).load("default-iop")
    overrides = {} if commitments is None else {"commitments": commitments}
    enrolment = make_enrolment(**overrides)
    plan = plan_care(enrolment.assessment, place_enrolment(enrolment, protocol), protocol)
    clock = clock_at(datetime(2027, 1, 6, 11, tzinfo=NY))  # a Wednesday
    monday = first_monday_after(0.5, clock.origin_date.weekday())
    specs = week_sessions(plan, Phase.intensive, 1, 1, monday, clock, protocol)
    return protocol, enrolment, clock, monday, specs


def _make_up(
    week: list[SessionRecord],
    phase: Phase,
    monday: int,
    calendar: ClosureCalendar,
    clock: ProgramClock,
    protocol: ProgramProtocol,
    assessment: Assessment,
) -> MakeUp:
    """The week's make-up the evening before its Monday."""
    return make_up(
        week,
        phase=phase,
        week_start_day=monday,
        now_day=monday - 0.5,
        calendar=calendar,
        clock=clock,
        protocol=protocol,
        assessment=assessment,
    )


def test_a_session_on_a_holiday_is_cancelled_and_a_make_up_fills_the_week() -> None:
    protocol, enrolment, clock, monday, specs = _first_week()
    first = min((s for s in specs if s.attendee == "patient"), key=lambda s: s.day).starts_at.date()
    site = Site(
        site_id="north",
        name="North",
        zone="America/New_York",
        holidays=(YearlyHoliday(name="Founders Day", date=first.strftime("%m-%d")),),
    )
    calendar = ClosureCalendar(site=site)
    kept, closed = split_closed(specs, calendar, clock)
    assert closed and {c.starts_at.date() for c in closed} == {first}
    assert {c.status for c in closed} == {SessionStatus.cancelled}
    assert {c.cancelled_for for c in closed} == {"site closed: Founders Day"}
    week = [*(SessionRecord.booked(s) for s in kept), *closed]
    found = _make_up(week, Phase.intensive, monday, calendar, clock, protocol, enrolment.assessment)
    assert found.short_by == 0 and len(found.sessions) == 1
    (extra,) = found.sessions
    assert is_make_up(extra.session_id) and extra.session_id == "INT1-W01-M1"
    days_before = {s.starts_at.date() for s in kept}
    assert extra.starts_at.date() not in days_before | {first}
    assert extra.starts_at.astimezone(NY).strftime("%H:%M") in ("09:00", "18:00", "10:00")
    # The patient works on Tuesdays 08:00-17:00: no make-up then.
    assert not (extra.starts_at.strftime("%a") == "Tue" and extra.starts_at.hour < 17)


def test_no_free_slot_for_a_make_up_is_left_to_the_case_manager() -> None:
    busy = [
        {"weekday": d, "start": "07:00", "end": "23:00", "kind": "work"}
        for d in ("mon", "tue", "wed", "thu", "fri", "sat")
    ]
    protocol, enrolment, clock, monday, specs = _first_week()
    every_day = Site(site_id="north", name="North", zone="America/New_York")
    dates = sorted({s.starts_at.date() for s in specs if s.attendee == "patient"})
    calendar = ClosureCalendar(
        site=every_day,
        unplanned=(Closure(site_id="north", date=dates[0], reason="snow"),),
    )
    kept, closed = split_closed(specs, calendar, clock)
    week = [*(SessionRecord.booked(s) for s in kept), *closed]
    blocked = enrolment.assessment.model_copy(
        update={"commitments": make_enrolment(commitments=busy).assessment.commitments}
    )
    found = _make_up(week, Phase.intensive, monday, calendar, clock, protocol, blocked)
    assert (found.sessions, found.short_by) == ([], 1)
    # Step-down may sit below the floor: no make-up asked there.
    assert _make_up(week, Phase.step_down, monday, calendar, clock, protocol, blocked).short_by == 0


def test_announcing_a_closure_twice_changes_nothing() -> None:
    site = Site(site_id="north", name="North", zone="America/New_York")
    snow = Closure(site_id="north", date=date(2027, 1, 25), reason="snow")
    once = ClosureCalendar(site=site).with_closure(snow)
    assert once.with_closure(snow) is once
    assert once.closed(date(2027, 1, 25)) == "snow" and once.closed(date(2027, 1, 26)) is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"reason": "x"}, "reason"),
        ({"reason": "snow\nday"}, "reason"),
        ({"site_id": "No Site"}, "site_id"),
        ({"date": "2027-02-30"}, "date"),
    ],
)
def test_a_bad_closure_is_refused_naming_the_field(fields: dict[str, str], message: str) -> None:
    from pydantic import ValidationError

    data = {"site_id": "north", "date": "2027-01-25", "reason": "snow", **fields}
    with pytest.raises(ValidationError, match=message):
        Closure.model_validate(data)


# --- reminders in the patient's window -----------------------------------------------------


def test_a_reminder_comes_in_the_patients_own_window_and_never_on_a_closed_day() -> None:
    session = datetime(2027, 1, 14, 9, 0, tzinfo=NY)  # Thursday 09:00 at the site
    window = ContactWindow(start=time(9), end=time(12))
    at = send_time(session, window, 24)
    assert at == datetime(2027, 1, 13, 9, 0, tzinfo=NY)
    # A patient in Los Angeles: 09:00-12:00 there is 12:00-15:00 at the site, and 24 hours
    # before the session is 06:00 in LA: the window of the day before.
    west = ContactWindow(start=time(9), end=time(12), zone="America/Los_Angeles")
    at = send_time(session, west, 24)
    assert at.astimezone(LA) == datetime(2027, 1, 12, 12, 0, tzinfo=LA)
    # The site is closed on the 13th: the reminder goes the open day before.
    closed = {date(2027, 1, 13)}
    at = send_time(session, window, 24, lambda d: d in closed)
    assert at == datetime(2027, 1, 12, 12, 0, tzinfo=NY)
    # The window's clock in summer is still 09:00-12:00 local.
    summer = send_time(datetime(2027, 7, 15, 9, tzinfo=NY), window, 24)
    assert summer.strftime("%H:%M %z") == "09:00 -0400"


def test_an_unknown_patient_zone_is_refused_naming_the_field() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="zone"):
        ContactWindow.model_validate({"start": "09:00", "end": "12:00", "zone": "Mars/Olympus"})
