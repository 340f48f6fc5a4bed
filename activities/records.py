"""What journeys send to and get back from activities. Pure pydantic, importable by
workflow code."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from clinical.aftercare import CallOutcome, CheckIn
from clinical.assessment import Assessment, ContactWindow, Enrolment
from clinical.attendance import SessionRecord
from clinical.careplan import CarePlan, SessionSpec
from clinical.counsellors import CounsellingConfig
from clinical.placement import Placement
from clinical.protocol import ProgramProtocol
from clinical.referrals import ReferralInput
from clinical.reminders import Reminder
from clinical.tasks import TaskKind


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True)


class AuditEntry(_Record):
    """One fact for the audit trail: who did what, to which patient, when and why."""

    key: str
    actor: str
    action: str
    purpose: str
    at: datetime
    detail: dict[str, str | int | float | bool | None] = {}


class IntakeRecord(_Record):
    enrolment: Enrolment
    placement: Placement
    plan: CarePlan
    risk: str
    at: datetime


class SessionBooking(_Record):
    patient_id: str
    sessions: list[SessionSpec]
    reminders: list[Reminder] = []
    closed: list[SessionSpec] = []
    """The week's sessions on days the site is closed: on the record as cancelled, never
    booked (no reminder, no invitation), never missed."""
    # The week's other writes, in the same transaction (journeys from before sent them in
    # a record_care_events of their own).
    events: CareEvents | None = None


class BookingResult(_Record):
    booked: int
    already_booked: int
    session_ids: list[str] = []
    """What was booked: a write in the workflow task leaves only its result in the history
    (results recorded before this held the counts alone)."""


class TaskResolution(_Record):
    key: str
    by: str
    at: datetime


class TaskCompletion(_Record):
    """A case manager marked a task done."""

    key: str
    patient_id: str
    kind: str
    by: str
    at: datetime


class CareEvents(_Record):
    """Attendance changes, audit entries and resolved tasks gathered since the last write."""

    patient_id: str
    session_changes: list[SessionRecord] = []
    audit: list[AuditEntry] = []
    tasks_resolved: list[TaskResolution] = []
    reminders: list[Reminder] = []
    reminders_withdrawn: list[str] = []


class SessionStatusChange(_Record):
    session_id: str
    status: str


class CareEventsWritten(_Record):
    """A write's receipt: the sessions whose status it set, for the history's story (a
    write in the workflow task leaves only its result there)."""

    changed: int
    session_changes: list[SessionStatusChange] = []

    @model_validator(mode="before")
    @classmethod
    def _from_count(cls, value: object) -> object:
        # Results recorded before receipts were the bare count.
        return {"changed": value} if isinstance(value, int) else value


class ReferralsEnd(_Record):
    """The referrals still open when their journey ends: each is cancelled."""

    patient_id: str
    workflow_ids: list[str]
    case_manager_id: str


class CaseManagerTask(_Record):
    key: str
    patient_id: str
    case_manager_id: str
    kind: TaskKind
    detail: str
    due_at: datetime | None = None
    workflow_id: str | None = None
    """The workflow that completing the task reaches (the journey when None)."""


class TaskOpened(_Record):
    """A task's receipt: what was opened, and whether it was new (a retried write finds it
    there already)."""

    created: bool
    key: str = ""
    kind: str = ""
    detail: str = ""

    @model_validator(mode="before")
    @classmethod
    def _from_flag(cls, value: object) -> object:
        # Results recorded before receipts were the bare flag.
        return {"created": value} if isinstance(value, bool) else value


class ReferralRecord(_Record):
    key: str
    referral_id: str
    workflow_id: str
    patient_id: str
    case_manager_id: str
    need: str
    requested_by: str
    at: datetime


class ReferralDispatch(_Record):
    key: str
    patient_id: str
    need: str
    consent_kind: str
    at: datetime


class ReferralLaunch(_Record):
    """Start a referral's own workflow: its ID, the queue it runs on, its IDs-only input."""

    workflow_id: str
    task_queue: str
    referral: ReferralInput


class ReferralReminder(_Record):
    key: str
    patient_id: str
    need: str
    number: int


class ReferralClosing(_Record):
    key: str
    patient_id: str
    referral_id: str
    outcome: str
    by: str
    at: datetime


class ConsentRecord(_Record):
    key: str
    patient_id: str
    kind: str
    granted: bool
    recorded_by: str
    at: datetime


class ReassignmentRecord(_Record):
    """The patient's new case manager: their row and open tasks move to them."""

    key: str
    patient_id: str
    case_manager_id: str
    previous: str
    by: str
    at: datetime


class PhaseChangeRecord(_Record):
    key: str
    patient_id: str
    case_manager_id: str
    phase: str
    level: str | None
    risk: str
    at: datetime
    reason: str


class FollowUpCallRequest(_Record):
    patient_id: str
    call_id: str
    attempt: int
    due_at: datetime
    window: ContactWindow
    episode: int = 1
    instruments: tuple[str, ...] = ()
    last_attempt: int | None = None
    """The check-in's last attempt: the call that concludes the check-in records that in the
    audit trail too (None in requests from before: their journeys wrote it)."""
    at: datetime | None = None
    """When the attempt was placed, on the journey's clock."""

    def concludes_with(self, outcome: CallOutcome) -> bool:
        """Whether this attempt, answered so, ends a check-in whose conclusion the call
        records (reached or declined, or unreachable on the last attempt)."""
        if self.last_attempt is None:
            return False
        return outcome != CallOutcome.unreachable or self.attempt >= self.last_attempt

    @property
    def call_ref(self) -> str:
        """The check-in within the patient's journey: a later episode's day-7 call is not
        the first episode's."""
        return self.call_id if self.episode == 1 else f"E{self.episode}-{self.call_id}"

    @property
    def key(self) -> str:
        return f"{self.patient_id}/{self.call_ref}/attempt-{self.attempt}"


class CallResult(_Record):
    outcome: CallOutcome
    check_in: CheckIn | None = None


class GroupPlacementRequest(_Record):
    """Place the patient in a group track of their site for `phase` (the seat idempotent:
    a patient already seated in a fitting track keeps that seat)."""

    patient_id: str
    program_id: str
    site_id: str
    level: str
    phase: Literal["intensive", "step_down"]
    assessment: Assessment
    protocol: ProgramProtocol
    at: datetime
    waitlist: bool = True
    """Join the best track's waitlist when every fitting track is full (False: stay
    unplaced)."""


class SeatHandedOn(_Record):
    """A seat that went to a patient waiting for it, whose journey must be told."""

    patient_id: str
    track_id: str


class GroupPlacement(_Record):
    """Where the patient is: seated in `track_id`, waiting for `waiting_for` (with
    `ahead` before them), or neither (`reasons` say why no track fits)."""

    track_id: str | None = None
    waiting_for: str | None = None
    ahead: int = 0
    alternatives: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    nearest: str | None = None
    """When no track fits: the one that comes nearest, and what it would take."""
    handed_on: tuple[SeatHandedOn, ...] = ()


class GroupRelease(_Record):
    """The patient leaves these tracks (seat or waitlist place) at `at`."""

    patient_id: str
    program_id: str
    track_ids: tuple[str, ...]
    protocol: ProgramProtocol
    at: datetime


class CallOutcomeRecord(_Record):
    """How an attempt ended, for the store: the provider's word, or none in time."""

    request: FollowUpCallRequest
    outcome: CallOutcome
    check_in: CheckIn | None = None
    heard: bool = True
    """False: the provider said nothing within the wait; the attempt counts unreachable."""


class SurveyIssue(_Record):
    """Send the patient the program's questionnaire for `occasion` (once per key)."""

    key: str
    patient_id: str
    program_id: str
    site_id: str
    track_id: str | None
    occasion: Literal["step_down", "end", "aftercare"]
    episode: int
    at: datetime
    link_days: int
    channel: Literal["sms", "email"]


class CounsellorWanted(_Record):
    """One of the week's sessions that needs a counsellor."""

    session_id: str
    starts_at: datetime
    hours: float


class CounsellorBooking(_Record):
    """Give each session a counsellor of the site (idempotent: a session keeps the one it
    has). `zone`: the site's, for counsellors' site-local hours and weeks."""

    patient_id: str
    program_id: str
    site_id: str
    zone: str
    sessions: tuple[CounsellorWanted, ...]
    counselling: CounsellingConfig
    at: datetime


class CounsellorsBooked(_Record):
    booked: dict[str, str] = {}
    """Counsellor ID by session ID."""
    unstaffed: dict[str, str] = {}
    """Why no counsellor, by session ID."""


class CounsellorRelease(_Record):
    """The patient's counsellor sessions from `from_` on are let go: all of them, or only
    `sessions` (a closure's cancellations)."""

    patient_id: str
    from_: datetime
    sessions: tuple[str, ...] | None = None
