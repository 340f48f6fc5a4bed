"""Group tracks: which of a site's shared groups fits a patient (their level of care, their
commitments, whether they come in or join by telehealth) and has a seat for them, and how
full each track is.

A track with anyone on its waitlist has no seat for a newcomer: a freed seat goes to the
first who waits, not to whoever enrols next."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from clinical.assessment import Assessment
from clinical.careplan import is_free, minutes_of, uses_telehealth
from clinical.protocol import GroupTrack, ProgramProtocol


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrackLoad(_Strict):
    """A track's seats held and its waitlist, as the store counts them."""

    taken: int = Field(default=0, ge=0)
    waiting: int = Field(default=0, ge=0)
    waiting_since: datetime | None = None
    """When the first on the waitlist joined it."""


class TrackSeat(_Strict):
    """Take a seat in `track_id`; `alternatives` are the other tracks that fit, best first."""

    track_id: str
    alternatives: tuple[str, ...] = ()


class TrackWaitlist(_Strict):
    """Every fitting track is full: wait for `track_id`, the one with the fewest ahead;
    `alternatives` are the next-best tracks to show the case manager."""

    track_id: str
    ahead: int
    alternatives: tuple[str, ...] = ()


class NoTrackFits(_Strict):
    """No track at the site fits the patient: why, track by track, and the track that
    comes nearest (for the case manager to weigh with the patient)."""

    reasons: tuple[str, ...]
    nearest: str | None = None


TrackPhase = Literal["intensive", "step_down"]


def tracks_for(
    protocol: ProgramProtocol, site_id: str, level: str, phase: TrackPhase = "intensive"
) -> list[GroupTrack]:
    """The site's tracks a patient at `level` could join in `phase`, in the program's order."""
    return [
        t
        for t in protocol.groups.tracks
        if t.site == site_id and t.phase == phase and (phase == "step_down" or t.level == level)
    ]


def _opens(track: GroupTrack, load: TrackLoad) -> bool:
    return load.waiting == 0 and load.taken < track.capacity


def _wrong_way(track: GroupTrack, telehealth: bool) -> str | None:
    if telehealth and track.telehealth_link is None:
        return f"{track.id}: meets in a room only; the patient attends by telehealth"
    if not telehealth and track.room is None:
        return f"{track.id}: telehealth only; the patient attends in person"
    return None


def _clashes(track: GroupTrack, assessment: Assessment) -> list[str]:
    """Each of the track's days that meets during one of the patient's commitments."""
    start = minutes_of(track.start)
    end = start + round(track.hours * 60)
    found = []
    for day in track.weekdays:
        for c in assessment.commitments:
            if c.weekday == day and not is_free(
                [(minutes_of(c.start), minutes_of(c.end))], start, end
            ):
                found.append(
                    f"{track.id}: meets {day.value} {track.start:%H:%M}, during the patient's "
                    f"{c.kind} {c.start:%H:%M}-{c.end:%H:%M}"
                )
                break
    return found


def misfit(track: GroupTrack, assessment: Assessment, telehealth: bool) -> str | None:
    """Why `track` does not fit the patient's commitments and way of attending (None: it
    fits). Site and level are the caller's filter."""
    return _wrong_way(track, telehealth) or next(iter(_clashes(track, assessment)), None)


def nearest_misfit(
    tracks: Iterable[GroupTrack], assessment: Assessment, telehealth: bool
) -> str | None:
    """Of tracks that do not fit, the one asking least of the patient, said as the change
    it needs: attending the other way beats moving a commitment, fewer clashing days beat
    more, and the program's order breaks ties."""
    ranked = sorted(
        enumerate(tracks),
        key=lambda x: (
            len(_clashes(x[1], assessment)),
            _wrong_way(x[1], telehealth) is not None,
            x[0],
        ),
    )
    if not ranked:
        return None
    track = ranked[0][1]
    clashes = _clashes(track, assessment)
    way = "in person" if telehealth else "by telehealth"
    if _wrong_way(track, telehealth) is not None and not clashes:
        return f"{track.id} if the patient can attend {way}"
    if _wrong_way(track, telehealth) is not None:
        return (
            f"{track.id} if the patient can attend {way} and clear {len(clashes)} clashing day(s)"
        )
    return f"{track.id}, which clashes on {len(clashes)} of its {len(track.weekdays)} day(s)"


def choose_track(
    assessment: Assessment,
    level: str,
    site_id: str,
    protocol: ProgramProtocol,
    loads: Mapping[str, TrackLoad],
    phase: TrackPhase = "intensive",
) -> TrackSeat | TrackWaitlist | NoTrackFits:
    """The track for a patient at `site_id` placed at `level` (an intensive track) or
    stepping down (a step-down track, whatever its level): the fitting track with the
    most free seats (the program's order breaks ties); when every fitting track is full,
    the waitlist with the fewest ahead of the patient."""
    candidates = tracks_for(protocol, site_id, level, phase)
    if not candidates:
        what = f"level {level}" if phase == "intensive" else "step-down"
        return NoTrackFits(reasons=(f"no {what} track at site {site_id}",))
    telehealth = uses_telehealth(assessment, protocol)
    fitting: list[tuple[int, GroupTrack, TrackLoad]] = []
    reasons: list[str] = []
    for order, track in enumerate(candidates):
        why = misfit(track, assessment, telehealth)
        if why is None:
            fitting.append((order, track, loads.get(track.id, TrackLoad())))
        else:
            reasons.append(why)
    if not fitting:
        return NoTrackFits(
            reasons=tuple(reasons), nearest=nearest_misfit(candidates, assessment, telehealth)
        )
    open_ = sorted(
        (x for x in fitting if _opens(x[1], x[2])), key=lambda x: (x[2].taken - x[1].capacity, x[0])
    )
    full = sorted(
        (x for x in fitting if not _opens(x[1], x[2])),
        key=lambda x: (_ahead(x[1], x[2]), x[0]),
    )
    ranked = [t.id for _, t, _ in open_ + full]
    if open_:
        return TrackSeat(track_id=ranked[0], alternatives=tuple(ranked[1:]))
    _, track, load = full[0]
    return TrackWaitlist(
        track_id=track.id, ahead=_ahead(track, load), alternatives=tuple(ranked[1:])
    )


def _ahead(track: GroupTrack, load: TrackLoad) -> int:
    """Patients who would be ahead of a newcomer on the waitlist (those waiting, less any
    seat about to go to them)."""
    return max(0, load.waiting - max(0, track.capacity - load.taken))


class TrackCapacity(_Strict):
    """One track as operators see it: seats taken and free, the waitlist and its wait."""

    track: GroupTrack
    taken: int
    free: int
    waiting: int
    longest_wait_days: float | None


def capacity_view(
    tracks: Iterable[GroupTrack], loads: Mapping[str, TrackLoad], now: datetime
) -> list[TrackCapacity]:
    """Each track's capacity in view, in the program's order."""
    view = []
    for track in tracks:
        load = loads.get(track.id, TrackLoad())
        since = load.waiting_since
        view.append(
            TrackCapacity(
                track=track,
                taken=load.taken,
                free=max(0, track.capacity - load.taken),
                waiting=load.waiting,
                longest_wait_days=None if since is None else (now - since).total_seconds() / 86400,
            )
        )
    return view


def facilitator_hours(tracks: Iterable[GroupTrack]) -> dict[str, float]:
    """Hours a week each facilitator leads groups, across the tracks given, by name."""
    hours: dict[str, float] = {}
    for track in tracks:
        for name in track.facilitators:
            hours[name] = hours.get(name, 0.0) + track.weekly_hours
    return dict(sorted(hours.items()))
