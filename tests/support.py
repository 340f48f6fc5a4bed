"""Helpers shared by the tests: enrolments, time-skipping environments, workers."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.care_operations import CareOperations
from activities.telephony import SimulatedTelephony
from clinical.assessment import Enrolment
from clinical.attendance import SessionStatus
from clinical.identifiers import journey_workflow_id, new_patient_id
from clinical.journey import JourneyInput, JourneyStatus
from clinical.protocol import ProgramCatalog
from infra.embedded_server import binary
from infra.settings import PROJECT_ROOT, Settings, load_settings
from infra.store import CareStore
from infra.temporal import data_converter
from worker import running_worker
from workflows.patient_journey import PatientJourneyWorkflow
from workflows.visibility import ALL_KEYS

PROGRAMS = PROJECT_ROOT / "programs"


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


def make_enrolment(**assessment_overrides: Any) -> Enrolment:
    return Enrolment.model_validate(enrolment_data(**assessment_overrides))


async def register_search_attributes(client: Client) -> None:
    types = {
        "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
        "Datetime": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
        "Double": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
    }
    names = {1: "Text", 2: "Keyword", 3: "Int", 4: "Double", 5: "Bool", 6: "Datetime"}
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={k.name: types[names[int(k.indexed_value_type)]] for k in ALL_KEYS},
        )
    )


async def start_time_skipping() -> WorkflowEnvironment:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(binary("temporal-test-server")),
        data_converter=data_converter(),
    )
    await register_search_attributes(env.client)
    return env


@dataclass
class Clinic:
    """A worker with a fresh store, on some Temporal environment."""

    client: Client
    settings: Settings
    operations: CareOperations
    started: list[WorkflowHandle[Any, Any]] = dataclasses.field(default_factory=list)

    @property
    def store(self) -> CareStore:
        return self.operations.store

    async def enrol(
        self, enrolment: Enrolment, program_id: str | None = None
    ) -> WorkflowHandle[Any, Any]:
        protocol = self.operations.catalog.load(program_id or enrolment.program_id)
        handle = await self.client.start_workflow(
            PatientJourneyWorkflow.run,
            JourneyInput(enrolment=enrolment, protocol=protocol),
            id=journey_workflow_id(enrolment.patient_id),
            task_queue=self.settings.task_queue,
        )
        self.started.append(handle)
        return handle

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
    **worker_overrides: Any,
) -> AsyncIterator[Clinic]:
    """`telephony`, if given, builds the provider from the store (default: simulated)."""
    settings = dataclasses.replace(
        load_settings(),
        database_url=f"sqlite:///{tmp_path / 'care.db'}",
        programs_dir=programs_dir,
        task_queue=f"carepath-test-{uuid.uuid4().hex[:8]}",
    )
    store = CareStore(settings.database_url)
    store.migrate()
    provider = telephony(store) if telephony else SimulatedTelephony(store)
    operations = CareOperations(store, ProgramCatalog(programs_dir), provider)
    async with running_worker(client, settings, operations, **worker_overrides):
        c = Clinic(client=client, settings=settings, operations=operations)
        try:
            yield c
        finally:
            await c.close()
    store.dispose()


DAY = timedelta(days=1)


def attendance_choice(n: int) -> str:
    """The n-th session's fate in simulated journeys: mostly attended, some missed, every
    4th left unrecorded (the grace period then counts it missed)."""
    return "none" if n % 4 == 0 else ("missed" if n % 7 == 0 else "attended")


async def drive_journey(
    env: WorkflowEnvironment,
    handle: WorkflowHandle[Any, Any],
    until: Any = None,
    step: timedelta = DAY,
    choose: Any = attendance_choice,
) -> tuple[JourneyStatus, dict[str, str]]:
    """Step the clock a day at a time, recording attendance for each session once it has
    happened, until the journey ends (or `until(status)` holds). Call with automatic time
    skipping disabled."""
    from clinical.journey import AttendanceReport

    reported: dict[str, str] = {}
    while True:
        status: JourneyStatus = await handle.query(PatientJourneyWorkflow.status)
        status = status.as_of(await env.get_current_time())
        if status.phase.is_terminal or (until is not None and until(status)):
            return status, reported
        for s in status.sessions:
            if (
                s.session_id in reported
                or s.day > status.program_day
                or s.status == SessionStatus.cancelled
            ):
                continue
            choice = choose(len(reported) + 1)
            reported[s.session_id] = choice
            if choice != "none":
                await handle.execute_update(
                    PatientJourneyWorkflow.record_attendance,
                    AttendanceReport(
                        case_manager_id=status.case_manager_id,
                        session_id=s.session_id,
                        status=choice,
                    ),
                )
        await env.sleep(step)


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


class UseOnFirstCheckIn:
    """A telephony provider whose patient reports use on the first aftercare check-in."""

    def __init__(self, store: CareStore) -> None:
        self.calls: list[str] = []

    def place_call(self, reference: str, patient_id: str, phone: str) -> Any:
        from clinical.aftercare import CallOutcome, CheckIn

        self.calls.append(reference)
        days = 3 if "FU-D007" in reference else 0
        return CallOutcome.reached, CheckIn(days_of_use=days)
