"""Intake on the time-skipping server: a case manager's placement override, and a schedule
that cannot be fitted until the patient's availability changes."""

from __future__ import annotations

from temporalio.testing import WorkflowEnvironment

from clinical.assessment import Commitment, Enrolment
from clinical.phases import Phase
from clinical.requests import CommitmentsRevision
from tests.support import clinic, drive_journey, enrolment_data
from workflows.patient_journey import PatientJourneyWorkflow

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat")


async def test_placement_override_is_planned_and_audited(
    env: WorkflowEnvironment, tmp_path
) -> None:
    data = enrolment_data()  # the rules place this patient at 2.1
    data["placement_override"] = {"level": "2.5", "reason": "two failed attempts at 2.1"}
    enrolment = Enrolment.model_validate(data)
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            _, status, _ = await c.enrol_and_drive(env, enrolment, until=lambda s: s.week >= 1)
        audit = c.store.audit_trail(enrolment.patient_id)

    assert status.plan.placement.level == "2.5"
    assert status.plan.placement.rules_level == "2.1"
    assert status.plan.placement.overridden_by == enrolment.case_manager_id
    assert {s.level for s in status.sessions} == {"2.5"}
    (override,) = [a for a in audit if a.action == "placement_overridden"]
    assert override.actor == enrolment.case_manager_id
    assert override.detail == {
        "rules_level": "2.1",
        "level": "2.5",
        "reason": "two failed attempts at 2.1",
    }


async def test_no_fitting_schedule_asks_the_case_manager_then_waits(
    env: WorkflowEnvironment, tmp_path
) -> None:
    busy = [{"weekday": d, "start": "07:00", "end": "21:00", "kind": "work"} for d in WEEKDAYS]
    enrolment = Enrolment.model_validate(enrolment_data(commitments=busy))
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            handle, waiting, _ = await c.enrol_and_drive(
                env, enrolment, until=lambda s: s.program_day >= 10
            )
            assert waiting.phase == Phase.intake
            assert waiting.sessions == []
            (task,) = c.store.tasks(patient_id=enrolment.patient_id, include_done=True)
            assert task.kind == "schedule_conflict"
            assert [t.kind for t in waiting.open_tasks] == ["schedule_conflict"]
            assert waiting.schedule_conflict == task.detail
            await handle.execute_update(
                PatientJourneyWorkflow.revise_commitments,
                CommitmentsRevision(
                    case_manager_id=enrolment.case_manager_id,
                    commitments=(
                        Commitment.model_validate(
                            {"weekday": "tue", "start": "08:00", "end": "17:00", "kind": "work"}
                        ),
                    ),
                ),
            )
            planned, _ = await drive_journey(env, handle, until=lambda s: s.week >= 1)
        (task,) = c.store.tasks(patient_id=enrolment.patient_id, include_done=True)

    assert planned.phase == Phase.intensive
    assert planned.open_tasks == []
    assert (task.status, task.completed_by) == ("done", enrolment.case_manager_id)
    assert planned.sessions
    assert all(s.starts_at.strftime("%a").lower() != "tue" for s in planned.sessions)
