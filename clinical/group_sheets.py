"""The facilitator's sign-in sheet: one session of a group track, its roster marked once
and submitted. Each patient's mark goes to their own journey, which accepts or refuses it;
a sheet submitted again changes nothing (a mark the journey holds already is unchanged).

A group session is named by its track and its start as a UTC stamp (`20270301T1400Z`):
no patient is named in a sheet's address."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from clinical.identifiers import CaseManagerId, PatientId, ProgramId
from clinical.protocol import TrackId
from clinical.requests import AttendanceStatus

STAMP = "%Y%m%dT%H%MZ"
SubmissionId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]


def session_stamp(starts_at: datetime) -> str:
    """A group session's start as it appears in addresses and on the command line."""
    return starts_at.astimezone(UTC).strftime(STAMP)


def parse_stamp(text: str) -> datetime:
    """The start a stamp names; ValueError saying the form otherwise."""
    try:
        return datetime.strptime(text, STAMP).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{text!r} is not a session start like 20270301T1400Z (UTC)") from None


class GroupMark(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    patient_id: PatientId
    status: AttendanceStatus


class GroupSheet(BaseModel):
    """One group session's marks, as its facilitator submits them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    program_id: ProgramId
    track_id: TrackId
    starts_at: datetime
    marks: tuple[GroupMark, ...] = Field(min_length=1, max_length=50)
    submitted_by: CaseManagerId | None = None
    """Who marked it (None: each patient's own case manager, as an API client acts)."""
    submission: SubmissionId | None = None
    """Which submission this is (a rendering of the console's form, an API call's
    Idempotency-Key): the same submission sent again is the same updates, run once; None:
    a submission of its own."""

    @model_validator(mode="after")
    def _each_patient_once(self) -> GroupSheet:
        if self.starts_at.tzinfo is None:
            raise ValueError("starts_at needs a time zone")
        seen: set[str] = set()
        for mark in self.marks:
            if mark.patient_id in seen:
                raise ValueError(f"patient {mark.patient_id} is marked twice on the sheet")
            seen.add(mark.patient_id)
        return self


SheetOutcome = Literal["accepted", "unchanged", "refused"]


class SheetLine(BaseModel):
    """What became of one patient's mark: the journey accepted it, held it already, or
    refused it (and why)."""

    model_config = ConfigDict(frozen=True)

    patient_id: str
    session_id: str | None
    status: AttendanceStatus
    outcome: SheetOutcome
    reason: str = ""

    def describe(self) -> str:
        why = f": {self.reason}" if self.reason else ""
        return f"{self.patient_id} {self.status}: {self.outcome}{why}"


def sheet_update_id(
    submission: str, session_id: str, patient_id: str, held: str, status: str
) -> str:
    """The update that records one mark: the same submission sent again (a second click, a
    retried call) is the same update, run once by the journey; a later correction (even
    back to a mark held before) is a submission of its own and a change from what is held."""
    return f"group-sheet/{submission}/{patient_id}/{session_id}/{held}-{status}"
