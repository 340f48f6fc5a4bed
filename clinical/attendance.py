"""Attendance: the earliest indicator of engagement.

A session is `scheduled` until a case manager records it (attended / missed / excused) or,
once the protocol's grace period has passed with no record, it is counted as missed."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from clinical.careplan import SessionSpec


class SessionStatus(StrEnum):
    scheduled = "scheduled"
    attended = "attended"
    missed = "missed"
    excused = "excused"
    cancelled = "cancelled"


RECORDABLE = (SessionStatus.attended, SessionStatus.missed, SessionStatus.excused)


class SessionRecord(SessionSpec):
    """A booked session and what became of it."""

    status: SessionStatus = SessionStatus.scheduled
    recorded_by: str | None = None
    missed_by_grace: bool = False
    cancelled_for: str | None = None
    """Why a cancelled session was cancelled when it was the site's closure (never missed)."""

    @classmethod
    def booked(cls, spec: SessionSpec) -> SessionRecord:
        return cls(**spec.model_dump())


class AttendanceSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    attended: int
    missed: int
    excused: int
    pending: int
    cancelled: int

    @property
    def counted(self) -> int:
        return self.attended + self.missed

    @property
    def rate(self) -> float | None:
        """Attended / (attended + missed); excused and pending sessions do not count."""
        return None if self.counted == 0 else self.attended / self.counted


def summarize(records: list[SessionRecord]) -> AttendanceSummary:
    """The patient's attendance (family education, for the family alone, is not theirs)."""
    count = {status: 0 for status in SessionStatus}
    for r in records:
        if r.attendee == "patient":
            count[r.status] += 1
    return AttendanceSummary(
        attended=count[SessionStatus.attended],
        missed=count[SessionStatus.missed],
        excused=count[SessionStatus.excused],
        pending=count[SessionStatus.scheduled],
        cancelled=count[SessionStatus.cancelled],
    )


def close_out(
    records: list[SessionRecord], now_day: float, grace_days: float
) -> tuple[list[SessionRecord], list[SessionRecord]]:
    """Count sessions still unrecorded after the grace period as missed.

    Returns the updated records and the ones that changed."""
    updated: list[SessionRecord] = []
    changed: list[SessionRecord] = []
    for r in records:
        if r.status == SessionStatus.scheduled and r.day + grace_days <= now_day:
            r = r.model_copy(update={"status": SessionStatus.missed, "missed_by_grace": True})
            changed.append(r)
        updated.append(r)
    return updated, changed


def cancel_from(
    records: list[SessionRecord],
    now_day: float,
    only: Callable[[SessionRecord], bool] | None = None,
    because: str | None = None,
) -> tuple[list[SessionRecord], list[SessionRecord]]:
    """Cancel sessions that have not started yet (a journey ending, a plan change; `only`
    those, `because` a closure). Returns the updated records and the ones cancelled."""
    updated: list[SessionRecord] = []
    changed: list[SessionRecord] = []
    for r in records:
        if r.status == SessionStatus.scheduled and r.day > now_day and (only is None or only(r)):
            r = r.model_copy(update={"status": SessionStatus.cancelled, "cancelled_for": because})
            changed.append(r)
        updated.append(r)
    return updated, changed
