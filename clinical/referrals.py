"""Case-manager referrals to partner services (medical, housing, parenting, employment,
legal): a loop that must close. The rules here say which answers a referral accepts in
which stage, and what is due next; the Referral workflow only waits and acts on them."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from clinical.assessment import SocialNeed
from clinical.clock import ProgramClock
from clinical.identifiers import CaseManagerId, referral_workflow_id
from clinical.journey import JourneyState, ReferralRef, require_active
from clinical.protocol import ReferralConfig, TaskConfig
from clinical.requests import ReferralRequest, RequestRefused
from clinical.tasks import JourneyTask


class ReferralStage(StrEnum):
    requested = "requested"
    awaiting_consent = "awaiting_consent"
    sent = "sent"
    accepted = "accepted"
    closed = "closed"


class PartnerAnswer(StrEnum):
    accepted = "accepted"
    declined = "declined"
    completed = "completed"
    no_show = "no_show"


class ReferralOutcome(StrEnum):
    completed = "completed"
    declined = "declined"
    cancelled = "cancelled"
    expired = "expired"


def consent_kind(need: SocialNeed) -> str:
    """The consent a disclosure to this kind of partner needs (42 CFR Part 2)."""
    return f"disclosure:{need.value}"


class ReferralInput(BaseModel):
    """IDs and service levels only: what the patient needs is in the store, not here."""

    model_config = ConfigDict(frozen=True)

    referral_id: str
    patient_id: str
    case_manager_id: str
    need: SocialNeed
    journey_workflow_id: str
    service_levels: ReferralConfig
    seconds_per_day: float
    requested_by: str
    tasks: TaskConfig = TaskConfig()
    clock: ProgramClock | None = None
    """The journey's clock: service levels and task due times count wall-clock days at the
    site, as the journey's own do. None: a referral started before, whose days were
    `seconds_per_day` real seconds from its start."""


class PartnerReport(BaseModel):
    """The partner service's answer, as reported (by its portal or a case manager)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    answer: PartnerAnswer
    reported_by: str = Field(min_length=1, max_length=40)


class ConsentGrant(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    case_manager_id: CaseManagerId


CancelReason = Literal[
    "no_longer_needed", "patient_declined", "discharged", "duplicate", "journey_ended"
]
"""Why a referral was cancelled (`journey_ended`: the journey that asked for it ended)."""


class ReferralCancel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    case_manager_id: CaseManagerId
    reason: CancelReason


class ReferralState(BaseModel):
    stage: ReferralStage = ReferralStage.requested
    sent_day: float | None = None
    accepted_day: float | None = None
    reminders: int = 0
    case_manager_tasks: list[JourneyTask] = []
    no_shows: int = 0
    outcome: ReferralOutcome | None = None
    closed_by: str | None = None
    events_taken: list[str] = []
    """The partner's events applied (`sender:event ID`), the last few."""

    @property
    def tasks(self) -> list[str]:
        """Which service-level tasks have been opened ("stalled", "follow_up")."""
        kinds = [t.kind for t in self.case_manager_tasks]
        return [mark for mark, kind in _SERVICE_LEVEL_TASKS if kind in kinds]


_SERVICE_LEVEL_TASKS = (("stalled", "referral_stalled"), ("follow_up", "referral_follow_up"))


class ReferralRefused(ValueError):
    """A report or request the referral's stage does not allow; the message says why."""


# Which answers each stage takes; anything else is refused before it reaches history.
_ANSWERS: dict[ReferralStage, tuple[PartnerAnswer, ...]] = {
    ReferralStage.sent: (PartnerAnswer.accepted, PartnerAnswer.declined, PartnerAnswer.completed),
    ReferralStage.accepted: (
        PartnerAnswer.completed,
        PartnerAnswer.declined,
        PartnerAnswer.no_show,
    ),
}


def check_partner_report(state: ReferralState, report: PartnerReport) -> None:
    if state.stage == ReferralStage.closed:
        raise ReferralRefused(f"the referral is closed ({state.outcome})")
    allowed = _ANSWERS.get(state.stage, ())
    if report.answer not in allowed:
        if not allowed:
            raise ReferralRefused(f"the referral has not been sent yet ({state.stage.value})")
        raise ReferralRefused(
            f"a referral that is {state.stage.value} takes "
            f"{', '.join(a.value for a in allowed)}, not {report.answer.value}"
        )


def apply_partner_report(state: ReferralState, report: PartnerReport, day: float) -> None:
    if report.answer == PartnerAnswer.accepted:
        state.stage, state.accepted_day = ReferralStage.accepted, day
    elif report.answer == PartnerAnswer.no_show:
        state.no_shows += 1
    else:
        close(state, ReferralOutcome(report.answer.value), report.reported_by)


def check_consent_grant(state: ReferralState) -> None:
    if state.stage != ReferralStage.awaiting_consent:
        raise ReferralRefused(f"the referral is not waiting for consent ({state.stage.value})")


def check_cancel(state: ReferralState) -> None:
    if state.stage == ReferralStage.closed:
        raise ReferralRefused(f"the referral is already closed ({state.outcome})")


def close(state: ReferralState, outcome: ReferralOutcome, by: str) -> None:
    state.stage, state.outcome, state.closed_by = ReferralStage.closed, outcome, by


Due = Literal["reminder", "stalled_task", "follow_up_task", "expiry"]


def next_due(state: ReferralState, levels: ReferralConfig) -> tuple[Due, float] | None:
    """What the referral waits for next, and on which program day, while no answer comes."""
    if state.sent_day is None or state.stage == ReferralStage.closed:
        return None
    expiry = state.sent_day + levels.expire_days
    if state.stage == ReferralStage.sent:
        if state.reminders == 0:
            return "reminder", state.sent_day + levels.response_days
        if "stalled" not in state.tasks:
            stalled = state.sent_day + levels.response_days + levels.task_after_reminder_days
            return "stalled_task", stalled
    if state.stage == ReferralStage.accepted and "follow_up" not in state.tasks:
        assert state.accepted_day is not None
        return "follow_up_task", min(state.accepted_day + levels.completion_days, expiry)
    return "expiry", expiry


class ReferralStatus(BaseModel):
    referral_id: str
    need: SocialNeed
    stage: ReferralStage
    outcome: ReferralOutcome | None
    reminders: int
    no_shows: int
    tasks: list[str]
    next_due: str | None
    next_due_day: float | None
    """On the journey's program days (days since the referral began for one from before)."""
    open_tasks: list[JourneyTask] = []


def check_referral(state: JourneyState, request: ReferralRequest) -> None:
    require_active(state)
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


def apply_referral_closed(state: JourneyState, closed: ReferralStatus) -> None:
    """A referral's loop has closed: the journey lists its outcome."""
    for ref in state.referrals:
        if ref.referral_id == closed.referral_id:
            ref.outcome = str(closed.outcome)


def referrals_ended(refs: list[ReferralRef]) -> None:
    """The journey ended and cancelled the referrals it left open."""
    for ref in refs:
        ref.outcome = ref.outcome or "cancelled"
