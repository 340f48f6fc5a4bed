"""The individual care plan: phase stages with a weekly schedule that fits the patient's
life, and the sessions each week books."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, time
from itertools import combinations
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from clinical.assessment import Assessment, Weekday
from clinical.clock import ProgramClock
from clinical.phases import Phase
from clinical.placement import Placement
from clinical.protocol import GroupTrack, ProgramProtocol, SessionPattern

Modality = Literal["in_person", "telehealth"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PlannedSession(_Frozen):
    weekday: Weekday
    start: time
    hours: float
    kind: Literal["group", "individual"]
    track_id: str | None = None
    """The shared group track this visit is a session of (None: the patient's own)."""


class WeeklySchedule(_Frozen):
    level: str
    modality: Modality
    sessions: tuple[PlannedSession, ...]

    @property
    def weekly_hours(self) -> float:
        return sum(s.hours for s in self.sessions)

    @property
    def session_days(self) -> int:
        return len({s.weekday for s in self.sessions})


class ScheduleConflict(_Frozen):
    level: str
    reason: str


class PlanStage(_Frozen):
    phase: Phase
    level: str
    weeks: int
    schedule: WeeklySchedule


class CarePlan(_Frozen):
    placement: Placement
    intensive_weeks: int
    stages: tuple[PlanStage, ...]
    conflict: ScheduleConflict | None = None

    def weeks_in(self, phase: Phase) -> int:
        return sum(s.weeks for s in self.stages if s.phase == phase)

    def stage_for(self, phase: Phase, week: int) -> PlanStage:
        """The stage that week `week` (1-based) of `phase` belongs to."""
        remaining = week
        for stage in self.stages:
            if stage.phase != phase:
                continue
            if remaining <= stage.weeks:
                return stage
            remaining -= stage.weeks
        raise ValueError(f"{phase.value} has no week {week}")

    @property
    def phases(self) -> tuple[Phase, ...]:
        seen: list[Phase] = []
        for stage in self.stages:
            if stage.phase not in seen:
                seen.append(stage.phase)
        return tuple(seen)


def minutes_of(t: time) -> int:
    """A clock time as minutes after midnight."""
    return t.hour * 60 + t.minute


def is_free(busy: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether minutes `start`-`end` of a day miss every busy interval (and end that day)."""
    return end <= 24 * 60 and all(end <= b0 or b1 <= start for b0, b1 in busy)


def _spread_days(days: list[int], k: int) -> tuple[int, ...]:
    """Pick k weekdays that spread sessions across the week (largest smallest gap)."""

    def score(combo: tuple[int, ...]) -> tuple[int, int]:
        gaps = [(combo[(i + 1) % k] - combo[i]) % 7 or 7 for i in range(k)]
        return (min(gaps), -max(gaps))

    return max(combinations(sorted(days), k), key=lambda c: (score(c), [-d for d in c]))


def uses_telehealth(assessment: Assessment, protocol: ProgramProtocol) -> bool:
    far = (
        assessment.distance_km is not None
        and assessment.distance_km > protocol.schedule.telehealth_distance_km
    )
    return assessment.transport_barrier or far


def fit_week(
    assessment: Assessment, level: str, pattern: SessionPattern, protocol: ProgramProtocol
) -> WeeklySchedule | ScheduleConflict:
    """A week of sessions that avoids the patient's commitments, or why none exists."""
    weekdays = list(Weekday)
    busy: dict[int, list[tuple[int, int]]] = {i: [] for i in range(7)}
    for c in assessment.commitments:
        busy[c.weekday.number].append((minutes_of(c.start), minutes_of(c.end)))
    visit_minutes = round(pattern.visit_hours * 60)
    earliest: dict[int, int] = {}
    for slot in protocol.schedule.slots:
        start = minutes_of(slot.start)
        for day in slot.weekdays:
            i = day.number
            if is_free(busy[i], start, start + visit_minutes) and start < earliest.get(i, 24 * 60):
                earliest[i] = start
    k = pattern.visits_per_week
    if len(earliest) < k:
        fitting = ", ".join(weekdays[i].value for i in sorted(earliest)) or "none"
        return ScheduleConflict(
            level=level,
            reason=(
                f"only {len(earliest)} session day(s) fit around the patient's commitments "
                f"({fitting}); level {level} needs {k}"
            ),
        )
    chosen = _spread_days(list(earliest), k)
    sessions = [
        PlannedSession(
            weekday=weekdays[d],
            start=_clock_time(earliest[d]),
            hours=pattern.visit_hours,
            kind="group",
        )
        for d in chosen
    ]
    if pattern.individual_hours > 0:
        individual = _place_individual(chosen, earliest, busy, visit_minutes, pattern)
        if individual is None:
            return ScheduleConflict(
                level=level,
                reason="no free time next to a group visit for the individual session",
            )
        sessions.append(individual)
    sessions.sort(key=lambda s: (s.weekday.number, s.start))
    modality: Modality = "telehealth" if uses_telehealth(assessment, protocol) else "in_person"
    return WeeklySchedule(level=level, modality=modality, sessions=tuple(sessions))


def _clock_time(minutes: int) -> time:
    return time(minutes // 60, minutes % 60)


def _place_individual(
    chosen: tuple[int, ...],
    earliest: dict[int, int],
    busy: dict[int, list[tuple[int, int]]],
    visit_minutes: int,
    pattern: SessionPattern,
) -> PlannedSession | None:
    length = round(pattern.individual_hours * 60)
    # Next to the earliest visit first: an individual session at 21:00 helps nobody.
    for d in sorted(chosen, key=lambda day: (earliest[day], day)):
        visit_start = earliest[d]
        for start in (visit_start + visit_minutes, visit_start - length):
            if start >= 0 and is_free(busy[d], start, start + length):
                return PlannedSession(
                    weekday=list(Weekday)[d],
                    start=_clock_time(start),
                    hours=pattern.individual_hours,
                    kind="individual",
                )
    return None


def intensive_weeks(assessment: Assessment, protocol: ProgramProtocol) -> int:
    cfg = protocol.intensive
    extra = 0
    if cfg.extra_week_per_rating_at_least > 0:
        extra = sum(
            1
            for rating in assessment.ratings.as_dict().values()
            if rating >= cfg.extra_week_per_rating_at_least
        )
    return min(cfg.min_weeks + extra, cfg.max_weeks)


def _stages_wanted(
    assessment: Assessment, placement: Placement, protocol: ProgramProtocol
) -> list[tuple[Phase, str, int, SessionPattern]]:
    """The plan's stages before fitting: phase, level, weeks and weekly pattern."""
    weeks = intensive_weeks(assessment, protocol)
    sd = protocol.step_down
    wanted: list[tuple[Phase, str, int, SessionPattern]] = []
    if placement.level in protocol.intensive.levels:
        wanted.append(
            (Phase.intensive, placement.level, weeks, protocol.levels[placement.level].pattern)
        )
        if sd.taper_weeks:
            wanted.append((Phase.step_down, sd.taper_level, sd.taper_weeks, sd.taper))
    if sd.outpatient_weeks:
        outpatient = protocol.levels[sd.outpatient_level].pattern
        wanted.append((Phase.step_down, sd.outpatient_level, sd.outpatient_weeks, outpatient))
    return wanted


def plan_care(assessment: Assessment, placement: Placement, protocol: ProgramProtocol) -> CarePlan:
    """The stages of care after intake for a placement, each with a fitted weekly schedule.

    Intensive levels run the intensive phase, then step-down (a taper below the IOP floor,
    then outpatient care). An outpatient placement goes straight to the outpatient weeks.
    A referral out has no stages."""
    if placement.refers_out:
        return CarePlan(placement=placement, intensive_weeks=0, stages=())
    in_intensive = placement.level in protocol.intensive.levels
    weeks = intensive_weeks(assessment, protocol) if in_intensive else 0
    stages: list[PlanStage] = []
    for phase, level, n_weeks, pattern in _stages_wanted(assessment, placement, protocol):
        fitted = fit_week(assessment, level, pattern, protocol)
        if isinstance(fitted, ScheduleConflict):
            return CarePlan(
                placement=placement, intensive_weeks=weeks, stages=tuple(stages), conflict=fitted
            )
        stages.append(PlanStage(phase=phase, level=level, weeks=n_weeks, schedule=fitted))
    return CarePlan(placement=placement, intensive_weeks=weeks, stages=tuple(stages))


def fit_track_week(
    assessment: Assessment,
    level: str,
    pattern: SessionPattern,
    track: GroupTrack,
    protocol: ProgramProtocol,
) -> WeeklySchedule | None:
    """A week of the pattern's group visits on the track's days and hour (spread over them
    when the pattern has fewer visits than the track meets), with the individual session
    next to one; None when the patient's commitments leave no room for it."""
    busy: dict[int, list[tuple[int, int]]] = {i: [] for i in range(7)}
    for c in assessment.commitments:
        busy[c.weekday.number].append((minutes_of(c.start), minutes_of(c.end)))
    start = minutes_of(track.start)
    visit_minutes = round(pattern.visit_hours * 60)
    days = [d.number for d in track.weekdays]
    if not all(is_free(busy[d], start, start + visit_minutes) for d in days):
        return None
    chosen = _spread_days(days, pattern.visits_per_week)
    weekdays = list(Weekday)
    sessions = [
        PlannedSession(
            weekday=weekdays[d],
            start=track.start,
            hours=pattern.visit_hours,
            kind="group",
            track_id=track.id,
        )
        for d in chosen
    ]
    if pattern.individual_hours > 0:
        individual = _place_individual(
            chosen, {d: start for d in chosen}, busy, visit_minutes, pattern
        )
        if individual is None:
            return None
        sessions.append(individual)
    sessions.sort(key=lambda s: (s.weekday.number, s.start))
    modality: Modality = "telehealth" if uses_telehealth(assessment, protocol) else "in_person"
    return WeeklySchedule(level=level, modality=modality, sessions=tuple(sessions))


def on_tracks(
    plan: CarePlan,
    assessment: Assessment,
    protocol: ProgramProtocol,
    tracks: Mapping[Phase, GroupTrack],
) -> CarePlan:
    """The plan with each phase that has a group track meeting on the track's days and hour
    (a stage the track cannot hold for this patient keeps its own schedule)."""
    wanted = _stages_wanted(assessment, plan.placement, protocol)
    stages = []
    for stage, (_, _, _, pattern) in zip(plan.stages, wanted, strict=False):
        track = tracks.get(stage.phase)
        fitted = None
        if track is not None:
            fitted = fit_track_week(assessment, stage.level, pattern, track, protocol)
        stages.append(stage if fitted is None else stage.model_copy(update={"schedule": fitted}))
    return plan.model_copy(update={"stages": tuple(stages)})


class SessionSpec(_Frozen):
    """One booked session of one week, with its clinic-calendar time."""

    session_id: str
    phase: Phase
    week: int
    level: str
    day: float
    starts_at: datetime
    hours: float
    session_type: str
    modality: Modality
    attendee: Literal["patient", "family"] = "patient"
    """Family education is for the family contact alone: not the patient's attendance."""
    track_id: str | None = None
    """The group track whose session this is (its facilitator's sign-in sheet lists it)."""


FAMILY_THERAPY = "family_therapy"
FAMILY_EDUCATION = "family_education"
FAMILY_SESSION_TYPES = (FAMILY_THERAPY, FAMILY_EDUCATION)


def family_therapy_slot(
    schedule: WeeklySchedule, assessment: Assessment, hours: float
) -> tuple[Weekday, time] | None:
    """Family therapy next to one of the patient's sessions (after the last session of the
    day, or before the first), at a time the patient's commitments leave free."""
    busy: dict[int, list[tuple[int, int]]] = {i: [] for i in range(7)}
    for c in assessment.commitments:
        busy[c.weekday.number].append((minutes_of(c.start), minutes_of(c.end)))
    length = round(hours * 60)
    days = sorted({s.weekday for s in schedule.sessions}, key=lambda d: d.number)
    for day in days:
        today = [s for s in schedule.sessions if s.weekday == day]
        first = min(minutes_of(s.start) for s in today)
        last_end = max(minutes_of(s.start) + round(s.hours * 60) for s in today)
        for start in (last_end, first - length):
            evening_ok = start + length <= 22 * 60  # not in the small hours
            if start >= 7 * 60 and evening_ok and is_free(busy[day.number], start, start + length):
                return day, _clock_time(start)
    return None


def treatment_week_id(phase: Phase, episode: int, week: int) -> str:
    """A treatment week, episode included (`INT1-W03`): what its sessions' IDs begin with."""
    return f"{phase.session_code}{episode}-W{week:02d}"


def treatment_week_of(session_id: str) -> str:
    """The treatment week a session belongs to: `INT1-W03-S2` and `INT1-W03-F1` are in
    `INT1-W03` (a case manager's attendance sheet covers one)."""
    return session_id.rsplit("-", 1)[0]


_Session = TypeVar("_Session", bound=SessionSpec)


def weeks_over(sessions: Iterable[_Session], today: float) -> list[list[_Session]]:
    """The sessions given, by treatment week, of the weeks whose sessions have all happened
    by program day `today`: what a case manager can enter on that week's sheet."""
    weeks: dict[str, list[_Session]] = {}
    for s in sessions:
        weeks.setdefault(treatment_week_of(s.session_id), []).append(s)
    return [
        sorted(week, key=lambda s: s.day)
        for week in weeks.values()
        if all(s.day <= today for s in week)
    ]


def week_sessions(
    plan: CarePlan,
    phase: Phase,
    episode: int,
    week: int,
    week_start_day: int,
    clock: ProgramClock,
    protocol: ProgramProtocol,
    family_of: Assessment | None = None,
) -> list[SessionSpec]:
    """The sessions of week `week` of `phase`, whose Monday is program day `week_start_day`;
    with `family_of` (a patient who consents to family involvement), also the family
    sessions the program's cadence puts in that week."""
    stage = plan.stage_for(phase, week)
    group_types = protocol.schedule.group_session_types
    wanted: list[_Wanted] = []
    tracks: dict[str, str] = {}
    group_index = 0
    by_id = {t.id: t for t in protocol.groups.tracks}
    for n, planned in enumerate(stage.schedule.sessions, start=1):
        types = group_types
        if planned.track_id is not None:
            tracks[f"S{n}"] = planned.track_id
            # A track's sessions are of its own types (a program that has since dropped
            # the track: the program's).
            if planned.track_id in by_id:
                types = by_id[planned.track_id].session_types
        if planned.kind == "group":
            session_type = types[(group_index + week - 1) % len(types)]
            group_index += 1
        else:
            session_type = protocol.schedule.individual_session_type
        wanted.append((f"S{n}", planned.weekday, planned.start, planned.hours, session_type))
    if family_of is not None:
        wanted += _family_sessions(stage.schedule, phase, week, family_of, protocol)
    specs = []
    for code, weekday, start, hours, session_type in wanted:
        day = week_start_day + weekday.number + minutes_of(start) / (24 * 60)
        specs.append(
            SessionSpec(
                session_id=f"{treatment_week_id(phase, episode, week)}-{code}",
                phase=phase,
                week=week,
                level=stage.level,
                day=day,
                starts_at=clock.calendar(day),
                hours=hours,
                session_type=session_type,
                modality=stage.schedule.modality,
                attendee="family" if session_type == FAMILY_EDUCATION else "patient",
                track_id=tracks.get(code),
            )
        )
    return specs


_Wanted = tuple[str, Weekday, time, float, str]
"""A session of the week: ID suffix, weekday, start, hours, session type."""


def _family_sessions(
    schedule: WeeklySchedule,
    phase: Phase,
    week: int,
    assessment: Assessment,
    protocol: ProgramProtocol,
) -> list[_Wanted]:
    cfg = protocol.family
    every = cfg.intensive_every_weeks if phase == Phase.intensive else cfg.step_down_every_weeks
    wanted: list[_Wanted] = []
    slot = family_therapy_slot(schedule, assessment, cfg.therapy_hours)
    if every and (week - 1) % every == 0 and slot is not None:
        wanted.append(("F1", *slot, cfg.therapy_hours, FAMILY_THERAPY))
    if cfg.education_every_weeks and (week - 1) % cfg.education_every_weeks == 0:
        wanted.append(
            (
                "E1",
                cfg.education_weekday,
                cfg.education_start,
                cfg.education_hours,
                FAMILY_EDUCATION,
            )
        )
    return wanted
