"""The instant a test's journeys start: chosen, never inherited from the day the suite runs.

A run draws its start (a weekday, an hour and a minute at the site) from a seed, prints the
seed in pytest's header, and `CAREPATH_TEST_SEED=<seed>` reproduces it. Each time-skipping
server is stepped to the next such instant before a test enrols anyone, so a journey's
program day 0 falls where the seed says; the date is whatever follows the real now (the
test server cannot go back), which the tests must not depend on beyond the weekday and hour.
Tests that need a particular date (a daylight-saving change, 29 February) step to the next
occurrence of it with `step_to`."""

from __future__ import annotations

import calendar
import os
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from temporalio.testing import WorkflowEnvironment

SEED_VARIABLE = "CAREPATH_TEST_SEED"
SITE_ZONE = ZoneInfo("America/New_York")
"""The zone of the tests' default site (north)."""
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def run_seed() -> int:
    value = os.environ.get(SEED_VARIABLE)
    if value:
        try:
            return int(value)
        except ValueError:
            raise SystemExit(f"{SEED_VARIABLE}: {value!r} is not a whole number") from None
    return random.SystemRandom().randrange(1_000_000)


@dataclass(frozen=True)
class StartChoice:
    weekday: int  # Monday = 0
    hour: int
    minute: int

    @classmethod
    def from_seed(cls, seed: int) -> StartChoice:
        draw = random.Random(seed)
        return cls(draw.randrange(7), draw.randrange(24), draw.choice((0, 1, 17, 30, 45, 59)))

    def describe(self) -> str:
        return f"{WEEKDAYS[self.weekday]} {self.hour:02d}:{self.minute:02d}"


SEED = run_seed()
START = StartChoice.from_seed(SEED)


def next_start(
    after: datetime, choice: StartChoice = START, zone: ZoneInfo = SITE_ZONE
) -> datetime:
    """The first instant, a day or more after `after`, that is `choice`'s weekday and time at
    `zone` (UTC). A local time that does not exist that day is moved on by the gap."""
    day = after.astimezone(zone).date() + timedelta(days=1)
    day += timedelta(days=(choice.weekday - day.weekday()) % 7)
    wall = datetime.combine(day, time(choice.hour, choice.minute), tzinfo=zone)
    return wall.astimezone(UTC)


def next_date(
    after: datetime, month: int, day: int, hour: int = 10, leap: bool = False
) -> datetime:
    """The next `month`/`day` (at `hour` at the site) a day or more after `after`; with
    `leap`, in a leap year (whose 29 February the journey will cross)."""
    year = after.astimezone(SITE_ZONE).year
    while True:
        wanted = datetime.combine(date(year, month, day), time(hour), tzinfo=SITE_ZONE)
        if wanted > after + timedelta(days=1) and (not leap or calendar.isleap(year)):
            return wanted.astimezone(UTC)
        year += 1


async def step_to(env: WorkflowEnvironment, instant: datetime) -> datetime:
    """Move the time-skipping server's clock forward to `instant` (call before any journey
    runs on it); returns the server's time then."""
    now = await env.get_current_time()
    if instant < now:
        raise ValueError(f"cannot step back from {now} to {instant}")
    await env.sleep(instant - now)
    return await env.get_current_time()
