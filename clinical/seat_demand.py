"""Will the group tracks hold the admissions? Before a what-if runs for an hour, the
program's intensive seats set against the seats its admissions would need (Little's law:
admissions a week times the weeks each holds a seat). A site's tracks at a level that
need more seats than they have keep a waitlist that grows for as long as admissions go
on: each newcomer waits longer than the one before.

The weeks are the care plan's intensive weeks. The estimate is rough both ways: a patient
who drops out frees their seat early, and one whose attendance holds up their step-down
keeps it longer (up to the program's most weeks)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from clinical.assessment import Assessment
from clinical.careplan import intensive_weeks, uses_telehealth
from clinical.groups import misfit, tracks_for
from clinical.placement import place
from clinical.protocol import ProgramProtocol


class SeatDemand(BaseModel):
    """A site's intensive tracks at one level, and what an average admission asks of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site_id: str
    level: str
    seats: int = Field(ge=1)
    placed: float = Field(ge=0, le=1)
    """The share of all admissions (every site's) who would take one of these seats."""
    weeks: float = Field(ge=0)
    """The intensive weeks each of them is planned to hold it (the mean)."""

    @property
    def seat_weeks(self) -> float:
        """Seat-weeks one admission to the clinic asks of these tracks, on average."""
        return self.placed * self.weeks

    def needed(self, per_week: float) -> float:
        """Seats these tracks need, at `per_week` admissions a week, once they are full."""
        return per_week * self.seat_weeks

    def holds(self) -> float:
        """Admissions a week (to the clinic) these tracks keep up with."""
        return self.seats / self.seat_weeks if self.seat_weeks else float("inf")

    def explain(self, per_week: float) -> str:
        return (
            f"{self.site_id}'s level {self.level} groups have {self.seats} seats; at "
            f"{per_week:g} admissions a week they would need about "
            f"{self.needed(per_week):.0f} ({self.placed:.0%} of the clinic's admissions "
            f"placed there, {self.weeks:.1f} intensive weeks each): they keep up with about "
            f"{self.holds():.1f} a week, and beyond that their waitlist grows for as long "
            "as admissions go on"
        )


def seat_demand(
    protocol: ProgramProtocol, admissions: Iterable[tuple[str, Assessment]]
) -> list[SeatDemand]:
    """Each site's intensive tracks at each level, by site and level, with the share of
    `admissions` (site, assessment) who would take one of their seats: placed at that
    level at that site, with a track whose days their commitments leave free (the rest
    have schedules of their own)."""
    placed: Counter[tuple[str, str]] = Counter()
    weeks: Counter[tuple[str, str]] = Counter()
    total = 0
    for site_id, assessment in admissions:
        total += 1
        level = place(assessment, protocol).level
        if level not in protocol.intensive.levels:
            continue
        telehealth = uses_telehealth(assessment, protocol)
        if any(
            misfit(t, assessment, telehealth) is None for t in tracks_for(protocol, site_id, level)
        ):
            placed[site_id, level] += 1
            weeks[site_id, level] += intensive_weeks(assessment, protocol)
    seats: Counter[tuple[str, str]] = Counter()
    for track in protocol.groups.tracks:
        if track.phase == "intensive":
            seats[track.site, track.level] += track.capacity
    return [
        SeatDemand(
            site_id=site_id,
            level=level,
            seats=n,
            placed=placed[site_id, level] / total if total else 0.0,
            weeks=weeks[site_id, level] / placed[site_id, level] if placed[site_id, level] else 0.0,
        )
        for (site_id, level), n in sorted(seats.items())
    ]


def short_of_seats(demands: Iterable[SeatDemand], per_week: float) -> list[SeatDemand]:
    """The tracks whose waitlists would grow at `per_week` admissions a week."""
    return [d for d in demands if d.needed(per_week) > d.seats]
