"""Record fresh workflow histories for the replay gate: `make histories`.

Runs each main path of every workflow type on the time-skipping server and writes every
run's history (following continue-as-new) to tests/histories/. Record only when a change
is intentional and in-flight patients are safe (guarded by `workflow.patched`); then keep
the old histories too, so the gate proves both old and new paths replay. See README.md."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

from clinical.journey import CommitmentsRevision, DischargeReason, DischargeRequest
from clinical.phases import Phase
from tests.support import (
    Clinic,
    clinic,
    drive_journey,
    journey_histories,
    make_enrolment,
    start_time_skipping,
)
from workflows.patient_journey import PatientJourneyWorkflow

HISTORY_DIR = Path(__file__).parent / "histories"
"""Files are named `<path>--<workflow id>.json`."""

Scenario = Callable[[WorkflowEnvironment, Clinic], Awaitable[list[tuple[str, Any]]]]


async def full_year(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    enrolment = make_enrolment()
    with env.auto_time_skipping_disabled():
        handle = await c.enrol(enrolment)
        status, _ = await drive_journey(env, handle)
    assert status.phase == Phase.completed
    runs = await journey_histories(c.client, handle)
    named = [(f"journey_full_year--run{i}", h) for i, h in enumerate(runs, 1)]
    for f in status.follow_ups[:2]:
        child = c.client.get_workflow_handle(f"{handle.id}-E1-{f.call_id}")
        named.append((f"follow_up_call--{f.call_id}-{f.outcome}", await child.fetch_history()))
    return named


async def discharged(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    enrolment = make_enrolment()
    with env.auto_time_skipping_disabled():
        handle = await c.enrol(enrolment)
        await drive_journey(env, handle, until=lambda s: s.phase == Phase.intensive and s.week >= 2)
        await handle.execute_update(
            PatientJourneyWorkflow.discharge,
            DischargeRequest(case_manager_id="CM-01", reason=DischargeReason.administrative),
        )
    runs = await journey_histories(c.client, handle)
    return [(f"journey_discharged--run{i}", h) for i, h in enumerate(runs, 1)]


async def escalated(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    ratings = {
        "withdrawal": 3,
        "biomedical": 1,
        "emotional": 2,
        "readiness": 2,
        "relapse": 2,
        "environment": 1,
    }
    handle = await c.enrol(make_enrolment(ratings=ratings))
    outcome = await handle.result()
    assert outcome.outcome == Phase.escalated
    return [("journey_escalated--run1", await handle.fetch_history())]


async def schedule_conflict(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    busy = [
        {"weekday": d, "start": "07:00", "end": "23:00", "kind": "work"}
        for d in ("mon", "tue", "wed", "thu", "fri", "sat")
    ]
    with env.auto_time_skipping_disabled():
        handle = await c.enrol(make_enrolment(commitments=busy))
        await drive_journey(env, handle, until=lambda s: s.schedule_conflict)
        await handle.execute_update(
            PatientJourneyWorkflow.revise_commitments,
            CommitmentsRevision(case_manager_id="CM-01", commitments=()),
        )
        await drive_journey(env, handle, until=lambda s: s.phase == Phase.intensive and s.week >= 1)
        await handle.execute_update(
            PatientJourneyWorkflow.discharge,
            DischargeRequest(case_manager_id="CM-01", reason=DischargeReason.withdrew),
        )
    runs = await journey_histories(c.client, handle)
    return [(f"journey_schedule_conflict--run{i}", h) for i, h in enumerate(runs, 1)]


SCENARIOS: list[Scenario] = [full_year, discharged, escalated, schedule_conflict]


async def record(directory: Path = HISTORY_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    env = await start_time_skipping()
    try:
        for scenario in SCENARIOS:
            with tempfile.TemporaryDirectory() as tmp:
                async with clinic(env.client, Path(tmp)) as c:
                    for name, history in await scenario(env, c):
                        # Replay needs the real workflow ID (child IDs derive from it).
                        path = directory / f"{name}--{history.workflow_id}.json"
                        path.write_text(history.to_json())
                        written.append(path)
    finally:
        await env.shutdown()
    return written


if __name__ == "__main__":
    for path in asyncio.run(record()):
        print(f"wrote {path}")
