"""The demo's simulated case manager: a week's sign-in sheets in one request, once the
week is over, each session entered once."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

from clinical.attendance import SessionStatus
from demo.run import enter_sheets


class _Journey:
    """Stands for a journey's handle: keeps the updates sent to it."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def execute_update(self, update: object, arg: object) -> None:
        self.sent.append(arg)


def _status(program_day: float) -> Any:
    session = SimpleNamespace
    return SimpleNamespace(
        case_manager_id="CM-03",
        program_day=program_day,
        sessions=[
            session(session_id="INT1-W01-S1", day=7, status=SessionStatus.scheduled),
            session(session_id="INT1-W01-S2", day=9, status=SessionStatus.cancelled),
            session(session_id="INT1-W01-S3", day=11, status=SessionStatus.scheduled),
            session(session_id="INT1-W02-S1", day=14, status=SessionStatus.scheduled),
        ],
    )


async def test_a_week_goes_on_one_sheet_once_its_sessions_have_happened() -> None:
    journey, reported, rng = _Journey(), set[str](), random.Random(3)
    await enter_sheets(journey, _status(10), reported, rng, propensity=1.0)  # type: ignore[arg-type]
    assert journey.sent == [] and reported == set()  # S3 is tomorrow
    for day in (11.5, 12, 13):
        await enter_sheets(journey, _status(day), reported, rng, propensity=1.0)  # type: ignore[arg-type]
    (sheet,) = journey.sent
    assert sheet.case_manager_id == "CM-03"
    # The cancelled session is never marked; week two is not over.
    assert [(m.session_id, m.status) for m in sheet.marks] == [
        ("INT1-W01-S1", "attended"),
        ("INT1-W01-S3", "attended"),
    ]
    assert reported == {"INT1-W01-S1", "INT1-W01-S2", "INT1-W01-S3"}


def test_a_demo_run_again_enrols_the_same_people_under_new_ids() -> None:
    """A second `make demo` on the same data must not be refused its patients."""
    from datetime import date

    from clinical.assessment import check_plausible
    from demo.run import demo_cohort

    day = date(2028, 2, 29)  # the day the cohort is made (a leap day: ages still fit)
    first, second = demo_cohort(6, 7, "demo-iop", day), demo_cohort(6, 7, "demo-iop", day)
    assert [e.contact for e in first] == [e.contact for e in second]
    assert not {e.patient_id for e in first} & {e.patient_id for e in second}
    # Every synthetic patient is plausible on the day it is made (ages fit age groups).
    for e in demo_cohort(60, 3, "demo-iop", day):
        check_plausible(e, day)
