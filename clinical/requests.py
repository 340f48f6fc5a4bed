"""What case managers ask of a journey: one model per request, checked for form at the
door (IDs whole, numbers bounded). Whether the journey can take it is the rules' business
(`RequestRefused` says why not)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from clinical.assessment import Commitment, DimensionRatings, SocialNeed
from clinical.identifiers import CaseManagerId, MeetingId, SessionId, TaskKey
from clinical.phases import Phase


class RequestRefused(ValueError):
    """A case manager's request that the rules refuse; the message says why."""


class ClosureKnown(RequestRefused):
    """The closure was announced to this journey before: nothing changes."""


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


class AlumniAttendance(_Request):
    """A patient went to an alumni or peer-support meeting (reported, never required)."""

    meeting_id: MeetingId


class Reassignment(_Request):
    """A clinical supervisor gives the patient another case manager (`case_manager_id` is
    the supervisor's own staff ID: who decided)."""

    to_case_manager_id: CaseManagerId
