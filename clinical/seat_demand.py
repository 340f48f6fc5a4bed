"""Will the group tracks hold the admissions? Before a what-if runs for an hour, the
program's intensive seats set against the seats its admissions would need (Little's law:
admissions a week times the weeks each holds a seat). Tracks that need more seats than they
have keep a waitlist that grows for as long as admissions go on: each newcomer waits longer
than the one before.

Not only a site's tracks at a level as a whole: patients whose commitments (or way of
attending) fit only some of them, the evening groups say, wait for those alone, however
many seats the others have free. So every set of a site's tracks at a level is weighed
against the patients who fit only tracks of that set (Hall's condition for seating them).

The weeks are the care plan's intensive weeks, times the intensive phases a patient has
(`phases`: a patient re-linked to care after use comes back for another). The estimate is
rough both ways: a patient who drops out frees their seat early, and one whose attendance
holds up their step-down keeps it longer (up to the program's most weeks); in the
10,000-patient what-if the two balanced out (9.3 weeks an intensive phase, 9.2 planned)."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from clinical.assessment import Assessment
from clinical.careplan import intensive_weeks, uses_telehealth
from clinical.groups import misfit, tracks_for
from clinical.placement import place
from clinical.protocol import GroupTrack, ProgramProtocol

SETS_UP_TO = 10
"""A site's tracks at a level whose every set is weighed (2^10 sets); beyond, the whole
and each track alone."""


class SeatDemand(BaseModel):
    """Some of a site's intensive tracks at one level, and what an average admission asks
    of them: the patients who fit no other track of the site and level."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site_id: str
    level: str
    track_ids: tuple[str, ...] = Field(min_length=1)
    whole: bool
    """Whether these are all the site's tracks at the level."""
    seats: int = Field(ge=1)
    placed: float = Field(ge=0, le=1)
    """The share of all admissions (every site's) who fit only these tracks."""
    weeks: float = Field(ge=0)
    """The intensive weeks each of them is planned to hold a seat a phase (the mean)."""
    phases: float = Field(default=1.0, ge=1)
    """The intensive phases each has, counting returns after use."""

    @property
    def seat_weeks(self) -> float:
        """Seat-weeks one admission to the clinic asks of these tracks, on average."""
        return self.placed * self.weeks * self.phases

    def needed(self, per_week: float) -> float:
        """Seats these tracks need, at `per_week` admissions a week, once they are full."""
        return per_week * self.seat_weeks

    def holds(self) -> float:
        """Admissions a week (to the clinic) these tracks keep up with."""
        return self.seats / self.seat_weeks if self.seat_weeks else float("inf")

    def explain(self, per_week: float) -> str:
        who = (
            f"{self.site_id}'s level {self.level} groups have {self.seats} seats"
            if self.whole
            else f"{self.site_id}'s level {self.level} patients who fit only "
            f"{' and '.join(self.track_ids)} (their commitments or way of attending) have "
            f"{self.seats} seats"
        )
        each = "each" if self.phases == 1 else f"a phase, {self.phases:g} phases each"
        return (
            f"{who}; at {per_week:g} admissions a week they would need about "
            f"{self.needed(per_week):.0f} ({self.placed:.0%} of the clinic's admissions "
            f"placed there, {self.weeks:.1f} intensive weeks {each}): they keep up with "
            f"about {self.holds():.1f} a week, and beyond that their waitlist grows for as "
            "long as admissions go on"
        )


def seat_demand(
    protocol: ProgramProtocol, admissions: Iterable[tuple[str, Assessment]], phases: float = 1.0
) -> list[SeatDemand]:
    """For each site and intensive level with tracks, each set of its tracks (the whole
    first), with the share of `admissions` (site, assessment) placed at that level at that
    site whose fitting tracks are all in the set, each with `phases` intensive phases.
    Patients no track fits have schedules of their own and take no seat."""
    fits: Counter[tuple[str, str, frozenset[str]]] = Counter()
    weeks: Counter[tuple[str, str, frozenset[str]]] = Counter()
    total = 0
    for site_id, assessment in admissions:
        total += 1
        level = place(assessment, protocol).level
        if level not in protocol.intensive.levels:
            continue
        telehealth = uses_telehealth(assessment, protocol)
        fitting = frozenset(
            t.id
            for t in tracks_for(protocol, site_id, level)
            if misfit(t, assessment, telehealth) is None
        )
        if fitting:
            fits[site_id, level, fitting] += 1
            weeks[site_id, level, fitting] += intensive_weeks(assessment, protocol)
    pools: dict[tuple[str, str], list[GroupTrack]] = {}
    for track in protocol.groups.tracks:
        if track.phase == "intensive":
            pools.setdefault((track.site, track.level), []).append(track)
    found = []
    for (site_id, level), tracks in sorted(pools.items()):
        for chosen in _sets(tracks):
            ids = frozenset(t.id for t in chosen)
            within = [k for k in fits if k[:2] == (site_id, level) and k[2] <= ids]
            patients = sum(fits[k] for k in within)
            found.append(
                SeatDemand(
                    site_id=site_id,
                    level=level,
                    track_ids=tuple(t.id for t in chosen),
                    whole=len(chosen) == len(tracks),
                    seats=sum(t.capacity for t in chosen),
                    placed=patients / total if total else 0.0,
                    weeks=sum(weeks[k] for k in within) / patients if patients else 0.0,
                    phases=phases,
                )
            )
    return found


def _sets(tracks: list[GroupTrack]) -> list[tuple[GroupTrack, ...]]:
    """The whole first, then the smaller sets (each track alone only, past `SETS_UP_TO`)."""
    sizes = range(len(tracks) - 1, 0, -1) if len(tracks) <= SETS_UP_TO else [1]
    return [tuple(tracks), *(s for k in sizes for s in itertools.combinations(tracks, k))]


def short_of_seats(demands: Iterable[SeatDemand], per_week: float) -> list[SeatDemand]:
    """For each site and level whose waitlists would grow at `per_week` admissions a week,
    the tracks that fall furthest short (the most seats needed for each they have)."""
    worst: dict[tuple[str, str], SeatDemand] = {}
    for d in demands:
        if d.needed(per_week) <= d.seats:
            continue
        key = (d.site_id, d.level)
        if key not in worst or d.needed(per_week) / d.seats > (
            worst[key].needed(per_week) / worst[key].seats
        ):
            worst[key] = d
    return [worst[k] for k in sorted(worst)]
