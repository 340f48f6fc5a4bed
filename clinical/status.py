"""What a journey shows: where the patient is, as a query answers it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from clinical.aftercare import FollowUp
from clinical.assessment import Commitment
from clinical.attendance import AttendanceSummary, SessionRecord, SessionStatus
from clinical.careplan import CarePlan
from clinical.clock import ProgramClock
from clinical.journey import JourneyState, PhaseChange, ReferralRef
from clinical.phases import Phase
from clinical.tasks import JourneyTask


class JourneyStatus(BaseModel):
    """The answer to "where is this patient?" (a workflow query).

    A query does not move the workflow's clock, so `program_day` and `today` are as of the
    journey's last activity; callers use `as_of(now)` for the present."""

    patient_id: str
    program_id: str
    case_manager_id: str
    site_id: str
    phase: Phase
    level: str | None
    risk: str
    episode: int
    week: int
    weeks_in_phase: int
    phase_start_day: int | None = None
    """The program day (a Monday) the current treatment phase began: weeks count from it."""
    program_day: float
    today: datetime
    plan: CarePlan
    """The placement (and why), each stage's weekly schedule, or the schedule conflict."""
    open_tasks: list[JourneyTask]
    referrals: list[ReferralRef]
    alumni_attended: list[str] = []
    group_tracks: dict[str, str] = {}
    """The group track the patient is seated in, by phase."""
    group_waiting: str | None = None
    """The group track whose waitlist the patient is on."""
    step_down_approved: bool
    commitments: tuple[Commitment, ...]
    attendance: AttendanceSummary
    attendance_rate: float | None
    sessions: list[SessionRecord]
    follow_ups: list[FollowUp]
    next_contact_due: datetime | None
    phase_history: list[PhaseChange]
    clock: ProgramClock

    @property
    def schedule_conflict(self) -> str | None:
        return self.plan.conflict.reason if self.plan.conflict else None

    def as_of(self, now: datetime) -> JourneyStatus:
        day = self.clock.day(now)
        return self.model_copy(update={"program_day": day, "today": self.clock.calendar(day)})


def awaits_step_down_approval(status: JourneyStatus) -> bool:
    """The intensive phase has reached its planned end and no one has approved step-down."""
    return (
        status.phase == Phase.intensive
        and status.week >= status.weeks_in_phase
        and not status.step_down_approved
    )


def current_level(state: JourneyState) -> str | None:
    if state.phase in (Phase.intensive, Phase.step_down) and state.week >= 1:
        return state.plan.stage_for(state.phase, state.week).level
    if state.phase == Phase.intake:
        return state.placement.level
    return None


def next_contact_day(state: JourneyState, now_day: float) -> float | None:
    """The next time someone from the program is due to see or call the patient."""
    upcoming = [s.day for s in state.sessions if s.status == SessionStatus.scheduled]
    upcoming += [f.day for f in state.follow_ups if f.outcome is None]
    # The coming week is booked on its Monday; until then, its first session is due.
    if (
        state.phase in state.plan.phases
        and state.phase_start_day is not None
        and state.week < state.plan.weeks_in(state.phase)
    ):
        stage = state.plan.stage_for(state.phase, state.week + 1)
        first = stage.schedule.sessions[0]
        start = first.start.hour / 24 + first.start.minute / 1440
        upcoming.append(state.phase_start_day + 7 * state.week + first.weekday.number + start)
    future = [d for d in upcoming if d >= now_day]
    return min(future) if future else None


def status_of(state: JourneyState, now: datetime) -> JourneyStatus:
    now_day = state.clock.day(now)
    due = next_contact_day(state, now_day)
    weeks = state.plan.weeks_in(state.phase) if state.phase in state.plan.phases else 0
    summary = state.summary()
    return JourneyStatus(
        patient_id=state.patient_id,
        program_id=state.program_id,
        case_manager_id=state.case_manager_id,
        site_id=state.site_id,
        phase=state.phase,
        level=current_level(state),
        risk=state.risk,
        episode=state.episode,
        week=state.week,
        weeks_in_phase=weeks,
        phase_start_day=state.phase_start_day,
        program_day=now_day,
        today=state.clock.calendar(now_day),
        plan=state.plan,
        open_tasks=[t for t in state.tasks if t.is_open],
        referrals=state.referrals,
        alumni_attended=state.alumni_attended,
        group_tracks=state.group_tracks,
        group_waiting=state.group_waiting,
        step_down_approved=state.step_down_approved,
        commitments=state.assessment.commitments,
        attendance=summary,
        attendance_rate=summary.rate,
        sessions=state.sessions,
        follow_ups=state.follow_ups,
        next_contact_due=None if due is None else state.clock.calendar(due),
        phase_history=state.phase_history,
        clock=state.clock,
    )
