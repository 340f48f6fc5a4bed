"""A simulated clinic running a cohort on a time-skipping server: patients arrive, and each
day the case managers work from the care-operations store, as a clinic does (who is in
which phase and which sessions were booked lately are one query each per clock step for
the whole cohort, not a query or a result long poll per journey: a thousand long polls at
once broke the time-skipping server's transport). The cohort benchmark and the what-if
simulations both run their cohorts here.

The clock is stepped by hand (automatic time skipping stalls with many concurrent
workflows, see TEMPORAL-NOTES): a day at a time while anyone is in treatment or still to
arrive, once the case managers have done the day's work, and a week at a time once
everyone is in aftercare.

A large cohort may be spread over several time-skipping servers (each with its own worker,
all sharing the one store, so seats and counsellors are the clinic's): patients go to them
in turn as they arrive, and every server's clock is stepped together, so the clinic keeps
one calendar. A time-skipping server holds every journey it ever ran (it cannot delete
one), about a megabyte each, so one server per few thousand patients (BENCHMARKS.md)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from clinical.assessment import Enrolment
from clinical.careplan import treatment_week_of
from clinical.phases import Phase
from clinical.status import JourneyStatus
from infra.codec import KeyRing
from infra.store import CareStore
from simulation.case_manager import CaseManager
from simulation.tracks import TrackWatch
from workflows.patient_journey import PatientJourneyWorkflow

DAY = timedelta(days=1)
STEP_DEADLINE = timedelta(minutes=10)
TREATMENT = (Phase.intake, Phase.intensive, Phase.step_down)

Send = Callable[[], Awaitable[Any]]
Start = Callable[[Enrolment, Client], Awaitable[WorkflowHandle[Any, Any]]]
"""Enrols a patient through the client of the server the patient's journey is to run on."""
Progress = Callable[[float, int, int], None]
"""Told after each clock step: virtual days so far, journeys ended, patients in all."""


async def bounded(starts: list[Send], at_once: int = 25) -> list[Any]:
    """Run the calls with at most `at_once` in flight (a server's transport has limits)."""
    gate = asyncio.Semaphore(at_once)

    async def one(start: Send) -> Any:
        async with gate:
            return await start()

    return list(await asyncio.gather(*(one(s) for s in starts)))


@dataclasses.dataclass
class Arrival:
    """A patient to enrol on day `day` of the run, with their case manager's ways."""

    day: int
    enrolment: Enrolment
    manager: CaseManager


@dataclasses.dataclass
class Patient:
    """What the simulated clinic knows of one patient: the store's view, and the patient's
    case manager."""

    handle: WorkflowHandle[Any, Any]
    manager: CaseManager
    phase: Phase | None = None  # as the store has it; None until intake is written
    case_manager_id: str = ""
    reviewed_week: int = 0
    """The last intensive week whose progress was looked at."""
    arrived_day: float = 0.0
    """The simulated day the patient was enrolled (the run's first is 0)."""
    client: Client | None = None
    """The client of the server the patient's journeys and referrals run on."""

    @property
    def in_treatment(self) -> bool:
        return self.phase is None or self.phase in TREATMENT

    @property
    def ended(self) -> bool:
        return self.phase is not None and self.phase.is_terminal


@dataclasses.dataclass(frozen=True)
class Booked:
    """A session as the care-operations store has it."""

    patient_id: str
    session_id: str
    phase: str
    week: int
    starts_at: datetime
    status: str

    @property
    def week_id(self) -> str:
        return treatment_week_of(self.session_id)


def sheets_due(p: Patient, booked: list[Booked], now: datetime) -> list[list[str]]:
    """The sign-in sheets the case manager enters now, from the clinic's records: each
    treatment week whose sessions have all happened and are not yet entered, its sessions
    in order, earliest week first."""
    weeks: dict[str, list[Booked]] = {}
    for b in booked:
        if b.status != "cancelled" and b.session_id not in p.manager.entered:
            weeks.setdefault(b.week_id, []).append(b)
    due = []
    for sessions in sorted(weeks.values(), key=lambda w: min(b.starts_at for b in w)):
        if any(b.starts_at > now for b in sessions):
            continue
        due.append([b.session_id for b in sorted(sessions, key=lambda b: b.starts_at)])
    return due


async def enter_sheets(p: Patient, sheets: list[list[str]]) -> None:
    """The due weeks' sheets (`sheets_due`), one request each, in order."""
    for session_ids in sheets:
        await p.manager.enter_sheet(p.handle, p.case_manager_id, session_ids)


def review_due(p: Patient, booked: list[Booked], min_intensive_weeks: int) -> int | None:
    """From the week intensive care may end, once a week, the case manager looks at the
    patient's journey (`review`): the intensive week to look at today, if any."""
    week = max((b.week for b in booked if b.phase == Phase.intensive.value), default=0)
    return week if week >= min_intensive_weeks and week > p.reviewed_week else None


async def review(p: Patient, week: int) -> None:
    """The case manager approves step-down when the journey asks (the week noted as looked
    at, whatever the journey answers)."""
    p.reviewed_week = week
    status: JourneyStatus = await p.handle.query(PatientJourneyWorkflow.status)
    await p.manager.approve_step_down(p.handle, status)


async def follow_up(p: Patient) -> None:
    """The case manager opens the patient's chart: a schedule that does not fit (intake
    waits for it), the inbox and the referrals' other parties (consent, the partner's
    answers)."""
    status: JourneyStatus = await p.handle.query(PatientJourneyWorkflow.status)
    await p.manager.resolve_schedule_conflict(p.handle, status)
    await p.manager.work_the_inbox(p.handle, status)
    assert p.client is not None
    await p.manager.follow_referrals(p.client, status)


async def advance(env: WorkflowEnvironment, by: timedelta) -> None:
    """`env.sleep`, with a deadline of our own: the server answers only once every task the
    step woke is done, which for a thousand journeys waking on the same day takes longer
    than the client's default deadline ("Timeout expired")."""
    from temporalio.api.testservice.v1 import SleepRequest

    request = SleepRequest()
    request.duration.FromTimedelta(by)
    await env.client.test_service.unlock_time_skipping_with_sleep(request, timeout=STEP_DEADLINE)


@dataclasses.dataclass
class Run:
    """A cohort run to its end: every journey ended in the store."""

    cohort: dict[str, Patient]
    steps: int
    virtual_days: float


async def run_clinic(
    envs: Sequence[WorkflowEnvironment],
    start: Start,
    arrivals: list[Arrival],
    board: ClinicBoard,
    min_intensive_weeks: int,
    *,
    withdraw_after_missed: int | None = None,
    charts_weekly: bool = False,
    progress: Progress | None = None,
    give_up_after_days: float = 3650,
) -> Run:
    """Each day, first the day's arrivals are enrolled, then each patient in treatment has
    their finished weeks' sheets entered and their progress reviewed (and, with
    `withdraw_after_missed`, is discharged once they have stopped coming; with
    `charts_weekly`, has their chart opened, if it has an open task or referral, on a
    weekday of their own, and daily while in intake), then every server's clock moves on
    together (`envs`: the servers, each site's patients on one of them, the sites in turn).
    Ends when every journey has ended in the store; a journey still running
    `give_up_after_days` after its patient arrived is a stall, and raises (counted from
    each arrival: a large cohort arrives over years)."""
    waiting = sorted(arrivals, key=lambda a: a.day)
    # A site's journeys hand group seats on to each other by signal, and a signal reaches
    # only the journeys of its own server (one that found no journey let the seat go on the
    # waiting patient's behalf, who then waited in intake for ever): each site on one server.
    sites = sorted({a.enrolment.site_id for a in arrivals})
    server_of = {site: envs[n % len(envs)].client for n, site in enumerate(sites)}
    cohort: dict[str, Patient] = {}
    clock = envs[0]  # every server's clock is stepped with it
    began = await clock.get_current_time()
    steps = 0
    while True:
        now = await clock.get_current_time()
        today = (now - began) / DAY
        due = [a for a in waiting if a.day <= today]
        waiting = waiting[len(due) :]
        shards = [server_of[a.enrolment.site_id] for a in due]
        handles = await bounded(
            [_starter(start, a.enrolment, c) for a, c in zip(due, shards, strict=True)]
        )
        cohort.update(
            {
                a.enrolment.patient_id: Patient(h, a.manager, arrived_day=a.day, client=c)
                for a, h, c in zip(due, handles, shards, strict=True)
            }
        )
        board.read_into(cohort)
        ended = sum(p.ended for p in cohort.values())
        if progress is not None:
            progress(today, ended, len(cohort) + len(waiting))
        if not waiting and ended == len(cohort):
            break
        if stall := stalled(cohort.values(), today, give_up_after_days):
            raise RuntimeError(stall)
        active = {pid: p for pid, p in cohort.items() if p.in_treatment}
        booked = board.recent_sessions(now - 8 * DAY)
        # What each patient's case manager does today is decided here, and a request is
        # made only for the patients with something to do (a task for each of a thousand
        # patients a day, most with nothing to do, was a third of its CPU at 10,000).
        sheets = {
            pid: s for pid, p in active.items() if (s := sheets_due(p, booked.get(pid, []), now))
        }
        await asyncio.gather(*(enter_sheets(active[pid], s) for pid, s in sheets.items()))
        if withdraw_after_missed is not None:
            await asyncio.gather(
                *(
                    p.manager.discharge_if_gone(p.handle, p.case_manager_id, withdraw_after_missed)
                    for p in active.values()
                    if p.manager.gone(withdraw_after_missed)
                )
            )
        await asyncio.gather(
            *(
                review(p, week)
                for pid, p in active.items()
                if (week := review_due(p, booked.get(pid, []), min_intensive_weeks)) is not None
            )
        )
        if charts_weekly:
            # From the inbox and the referral list: a chart with nothing open is not opened
            # (a waitlist's patients in intake each had theirs opened daily, for nothing).
            attention = board.store.patients_with_open_work()
            await bounded(
                [
                    _chart(p)
                    for pid, p in cohort.items()
                    if pid in attention
                    and not p.ended
                    and p.phase is not None
                    and (p.phase == Phase.intake or _weekday(pid) == int(today) % 7)
                ]
            )
        step = DAY if active or waiting else 7 * DAY
        await asyncio.gather(*(advance(env, step) for env in envs))
        steps += 1
    return Run(cohort, steps, (await clock.get_current_time() - began) / DAY)


def stalled(cohort: Iterable[Patient], today: float, give_up_after_days: float) -> str | None:
    """Why the run is stuck, if a journey is still running `give_up_after_days` after its
    patient arrived (the run's length is no measure: a large cohort arrives over years),
    with how many of them are still in intake (where a patient waits for a group seat)."""
    running = [p for p in cohort if not p.ended]
    oldest = today - min((p.arrived_day for p in running), default=today)
    if not running or oldest <= give_up_after_days:
        return None
    in_intake = sum(p.phase in (None, Phase.intake) for p in running)
    return (
        f"{len(running)} journeys still running, the oldest {oldest:.0f} simulated days after "
        f"its patient arrived; {in_intake} of them still in intake"
    )


def _starter(start: Start, enrolment: Enrolment, client: Client) -> Send:
    return lambda: start(enrolment, client)


def _chart(p: Patient) -> Send:
    return lambda: follow_up(p)


def _weekday(patient_id: str) -> int:
    """The day of the week a patient's case manager opens their chart (stable per patient,
    spread over the week)."""
    return hashlib.sha256(patient_id.encode()).digest()[0] % 7


class ClinicBoard:
    """The clinic's records the simulated case managers work from: each patient's phase
    (the journey writes every phase change to the store) and the sessions booked lately;
    and the group tracks' seats and waitlists as they fill (`tracks`). One query each per
    clock step for the whole cohort."""

    def __init__(self, database_url: str, keys: KeyRing | None = None) -> None:
        """`keys`: the worker's, to read sealed columns (check-ins) too."""
        self.store = CareStore(database_url, keys=keys)
        # The run's scratch store may be read before its worker has made it (on the
        # time-skipping server a worker counts as ready once it connects): make it here
        # too; migrations take turns, so whichever comes second finds it done.
        self.store.migrate()
        self.tracks = TrackWatch()

    def read_into(self, cohort: dict[str, Patient]) -> None:
        """The phases of the patients whose journey has not ended (an ended one stays so):
        a long run's ended patients soon outnumber the rest, and reading every patient each
        simulated day was a sixth of the simulated clinic's CPU at 10,000."""
        following = [pid for pid, p in cohort.items() if not p.ended]
        for found in self.store.patients(among=following):
            cohort[found.patient_id].phase = found.phase
            cohort[found.patient_id].case_manager_id = found.case_manager_id
        self.tracks.sample(self.store.group_places())

    def recent_sessions(self, since: datetime) -> dict[str, list[Booked]]:
        found: dict[str, list[Booked]] = {}
        for a in self.store.appointments(starting_from=since):
            found.setdefault(a.patient_id, []).append(
                Booked(
                    patient_id=a.patient_id,
                    session_id=a.session_id,
                    phase=a.phase,
                    week=a.week,
                    starts_at=a.starts_at,
                    status=a.status,
                )
            )
        return found

    def close(self) -> None:
        self.store.dispose()
