"""A patient's journey as data: the state a journey workflow carries (across
continue-as-new), the case managers' requests, and the pure rules that accept or refuse
them. The workflow only sequences these; the rules live here so they are tested alone."""

from __future__ import annotations

import itertools
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from clinical.aftercare import CallOutcome, FollowUp, follow_up_schedule
from clinical.assessment import (
    Assessment,
    Commitment,
    DimensionRatings,
    Enrolment,
    SocialNeed,
)
from clinical.attendance import AttendanceSummary, SessionRecord, SessionStatus, summarize
from clinical.careplan import (
    FAMILY_SESSION_TYPES,
    CarePlan,
    ScheduleConflict,
    SessionSpec,
    fit_week,
    plan_care,
)
from clinical.clock import ProgramClock, next_open_day
from clinical.closures import cancel_on
from clinical.identifiers import (
    CaseManagerId,
    MeetingId,
    SessionId,
    TaskKey,
    referral_workflow_id,
)
from clinical.phases import Phase
from clinical.placement import Placement, place, place_enrolment, risk_level
from clinical.protocol import ProgramProtocol
from clinical.reminders import (
    Reminder,
    alumni_invitation_key,
    call_reminder_key,
    reminder,
    session_reminder_key,
)
from clinical.sites import Closure, ClosureCalendar, Site


class PhaseChange(BaseModel):
    model_config = ConfigDict(frozen=True)

    phase: Phase
    at: datetime
    day: float
    reason: str


class DischargeReason(StrEnum):
    withdrew = "withdrew"
    administrative = "administrative"
    lost_to_contact = "lost_to_contact"
    transferred = "transferred"

    @property
    def outcome(self) -> Phase:
        return {
            DischargeReason.withdrew: Phase.withdrawn,
            DischargeReason.lost_to_contact: Phase.lost_to_contact,
        }.get(self, Phase.discharged)


class Relapse(BaseModel):
    """A relapse waiting to be acted on: who found it and the reassessment."""

    model_config = ConfigDict(frozen=True)

    reported_by: str
    source: Literal["case_manager", "follow_up_call"]
    ratings: DimensionRatings


class JourneyTask(BaseModel):
    """A task the journey gave the case manager; open until someone resolves it."""

    key: str
    kind: str
    detail: str
    opened_at: datetime
    resolved_by: str | None = None

    @property
    def is_open(self) -> bool:
        return self.resolved_by is None


class ReferralRef(BaseModel):
    """A referral the journey started (its own workflow); the outcome once it closes."""

    referral_id: str
    need: SocialNeed
    workflow_id: str
    requested_by: str
    outcome: str | None = None


class JourneyState(BaseModel):
    """Everything a journey needs to go on; carried whole across continue-as-new."""

    patient_id: str
    case_manager_id: str
    site_id: str
    program_id: str
    protocol: ProgramProtocol
    clock: ProgramClock
    enrolled_at: datetime
    assessment: Assessment
    placement: Placement
    plan: CarePlan
    risk: str
    phase: Phase = Phase.intake
    episode: int = 1
    phase_start_day: int | None = None
    week: int = 0
    sessions: list[SessionRecord] = []
    follow_ups: list[FollowUp] = []
    aftercare_start_day: int | None = None
    phase_history: list[PhaseChange] = []
    discharge: DischargeRequest | None = None
    relapse: Relapse | None = None
    step_down_approved: bool = False
    intake_recorded: bool = False
    runs: int = 1
    alerts_opened: list[str] = []
    last_review_day: float | None = None
    tasks: list[JourneyTask] = []
    referrals: list[ReferralRef] = []
    referrals_opening: list[ReferralRef] = []
    """Referrals whose loop is being started: listed once their workflow exists."""
    alumni_attended: list[str] = []
    family_consent: bool | None = None
    """Consent to family involvement as changed since enrolment (None: as enrolled)."""
    closures: ClosureCalendar | None = None
    """The site's closed days (holidays, announced closures). None: a journey enrolled before
    sites had zones, on the UTC calendar it started on, which takes no closures."""

    def closed(self, day: date) -> str | None:
        """Why the site is closed on a local date (None when open, or no site calendar)."""
        return None if self.closures is None else self.closures.closed(day)

    @property
    def family_involved(self) -> bool:
        if self.family_consent is not None:
            return self.family_consent
        return self.assessment.consents.family_involvement

    def summary(self) -> AttendanceSummary:
        return summarize(self.sessions)

    def session(self, session_id: str) -> SessionRecord | None:
        return next((s for s in self.sessions if s.session_id == session_id), None)

    def resolve_tasks(self, kind: str, by: str) -> list[str]:
        """Mark the open tasks of a kind resolved (their cause is gone); their keys."""
        resolved = [t for t in self.tasks if t.kind == kind and t.is_open]
        for task in resolved:
            task.resolved_by = by
        return [t.key for t in resolved]


def start_journey(
    enrolment: Enrolment,
    protocol: ProgramProtocol,
    now: datetime,
    closures: ClosureCalendar | None = None,
) -> JourneyState:
    """Intake: place the patient and draw up the care plan from the assessment. With the
    site's calendar, the program's days are the site's wall-clock days."""
    placement = place_enrolment(enrolment, protocol)
    zone = closures.site.zone if closures is not None else "UTC"
    clock = ProgramClock.starting_at(now, protocol.clock.seconds_per_day, zone)
    return JourneyState(
        patient_id=enrolment.patient_id,
        case_manager_id=enrolment.case_manager_id,
        site_id=enrolment.site_id,
        program_id=enrolment.program_id,
        protocol=protocol,
        clock=clock,
        enrolled_at=now,
        assessment=enrolment.assessment,
        placement=placement,
        plan=plan_care(enrolment.assessment, placement, protocol),
        risk=risk_level(enrolment.assessment, protocol),
        closures=closures,
        phase_history=[
            PhaseChange(phase=Phase.intake, at=now, day=clock.day(now), reason="enrolled")
        ],
    )


# --- case managers' requests -------------------------------------------------------------


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    case_manager_id: CaseManagerId


AttendanceStatus = Literal["attended", "missed", "excused"]
"""What a case manager reports of a session."""


class AttendanceReport(_Request):
    session_id: SessionId
    status: AttendanceStatus


class AttendanceMark(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    session_id: SessionId
    status: AttendanceStatus


class AttendanceSheet(_Request):
    """Several sessions' attendance in one request, as a case manager enters a week's
    sign-in sheets: accepted whole or refused whole."""

    marks: list[AttendanceMark] = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _each_session_once(self) -> AttendanceSheet:
        seen: set[str] = set()
        for mark in self.marks:
            if mark.session_id in seen:
                raise ValueError(f"session {mark.session_id} is marked twice on the sheet")
            seen.add(mark.session_id)
        return self

    def reports(self) -> list[AttendanceReport]:
        return [
            AttendanceReport(
                case_manager_id=self.case_manager_id, session_id=m.session_id, status=m.status
            )
            for m in self.marks
        ]


class DischargeRequest(_Request):
    reason: DischargeReason


class RelapseReport(_Request):
    """A relapse reported by a case manager, with the reassessment's six ratings."""

    ratings: DimensionRatings


class ProgressReview(_Request):
    """A case manager's progress evaluation of the intensive phase."""

    decision: Literal["extend", "shorten", "approve_step_down", "change_level"]
    weeks: Annotated[int, Field(ge=1, le=52)] | None = None
    level: str | None = None


class CommitmentsRevision(_Request):
    """New availability for a patient whose schedule could not be fitted."""

    commitments: tuple[Commitment, ...]
    transport_barrier: bool | None = None


class ReferralRequest(_Request):
    """A case manager's referral to a partner service for one of the patient's needs."""

    need: SocialNeed


class FamilyConsentChange(_Request):
    """The patient gives or withdraws consent to family involvement."""

    granted: bool


class CheckInAdjustment(_Request):
    """A new schedule for the check-ins still ahead: days after aftercare began. A case
    manager's clinical judgement, or the patient asking for another day."""

    days: tuple[Annotated[int, Field(ge=1, le=730)], ...] = Field(min_length=1, max_length=24)
    reason: Literal["patient_request", "clinical"]


class TaskDone(_Request):
    """A case manager marks one of the journey's (or a referral's) tasks done."""

    task_key: TaskKey


# Tasks that close when their cause is dealt with, not by marking them done.
CLOSED_BY_ACTION = {
    "schedule_conflict": "revise the patient's commitments (`starter.py commitments`)",
    "step_down_decision": "record a progress review (`starter.py review`)",
}


class RequestRefused(ValueError):
    """A case manager's request that the rules refuse; the message says why."""


class ClosureKnown(RequestRefused):
    """The closure was announced to this journey before: nothing changes."""


def check_closure(state: JourneyState, closure: Closure, today: float) -> None:
    _require_active(state)
    if state.closures is None:
        raise RequestRefused(
            "this journey keeps the UTC calendar it was enrolled on (before sites had time "
            "zones) and takes no closures"
        )
    if closure.site_id != state.site_id:
        raise RequestRefused(f"the patient is at site {state.site_id}, not {closure.site_id}")
    if closure.date < state.clock.local_date(today):
        raise RequestRefused(f"date: {closure.date} has passed at site {state.site_id}")
    if any(c.date == closure.date for c in state.closures.unplanned):
        raise ClosureKnown(f"the closure on {closure.date} was announced to this journey before")


def apply_closure(state: JourneyState, closure: Closure, today: float) -> list[SessionRecord]:
    """The site is closed on `closure.date`: its sessions still ahead that day are
    cancelled (never missed). Check-ins due that day move when the journey wakes for them."""
    assert state.closures is not None
    state.closures = state.closures.with_closure(closure)
    state.sessions, cancelled = cancel_on(
        state.sessions, closure.date, closure.reason, state.clock, today
    )
    return cancelled


def postpone_check_in(state: JourneyState, call: FollowUp) -> FollowUp:
    """A check-in due on a closed day moves to the same time on the next open day."""
    day = next_open_day(state.clock, call.day + 1, state.closed)
    moved = call.model_copy(update={"day": day, "due_at": state.clock.calendar(day)})
    state.follow_ups = [moved if f is call else f for f in state.follow_ups]
    return moved


def _require_active(state: JourneyState) -> None:
    if state.phase.is_terminal:
        raise RequestRefused(f"the journey has ended ({state.phase.value})")


def check_attendance(state: JourneyState, report: AttendanceReport, now_day: float) -> None:
    _require_active(state)
    session = state.session(report.session_id)
    if session is None:
        raise RequestRefused(f"unknown session {report.session_id!r} for this patient")
    if session.status == SessionStatus.cancelled:
        raise RequestRefused(f"session {report.session_id} was cancelled")
    if session.day > now_day:
        raise RequestRefused(
            f"session {report.session_id} is on {session.starts_at:%Y-%m-%d %H:%M} "
            "and has not happened yet"
        )


def check_attendance_sheet(state: JourneyState, sheet: AttendanceSheet, now_day: float) -> None:
    """Every mark as a report of its own would be checked: one refused mark refuses the
    sheet, so nothing of it is recorded."""
    for report in sheet.reports():
        check_attendance(state, report, now_day)


def apply_attendance(state: JourneyState, report: AttendanceReport) -> SessionRecord:
    """Record (or correct) a session's attendance; returns the updated record."""
    updated: SessionRecord | None = None
    records = []
    for s in state.sessions:
        if s.session_id == report.session_id:
            s = s.model_copy(
                update={
                    "status": SessionStatus(report.status),
                    "recorded_by": report.case_manager_id,
                    "missed_by_grace": False,
                }
            )
            updated = s
        records.append(s)
    if updated is None:
        raise RequestRefused(f"unknown session {report.session_id!r} for this patient")
    state.sessions = records
    return updated


def check_discharge(state: JourneyState, request: DischargeRequest) -> None:
    _require_active(state)
    if state.discharge is not None:
        raise RequestRefused(
            f"a discharge ({state.discharge.reason.value}) is already being processed"
        )


def check_check_in_adjustment(
    state: JourneyState, adjustment: CheckInAdjustment, today: float
) -> None:
    _require_active(state)
    if state.phase != Phase.aftercare or state.aftercare_start_day is None:
        raise RequestRefused("check-ins can be rescheduled in aftercare only")
    days = adjustment.days
    if any(b <= a for a, b in itertools.pairwise(days)):
        raise RequestRefused("the days must be strictly increasing")
    elapsed = today - state.aftercare_start_day
    if days[0] <= elapsed:
        raise RequestRefused(
            f"day {days[0]} has passed: aftercare is on day {int(elapsed)}; give days ahead"
        )
    limit = state.protocol.aftercare.duration_days
    if days[-1] > limit:
        raise RequestRefused(f"day {days[-1]} is after aftercare ends (day {limit})")
    taken = {f.call_id for f in state.follow_ups if f.episode == state.episode and f.outcome}
    clash = [d for d in days if f"FU-D{d:03d}" in taken]
    if clash:
        raise RequestRefused(f"day {clash[0]} already had its check-in")


def check_ins_ahead(state: JourneyState) -> list[FollowUp]:
    """This episode's check-ins not yet made."""
    return [f for f in state.follow_ups if f.outcome is None and f.episode == state.episode]


def apply_check_in_adjustment(state: JourneyState, adjustment: CheckInAdjustment) -> int:
    """Replace the check-ins still ahead; returns how many there are now."""
    assert state.aftercare_start_day is not None
    done = [f for f in state.follow_ups if f.outcome is not None or f.episode != state.episode]
    ahead = follow_up_schedule(
        state.aftercare_start_day,
        state.assessment.contact_window,
        state.clock,
        state.protocol,
        state.episode,
        offsets=adjustment.days,
        closed=state.closed,
    )
    state.follow_ups = [*done, *ahead]
    return len(ahead)


def check_task_done(tasks: list[JourneyTask], request: TaskDone) -> JourneyTask:
    task = next((t for t in tasks if t.key == request.task_key), None)
    if task is None:
        raise RequestRefused(f"no task {request.task_key!r} for this patient")
    if not task.is_open:
        raise RequestRefused(f"task {task.kind} was already done by {task.resolved_by}")
    if task.kind in CLOSED_BY_ACTION:
        raise RequestRefused(f"a {task.kind} task closes when you {CLOSED_BY_ACTION[task.kind]}")
    return task


def check_family_consent(state: JourneyState, change: FamilyConsentChange) -> None:
    _require_active(state)
    if change.granted == state.family_involved:
        now = "given" if change.granted else "not given"
        raise RequestRefused(f"consent to family involvement is already {now}")


def apply_family_consent(
    state: JourneyState, change: FamilyConsentChange, today: float
) -> list[SessionRecord]:
    """Record the change; a withdrawal cancels the family sessions still ahead (returned)."""
    state.family_consent = change.granted
    if change.granted:
        return []
    cancelled: list[SessionRecord] = []
    kept: list[SessionRecord] = []
    for s in state.sessions:
        if (
            s.session_type in FAMILY_SESSION_TYPES
            and s.day > today
            and s.status == SessionStatus.scheduled
        ):
            s = s.model_copy(update={"status": SessionStatus.cancelled})
            cancelled.append(s)
        kept.append(s)
    state.sessions = kept
    return cancelled


def check_referral(state: JourneyState, request: ReferralRequest) -> None:
    _require_active(state)
    open_ = [
        r
        for r in state.referrals + state.referrals_opening
        if r.need == request.need and r.outcome is None
    ]
    if open_:
        raise RequestRefused(
            f"a {request.need.value} referral is already open ({open_[0].referral_id})"
        )


def new_referral(state: JourneyState, need: SocialNeed, by: str) -> ReferralRef:
    """A referral for a need, opening until `referral_opened`; its ID numbers the
    referrals for that need."""
    n = 1 + sum(1 for r in state.referrals + state.referrals_opening if r.need == need)
    ref = ReferralRef(
        referral_id=f"REF-{need.value}-{n}",
        need=need,
        workflow_id=referral_workflow_id(state.patient_id, need.value),
        requested_by=by,
    )
    state.referrals_opening.append(ref)
    return ref


def referral_opened(state: JourneyState, ref: ReferralRef) -> None:
    """Its loop runs: the referral is listed, and case managers can act on it."""
    state.referrals_opening.remove(ref)
    state.referrals.append(ref)


RELAPSE_PHASES = (Phase.intensive, Phase.step_down, Phase.aftercare)


def check_relapse(state: JourneyState, report: RelapseReport) -> None:
    _require_active(state)
    if state.phase not in RELAPSE_PHASES:
        raise RequestRefused(
            f"a relapse can be reported in {', '.join(p.value for p in RELAPSE_PHASES)}, "
            f"not during {state.phase.value}"
        )
    if state.discharge is not None:
        raise RequestRefused("the journey is being discharged")
    if state.relapse is not None:
        raise RequestRefused("a relapse is already being acted on")


def relapse_found_by_call(state: JourneyState) -> Relapse:
    """Use reported on a check-in: the last ratings with relapse risk raised to the
    protocol's level; the case manager is asked to confirm with a full reassessment."""
    floor = state.protocol.relapse.found_by_call_relapse_rating
    ratings = state.assessment.ratings.model_copy(
        update={"relapse": max(state.assessment.ratings.relapse, floor)}
    )
    return Relapse(reported_by="system", source="follow_up_call", ratings=ratings)


def session_reminders(state: JourneyState, specs: list[SessionSpec]) -> list[Reminder]:
    """A reminder before each of the patient's own sessions (family education is the
    family's, invited separately)."""
    window, cfg = state.assessment.contact_window, state.protocol.reminders
    found = [
        reminder(
            patient_id=state.patient_id,
            key=session_reminder_key(state.patient_id, s.session_id),
            kind="session_reminder",
            about=s.session_id,
            event=s.starts_at,
            text=f"{s.session_type.replace('_', ' ')} ({s.modality.replace('_', ' ')})",
            window=window,
            hours_before=cfg.session_hours_before,
            clock=state.clock,
            closed=state.closed,
        )
        for s in specs
        if s.attendee == "patient"
    ]
    return [r for r in found if r is not None]


def call_reminders(state: JourneyState, calls: list[FollowUp]) -> list[Reminder]:
    window, cfg = state.assessment.contact_window, state.protocol.reminders
    found = [
        reminder(
            patient_id=state.patient_id,
            key=call_reminder_key(state.patient_id, f.episode, f.call_id),
            kind="call_reminder",
            about=f.call_id,
            event=f.due_at,
            text="your check-in call from the clinic",
            window=window,
            hours_before=cfg.call_hours_before,
            clock=state.clock,
            closed=state.closed,
        )
        for f in calls
    ]
    return [r for r in found if r is not None]


def alumni_meetings(state: JourneyState) -> list[tuple[str, float]]:
    """The alumni and peer-support meetings of this episode's aftercare: (ID, program day)."""
    cfg = state.protocol.aftercare
    if not cfg.alumni_every_days or state.aftercare_start_day is None:
        return []
    start = state.aftercare_start_day
    first = start + (cfg.alumni_weekday.number - state.clock.calendar(start).weekday()) % 7
    hour = (cfg.alumni_start.hour * 60 + cfg.alumni_start.minute) / (24 * 60)
    days = range(int(first), start + cfg.duration_days, cfg.alumni_every_days)
    return [(f"ALUMNI-E{state.episode}-D{d - start:03d}", d + hour) for d in days]


def alumni_invitations(state: JourneyState) -> list[Reminder]:
    found = [
        reminder(
            patient_id=state.patient_id,
            key=alumni_invitation_key(state.patient_id, meeting_id),
            kind="alumni_invitation",
            about=meeting_id,
            event=state.clock.calendar(day),
            text="alumni and peer-support meeting (optional, all welcome)",
            window=state.assessment.contact_window,
            hours_before=48,
            clock=state.clock,
            closed=state.closed,
        )
        for meeting_id, day in alumni_meetings(state)
        if state.closed(state.clock.local_date(day)) is None
    ]
    return [r for r in found if r is not None]


class AlumniAttendance(_Request):
    """A patient went to an alumni or peer-support meeting (reported, never required)."""

    meeting_id: MeetingId


def check_alumni_attendance(state: JourneyState, report: AlumniAttendance, today: float) -> None:
    _require_active(state)
    meetings = dict(alumni_meetings(state))
    if report.meeting_id not in meetings:
        raise RequestRefused(f"no alumni meeting {report.meeting_id!r} for this patient")
    if meetings[report.meeting_id] > today:
        raise RequestRefused(f"meeting {report.meeting_id} has not happened yet")
    if report.meeting_id in state.alumni_attended:
        raise RequestRefused(f"attendance at {report.meeting_id} is already recorded")


def unreachable_in_a_row(state: JourneyState) -> int:
    """Consecutive unreachable check-ins of this episode, up to the latest one done."""
    done = [f for f in state.follow_ups if f.episode == state.episode and f.outcome is not None]
    count = 0
    for f in reversed(done):
        if f.outcome != CallOutcome.unreachable:
            break
        count += 1
    return count


def reassess(state: JourneyState, ratings: DimensionRatings) -> None:
    """A new placement and care plan from new ratings (a new treatment episode)."""
    state.assessment = state.assessment.model_copy(update={"ratings": ratings})
    state.placement = place(state.assessment, state.protocol)
    state.plan = plan_care(state.assessment, state.placement, state.protocol)
    state.risk = risk_level(state.assessment, state.protocol)
    state.episode += 1
    state.week = 0
    state.phase_start_day = None
    state.aftercare_start_day = None
    state.follow_ups = [f for f in state.follow_ups if f.outcome is not None]
    state.step_down_approved = False


def with_intensive_weeks(plan: CarePlan, weeks: int) -> CarePlan:
    stages = tuple(
        stage.model_copy(update={"weeks": weeks}) if stage.phase == Phase.intensive else stage
        for stage in plan.stages
    )
    return plan.model_copy(update={"stages": stages, "intensive_weeks": weeks})


def step_down_blocker(state: JourneyState, need_approval: bool = True) -> str | None:
    """Why the patient may not leave the intensive phase yet (None: they may)."""
    criteria = state.protocol.step_down.criteria
    if state.week < criteria.min_intensive_weeks:
        return (
            f"step-down needs {criteria.min_intensive_weeks} weeks of intensive care; "
            f"{state.week} done"
        )
    rate = state.summary().rate
    if rate is None or rate < criteria.min_attendance_rate:
        shown = "unknown" if rate is None else f"{rate:.0%}"
        return f"attendance {shown} is below the {criteria.min_attendance_rate:.0%} step-down needs"
    if need_approval and criteria.clinician_approval and not state.step_down_approved:
        return "step-down needs a case manager's approval (review_progress approve_step_down)"
    return None


def check_review(state: JourneyState, review: ProgressReview) -> None:
    _require_active(state)
    if state.phase != Phase.intensive or state.week < 1:
        raise RequestRefused("progress reviews apply to the intensive phase once it has begun")
    planned = state.plan.weeks_in(Phase.intensive)
    top = state.protocol.intensive.max_weeks
    if review.decision in ("extend", "shorten") and review.weeks is None:
        raise RequestRefused(f"{review.decision} needs a number of weeks")
    if review.decision == "extend" and planned + (review.weeks or 0) > top:
        raise RequestRefused(
            f"extending by {review.weeks} would make {planned + (review.weeks or 0)} weeks, "
            f"above the program's maximum of {top}"
        )
    if review.decision == "shorten":
        floor = max(state.week, state.protocol.step_down.criteria.min_intensive_weeks)
        if planned - (review.weeks or 0) < floor:
            raise RequestRefused(
                f"shortening by {review.weeks} would leave {planned - (review.weeks or 0)} "
                f"weeks; at least {floor} are needed"
            )
    if review.decision == "approve_step_down":
        blocker = step_down_blocker(state, need_approval=False)
        if blocker is not None:
            raise RequestRefused(blocker)
    if review.decision == "change_level":
        levels = state.protocol.intensive.levels
        if review.level not in levels:
            raise RequestRefused(f"level must be one of {', '.join(levels)}")
        fitted = fit_week(
            state.assessment,
            review.level,
            state.protocol.levels[review.level].pattern,
            state.protocol,
        )
        if isinstance(fitted, ScheduleConflict):
            raise RequestRefused(fitted.reason)


def apply_review(state: JourneyState, review: ProgressReview) -> str:
    planned = state.plan.weeks_in(Phase.intensive)
    if review.decision == "extend":
        state.plan = with_intensive_weeks(state.plan, planned + (review.weeks or 0))
    elif review.decision == "shorten":
        state.plan = with_intensive_weeks(state.plan, planned - (review.weeks or 0))
    elif review.decision == "approve_step_down":
        state.step_down_approved = True
        state.plan = with_intensive_weeks(state.plan, state.week)
    else:
        assert review.level is not None
        fitted = fit_week(
            state.assessment,
            review.level,
            state.protocol.levels[review.level].pattern,
            state.protocol,
        )
        assert not isinstance(fitted, ScheduleConflict)
        state.plan = state.plan.model_copy(
            update={
                "stages": tuple(
                    s.model_copy(update={"level": review.level, "schedule": fitted})
                    if s.phase == Phase.intensive
                    else s
                    for s in state.plan.stages
                )
            }
        )
    weeks = state.plan.weeks_in(Phase.intensive)
    return f"{review.decision}: intensive phase now {weeks} weeks (week {state.week} under way)"


def check_commitments_revision(state: JourneyState, revision: CommitmentsRevision) -> None:
    _require_active(state)
    if state.phase != Phase.intake or state.plan.conflict is None:
        raise RequestRefused("the patient's schedule has no conflict to resolve")


def apply_commitments_revision(state: JourneyState, revision: CommitmentsRevision) -> None:
    changes: dict[str, object] = {"commitments": revision.commitments}
    if revision.transport_barrier is not None:
        changes["transport_barrier"] = revision.transport_barrier
    state.assessment = state.assessment.model_copy(update=changes)
    state.plan = plan_care(state.assessment, state.placement, state.protocol)


# --- what a journey shows --------------------------------------------------------------


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


class JourneyOutcome(BaseModel):
    """What a finished journey returns."""

    patient_id: str
    outcome: Phase
    reason: str
    attendance: AttendanceSummary
    follow_ups_reached: int
    follow_ups_total: int
    ended_at: datetime


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


class JourneyInput(BaseModel):
    """A journey's start: the enrolment and program snapshot on the first run; only the
    carried state after continue-as-new (so PHI of the enrolment stays in the first run)."""

    enrolment: Enrolment | None = None
    protocol: ProgramProtocol | None = None
    site: Site | None = None
    """The patient's site (zone, holidays): its calendar is the journey's."""
    closures: tuple[Closure, ...] = ()
    """Unplanned closures of the site announced before the enrolment."""
    state: JourneyState | None = None
