"""Events other systems send (an EHR's attendance, a partner's answer to a referral),
as the workflows take them: by signal, after the front door checked what it could from the
store and the sender was answered. The workflow applies each event once by its ID, with the
same rule a case manager's request meets; a refusal the store could not foresee becomes a
task for the case manager naming the event (never its body)."""

from __future__ import annotations

import hashlib
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from clinical.identifiers import SessionId
from clinical.referrals import PartnerAnswer
from clinical.requests import AttendanceStatus
from clinical.tasks import TaskKind

EVENTS_KEPT = 8
"""Event IDs remembered per session (or referral): a retry comes within minutes, and a
session or referral takes few events in its life, so the last few are enough."""

EVENT_REFUSED: TaskKind = "event_refused"

EventId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
SenderName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9._-]{1,31}$")]


class InboundEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: EventId
    sender: SenderName

    @property
    def ref(self) -> str:
        """The event as tasks and audit keys name it: short, and only [0-9a-f] (an event
        ID may hold characters a task key may not)."""
        return hashlib.sha256(f"{self.sender}/{self.event_id}".encode()).hexdigest()[:16]

    @property
    def named(self) -> str:
        """The event for a case manager's task: who sent it and its ID."""
        return f"{self.sender} event {self.event_id}"


class AttendanceEvent(InboundEvent):
    """An EHR's appointment update: a session attended or missed."""

    session_id: SessionId
    status: AttendanceStatus


class PartnerAnswerEvent(InboundEvent):
    """A partner portal's answer to the referral the signal goes to."""

    answer: PartnerAnswer


def taken_before(seen: list[str], event: InboundEvent) -> bool:
    return f"{event.sender}:{event.event_id}" in seen


def remember(seen: list[str], event: InboundEvent) -> list[str]:
    """`seen` with the event's ID last, the oldest dropped past EVENTS_KEPT."""
    return [*seen, f"{event.sender}:{event.event_id}"][-EVENTS_KEPT:]


def refusal_detail(event: InboundEvent, reason: str) -> str:
    return f"{event.named} was not applied: {reason}. Check it with the sender"
