"""Aftercare check-ins with instruments: BAM and PHQ-9 scoring, and what a check-in's
answers (or silence) make the journey do."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from clinical.actors import ENGINE
from clinical.aftercare import CHECK_IN_CONCLUDED, CallOutcome, CheckIn
from clinical.instruments import (
    BAM_PROTECTIVE_ITEMS,
    BAM_RISK_ITEMS,
    BAM_USE_ITEMS,
    BamAnswers,
    Phq9Answers,
    check_in_findings,
    score_bam,
    score_phq9,
)
from clinical.phases import Phase
from clinical.requests import (
    AlumniAttendance,
    CheckInAdjustment,
    DischargeReason,
    DischargeRequest,
)
from infra.store import CallAttempt, InboxTask
from infra.telephony import CallPlaced
from simulation.patients import steady_attendance
from tests.support import PROGRAMS, Scripted, clinic, drive_journey, make_enrolment
from tests.test_telephony import at_first_check_in
from workflows.patient_journey import PatientJourneyWorkflow


def bam(use: int = 0, risk: int = 0, protective: int = 4, other: int = 0) -> BamAnswers:
    items = []
    for n in range(1, 18):
        if n in BAM_USE_ITEMS:
            items.append(use)
        elif n in BAM_RISK_ITEMS:
            items.append(risk)
        elif n in BAM_PROTECTIVE_ITEMS:
            items.append(protective)
        else:
            items.append(other)
    return BamAnswers(items=tuple(items))


def test_bam_subscales_and_flags() -> None:
    score = score_bam(bam(use=1, risk=2, protective=2, other=4))
    assert (score.use, score.risk, score.protective) == (3, 12, 12)
    assert score.use_flag and score.risk_flag and score.protective_flag
    calm = score_bam(bam(use=0, risk=1, protective=3))
    assert (calm.use_flag, calm.risk_flag, calm.protective_flag) == (False, False, False)


@given(st.lists(st.integers(0, 4), min_size=17, max_size=17))
def test_bam_subscales_stay_in_range_and_ignore_other_items(items: list[int]) -> None:
    score = score_bam(BamAnswers(items=tuple(items)))
    assert 0 <= score.use <= 12 and 0 <= score.risk <= 24 and 0 <= score.protective <= 24
    changed = list(items)
    changed[6] = 4 - changed[6]  # item 7 belongs to no subscale
    changed[16] = 4 - changed[16]  # nor does item 17
    assert score_bam(BamAnswers(items=tuple(changed))) == score


@pytest.mark.parametrize(
    ("items", "total", "severity", "flag"),
    [
        ((0,) * 9, 0, "minimal", False),
        ((1, 1, 1, 1, 1, 0, 0, 0, 0), 5, "mild", False),
        ((3, 3, 3, 3, 3, 3, 2, 0, 0), 20, "severe", False),
        ((0, 0, 0, 0, 0, 0, 0, 0, 1), 1, "minimal", True),
    ],
)
def test_phq9_total_severity_and_item_9(
    items: tuple[int, ...], total: int, severity: str, flag: bool
) -> None:
    score = score_phq9(Phq9Answers(items=items))
    assert (score.total, score.severity, score.self_harm_flag) == (total, severity, flag)


def test_findings_put_self_harm_first_and_keep_answers_out_of_details() -> None:
    findings = check_in_findings(
        0, bam(use=1, risk=3, protective=1), Phq9Answers(items=(0,) * 8 + (2,))
    )
    assert [f.kind for f in findings] == ["self_harm", "relapse", "risk", "low_protective"]
    assert "same-day" in findings[0].detail
    assert check_in_findings(0, bam(), Phq9Answers(items=(0,) * 9)) == []
    assert [f.kind for f in check_in_findings(2, None, None)] == ["relapse"]


def test_refused_answers_are_refused() -> None:
    with pytest.raises(ValueError, match="items"):
        BamAnswers(items=(5,) * 17)
    with pytest.raises(ValueError, match="items"):
        Phq9Answers(items=(0,) * 8)


async def aftercare_journey(
    env: WorkflowEnvironment, tmp_path: Any, telephony: Scripted, until: Any
) -> tuple[Any, list[InboxTask], list[CallAttempt]]:
    enrolment = make_enrolment()
    async with clinic(env.client, tmp_path, telephony=telephony) as c:
        with env.auto_time_skipping_disabled():
            _, status, _ = await c.enrol_and_drive(
                env, enrolment, choose=steady_attendance, until=until
            )
        opened = c.store.tasks(patient_id=enrolment.patient_id, include_done=True)
        calls = c.store.call_attempts(enrolment.patient_id)
    return status, opened, calls


async def test_phq9_item_9_opens_a_same_day_clinical_task(
    env: WorkflowEnvironment, tmp_path
) -> None:
    def answer(reference: str) -> tuple[CallOutcome, CheckIn | None]:
        item9 = 1 if "FU-D030" in reference else 0
        return CallOutcome.reached, CheckIn(
            days_of_use=0, bam=bam(), phq9=Phq9Answers(items=(1,) * 8 + (item9,))
        )

    status, opened, calls = await aftercare_journey(
        env,
        tmp_path,
        Scripted(answer),
        until=lambda s: len([f for f in s.follow_ups if f.outcome]) >= 2,
    )
    clinical = [t for t in opened if t.kind == "clinical_follow_up"]
    assert len(clinical) == 1 and "FU-D030" in clinical[0].detail
    (task,) = [t for t in status.open_tasks if t.kind == "clinical_follow_up"]
    due = clinical[0].due_at
    assert due is not None and due - task.opened_at < status.clock.duration(0.3)  # same day
    assert "PHQ-9 item 9" in clinical[0].detail and status.phase == Phase.aftercare
    # The structured answers are kept with the call (the store is where PHI may live).
    kept = [c.check_in for c in calls]
    assert [k.phq9.items[8] for k in kept if k and k.phq9] == [0, 1]


async def test_bam_use_flag_without_days_of_use_relinks_the_patient(
    env: WorkflowEnvironment, tmp_path
) -> None:
    def answer(reference: str) -> tuple[CallOutcome, CheckIn | None]:
        use = 1 if "FU-D007" in reference else 0
        return CallOutcome.reached, CheckIn(days_of_use=0, bam=bam(use=use, risk=3))

    status, opened, _ = await aftercare_journey(
        env, tmp_path, Scripted(answer), until=lambda s: s.episode == 2
    )
    assert status.phase_history[-1].phase in (Phase.intake, Phase.intensive)
    assert {"reassessment", "aftercare_support"} <= {t.kind for t in opened}


@pytest.mark.slow
async def test_three_unreachable_check_ins_in_a_row_lose_contact(
    env: WorkflowEnvironment, tmp_path
) -> None:
    status, opened, calls = await aftercare_journey(
        env,
        tmp_path,
        Scripted(lambda reference: (CallOutcome.unreachable, None)),
        until=lambda s: False,
    )
    assert status.phase == Phase.lost_to_contact
    assert [f.call_id for f in status.follow_ups if f.outcome] == ["FU-D007", "FU-D030", "FU-D060"]
    assert len(calls) == 3 * 3  # every check-in tried three times
    assert [t.kind for t in opened if t.kind == "unreachable_patient"] == [
        "unreachable_patient"
    ] * 3
    # An ended journey leaves nothing open.
    assert {t.status for t in opened} == {"done"}


@pytest.mark.slow
async def test_a_case_manager_reschedules_the_check_ins_ahead(
    env: WorkflowEnvironment, tmp_path
) -> None:
    reached = Scripted(lambda reference: (CallOutcome.reached, CheckIn(days_of_use=0)))
    enrolment = make_enrolment()
    async with clinic(env.client, tmp_path, telephony=reached) as c:
        with env.auto_time_skipping_disabled():
            handle, first, _ = await c.enrol_and_drive(
                env,
                enrolment,
                choose=steady_attendance,
                until=lambda s: any(f.outcome for f in s.follow_ups),
            )
            refusals = []
            for days in ((3, 40), (40, 30), (40, 400)):
                with pytest.raises(WorkflowUpdateFailedError) as refused:
                    await handle.execute_update(
                        PatientJourneyWorkflow.adjust_check_ins,
                        CheckInAdjustment(case_manager_id="CM-02", days=days, reason="clinical"),
                    )
                refusals.append(str(refused.value.cause))
            moved = await handle.execute_update(
                PatientJourneyWorkflow.adjust_check_ins,
                CheckInAdjustment(case_manager_id="CM-02", days=(20, 45), reason="patient_request"),
            )
            done, _ = await drive_journey(env, handle, choose=steady_attendance)
        calls = c.store.call_attempts(enrolment.patient_id)
        reminders = {
            n.key.rsplit("-", 1)[-1]: n.withdrawn_at is None
            for n in c.store.outbox(enrolment.patient_id)
            if n.kind == "call_reminder"
        }

    assert [f.call_id for f in first.follow_ups if f.outcome] == ["FU-D007"]
    # The moved calls' reminders are withdrawn; the new ones are queued.
    assert {k for k, live in reminders.items() if live} == {"D007", "D020", "D045"}
    assert {k for k, live in reminders.items() if not live} == {
        "D030",
        "D060",
        "D090",
        "D180",
        "D270",
        "D365",
    }
    assert "has passed" in refusals[0] and "strictly increasing" in refusals[1]
    assert "after aftercare ends" in refusals[2]
    assert moved == "2 check-in(s) ahead, from aftercare day 20"
    assert done.phase == Phase.completed
    assert [f.call_id for f in done.follow_ups] == ["FU-D007", "FU-D020", "FU-D045"]
    assert sorted(c.call_ref for c in calls) == ["FU-D007", "FU-D020", "FU-D045"]
    start = done.phase_history[-2].day  # aftercare began
    assert [round(f.day - start) for f in done.follow_ups] == [7, 20, 45]


async def test_alumni_invitations_and_a_text_before_the_second_attempt(
    env: WorkflowEnvironment, tmp_path
) -> None:
    def answer(reference: str) -> tuple[CallOutcome, CheckIn | None]:
        # Day 30's first attempt goes unanswered; every other attempt reaches the patient.
        if "FU-D030/attempt-1" in reference:
            return CallOutcome.unreachable, None
        return CallOutcome.reached, CheckIn(days_of_use=0)

    enrolment = make_enrolment()
    pid = enrolment.patient_id
    async with clinic(env.client, tmp_path, telephony=Scripted(answer)) as c:
        with env.auto_time_skipping_disabled():
            handle, status, _ = await c.enrol_and_drive(
                env,
                enrolment,
                choose=steady_attendance,
                until=lambda s: len([f for f in s.follow_ups if f.outcome]) >= 2,
            )
            outbox = c.store.outbox(pid)
            concluded = c.store.audit_trail(pid, actions=[CHECK_IN_CONCLUDED])
            invitations = sorted(
                (n for n in outbox if n.kind == "alumni_invitation"),
                key=lambda n: n.deliver_at or n.created_at,
            )
            past = invitations[0].key.rsplit("/", 1)[-1]
            future = invitations[-1].key.rsplit("/", 1)[-1]
            went = await handle.execute_update(
                PatientJourneyWorkflow.report_alumni_attendance,
                AlumniAttendance(case_manager_id="CM-01", meeting_id=past),
            )
            refusals = []
            for meeting in (future, past, "ALUMNI-E1-D999"):
                with pytest.raises(WorkflowUpdateFailedError) as refused:
                    await handle.execute_update(
                        PatientJourneyWorkflow.report_alumni_attendance,
                        AlumniAttendance(case_manager_id="CM-01", meeting_id=meeting),
                    )
                refusals.append(str(refused.value.cause))

    # Every other week through the aftercare year, on the program's weekday and hour.
    assert len(invitations) == 26
    assert all("alumni and peer-support meeting" in n.body for n in invitations)
    assert all(n.body.startswith("Invitation: ") for n in invitations)
    texts = [n for n in outbox if n.kind == "check_in_sms"]
    assert [t.key for t in texts] == [f"{pid}/sms/E1-FU-D030"]
    assert went == "1 alumni meeting(s) attended"
    assert "has not happened yet" in refusals[0] and "already recorded" in refusals[1]
    assert "no alumni meeting" in refusals[2]
    assert status.follow_ups[1].attempts == 2
    # Each concluded check-in once in the audit trail, with its outcome and attempts (the
    # unanswered first attempt on day 30 concluded nothing), at the journey's time.
    assert sorted(r.detail.items() for r in concluded) == sorted(
        {"call_id": f.call_id, "outcome": "reached", "attempts": f.attempts}.items()
        for f in status.follow_ups[:2]
    )
    assert {r.actor for r in concluded} == {ENGINE}
    assert all(r.at >= status.follow_ups[0].due_at for r in concluded)


@pytest.mark.slow
async def test_a_program_change_reaches_aftercare_at_the_next_check_in(
    env: WorkflowEnvironment, tmp_path
) -> None:
    programs = tmp_path / "programs"
    shutil.copytree(PROGRAMS, programs)
    default = programs / "default-iop.toml"

    def answer(reference: str) -> tuple[CallOutcome, CheckIn | None]:
        if "FU-D030" in reference:  # never answers day 30: every attempt is used
            return CallOutcome.unreachable, None
        return CallOutcome.reached, CheckIn(days_of_use=0)

    enrolment = make_enrolment()
    async with clinic(env.client, tmp_path, programs, telephony=Scripted(answer)) as c:
        with env.auto_time_skipping_disabled():
            handle, _, _ = await c.enrol_and_drive(
                env,
                enrolment,
                choose=steady_attendance,
                until=lambda s: any(f.outcome for f in s.follow_ups),
            )
            text = default.read_text()
            changed = text.replace("call_attempts = 3", "call_attempts = 2").replace(
                "follow_up_days = [7, 30, 60, 90, 180, 270, 365]",
                "follow_up_days = [7, 14, 30, 60, 90, 180, 270, 365]",
            )
            assert changed.count("\n") == text.count("\n") and changed != text
            default.write_text(changed)
            status, _ = await drive_journey(
                env,
                handle,
                choose=steady_attendance,
                until=lambda s: len([f for f in s.follow_ups if f.outcome]) >= 2,
            )

    day30 = status.follow_ups[1]
    assert (day30.call_id, day30.outcome, day30.attempts) == ("FU-D030", "unreachable", 2)
    # Not retroactive: the schedule made when aftercare began stands.
    assert [f.day_offset for f in status.follow_ups] == [7, 30, 60, 90, 180, 270, 365]


class NeverAnswers:
    """A provider that takes calls and never says how they ended (no callback comes)."""

    def __init__(self) -> None:
        self.placed: list[str] = []

    def __call__(self, store: Any) -> NeverAnswers:
        return self

    def place_call(
        self, reference: str, patient_id: str, phone: str, instruments: tuple[str, ...] = ()
    ) -> CallPlaced:
        self.placed.append(reference)
        return CallPlaced(provider_call_id=f"CA{len(self.placed)}")


@pytest.mark.slow
async def test_a_discharge_while_a_check_in_waits_for_the_providers_word_ends_the_call(
    env: WorkflowEnvironment, tmp_path
) -> None:
    """The check-in runs inside the journey: a discharge mid-call cancels its wait, records
    no attempt, and the journey ends (no check-in workflow is left behind)."""
    provider = NeverAnswers()
    enrolment = make_enrolment()
    pid = enrolment.patient_id
    async with clinic(env.client, tmp_path, telephony=provider) as c:
        handle = await at_first_check_in(env, c, enrolment)
        with env.auto_time_skipping_disabled():
            for _ in range(200):
                if provider.placed:
                    break
                await asyncio.sleep(0.05)
            assert provider.placed == [f"{pid}/FU-D007/attempt-1"]
            assert c.store.call_placed_by(provider.placed[0]) == handle.id
            await handle.execute_update(
                PatientJourneyWorkflow.discharge,
                DischargeRequest(case_manager_id="CM-01", reason=DischargeReason.withdrew),
            )
            outcome = await handle.result()
        attempts = c.store.call_attempts(pid)
    assert outcome.outcome == Phase.withdrawn
    assert attempts == []
    assert provider.placed == [f"{pid}/FU-D007/attempt-1"]  # no second attempt
