"""A clinic's sites: where patients are seen, in which time zone, and on which days they are
closed.

Each site has an IANA zone: the program calendar, session slots, contact windows and task due
dates are wall-clock times there (`clinical.clock`). A site closes on its yearly holidays
(from configuration, known years ahead) and on unplanned closures an operator announces
while journeys run (weather, an outage). No session is booked on a closed day, one already
booked is cancelled, and neither counts as missed."""

from __future__ import annotations

import calendar
import datetime as dt
import functools
from datetime import tzinfo
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clinical.assessment import Weekday
from clinical.clock import ZoneName, zone
from clinical.identifiers import SiteId
from clinical.textfile import FileRefused, read_toml_file

ClosureReason = Annotated[str, Field(min_length=3, max_length=80, pattern=r"^[^\n\r\t]+$")]
"""Why a site is closed, as staff and patients read it ("snow", "Christmas Day"): never PHI."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class YearlyHoliday(_Strict):
    """A holiday every year: a fixed date (`date = "12-25"`) or the n-th weekday of a month
    (`month = 11, weekday = "thu", nth = 4`; `nth = -1` is the last)."""

    name: ClosureReason
    date: Annotated[str, Field(pattern=r"^\d\d-\d\d$")] | None = None
    month: Annotated[int, Field(ge=1, le=12)] | None = None
    weekday: Weekday | None = None
    nth: Literal[1, 2, 3, 4, 5, -1] | None = None

    @model_validator(mode="after")
    def _one_rule(self) -> YearlyHoliday:
        rule = (self.month, self.weekday, self.nth)
        if self.date is not None:
            if any(x is not None for x in rule):
                raise ValueError(f"holiday {self.name!r}: a date or month/weekday/nth, not both")
            month, day = (int(x) for x in self.date.split("-"))
            # 2028 is a leap year: 02-29 is a date, 02-30 is not.
            try:
                dt.date(2028, month, day)
            except ValueError:
                raise ValueError(f"holiday {self.name!r}: {self.date!r} is not a date") from None
        elif any(x is None for x in rule):
            raise ValueError(f"holiday {self.name!r}: needs a date, or month, weekday and nth")
        return self

    def in_year(self, year: int) -> dt.date | None:
        return _holiday_in(self.date, self.month, self.weekday, self.nth, year)


@functools.cache
def _holiday_in(
    fixed: str | None, month: int | None, weekday: Weekday | None, nth: int | None, year: int
) -> dt.date | None:
    """A yearly holiday's date in `year` (None when it has none that year). Cached: a journey
    asks for every day it books or checks, and the answer never changes."""
    if fixed is not None:
        m, d = (int(x) for x in fixed.split("-"))
        try:
            return dt.date(year, m, d)
        except ValueError:  # 29 February in a common year
            return None
    assert month is not None and weekday is not None and nth is not None
    days = [
        d
        for d in calendar.Calendar().itermonthdates(year, month)
        if d.month == month and d.weekday() == weekday.number
    ]
    if nth == -1:
        return days[-1]
    return days[nth - 1] if nth <= len(days) else None


class Closure(_Strict):
    """One day a site is closed."""

    site_id: SiteId
    date: dt.date
    reason: ClosureReason
    kind: Literal["holiday", "unplanned"] = "unplanned"
    announced_by: Annotated[
        str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._@-]+$")
    ] = "operator"


class Site(_Strict):
    site_id: SiteId
    name: Annotated[str, Field(min_length=1, max_length=80)]
    zone: ZoneName
    holidays: tuple[YearlyHoliday, ...] = ()

    @property
    def zone_info(self) -> tzinfo:
        return zone(self.zone)

    def holiday_on(self, day: dt.date) -> str | None:
        for holiday in self.holidays:
            if holiday.in_year(day.year) == day:
                return holiday.name
        return None


class ClosureCalendar(_Strict):
    """A site's closed days as a journey knows them: its holidays and the unplanned closures
    announced to it."""

    site: Site
    unplanned: tuple[Closure, ...] = ()

    def closed(self, day: dt.date) -> str | None:
        """Why the site is closed on `day`, or None when it is open."""
        for closure in self.unplanned:
            if closure.date == day:
                return closure.reason
        return self.site.holiday_on(day)

    def with_closure(self, closure: Closure) -> ClosureCalendar:
        if any(c.date == closure.date for c in self.unplanned):
            return self  # announced before: nothing changes
        return self.model_copy(update={"unplanned": (*self.unplanned, closure)})


class SiteError(ValueError):
    """A sites file that cannot be used, or a site that is not in it: one line."""


class SiteDirectory:
    """The clinic's sites, from a TOML file (`sites.toml` beside the programs by default)."""

    def __init__(self, sites: dict[str, Site]) -> None:
        self.sites = sites

    @classmethod
    def load(cls, path: Path) -> SiteDirectory:
        if not path.exists():
            raise SiteError(f"{path}: no sites file (each site needs its time zone)")
        try:
            raw = read_toml_file(path, "a sites file")
        except FileRefused as exc:
            raise SiteError(str(exc)) from None
        sites: dict[str, Site] = {}
        for site_id, body in (raw.get("sites") or {}).items():
            try:
                sites[site_id] = Site.model_validate({"site_id": site_id, **body})
            except (ValidationError, TypeError) as exc:
                raise SiteError(f"{path.name}: site {site_id!r}: {_first_error(exc)}") from None
        if not sites:
            raise SiteError(f"{path.name}: no [sites.<id>] table")
        return cls(sites)

    def get(self, site_id: str) -> Site:
        site = self.sites.get(site_id)
        if site is None:
            known = ", ".join(sorted(self.sites)) or "none"
            raise SiteError(f"site: {site_id!r} is not a site of this clinic (sites: {known})")
        return site


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        return f"{where}: {err['msg']}" if where else str(err["msg"])
    return str(exc)
