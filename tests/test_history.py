"""The operator's story of a journey: every run and child, in order, with who did what."""

from __future__ import annotations

import pytest
from temporalio.testing import WorkflowEnvironment

from clinical.assessment import Enrolment
from clinical.referrals import PartnerAnswer, PartnerReport
from operators.history import journey_story
from simulation.patients import steady_attendance
from tests.support import clinic, drive_journey, enrolment_data, make_enrolment
from workflows.referral import ReferralWorkflow

PHI = ("Avery", "Quinlan", "555 010 2030", "1988-04-02")


@pytest.mark.slow
async def test_a_whole_journey_reads_as_one_timeline(env: WorkflowEnvironment, tmp_path) -> None:
    enrolment = make_enrolment()
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            _, status, reported = await c.enrol_and_drive(env, enrolment, choose=steady_attendance)
        story = await journey_story(env.client, enrolment.patient_id)

    assert [e.at for e in story] == sorted(e.at for e in story)
    assert story[0].what == "PatientJourney run began"
    phases = [e.what.removeprefix("phase ") for e in story if e.what.startswith("phase ")]
    assert phases == ["intensive", "step_down", "aftercare", "completed"]
    assert sum(1 for e in story if e.what == "continued as new (next phase or run)") == 3
    # Every attendance report, with the case manager who made it.
    recorded = [e for e in story if e.what == "record attendance"]
    assert len(recorded) == sum(1 for v in reported.values() if v != "none")
    assert {e.who for e in recorded} == {enrolment.case_manager_id}
    # The engine's writes (inside the workflow task: read from their receipts): each
    # week's booking, every session once.
    booked = [i for e in story if e.what.endswith(" sessions booked") for i in e.detail.split()]
    assert sorted(booked) == sorted(s.session_id for s in status.sessions)
    # Each check-in's calls, from the journey's own history (check-ins run inside it now),
    # told as the check-in's; no check-in is a workflow of its own.
    calls = {e.source for e in story if e.what.startswith("call FU-D")}
    assert calls == {f"E1-{f.call_id}" for f in status.follow_ups}
    assert not [e for e in story if e.what == "FollowUpCall run began"]
    assert story[-1].what == "ended" and "outcome=completed" in story[-1].detail
    text = " ".join(f"{e.what} {e.who} {e.detail}" for e in story)
    assert not [secret for secret in PHI if secret in text]


async def test_a_referrals_loop_is_in_the_story(env: WorkflowEnvironment, tmp_path) -> None:
    data = enrolment_data(social_needs=["housing"], consents={"partner_disclosure": ["housing"]})
    enrolment = Enrolment.model_validate(data)
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            handle, first, _ = await c.enrol_and_drive(
                env, enrolment, until=lambda s: s.program_day >= 2
            )
            referral = c.client.get_workflow_handle(first.referrals[0].workflow_id)
            for answer in (PartnerAnswer.accepted, PartnerAnswer.completed):
                await referral.execute_update(
                    ReferralWorkflow.partner_response,
                    PartnerReport(answer=answer, reported_by="housing-portal"),
                )
            await drive_journey(env, handle, until=lambda s: s.referrals[0].outcome is not None)
        story = await journey_story(env.client, enrolment.patient_id, c.store)

    referral_story = [(e.what, e.who) for e in story if e.source == "REF-housing"]
    assert referral_story[0] == ("Referral run began", "engine")
    assert ("referral sent to housing partner", "engine") in referral_story
    assert referral_story.count(("partner response", "housing-portal")) == 2
    assert referral_story[-1] == ("ended", "engine")
    # The journey hears the loop close.
    closed = [e for e in story if e.source == "journey" and e.what == "referral closed"]
    assert [e.detail for e in closed] == ["referral_id=REF-housing-1, outcome=completed"]
    # From the audit trail: who enrolled, the consent on file, the disclosure to the partner.
    audit = [(e.what, e.who) for e in story if e.source == "audit"]
    assert ("enrolled", enrolment.case_manager_id) in audit
    assert ("disclosed to partner", "engine") in audit
    assert [e.at for e in story] == sorted(e.at for e in story)
