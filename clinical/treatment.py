"""The rules of the treatment phases a case manager acts on: attendance, progress
reviews and step-down, the patient's commitments, family consent, relapse and discharge.
Each request has a `check_*` (refuses before history) and an `apply_*` (the change)."""

from __future__ import annotations

from clinical.actors import ENGINE
from clinical.attendance import SessionRecord, SessionStatus
from clinical.careplan import FAMILY_SESSION_TYPES, CarePlan, ScheduleConflict, fit_week, plan_care
from clinical.journey import JourneyState, Relapse, reassess, require_active
from clinical.phases import Phase
from clinical.requests import (
    AttendanceReport,
    AttendanceSheet,
    CommitmentsRevision,
    DischargeRequest,
    FamilyConsentChange,
    ProgressReview,
    Reassignment,
    RelapseReport,
    RequestRefused,
)


def check_attendance(state: JourneyState, report: AttendanceReport, now_day: float) -> None:
    require_active(state)
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
    require_active(state)
    if state.discharge is not None:
        raise RequestRefused(
            f"a discharge ({state.discharge.reason.value}) is already being processed"
        )


def apply_discharge(state: JourneyState, request: DischargeRequest) -> None:
    """The journey ends at its next step (it is woken for it)."""
    state.discharge = request


def check_family_consent(state: JourneyState, change: FamilyConsentChange) -> None:
    require_active(state)
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


RELAPSE_PHASES = (Phase.intensive, Phase.step_down, Phase.aftercare)


def check_relapse(state: JourneyState, report: RelapseReport) -> None:
    require_active(state)
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
    return Relapse(reported_by=ENGINE, source="follow_up_call", ratings=ratings)


def apply_relapse(state: JourneyState, report: RelapseReport) -> None:
    """A case manager's relapse report, acted on at the journey's next step."""
    state.relapse = Relapse(
        reported_by=report.case_manager_id, source="case_manager", ratings=report.ratings
    )


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
    require_active(state)
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
    require_active(state)
    if state.phase != Phase.intake or state.plan.conflict is None:
        raise RequestRefused("the patient's schedule has no conflict to resolve")


def apply_commitments_revision(state: JourneyState, revision: CommitmentsRevision) -> None:
    changes: dict[str, object] = {"commitments": revision.commitments}
    if revision.transport_barrier is not None:
        changes["transport_barrier"] = revision.transport_barrier
    state.assessment = state.assessment.model_copy(update=changes)
    state.plan = plan_care(state.assessment, state.placement, state.protocol)


def relink(state: JourneyState, relapse: Relapse) -> None:
    """Relapse: back to intake with the reassessment, as a new treatment episode."""
    state.relapse = None
    reassess(state, relapse.ratings)
    state.phase = Phase.intake


def check_reassignment(state: JourneyState, change: Reassignment) -> None:
    require_active(state)
    if change.to_case_manager_id == state.case_manager_id:
        raise RequestRefused(f"{change.to_case_manager_id} is the case manager already")


def apply_reassignment(state: JourneyState, change: Reassignment) -> str:
    """The new case manager takes the journey's tasks from now on; the previous one."""
    previous = state.case_manager_id
    state.case_manager_id = change.to_case_manager_id
    return previous
