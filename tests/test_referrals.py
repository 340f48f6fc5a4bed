"""Referrals on the time-skipping server: each a child workflow that must close, with
consent checked before anything is disclosed and service levels that tell someone."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from clinical.assessment import Enrolment, SocialNeed
from clinical.identifiers import referral_workflow_id
from clinical.referrals import (
    ConsentGrant,
    PartnerAnswer,
    PartnerReport,
    ReferralStage,
    ReferralStatus,
)
from clinical.requests import ReferralRequest
from tests.support import Clinic, clinic, drive_journey, enrolment_data, journey_histories
from workflows.patient_journey import PatientJourneyWorkflow
from workflows.referral import ReferralWorkflow


def with_needs(needs: list[str], consented: list[str]) -> Enrolment:
    data = enrolment_data(social_needs=needs, consents={"partner_disclosure": consented})
    return Enrolment.model_validate(data)


async def referral_status(c: Clinic, patient_id: str, need: str) -> ReferralStatus:
    handle = c.client.get_workflow_handle(referral_workflow_id(patient_id, need))
    status: ReferralStatus = await handle.query(ReferralWorkflow.status)
    return status


async def answer(c: Clinic, patient_id: str, need: str, a: PartnerAnswer) -> ReferralStatus:
    handle = c.client.get_workflow_handle(referral_workflow_id(patient_id, need))
    result: ReferralStatus = await handle.execute_update(
        ReferralWorkflow.partner_response, PartnerReport(answer=a, reported_by="partner-portal")
    )
    return result


async def until_referral(
    env: WorkflowEnvironment,
    c: Clinic,
    handle: WorkflowHandle[Any, Any],
    need: str,
    stage: ReferralStage,
    within_days: int = 30,
) -> ReferralStatus:
    """Step the journey's clock a day at a time until its referral reaches a stage."""
    patient_id = handle.id.removeprefix("journey-")
    start = (await c.status(handle)).as_of(await env.get_current_time()).program_day
    for day in range(int(start) + 1, int(start) + within_days):
        if any(r.need == need for r in (await c.status(handle)).referrals):
            status = await referral_status(c, patient_id, need)
            if status.stage == stage:
                return status
        await drive_journey(env, handle, until=lambda s, d=day: s.program_day >= d)
    raise AssertionError(f"the {need} referral did not reach {stage} in {within_days} days")


async def test_referral_from_intake_accepted_then_completed(
    env: WorkflowEnvironment, tmp_path, database_url
) -> None:
    enrolment = with_needs(["housing"], consented=["housing"])
    pid = enrolment.patient_id
    async with clinic(env.client, tmp_path, database_url=database_url) as c:
        with env.auto_time_skipping_disabled():
            handle = await c.enrol(enrolment)
            await until_referral(env, c, handle, "housing", ReferralStage.sent)
            assert (await answer(c, pid, "housing", PartnerAnswer.accepted)).stage == "accepted"
            done = await answer(c, pid, "housing", PartnerAnswer.completed)
            child = c.client.get_workflow_handle(
                referral_workflow_id(pid, "housing"), result_type=ReferralStatus
            )
            result = await child.result()
            status, _ = await drive_journey(
                env, handle, until=lambda s: s.referrals[0].outcome is not None
            )
        (row,) = c.store.referrals(patient_id=pid)
        ledger = c.store.partner_contacts(pid)
        audit = [a.action for a in c.store.audit_trail(pid)]

    assert done.stage == ReferralStage.closed and result.outcome == "completed"
    assert [(r.need, r.outcome) for r in status.referrals] == [(SocialNeed.housing, "completed")]
    assert (row.status, row.outcome, row.reminders) == ("closed", "completed", 0)
    assert row.partner_reference and row.sent_at is not None
    assert [e.kind for e in ledger] == ["request"]  # sent exactly once
    assert audit.count("referral_requested") == 1 and audit.count("referral_closed") == 1
    assert audit.count("disclosed_to_partner") == 1  # the disclosure itself, once
    assert c.store.duplicate_counts() == dict.fromkeys(c.store.duplicate_counts(), 0)


async def test_silent_partner_gets_a_reminder_then_the_case_manager_a_task(
    env: WorkflowEnvironment, tmp_path
) -> None:
    enrolment = with_needs(["employment"], consented=["employment"])
    pid = enrolment.patient_id
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            handle = await c.enrol(enrolment)
            sent = await until_referral(env, c, handle, "employment", ReferralStage.sent)
            assert sent.next_due == "reminder"
            # 5 program days without an answer: one reminder, no task yet.
            await drive_journey(env, handle, until=lambda s: s.program_day >= 6)
            reminded = await referral_status(c, pid, "employment")
            assert (reminded.reminders, reminded.tasks) == (1, [])
            # 3 more days: the case manager is told.
            await drive_journey(env, handle, until=lambda s: s.program_day >= 10)
            stalled = await referral_status(c, pid, "employment")
            ledger = [e.kind for e in c.store.partner_contacts(pid)]
            opened = c.store.tasks(patient_id=pid, kind="referral_stalled", include_done=True)
            # Silence until the service level runs out: the referral expires.
            await drive_journey(env, handle, until=lambda s: s.referrals[0].outcome is not None)
        (row,) = c.store.referrals(patient_id=pid)

    assert stalled.tasks == ["stalled"] and stalled.next_due == "expiry"
    # The expired referral closed its own task: nothing is left to do.
    (task,) = c.store.tasks(patient_id=pid, kind="referral_stalled", include_done=True)
    assert (task.status, task.completed_by) == ("done", "engine")
    assert ledger == ["request", "reminder"]
    assert [t.workflow_id for t in opened] == [referral_workflow_id(pid, "employment")]
    assert (row.outcome, row.reminders) == ("expired", 1)


async def test_declined_referral_closes_and_the_need_can_be_referred_again(
    env: WorkflowEnvironment, tmp_path
) -> None:
    enrolment = with_needs(["legal"], consented=["legal"])
    pid = enrolment.patient_id
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            handle = await c.enrol(enrolment)
            await until_referral(env, c, handle, "legal", ReferralStage.sent)
            with pytest.raises(WorkflowUpdateFailedError) as early:
                await answer(c, pid, "legal", PartnerAnswer.no_show)
            await answer(c, pid, "legal", PartnerAnswer.declined)
            await drive_journey(env, handle, until=lambda s: s.referrals[0].outcome is not None)
            again = await handle.execute_update(
                PatientJourneyWorkflow.refer,
                ReferralRequest(case_manager_id="CM-05", need=SocialNeed.legal),
            )
            with pytest.raises(WorkflowUpdateFailedError) as duplicate:
                await handle.execute_update(
                    PatientJourneyWorkflow.refer,
                    ReferralRequest(case_manager_id="CM-05", need=SocialNeed.legal),
                )
            resent = await until_referral(env, c, handle, "legal", ReferralStage.sent)
        rows = c.store.referrals(patient_id=pid)

    assert "takes accepted, declined, completed, not no_show" in str(early.value.cause)
    assert again.referral_id == resent.referral_id == "REF-legal-2"
    assert "a legal referral is already open (REF-legal-2)" in str(duplicate.value.cause)
    assert sorted((r.referral_id, r.outcome) for r in rows) == [
        ("REF-legal-1", "declined"),
        ("REF-legal-2", None),
    ]


async def test_no_consent_asks_for_it_and_sends_once_given(
    env: WorkflowEnvironment, tmp_path
) -> None:
    enrolment = with_needs(["medical"], consented=[])
    pid = enrolment.patient_id
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            handle = await c.enrol(enrolment)
            waiting = await until_referral(
                env, c, handle, "medical", ReferralStage.awaiting_consent
            )
            # Nothing left the clinic, and days pass without a retry loop.
            await drive_journey(env, handle, until=lambda s: s.program_day >= 5)
            assert c.store.partner_contacts(pid) == []
            (task,) = c.store.tasks(patient_id=pid, kind="consent_needed", include_done=True)
            child = c.client.get_workflow_handle(referral_workflow_id(pid, "medical"))
            await child.execute_update(
                ReferralWorkflow.record_consent, ConsentGrant(case_manager_id="CM-01")
            )
            sent = await until_referral(env, c, handle, "medical", ReferralStage.sent)
            history = await child.fetch_history()
        ledger = c.store.partner_contacts(pid)

    assert waiting.stage == ReferralStage.awaiting_consent
    assert task.workflow_id == referral_workflow_id(pid, "medical")
    assert sent.stage == ReferralStage.sent and [e.kind for e in ledger] == ["request"]
    # The refused send failed once, not retried: two attempts in all (before and after).
    scheduled = [
        e
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "send_referral"
    ]
    started = [e for e in history.events if e.HasField("activity_task_started_event_attributes")]
    assert len(scheduled) == 2
    assert all(e.activity_task_started_event_attributes.attempt == 1 for e in started)


@pytest.mark.slow
async def test_a_referral_closing_after_the_journey_moved_on_and_the_journey_to_its_end(
    env: WorkflowEnvironment, tmp_path
) -> None:
    """A referral started at intake expires at its service level (day 90), long after the
    journey run that asked for it continued as new; the journey hears it and goes on to the
    end of aftercare. (As a child of that closed run, the time-skipping server could not
    finish it: temporalio/sdk-java#1540.)"""
    enrolment = with_needs(["employment"], consented=["employment"])
    pid = enrolment.patient_id
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            handle = await c.enrol(enrolment)
            await until_referral(env, c, handle, "employment", ReferralStage.sent)
            expired, _ = await drive_journey(
                env, handle, until=lambda s: s.referrals[0].outcome is not None
            )
            final, _ = await drive_journey(env, handle)
        runs = await journey_histories(c.client, handle)
        first_run_closed = runs[0].events[-1].event_time.ToDatetime()
        (row,) = c.store.referrals(patient_id=pid)

    # The run that asked for the referral had closed (continued as new) before it expired.
    assert expired.phase != "intake" and len(runs) >= 4
    assert row.closed_at is not None and first_run_closed < row.closed_at.replace(tzinfo=None)
    assert [(r.need, r.outcome) for r in final.referrals] == [(SocialNeed.employment, "expired")]
    assert row.outcome == "expired"
    assert final.phase == "completed"


async def test_starting_a_referral_loop_twice_starts_it_once(env: WorkflowEnvironment) -> None:
    """A retried start finds its own referral and does nothing; a start that would stand on
    another open referral for the need is refused, not retried."""
    from activities.records import ReferralLaunch
    from activities.referral_launch import ReferralLauncher
    from clinical.protocol import ReferralConfig
    from clinical.referrals import ReferralInput

    pid = enrolment_data()["patient_id"]
    workflow_id = referral_workflow_id(pid, "legal")

    def launch(referral_id: str) -> ReferralLaunch:
        return ReferralLaunch(
            workflow_id=workflow_id,
            task_queue="no-worker-here",  # nothing runs it: only its start is under test
            referral=ReferralInput(
                referral_id=referral_id,
                patient_id=pid,
                case_manager_id="CM-01",
                need=SocialNeed.legal,
                journey_workflow_id=f"journey-{pid}",
                service_levels=ReferralConfig(),
                seconds_per_day=86400,
                requested_by="CM-01",
            ),
        )

    launcher = ReferralLauncher(env.client)
    handle = env.client.get_workflow_handle(workflow_id)

    async def run_id() -> str | None:
        return (await handle.describe()).run_id

    await launcher.start_referral_loop(launch("REF-legal-1"))
    first = await run_id()
    await launcher.start_referral_loop(launch("REF-legal-1"))  # a retry, loop running
    with pytest.raises(ApplicationError) as refused:
        await launcher.start_referral_loop(launch("REF-legal-2"))
    await handle.terminate("closed quickly")
    await launcher.start_referral_loop(launch("REF-legal-1"))  # a late retry, loop closed
    after_late_retry = await run_id()
    await launcher.start_referral_loop(launch("REF-legal-2"))  # the next referral for it
    second = await run_id()
    await handle.terminate("test over")

    assert after_late_retry == first
    assert refused.value.non_retryable and "legal referral is still open" in str(refused.value)
    assert second != first
