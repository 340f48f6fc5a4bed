"""A simulated clinic in this process, for the tests, the benchmarks and the demo: a worker
with a fresh store on some Temporal environment (`clinic`), a case manager driving one
journey a day at a time (`drive_journey`), a patient's enrolment (`enrolment_data`), every
run of a journey (`journey_histories`), and a time-skipping server with the simulations'
committed keys (`keys.json`: synthetic patients only, never a clinic's)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.care_operations import CareOperations
from clinical.assessment import Enrolment
from clinical.attendance import SessionStatus
from clinical.identifiers import new_patient_id
from clinical.protocol import ProgramCatalog
from clinical.requests import AttendanceReport
from clinical.status import JourneyStatus
from infra.codec import KeyRing
from infra.embedded_server import binary
from infra.settings import PROJECT_ROOT, Settings, load_settings
from infra.store import CareStore
from infra.survey_links import LinkSigner
from infra.temporal import data_converter
from services.enrolment import enrol, journey_input
from simulation.case_manager import CaseManager
from simulation.partners import SimulatedPartners
from simulation.patients import Attendance, attendance_choice
from simulation.telephony import SimulatedTelephony
from simulation.workers import register_search_attributes
from worker import running_worker
from workflows.patient_journey import PatientJourneyWorkflow

PROGRAMS = PROJECT_ROOT / "programs"
OPEN_SITES = Path(__file__).parent / "sites-open.toml"
"""Sites that never close; `PROGRAMS / "sites.toml"` has the clinic's holidays."""
# A committed key ring (two keys: a rotation) so simulations, tests, recorded histories and
# the replay gate run with the production codec.
SIMULATION_KEYS_FILE = Path(__file__).parent / "keys.json"
SIMULATION_KEYS = KeyRing.load(SIMULATION_KEYS_FILE)
SIMULATION_LINKS = LinkSigner.from_ring(SIMULATION_KEYS, "http://127.0.0.1:8000")
"""The survey links of simulated clinics (tests, what-if): signed with the simulation's ring."""
DAY = timedelta(days=1)


async def start_time_skipping(keys: KeyRing = SIMULATION_KEYS) -> WorkflowEnvironment:
    """A time-skipping server with CarePath's search attributes, its client sealing
    payloads with `keys`; its clock at the real now."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(binary("temporal-test-server")),
        data_converter=data_converter(keys),
    )
    await register_search_attributes(env.client)
    return env


def enrolment_data(**assessment_overrides: Any) -> dict[str, Any]:
    assessment: dict[str, Any] = {
        "ratings": {
            "withdrawal": 1,
            "biomedical": 0,
            "emotional": 2,
            "readiness": 2,
            "relapse": 2,
            "environment": 1,
        },
        "age_group": "adult",
        "substances": ["alcohol"],
        "commitments": [{"weekday": "tue", "start": "08:00", "end": "17:00", "kind": "work"}],
        "contact_window": {"start": "10:00", "end": "18:00"},
    }
    assessment.update(assessment_overrides)
    return {
        "patient_id": new_patient_id(),
        "case_manager_id": "CM-01",
        "site_id": "north",
        "program_id": "default-iop",
        "contact": {
            "given_name": "Avery",
            "family_name": "Quinlan",
            "date_of_birth": "1988-04-02",
            "phone": "+1 555 010 2030",
        },
        "assessment": assessment,
    }


@dataclass
class Clinic:
    """A worker with a fresh store, on some Temporal environment."""

    client: Client
    settings: Settings
    operations: CareOperations
    worker: Worker
    started: list[WorkflowHandle[Any, Any]] = dataclasses.field(default_factory=list)

    @property
    def store(self) -> CareStore:
        return self.operations.store

    async def enrol(
        self, enrolment: Enrolment, program_id: str | None = None
    ) -> WorkflowHandle[Any, Any]:
        """Through the enrolment service, as every door enrols."""
        if program_id is not None:
            enrolment = enrolment.model_copy(update={"program_id": program_id})
        journey = journey_input(enrolment, self.settings, self.store)
        handle = await enrol(self.client, self.settings.task_queue, journey)
        self.started.append(handle)
        return handle

    async def enrol_and_drive(
        self, env: WorkflowEnvironment, enrolment: Enrolment, **driving: Any
    ) -> tuple[WorkflowHandle[Any, Any], JourneyStatus, dict[str, str]]:
        """Enrol, then drive the journey (`drive_journey`'s options) with automatic time
        skipping disabled: the journey's handle, its status and the sessions entered."""
        handle = await self.enrol(enrolment)
        status, reported = await drive_journey(env, handle, **driving)
        return handle, status, reported

    async def close(self) -> None:
        """End journeys a test left running: on a shared time-skipping server, a journey
        with no worker would hold up the clock for the next test."""
        for handle in self.started:
            try:
                await self.client.get_workflow_handle(handle.id).terminate("test finished")
            except RPCError:
                pass  # already ended

    async def status(self, handle: WorkflowHandle[Any, Any]) -> JourneyStatus:
        return await handle.query(PatientJourneyWorkflow.status)


@asynccontextmanager
async def clinic(
    client: Client,
    tmp_path: Path,
    programs_dir: Path = PROGRAMS,
    telephony: Any = None,
    database_url: str | None = None,
    sites: Path = OPEN_SITES,
    sdk_tuning: bool = True,
    **worker_overrides: Any,
) -> AsyncIterator[Clinic]:
    """`telephony`, if given, builds the provider from the store (default: simulated,
    abstinent patients); the store is a SQLite file in `tmp_path` unless `database_url`
    names another; `sdk_tuning` is CAREPATH_SDK_TUNING."""
    settings = dataclasses.replace(
        load_settings(),
        sdk_tuning=sdk_tuning,
        database_url=database_url or f"sqlite:///{tmp_path / 'care.db'}",
        programs_dir=programs_dir,
        sites_path=sites,
        task_queue=f"carepath-test-{uuid.uuid4().hex[:8]}",
    )
    store = CareStore(settings.database_url, keys=SIMULATION_KEYS)
    store.migrate()
    # Simulated patients stay abstinent unless a test brings a provider that says otherwise:
    # a relapse on a random patient's check-in would send the journey round again.
    provider = telephony(store) if telephony else SimulatedTelephony(store, use_risk=0.0)
    operations = CareOperations(
        store,
        ProgramCatalog(programs_dir),
        provider,
        SimulatedPartners(store),
        links=SIMULATION_LINKS,
    )
    async with running_worker(client, settings, operations, **worker_overrides) as worker:
        c = Clinic(client=client, settings=settings, operations=operations, worker=worker)
        try:
            yield c
        finally:
            await c.close()
    store.dispose()


async def drive_journey(
    env: WorkflowEnvironment,
    handle: WorkflowHandle[Any, Any],
    until: Any = None,
    step: timedelta = DAY,
    choose: Attendance = attendance_choice,
    within: timedelta = timedelta(days=3 * 365),
    approve_step_down: bool = True,
    reported: dict[str, str] | None = None,
    sheets: bool = False,
) -> tuple[JourneyStatus, dict[str, str]]:
    """Step the clock a day at a time, recording attendance for each session once it has
    happened, until the journey ends (or `until(status)` holds), and fail if that takes
    longer than `within` of program time. With `sheets`, the case manager records a
    treatment week's sessions in one attendance sheet once they have all happened, as a
    clinic does; otherwise each session in an update of its own. With
    `approve_step_down`, the case manager approves step-down when the intensive phase
    reaches its planned end (the journey extends and asks again while the criteria are
    not met). Pass the `reported` of an earlier call to drive on from where it stopped.
    Call with automatic time skipping disabled."""
    manager = CaseManager(choose)
    manager.entered = {} if reported is None else reported
    steps = 0
    while True:
        status: JourneyStatus = await handle.query(PatientJourneyWorkflow.status)
        status = status.as_of(await env.get_current_time())
        if status.phase.is_terminal or (until is not None and until(status)):
            return status, manager.entered
        if steps * step > within:
            raise AssertionError(f"journey still in {status.phase} after {within.days} days")
        steps += 1
        if sheets:
            await manager.enter_weeks_over(handle, status)
        else:  # each session in an update of its own, once it has happened
            for s in status.sessions:
                if (
                    s.day <= status.program_day
                    and s.session_id not in manager.entered
                    and s.status != SessionStatus.cancelled
                ):
                    await _enter_alone(handle, manager, s.session_id, status.case_manager_id)
        if approve_step_down:
            await manager.approve_step_down(handle, status)
        # Referrals outlive the journey's runs, so the latest run's history may not name them.
        for workflow_id in [handle.id, *(r.workflow_id for r in status.referrals if not r.outcome)]:
            await settle(env.client, workflow_id)
        await env.sleep(step)


_WORKFLOW_TASK_ENDS = ("workflow_task_completed", "workflow_task_failed", "workflow_task_timed_out")
_ACTIVITY_ENDS = (
    "activity_task_completed",
    "activity_task_failed",
    "activity_task_timed_out",
    "activity_task_canceled",
)
_CHILD_ENDS = (
    "child_workflow_execution_completed",
    "child_workflow_execution_failed",
    "child_workflow_execution_canceled",
    "child_workflow_execution_timed_out",
    "child_workflow_execution_terminated",
)


async def _enter_alone(
    handle: WorkflowHandle[Any, Any], manager: CaseManager, session_id: str, case_manager_id: str
) -> None:
    for mark in manager.marks([session_id]):
        report = AttendanceReport(
            case_manager_id=case_manager_id, session_id=mark.session_id, status=mark.status
        )
        await handle.execute_update(PatientJourneyWorkflow.record_attendance, report)


async def _work_in_flight(client: Client, workflow_id: str) -> list[str]:
    """What a workflow (and its running children) still has in flight: an undelivered
    workflow task or an unfinished activity. The time-skipping server reports neither in
    DescribeWorkflowExecution, so read them off the latest run's history."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    task_open = False
    activities: dict[int, str] = {}
    children: dict[int, str] = {}
    closed = False
    for event in history.events:
        kind = event.WhichOneof("attributes") or ""
        name = kind.removesuffix("_event_attributes")
        if name == "workflow_task_scheduled":
            task_open = True
        elif name in _WORKFLOW_TASK_ENDS:
            task_open = False
        elif name == "activity_task_scheduled":
            scheduled = event.activity_task_scheduled_event_attributes
            activities[event.event_id] = scheduled.activity_type.name
        elif name in _ACTIVITY_ENDS:
            activities.pop(getattr(event, kind).scheduled_event_id, None)
        elif name == "child_workflow_execution_started":
            child = event.child_workflow_execution_started_event_attributes
            children[child.initiated_event_id] = child.workflow_execution.workflow_id
        elif name in _CHILD_ENDS:
            children.pop(getattr(event, kind).initiated_event_id, None)
        elif name.startswith("workflow_execution_") and name not in (
            "workflow_execution_started",
            "workflow_execution_signaled",
            "workflow_execution_update_accepted",
            "workflow_execution_update_completed",
            "workflow_execution_update_admitted",
        ):
            closed = True
    if closed:
        return []
    busy = [f"{workflow_id}: workflow task"] if task_open else []
    busy += [f"{workflow_id}: activity {name}" for name in activities.values()]
    for child_id in children.values():
        busy += await _work_in_flight(client, child_id)
    return busy


async def settle(
    client: Client, workflow_id: str, within: timedelta = timedelta(seconds=60)
) -> None:
    """Wait (in real time) until the journey and its children have nothing in flight.

    Stepping the time-skipping server's clock while a workflow task or activity is in
    flight jumps past its timeout; the task then times out and is retried, and with bad
    luck the journey stalls."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within.total_seconds()
    while busy := await _work_in_flight(client, workflow_id):
        if loop.time() > deadline:
            raise AssertionError(f"still in flight after {within}: {busy}")
        await asyncio.sleep(0.01)


async def journey_histories(client: Client, started: WorkflowHandle[Any, Any]) -> list[Any]:
    """Every run of a workflow, first to last, following the continue-as-new chain."""
    from temporalio.client import WorkflowHistory

    workflow_id = started.id
    run_id: str | None = started.first_execution_run_id or started.result_run_id
    histories: list[WorkflowHistory] = []
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        histories.append(history)
        last = history.events[-1]
        run_id = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if last.HasField("workflow_execution_continued_as_new_event_attributes")
            else None
        )
    return histories
