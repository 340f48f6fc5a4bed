"""A patient's journey as data: the state a journey workflow carries (across
continue-as-new), how it starts and what it returns. The rules that change it live beside
it by area (treatment, check-ins, alumni, closures, referrals, tasks); the workflow only
sequences them."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from clinical.aftercare import FollowUp
from clinical.assessment import Assessment, DimensionRatings, Enrolment, SocialNeed
from clinical.attendance import AttendanceSummary, SessionRecord, summarize
from clinical.careplan import CarePlan, plan_care
from clinical.clock import ProgramClock
from clinical.phases import Phase
from clinical.placement import Placement, place, place_enrolment, risk_level
from clinical.protocol import GroupTrack, ProgramProtocol
from clinical.requests import DischargeRequest, RequestRefused
from clinical.sites import Closure, ClosureCalendar, Site
from clinical.tasks import JourneyTask


class PhaseChange(BaseModel):
    model_config = ConfigDict(frozen=True)

    phase: Phase
    at: datetime
    day: float
    reason: str


class Relapse(BaseModel):
    """A relapse waiting to be acted on: who found it and the reassessment."""

    model_config = ConfigDict(frozen=True)

    reported_by: str
    source: Literal["case_manager", "follow_up_call"]
    ratings: DimensionRatings


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
    group_tracks: dict[str, str] = {}
    """The group track the patient holds a seat in, by phase (`intensive`, `step_down`)."""
    group_waiting: str | None = None
    """The track whose waitlist the patient is on (their journey waits in intake)."""
    surveys_sent: list[str] = []
    """The questionnaires sent, as `E<episode>-<occasion>` (clinical.surveys)."""
    events_taken: dict[str, list[str]] = {}
    """Other systems' events applied (`sender:event ID`), the last few per session."""
    closures: ClosureCalendar | None = None
    """The site's closed days (holidays, announced closures). None: a journey enrolled before
    sites had zones, on the UTC calendar it started on, which takes no closures."""

    def closed(self, day: date) -> str | None:
        """Why the site is closed on a local date (None when open, or no site calendar)."""
        return None if self.closures is None else self.closures.closed(day)

    def placed_tracks(self) -> dict[Phase, GroupTrack]:
        """The tracks the patient is seated in, by phase (those the program still has)."""
        tracks = {t.id: t for t in self.protocol.groups.tracks}
        return {
            Phase(phase): tracks[track_id]
            for phase, track_id in self.group_tracks.items()
            if track_id in tracks
        }

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


def enter_phase(state: JourneyState, phase: Phase, start_day: int) -> None:
    """A treatment phase (or aftercare) begins on program day `start_day`; weeks count
    from it."""
    state.phase = phase
    state.phase_start_day = start_day
    state.week = 0


def note_phase_change(state: JourneyState, at: datetime, day: float, reason: str) -> None:
    """The phase the journey is now in joins its history, with why."""
    state.phase_history = [
        *state.phase_history,
        PhaseChange(phase=state.phase, at=at, day=day, reason=reason),
    ]


def require_active(state: JourneyState) -> None:
    if state.phase.is_terminal:
        raise RequestRefused(f"the journey has ended ({state.phase.value})")


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


class JourneyOutcome(BaseModel):
    """What a finished journey returns."""

    patient_id: str
    outcome: Phase
    reason: str
    attendance: AttendanceSummary
    follow_ups_reached: int
    follow_ups_total: int
    ended_at: datetime


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
