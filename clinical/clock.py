"""The program clock: maps program days to real instants and to calendar dates.

A program day lasts `seconds_per_day` real seconds. Day 0 is the midnight (UTC) that starts
the enrolment date, so with a real clock calendar times and instants coincide; with a
compressed clock the calendar still reads like a clinic's (sessions at 09:00 on Mondays)
while time passes faster."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from pydantic import BaseModel, ConfigDict


class ProgramClock(BaseModel):
    model_config = ConfigDict(frozen=True)

    origin_instant: datetime
    origin_date: date
    seconds_per_day: float

    @classmethod
    def starting_at(cls, now: datetime, seconds_per_day: float) -> ProgramClock:
        now = now.astimezone(UTC)
        midnight = datetime.combine(now.date(), time(0), tzinfo=UTC)
        fraction = (now - midnight).total_seconds() / 86400
        return cls(
            origin_instant=now - timedelta(seconds=fraction * seconds_per_day),
            origin_date=now.date(),
            seconds_per_day=seconds_per_day,
        )

    def instant(self, day: float) -> datetime:
        """The real instant at which program day `day` (fractional) happens."""
        return self.origin_instant + timedelta(seconds=day * self.seconds_per_day)

    def day(self, instant: datetime) -> float:
        return (instant - self.origin_instant).total_seconds() / self.seconds_per_day

    def calendar(self, day: float) -> datetime:
        """The clinic-calendar date and time of program day `day`."""
        return datetime.combine(self.origin_date, time(0), tzinfo=UTC) + timedelta(days=day)

    def calendar_of(self, instant: datetime) -> datetime:
        """The clinic-calendar date and time at real instant `instant` (the same instant
        with a real clock; later with a compressed one)."""
        midnight = datetime.combine(self.origin_date, time(0), tzinfo=UTC)
        # Scaled, not via `day()`: a real clock's factor is 1.0, so no rounding creeps in.
        return midnight + (instant - self.origin_instant) * (86400 / self.seconds_per_day)

    def calendar_day(self, at: datetime) -> float:
        """The program day of a clinic-calendar date and time (inverse of `calendar`)."""
        midnight = datetime.combine(self.origin_date, time(0), tzinfo=UTC)
        return (at - midnight).total_seconds() / 86400

    def duration(self, days: float) -> timedelta:
        return timedelta(seconds=days * self.seconds_per_day)


def first_monday_after(day: float, origin_weekday: int) -> int:
    """The first whole program day after `day` that falls on a Monday.

    `origin_weekday` is the weekday of program day 0 (Monday = 0)."""
    candidate = int(day) + 1
    while (origin_weekday + candidate) % 7 != 0:
        candidate += 1
    return candidate
