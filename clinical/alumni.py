"""Aftercare's alumni and peer-support meetings: their calendar, the invitations, and
attendance a case manager reports (welcome, never required)."""

from __future__ import annotations

from clinical.journey import JourneyState, require_active
from clinical.reminders import Reminder, alumni_invitation_key, reminder
from clinical.requests import AlumniAttendance, RequestRefused

ALUMNI_ATTENDED = "alumni_meeting_attended"
"""The audit action of a meeting attended (the report counts them)."""


def alumni_meetings(state: JourneyState) -> list[tuple[str, float]]:
    """The alumni and peer-support meetings of this episode's aftercare: (ID, program day)."""
    cfg = state.protocol.aftercare
    if not cfg.alumni_every_days or state.aftercare_start_day is None:
        return []
    start = state.aftercare_start_day
    first = start + (cfg.alumni_weekday.number - state.clock.calendar(start).weekday()) % 7
    hour = (cfg.alumni_start.hour * 60 + cfg.alumni_start.minute) / (24 * 60)
    days = range(int(first), start + cfg.duration_days, cfg.alumni_every_days)
    return [(f"ALUMNI-E{state.episode}-D{d - start:03d}", d + hour) for d in days]


def alumni_invitations(state: JourneyState) -> list[Reminder]:
    found = [
        reminder(
            patient_id=state.patient_id,
            key=alumni_invitation_key(state.patient_id, meeting_id),
            kind="alumni_invitation",
            about=meeting_id,
            event=state.clock.calendar(day),
            text="alumni and peer-support meeting (optional, all welcome)",
            window=state.assessment.contact_window,
            hours_before=48,
            clock=state.clock,
            closed=state.closed,
        )
        for meeting_id, day in alumni_meetings(state)
        if state.closed(state.clock.local_date(day)) is None
    ]
    return [r for r in found if r is not None]


def check_alumni_attendance(state: JourneyState, report: AlumniAttendance, today: float) -> None:
    require_active(state)
    meetings = dict(alumni_meetings(state))
    if report.meeting_id not in meetings:
        raise RequestRefused(f"no alumni meeting {report.meeting_id!r} for this patient")
    if meetings[report.meeting_id] > today:
        raise RequestRefused(f"meeting {report.meeting_id} has not happened yet")
    if report.meeting_id in state.alumni_attended:
        raise RequestRefused(f"attendance at {report.meeting_id} is already recorded")


def apply_alumni_attendance(state: JourneyState, report: AlumniAttendance) -> int:
    """Record it; how many meetings the patient has been to."""
    state.alumni_attended.append(report.meeting_id)
    return len(state.alumni_attended)
