"""Reminders: ahead of the event, inside the contact window, on the patient's channel."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from clinical.assessment import ContactWindow
from clinical.clock import ProgramClock
from clinical.reminders import reminder, send_time

WINDOW = ContactWindow(start=time(10), end=time(18))


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        # 24 h before falls in the window: then.
        (datetime(2027, 3, 3, 14, 0, tzinfo=UTC), datetime(2027, 3, 2, 14, 0, tzinfo=UTC)),
        # After the window closes: at its close that day.
        (datetime(2027, 3, 4, 20, 0, tzinfo=UTC), datetime(2027, 3, 3, 18, 0, tzinfo=UTC)),
        # Before it opens: at the previous day's close, never in the night.
        (datetime(2027, 3, 2, 9, 0, tzinfo=UTC), datetime(2027, 2, 28, 18, 0, tzinfo=UTC)),
    ],
)
def test_reminders_never_fall_in_quiet_hours(event: datetime, expected: datetime) -> None:
    at = send_time(event, WINDOW, hours_before=24)
    assert at == expected
    assert WINDOW.start <= at.time() <= WINDOW.end and at <= event


def test_reminder_channel_and_text_follow_the_patient() -> None:
    clock = ProgramClock.starting_at(datetime(2027, 3, 1, tzinfo=UTC), 86400)
    event = datetime(2027, 3, 3, 14, 0, tzinfo=UTC)
    made = reminder(
        patient_id="P-7K2M9Q4D",
        key="P-7K2M9Q4D/remind/INT1-W01-S1",
        kind="session_reminder",
        about="INT1-W01-S1",
        event=event,
        text="group therapy (in person)",
        window=WINDOW.model_copy(update={"reminders": "email"}),
        hours_before=24,
        clock=clock,
    )
    assert made is not None and made.channel == "email"
    assert made.body == "Reminder: group therapy (in person) on Wed 03 Mar at 14:00"
    assert made.deliver_at == datetime(2027, 3, 2, 14, 0, tzinfo=UTC)
    quiet = WINDOW.model_copy(update={"reminders": "none"})
    kwargs = {k: v for k, v in made.model_dump().items() if k in ("patient_id", "key", "kind")}
    assert (
        reminder(
            **kwargs,
            about="x",
            event=event,
            text="x",
            window=quiet,
            hours_before=24,
            clock=clock,
        )
        is None
    )
