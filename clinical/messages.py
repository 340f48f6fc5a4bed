"""What a message to a patient says when it leaves the clinic: a text or an e-mail can be
read by anyone holding the phone, so it names no diagnosis, substance, session type or
program, only that the care team expects them and when. The outbox keeps the clinic's own
wording; this is the wording that is sent."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from clinical.assessment import ContactWindow
from clinical.clock import zone
from clinical.protocol import ReminderConfig
from clinical.reminders import next_in_window

_WHEN = r"(?P<when>[A-Z][a-z]{2} \d\d [A-Z][a-z]{2} at \d\d:\d\d)"
_SESSION = re.compile(rf"Reminder: .+ \((?P<modality>in person|telehealth)\) on {_WHEN}")
_CALL = re.compile(rf"Reminder: your check-in call from the clinic on {_WHEN}")
_INVITATION = re.compile(rf"Invitation: .+ on {_WHEN}")
# A family session's invitation as the booking writes it (no "at" before the time).
_FAMILY = re.compile(
    r"Invitation: .+ on (?P<day>[A-Z][a-z]{2} \d\d [A-Z][a-z]{2}) (?P<time>\d\d:\d\d) "
    r"\((?P<modality>in person|telehealth)\)"
)
FAMILY_KINDS = frozenset({"invite_family_therapy", "invite_family_education"})

# A survey's link: the console's origin and the signed opaque token, nothing else.
_SURVEY = re.compile(
    r"Survey: (?P<url>https?://[A-Za-z0-9.:\[\]-]+(/[A-Za-z0-9._-]+)*/survey/[A-Za-z0-9._-]+)"
)
SURVEY_KIND = "survey_invitation"

# Written for the patient's phone already: no session type, no program.
_AS_WRITTEN = frozenset({"check_in_sms", "closure_notice"})


def patient_text(kind: str, body: str) -> str | None:
    """The words sent for an outbox message of this kind, or None when there are no
    words for it that are safe to send (a kind or shape this does not know: not sent)."""
    if kind in _AS_WRITTEN:
        return body
    if kind == SURVEY_KIND:
        found = _SURVEY.fullmatch(body)
        if found is None:
            return None
        return (
            "A few short questions on how things are going for you, if you have two minutes: "
            f"{found['url']} (the link works once)."
        )
    if kind in FAMILY_KINDS:
        # To a relative: names neither the patient nor what the care is for.
        family = _FAMILY.fullmatch(body)
        if family is None:
            return None
        how = "by video" if family["modality"] == "telehealth" else "in person"
        return (
            "Invitation: you are invited to a session with the care team of someone close to "
            f"you on {family['day']} at {family['time']} ({how})."
        )
    pattern = {
        "session_reminder": _SESSION,
        "call_reminder": _CALL,
        "alumni_invitation": _INVITATION,
    }.get(kind)
    found = None if pattern is None else pattern.fullmatch(body)
    if found is None:
        return None
    when = found["when"]
    if kind == "session_reminder":
        how = "by video" if found["modality"] == "telehealth" else "in person"
        return f"Reminder: you have an appointment with your care team on {when} ({how})."
    if kind == "call_reminder":
        return f"Reminder: your care team will call you on {when}."
    return f"Invitation: an optional group meeting with your care team on {when}."


def survey_message(url: str) -> str:
    """The outbox's wording of a survey's invitation (`patient_text` words what is sent)."""
    return f"Survey: {url}"


def channel_chosen(kind: str, channel: str, window: ContactWindow) -> bool:
    """Whether a message of this kind may go on this channel to a patient with this window.
    Reminders and invitations: only on the channel they chose for reminders. A closure notice
    is no reminder, nor is a survey's link: their channel, or a text if they take no
    reminders. The check-in text
    asks for a reply: always a text."""
    if kind == "check_in_sms":
        return channel == "sms"
    if kind in ("closure_notice", SURVEY_KIND):
        return channel == ("sms" if window.reminders == "none" else window.reminders)
    return channel == window.reminders


def too_late(
    kind: str, deliver_at: datetime | None, now: datetime, reminders: ReminderConfig
) -> bool:
    """Whether a reminder or invitation is no use any more: as long after it was due as it
    was meant to come before its event (a sender was down for a day), the event may be
    over. Other messages stay worth sending."""
    ahead = {
        "session_reminder": reminders.session_hours_before,
        "alumni_invitation": reminders.session_hours_before,
        "call_reminder": reminders.call_hours_before,
    }.get(kind)
    return (
        ahead is not None and deliver_at is not None and now >= deliver_at + timedelta(hours=ahead)
    )


def sending_time(now: datetime, window: ContactWindow, site_zone: str) -> datetime:
    """When a message due at `now` may go out: `now` inside the patient's contact window
    (in their zone, else the site's), else the window's next start."""
    return next_in_window(now.astimezone(zone(site_zone)), window)
