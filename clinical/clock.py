"""The program clock: maps program days to real instants and to a site's wall-clock time.

A program day is a wall-clock day at the patient's site (an IANA zone): day 0 is the local
midnight that starts the enrolment date, day 1.75 is 18:00 local the next day, whatever the
UTC offset is then. So a weekly 18:00 group stays at 18:00 across both daylight-saving
changes, and the real time between two program days is 23 or 25 hours across them.

Instants (what Temporal's timers and the store hold) are UTC. With a compressed clock
(`seconds_per_day` below 86,400, for demos and load tests) real time passes faster than the
calendar, which still reads like a clinic's (sessions at 09:00 on Mondays).

Local times that do not exist or happen twice follow one rule, RFC 5545's: a wall-clock time
in the spring-forward gap moves forward by the gap (02:30 becomes 03:30 daylight time); a
time that happens twice in the fall-back hour is its first occurrence (daylight time).

Journeys from before zones existed carry no zone and run on UTC, exactly as they did."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

DEFAULT_ZONE = "UTC"


@lru_cache(maxsize=64)
def zone(name: str) -> tzinfo:
    """The zone named `name` (IANA). UTC is `datetime.UTC` itself, so journeys from before
    zones existed compute exactly what they did. Raises ValueError for an unknown name."""
    if name == DEFAULT_ZONE:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. America/New_York)") from None


def check_zone(name: str) -> str:
    """Validator: `name` unchanged if it names a zone."""
    zone(name)
    return name


ZoneName = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(check_zone)]
"""An IANA time zone's name, checked against the zone database."""


def _offset(tz: tzinfo, at: datetime) -> float:
    """The UTC offset at `tz` at the (aware) instant `at`, in seconds."""
    offset = at.astimezone(tz).utcoffset()
    return 0.0 if offset is None else offset.total_seconds()


def local(wall: datetime, tz: tzinfo) -> datetime:
    """A naive wall-clock time at `tz` as an aware local time, by the module's rule for
    times that do not exist (moved forward by the gap) or happen twice (the first)."""
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC).astimezone(tz)


class ProgramClock(BaseModel):
    model_config = ConfigDict(frozen=True)

    origin_instant: datetime
    """The real instant of program day 0 (local midnight, or earlier with a compressed clock)."""
    origin_date: date
    """The site's local date of program day 0: the enrolment date."""
    seconds_per_day: float
    zone: str = DEFAULT_ZONE

    @classmethod
    def starting_at(
        cls, now: datetime, seconds_per_day: float, zone_name: str = DEFAULT_ZONE
    ) -> ProgramClock:
        tz = zone(zone_name)
        here = now.astimezone(tz)
        midnight = local(datetime.combine(here.date(), time(0)), tz)
        elapsed = (now - midnight).total_seconds()
        return cls(
            origin_instant=now - timedelta(seconds=elapsed / 86400 * seconds_per_day),
            origin_date=here.date(),
            seconds_per_day=seconds_per_day,
            zone=zone_name,
        )

    @property
    def tz(self) -> tzinfo:
        return zone(self.zone)

    def _midnight_wall(self) -> datetime:
        return datetime.combine(self.origin_date, time(0))

    def instant(self, day: float) -> datetime:
        """The real instant at which program day `day` (fractional) happens."""
        if self.zone == DEFAULT_ZONE:
            return self.origin_instant + timedelta(seconds=day * self.seconds_per_day)
        tz, wall = self.tz, self._midnight_wall()
        # Real seconds from local midnight on day 0 to that wall-clock time (UTC arithmetic:
        # two times of one zone subtract as wall clocks in Python), scaled by the clock.
        real = local(wall + timedelta(days=day), tz).astimezone(UTC) - local(wall, tz).astimezone(
            UTC
        )
        return self.origin_instant + real * (self.seconds_per_day / 86400)

    def day(self, instant: datetime) -> float:
        """The program day (fractional, wall clock at the site) at real instant `instant`."""
        day = (instant - self.origin_instant).total_seconds() / self.seconds_per_day
        if self.zone == DEFAULT_ZONE:
            return day
        tz = self.tz
        midnight = local(self._midnight_wall(), tz).astimezone(UTC)
        # Real time elapsed on the calendar, then how far the wall clock has moved from it.
        real = midnight + timedelta(days=day)
        return day + (_offset(tz, real) - _offset(tz, midnight)) / 86400

    def calendar(self, day: float) -> datetime:
        """The site's local date and time of program day `day` (aware, in the site's zone)."""
        if self.zone == DEFAULT_ZONE:
            return datetime.combine(self.origin_date, time(0), tzinfo=UTC) + timedelta(days=day)
        return local(self._midnight_wall() + timedelta(days=day), self.tz)

    def calendar_of(self, instant: datetime) -> datetime:
        """The site's local date and time at real instant `instant` (the same instant with
        a real clock; later with a compressed one)."""
        if self.zone == DEFAULT_ZONE:
            midnight = datetime.combine(self.origin_date, time(0), tzinfo=UTC)
            # Scaled, not via `day()`: a real clock's factor is 1.0, so no rounding creeps in.
            return midnight + (instant - self.origin_instant) * (86400 / self.seconds_per_day)
        return self.calendar(self.day(instant))

    def calendar_day(self, at: datetime) -> float:
        """The program day of a local date and time (inverse of `calendar`); a naive `at`
        is wall-clock time at the site."""
        wall = at if at.tzinfo is None else at.astimezone(self.tz).replace(tzinfo=None)
        return (wall - self._midnight_wall()).total_seconds() / 86400

    def local_date(self, day: float) -> date:
        """The site's calendar date of program day `day`."""
        return self.origin_date + timedelta(days=int(day // 1))

    def duration(self, days: float) -> timedelta:
        return timedelta(seconds=days * self.seconds_per_day)


def next_open_day(
    clock: ProgramClock, day: float, closed: Callable[[date], object] | None
) -> float:
    """`day`, or the same time on the first day after it the site is open (`closed(local
    date)` says why not); after a month of closed days, `day` a month on rather than never."""
    for _ in range(31):
        if closed is None or not closed(clock.local_date(day)):
            break
        day += 1
    return day


def first_monday_after(day: float, origin_weekday: int) -> int:
    """The first whole program day after `day` that falls on a Monday.

    `origin_weekday` is the weekday of program day 0 (Monday = 0)."""
    candidate = int(day) + 1
    while (origin_weekday + candidate) % 7 != 0:
        candidate += 1
    return candidate
