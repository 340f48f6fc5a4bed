"""Aftercare follow-up calls: when they are due, and what a call found."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from clinical.assessment import ContactWindow
from clinical.clock import ProgramClock, local, next_open_day, zone
from clinical.instruments import BamAnswers, Finding, Phq9Answers, check_in_findings
from clinical.protocol import ProgramProtocol

CHECK_IN_CONCLUDED = "follow_up_call_completed"
"""The audit fact written when a check-in has concluded, with its outcome and attempts."""


CALL_REFERENCE = r"^P-[0-9A-HJKMNP-TV-Z]{8}/(E[0-9]{1,3}-)?FU-D[0-9]{3}/attempt-[0-9]{1,2}$"
"""A call attempt's reference (`FollowUpCallRequest.key`): patient, check-in, attempt."""


def follow_up_call_workflow_id(reference: str) -> str:
    """The FollowUpCall workflow that placed the call `reference` (the journey names its
    child `journey-{patient}-E{episode}-{call}`; a first episode's call_ref has no prefix)."""
    patient_id, call_ref, _ = reference.split("/")
    if not call_ref.startswith("E"):
        call_ref = f"E1-{call_ref}"
    return f"journey-{patient_id}-{call_ref}"


def check_in_concluded_key(patient_id: str, episode: int, call_id: str) -> str:
    return f"{patient_id}/E{episode}/{call_id}"


class CallOutcome(StrEnum):
    reached = "reached"
    unreachable = "unreachable"
    declined = "declined"


class CheckIn(BaseModel):
    """What a reached patient told us. Structured answers only: no free text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    days_of_use: Annotated[int, Field(ge=0, le=365)]
    bam: BamAnswers | None = None
    phq9: Phq9Answers | None = None

    def findings(self) -> list[Finding]:
        return check_in_findings(self.days_of_use, self.bam, self.phq9)


class FollowUp(BaseModel):
    model_config = ConfigDict(frozen=True)

    call_id: str
    day_offset: int
    day: float
    episode: int = 1
    due_at: datetime
    outcome: CallOutcome | None = None
    attempts: int = 0
    check_in: CheckIn | None = None


def follow_up_schedule(
    aftercare_start_day: int,
    window: ContactWindow,
    clock: ProgramClock,
    protocol: ProgramProtocol,
    episode: int = 1,
    offsets: tuple[int, ...] | None = None,
    closed: Callable[[date], object] | None = None,
) -> list[FollowUp]:
    """The aftercare check-ins (the protocol's days after aftercare starts, or `offsets`),
    each placed at the start of the patient's contact window (in the patient's own zone if
    they named one), on the next day the site is open (`closed(site date)` says why not)."""
    hour = (window.start.hour * 60 + window.start.minute) / (24 * 60)
    calls = []
    for offset in offsets if offsets is not None else protocol.aftercare.follow_up_days:
        day = aftercare_start_day + offset + hour
        if window.zone is not None and window.zone != clock.zone:
            on = clock.local_date(aftercare_start_day + offset)
            day = clock.calendar_day(local(datetime.combine(on, window.start), zone(window.zone)))
        day = next_open_day(clock, day, closed)
        calls.append(
            FollowUp(
                call_id=f"FU-D{offset:03d}",
                day_offset=offset,
                day=day,
                due_at=clock.calendar(day),
                episode=episode,
            )
        )
    return calls


class FollowUpCallPlan(BaseModel):
    """One check-in: a call placed within the contact window, retried over days."""

    model_config = ConfigDict(frozen=True)

    patient_id: str
    call_id: str
    due_at: datetime
    window: ContactWindow
    attempts: int
    attempt_spacing_seconds: float
    instruments: tuple[str, ...] = ()
    episode: int = 1
    sms_before_retry: bool = False
    callback_wait_seconds: float = 1800.0
    """How long an attempt waits for the provider's word on the call before counting it
    unreachable: real seconds (a provider's latency does not shrink with a program's clock)."""


class CallReport(BaseModel):
    """A telephony provider's word on a call it placed: how it ended and, if the patient
    answered, the check-in's answers. `reference` is the attempt's key (the provider's
    idempotency key)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reference: Annotated[str, Field(pattern=CALL_REFERENCE, max_length=96)]
    outcome: CallOutcome
    check_in: CheckIn | None = None


class FollowUpResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    call_id: str
    outcome: CallOutcome
    attempts: int
    check_in: CheckIn | None = None
