"""Reminders before sessions and check-in calls: when to send them so they arrive ahead of
the event but never in the patient's quiet hours, on the channel the patient chose."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict

from clinical.assessment import ContactWindow
from clinical.clock import ProgramClock


class Reminder(BaseModel):
    """One reminder for the outbox. The text names the event and its time, never the
    patient (the adapter addresses it)."""

    model_config = ConfigDict(frozen=True)

    key: str
    patient_id: str
    channel: Literal["sms", "email"]
    kind: Literal["session_reminder", "call_reminder", "check_in_sms", "alumni_invitation"]
    about: str
    deliver_at: datetime
    """Real time (the program clock's instant), for the outbox's sender."""
    body: str


def send_time(event: datetime, window: ContactWindow, hours_before: float) -> datetime:
    """The latest moment inside the contact window that is at least `hours_before` ahead of
    the event (clinic-calendar times)."""
    wanted = event - timedelta(hours=hours_before)
    day = wanted.date()
    for _ in range(8):
        start = datetime.combine(day, window.start, wanted.tzinfo)
        end = datetime.combine(day, window.end, wanted.tzinfo)
        if start <= wanted:
            return min(wanted, end)
        day -= timedelta(days=1)
    return wanted  # unreachable: every day has a window


def reminder(
    *,
    patient_id: str,
    key: str,
    kind: Literal["session_reminder", "call_reminder", "check_in_sms", "alumni_invitation"],
    about: str,
    event: datetime,
    text: str,
    window: ContactWindow,
    hours_before: float,
    clock: ProgramClock,
) -> Reminder | None:
    """A reminder for an event at clinic-calendar time `event`, or None when the patient
    wants none."""
    if window.reminders == "none":
        return None
    at = send_time(event, window, hours_before)
    return Reminder(
        key=key,
        patient_id=patient_id,
        channel=window.reminders,
        kind=kind,
        about=about,
        deliver_at=clock.instant(clock.calendar_day(at)),
        body=f"{'Invitation' if kind == 'alumni_invitation' else 'Reminder'}: {text} "
        f"on {event:%a %d %b at %H:%M}",
    )


def session_reminder_key(patient_id: str, session_id: str) -> str:
    return f"{patient_id}/remind/{session_id}"


def call_reminder_key(patient_id: str, episode: int, call_id: str) -> str:
    return f"{patient_id}/remind/E{episode}-{call_id}"


def alumni_invitation_key(patient_id: str, meeting_id: str) -> str:
    return f"{patient_id}/invite/{meeting_id}"
