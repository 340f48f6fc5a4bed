"""Helpers shared by the tests: enrolments, time-skipping environments, workers."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.telephony import CallPlaced
from clinical.assessment import Enrolment
from clinical.careplan import SessionSpec, plan_care, week_sessions
from clinical.clock import ProgramClock, first_monday_after
from clinical.phases import Phase
from clinical.placement import place_enrolment
from clinical.protocol import ProgramCatalog
from clinical.status import JourneyStatus
from infra.settings import PROJECT_ROOT
from infra.store import CareStore

# The simulated clinic is the simulation's (the benchmarks and the demo run it too).
from simulation.clinic import (
    DAY as DAY,
)
from simulation.clinic import (
    OPEN_SITES as OPEN_SITES,
)
from simulation.clinic import (
    PROGRAMS as PROGRAMS,
)
from simulation.clinic import (
    SIMULATION_KEYS as SIMULATION_KEYS,
)
from simulation.clinic import (
    SIMULATION_KEYS_FILE as SIMULATION_KEYS_FILE,
)
from simulation.clinic import (
    Clinic as Clinic,
)
from simulation.clinic import (
    clinic as clinic,
)
from simulation.clinic import (
    drive_journey as drive_journey,
)
from simulation.clinic import (
    enrolment_data as enrolment_data,
)
from simulation.clinic import (
    journey_histories as journey_histories,
)
from simulation.clinic import (
    settle as settle,
)
from simulation.clinic import start_time_skipping as _start_time_skipping
from simulation.telephony import answered
from tests.clinic_time import START, StartChoice, next_start, step_to

TEST_KEYS_FILE = SIMULATION_KEYS_FILE
TEST_KEYS = SIMULATION_KEYS


# Withdrawal rated 3: above what the default program offers, so a journey ends at intake.
NEEDS_A_HIGHER_LEVEL = {
    "withdrawal": 3,
    "biomedical": 1,
    "emotional": 2,
    "readiness": 2,
    "relapse": 2,
    "environment": 1,
}


def make_enrolment(**assessment_overrides: Any) -> Enrolment:
    return Enrolment.model_validate(enrolment_data(**assessment_overrides))


async def start_time_skipping(start: StartChoice | None = START) -> WorkflowEnvironment:
    """A time-skipping server whose clock stands at the run's chosen start (a weekday and
    time at the default site, `tests.clinic_time`), or at the real now with `start=None`."""
    env = await _start_time_skipping(TEST_KEYS)
    if start is not None:
        await step_to(env, next_start(await env.get_current_time(), start))
    return env


@asynccontextmanager
async def stubbed_worker(
    env: WorkflowEnvironment, workflow: type, activities: Sequence[Callable[..., object]]
) -> AsyncIterator[str]:
    """A worker for one workflow whose activities are stubs (functions under the activities'
    names, `@activity.defn(name=...)`, with canned answers), as the SDK's samples test
    workflow logic: no store, no providers, no settings. Yields its task queue."""
    queue = f"stubbed-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(2) as executor:
        async with Worker(
            env.client,
            task_queue=queue,
            workflows=[workflow],
            activities=list(activities),
            activity_executor=executor,
        ):
            yield queue


def run_starter(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`starter.py` as a user runs it, with `env` as its environment."""
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "starter.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_ROOT,
    )


async def attend_every_session(
    env: WorkflowEnvironment, handle: WorkflowHandle[Any, Any], until: Any
) -> tuple[JourneyStatus, dict[str, str]]:
    """Drive a journey whose patient attends everything, entered a sheet a week."""
    return await drive_journey(env, handle, choose=lambda n: "attended", sheets=True, until=until)


def in_intensive_week(week: int) -> Callable[[JourneyStatus], bool]:
    """For `drive_journey(until=...)`: the journey has reached intensive week `week`."""
    return lambda s: s.phase == Phase.intensive and s.week >= week


def first_session_of_week(enrolment: Enrolment, enrolled: datetime, week: int) -> SessionSpec:
    """Where the plan puts the first of the patient's sessions of intensive week `week` for
    an enrolment at `enrolled` at the north site (the rules are pure: ask them first)."""
    protocol = ProgramCatalog(PROGRAMS).load(enrolment.program_id)
    plan = plan_care(enrolment.assessment, place_enrolment(enrolment, protocol), protocol)
    clock = ProgramClock.starting_at(enrolled, protocol.clock.seconds_per_day, "America/New_York")
    monday = first_monday_after(clock.day(enrolled), clock.origin_date.weekday())
    specs = week_sessions(plan, Phase.intensive, 1, week, monday + 7 * (week - 1), clock, protocol)
    return min((s for s in specs if s.attendee == "patient"), key=lambda s: s.day)


def write_holiday_sites(path: Path, on: datetime, name: str = "Founders Day") -> Path:
    """A sites file whose north site closes every year on `on`'s month and day."""
    path.write_text(
        "[sites.north]\n"
        'name = "North clinic"\nzone = "America/New_York"\n'
        f'holidays = [{{ name = "{name}", date = "{on:%m-%d}" }}]\n'
    )
    return path


class JourneyStandIn:
    """Stands for a journey's handle where only the updates sent matter: keeps them."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def execute_update(self, update: object, arg: object) -> None:
        self.sent.append(arg)


class Scripted:
    """An in-process telephony provider answering each check-in as a test says (by call
    reference); pass it where a provider factory is expected."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def __call__(self, store: CareStore) -> Scripted:
        return self

    def place_call(
        self, reference: str, patient_id: str, phone: str, instruments: tuple[str, ...] = ()
    ) -> CallPlaced:
        return answered(reference, *self.answer(reference))


def _use_on_first_check_in(reference: str) -> Any:
    from clinical.aftercare import CallOutcome, CheckIn

    return CallOutcome.reached, CheckIn(days_of_use=3 if "FU-D007" in reference else 0)


USE_ON_FIRST_CHECK_IN = Scripted(_use_on_first_check_in)
"""A patient who reports use on the first aftercare check-in, and none after."""


NO_TRACK_FITS = [
    *(
        {"weekday": d, "start": "08:00", "end": "13:00", "kind": "work"}
        for d in ("mon", "wed", "fri")
    ),
    *(
        {"weekday": d, "start": "17:00", "end": "22:00", "kind": "childcare"}
        for d in ("mon", "thu")
    ),
]
"""Commitments that rule out both of tests/programs/small-groups-iop's intensive tracks at north."""
