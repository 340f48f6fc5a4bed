"""The case manager's inbox on the time-skipping server: marking a task done reaches the
workflow that opened it, which decides what done means."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from clinical.assessment import Enrolment
from clinical.identifiers import referral_workflow_id
from clinical.referrals import ReferralStage
from clinical.requests import DischargeReason, DischargeRequest, TaskDone
from tests.support import clinic, drive_journey, enrolment_data, in_intensive_week, make_enrolment
from workflows.patient_journey import PatientJourneyWorkflow
from workflows.referral import ReferralWorkflow


async def test_an_outreach_task_done_closes_in_the_store_and_the_journey(
    env: WorkflowEnvironment, tmp_path
) -> None:
    enrolment = make_enrolment()
    pid = enrolment.patient_id
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            handle, before, _ = await c.enrol_and_drive(
                env,
                enrolment,
                choose=lambda n: "missed" if n in (4, 5) else "attended",
                until=in_intensive_week(3),
            )
            (task,) = c.store.tasks(patient_id=pid)
            # Due in the program's 2 days for outreach (a day is 86400 s in this program).
            assert task.due_at is not None
            due_in = task.due_at - before.open_tasks[0].opened_at
            assert abs(due_in - timedelta(days=2)) < timedelta(minutes=1)
            done = await handle.execute_update(
                PatientJourneyWorkflow.complete_task,
                TaskDone(case_manager_id="CM-09", task_key=task.key),
            )
            with pytest.raises(WorkflowUpdateFailedError) as again:
                await handle.execute_update(
                    PatientJourneyWorkflow.complete_task,
                    TaskDone(case_manager_id="CM-09", task_key=task.key),
                )
            after = await c.status(handle)
        (row,) = c.store.tasks(patient_id=pid, include_done=True)
        audit = c.store.audit_trail(pid, actions=["task_completed"])

    assert [t.kind for t in before.open_tasks] == ["outreach"]
    assert done == "outreach done" and after.open_tasks == []
    assert (row.status, row.completed_by) == ("done", "CM-09")
    assert "already done by CM-09" in str(again.value.cause)
    assert [a.actor for a in audit] == ["CM-09"]


async def test_a_schedule_conflict_is_not_closed_by_marking_it_done(
    env: WorkflowEnvironment, tmp_path
) -> None:
    busy = [
        {"weekday": d, "start": "07:00", "end": "21:00", "kind": "work"}
        for d in ("mon", "tue", "wed", "thu", "fri", "sat")
    ]
    enrolment = Enrolment.model_validate(enrolment_data(commitments=busy))
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            handle, _, _ = await c.enrol_and_drive(
                env, enrolment, until=lambda s: bool(s.open_tasks)
            )
            (task,) = c.store.tasks(patient_id=enrolment.patient_id)
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await handle.execute_update(
                    PatientJourneyWorkflow.complete_task,
                    TaskDone(case_manager_id="CM-01", task_key=task.key),
                )
    assert "closes when you revise the patient's commitments" in str(refused.value.cause)


async def test_consent_task_done_records_consent_and_sends_the_referral(
    env: WorkflowEnvironment, tmp_path
) -> None:
    enrolment = Enrolment.model_validate(enrolment_data(social_needs=["parenting"]))
    pid = enrolment.patient_id
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            handle, _, _ = await c.enrol_and_drive(
                env, enrolment, until=lambda s: s.program_day >= 2
            )
            (task,) = c.store.tasks(patient_id=pid)
            referral = c.client.get_workflow_handle(referral_workflow_id(pid, "parenting"))
            message = await referral.execute_update(
                ReferralWorkflow.complete_task,
                TaskDone(case_manager_id="CM-01", task_key=task.key),
            )
            await drive_journey(env, handle, until=lambda s: s.program_day >= 3)
            status = await referral.query(ReferralWorkflow.status)
        (row,) = c.store.tasks(patient_id=pid, include_done=True)
        ledger = c.store.partner_contacts(pid)

    assert task.kind == "consent_needed"
    assert message == "consent recorded; the referral will be sent"
    assert ReferralStage(status.stage) == ReferralStage.sent and status.open_tasks == []
    assert (row.status, row.completed_by) == ("done", "CM-01")
    assert [e.kind for e in ledger] == ["request"]


async def test_an_ended_journey_closes_its_open_tasks(env: WorkflowEnvironment, tmp_path) -> None:
    enrolment = make_enrolment()
    pid = enrolment.patient_id
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            handle, _, _ = await c.enrol_and_drive(
                env,
                enrolment,
                choose=lambda n: "missed" if n in (4, 5) else "attended",
                until=lambda s: bool(s.open_tasks),
            )
            assert [t.status for t in c.store.tasks(patient_id=pid, include_done=True)] == ["open"]
            await handle.execute_update(
                PatientJourneyWorkflow.discharge,
                DischargeRequest(case_manager_id="CM-01", reason=DischargeReason.withdrew),
            )
        (row,) = c.store.tasks(patient_id=pid, include_done=True)
    assert (row.kind, row.status, row.completed_by) == ("outreach", "done", "engine")
