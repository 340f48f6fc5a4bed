"""Reminders before sessions and check-in calls: when to send them so they arrive ahead of
the event but never in the patient's quiet hours, on the channel the patient chose."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict

from clinical.aftercare import FollowUp
from clinical.assessment import ContactWindow
from clinical.careplan import SessionSpec
from clinical.clock import ProgramClock, local, zone
from clinical.journey import JourneyState


class Reminder(BaseModel):
    """One reminder for the outbox. The text names the event and its time, never the
    patient (the adapter addresses it)."""

    model_config = ConfigDict(frozen=True)

    key: str
    patient_id: str
    channel: Literal["sms", "email"]
    kind: Literal[
        "session_reminder", "call_reminder", "check_in_sms", "alumni_invitation", "closure_notice"
    ]
    about: str
    deliver_at: datetime
    """Real time (the program clock's instant), for the outbox's sender."""
    body: str


def send_time(
    event: datetime,
    window: ContactWindow,
    hours_before: float,
    closed: Callable[[date], object] | None = None,
) -> datetime:
    """The latest moment inside the contact window that is at least `hours_before` ahead of
    the event, on a day the site is open (`closed(site date)` says why not). The window is
    the patient's wall-clock time: in their own zone if they named one, else the site's
    (the event's)."""
    tz = event.tzinfo if window.zone is None else zone(window.zone)
    assert tz is not None, "events are aware times"
    wanted = (event - timedelta(hours=hours_before)).astimezone(tz)
    day = wanted.date()
    for _ in range(31):
        start = local(datetime.combine(day, window.start), tz)
        end = local(datetime.combine(day, window.end), tz)
        site_day = start.astimezone(event.tzinfo).date()
        if start <= wanted and (closed is None or not closed(site_day)):
            return min(wanted, end)
        day -= timedelta(days=1)
    return wanted  # a month of closed days: send when wanted rather than never


def next_in_window(at: datetime, window: ContactWindow) -> datetime:
    """The first moment at or after `at` inside the patient's contact window."""
    tz = at.tzinfo if window.zone is None else zone(window.zone)
    assert tz is not None, "times are aware"
    here = at.astimezone(tz)
    for days in range(2):
        on = here.date() + timedelta(days=days)
        start = local(datetime.combine(on, window.start), tz)
        end = local(datetime.combine(on, window.end), tz)
        if here < end:
            return max(here, start)
    return here  # unreachable: tomorrow's window is ahead


def closure_notice(
    *,
    patient_id: str,
    day: date,
    reason: str,
    cancelled: int,
    now: datetime,
    window: ContactWindow,
    clock: ProgramClock,
) -> Reminder:
    """Telling a patient their sessions on a closed day are cancelled: on the channel they
    chose (a text if they take no reminders: this is no reminder), inside their window."""
    at = next_in_window(clock.calendar_of(now), window)
    return Reminder(
        key=closure_notice_key(patient_id, day),
        patient_id=patient_id,
        channel="sms" if window.reminders == "none" else window.reminders,
        kind="closure_notice",
        about=day.isoformat(),
        deliver_at=clock.instant(clock.calendar_day(at)),
        body=f"The clinic is closed on {day:%a %d %b} ({reason}): your {cancelled} "
        "session(s) that day are cancelled and do not count as missed.",
    )


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
    closed: Callable[[date], object] | None = None,
) -> Reminder | None:
    """A reminder for an event at clinic-calendar time `event`, or None when the patient
    wants none."""
    if window.reminders == "none":
        return None
    at = send_time(event, window, hours_before, closed)
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


def closure_notice_key(patient_id: str, day: date) -> str:
    return f"{patient_id}/closure/{day.isoformat()}"


def session_reminder_key(patient_id: str, session_id: str) -> str:
    return f"{patient_id}/remind/{session_id}"


def call_reminder_key(patient_id: str, episode: int, call_id: str) -> str:
    return f"{patient_id}/remind/E{episode}-{call_id}"


def alumni_invitation_key(patient_id: str, meeting_id: str) -> str:
    return f"{patient_id}/invite/{meeting_id}"


def session_reminders(state: JourneyState, specs: list[SessionSpec]) -> list[Reminder]:
    """A reminder before each of the patient's own sessions (family education is the
    family's, invited separately)."""
    window, cfg = state.assessment.contact_window, state.protocol.reminders
    found = [
        reminder(
            patient_id=state.patient_id,
            key=session_reminder_key(state.patient_id, s.session_id),
            kind="session_reminder",
            about=s.session_id,
            event=s.starts_at,
            text=f"{s.session_type.replace('_', ' ')} ({s.modality.replace('_', ' ')})",
            window=window,
            hours_before=cfg.session_hours_before,
            clock=state.clock,
            closed=state.closed,
        )
        for s in specs
        if s.attendee == "patient"
    ]
    return [r for r in found if r is not None]


def call_reminders(state: JourneyState, calls: list[FollowUp]) -> list[Reminder]:
    window, cfg = state.assessment.contact_window, state.protocol.reminders
    found = [
        reminder(
            patient_id=state.patient_id,
            key=call_reminder_key(state.patient_id, f.episode, f.call_id),
            kind="call_reminder",
            about=f.call_id,
            event=f.due_at,
            text="your check-in call from the clinic",
            window=window,
            hours_before=cfg.call_hours_before,
            clock=state.clock,
            closed=state.closed,
        )
        for f in calls
    ]
    return [r for r in found if r is not None]
