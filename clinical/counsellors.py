"""Counsellor calendars: who at a site may take a patient's individual or family session.
Each counsellor has weekly hours they are available (site-local wall-clock time) and a
capacity of their own, sessions a week; a session goes to a counsellor free for the whole
of it with the fewest sessions that week (the program's order breaks ties). The store's
constraints decide when two bookings race for the same counsellor (infra/store)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta, tzinfo
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from clinical.assessment import LocalTime, Weekday
from clinical.identifiers import CaseManagerId, SiteId

StaffName = Annotated[str, Field(min_length=1, max_length=48, pattern=r"^[^\n\r\t]+$")]
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Availability(_Strict):
    """Hours a counsellor sees patients on a weekday, site-local time."""

    weekday: Weekday
    start: LocalTime
    end: LocalTime

    @model_validator(mode="after")
    def _ends_after_start(self) -> Availability:
        if self.end <= self.start:
            raise ValueError(f"availability on {self.weekday.value} ends before it starts")
        return self


class Counsellor(_Strict):
    id: CaseManagerId
    """Their staff ID (like CM-C01)."""
    name: StaffName
    site: SiteId
    availability: tuple[Availability, ...] = Field(min_length=1, max_length=21)
    sessions_per_week: Annotated[int, Field(ge=1, le=60)]
    """Their own capacity: at most this many sessions in a week (Monday to Sunday)."""

    @model_validator(mode="after")
    def _no_overlap(self) -> Counsellor:
        for day in WEEKDAYS:
            spans = sorted((a.start, a.end) for a in self.availability if a.weekday.value == day)
            for (_, end), (start, _) in itertools.pairwise(spans):
                if start < end:
                    raise ValueError(f"counsellor {self.id}: {day} availability overlaps")
        return self

    @property
    def weekly_hours(self) -> float:
        return sum(
            (a.end.hour * 60 + a.end.minute - a.start.hour * 60 - a.start.minute) / 60
            for a in self.availability
        )

    def free_for(self, local_start: datetime, hours: float) -> bool:
        """Whether one of their windows holds the whole session (site-local start)."""
        end = local_start + timedelta(hours=hours)
        if end.date() != local_start.date():
            return False
        day = WEEKDAYS[local_start.weekday()]
        return any(
            a.weekday.value == day and a.start <= local_start.time() and end.time() <= a.end
            for a in self.availability
        )


class CounsellingConfig(_Strict):
    """The program's counsellors, per site (none: sessions are booked without one, as
    before counsellor calendars)."""

    counsellors: tuple[Counsellor, ...] = ()
    session_types: tuple[str, ...] = ("individual_therapy", "family_therapy")
    """The sessions that need a counsellor."""

    @model_validator(mode="after")
    def _ids_once(self) -> CounsellingConfig:
        seen: set[str] = set()
        for i, c in enumerate(self.counsellors):
            if c.id in seen:
                raise ValueError(f"counselling.counsellors[{i}]: id {c.id!r} is used twice")
            seen.add(c.id)
        return self

    def at(self, site_id: str) -> list[Counsellor]:
        return [c for c in self.counsellors if c.site == site_id]


def week_of(local_start: datetime) -> date:
    """The Monday of a session's site-local week: a counsellor's capacity is per week."""
    return local_start.date() - timedelta(days=local_start.weekday())


def counsellors_for(
    counsellors: Iterable[Counsellor],
    local_start: datetime,
    hours: float,
    week_load: Mapping[str, int],
) -> list[Counsellor]:
    """Who could take the session, best first: free for all of it, under their capacity
    that week (`week_load`: sessions each has that week), the least loaded first."""
    fitting = [
        (week_load.get(c.id, 0), order, c)
        for order, c in enumerate(counsellors)
        if c.free_for(local_start, hours) and week_load.get(c.id, 0) < c.sessions_per_week
    ]
    return [c for _, _, c in sorted(fitting, key=lambda x: (x[0], x[1]))]


def why_none(counsellors: Iterable[Counsellor], local_start: datetime, hours: float) -> str:
    """A case manager's line for a session no counsellor could take."""
    listed = list(counsellors)
    if not listed:
        return "the site has no counsellor"
    if not any(c.free_for(local_start, hours) for c in listed):
        return f"no counsellor is available {local_start:%a %H:%M} for {hours:g} h"
    return "every counsellor available then is booked or at their weekly capacity"


class CounsellorLoad(_Strict):
    """One counsellor as operators see them: sessions booked this week and next (their
    site's weeks) against their capacity, and their hours available a week."""

    counsellor: Counsellor
    this_week: int
    next_week: int


def weeks_at(now: datetime, tz: tzinfo) -> tuple[date, date]:
    """This week's and next week's Mondays at a site."""
    this = week_of(now.astimezone(tz))
    return this, this + timedelta(days=7)


def load_view(
    counsellors: Iterable[Counsellor],
    loads: Mapping[tuple[str, date], int],
    weeks: Mapping[str, tuple[date, date]],
) -> list[CounsellorLoad]:
    """Each counsellor's load, in the program's order; `weeks`: this and next week's
    Mondays by site."""
    view = []
    for c in counsellors:
        this, after = weeks[c.site]
        view.append(
            CounsellorLoad(
                counsellor=c,
                this_week=loads.get((c.id, this), 0),
                next_week=loads.get((c.id, after), 0),
            )
        )
    return view
