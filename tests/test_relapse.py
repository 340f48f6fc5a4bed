"""Relapse and the way back: in any phase after intake a relapse re-links the patient to
care through a reassessment (a new episode), or escalates to a higher level of care."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from clinical.aftercare import CheckIn
from clinical.assessment import DimensionRatings
from clinical.attendance import SessionStatus
from clinical.phases import Phase
from clinical.requests import RelapseReport
from clinical.status import JourneyStatus
from tests.support import (
    USE_ON_FIRST_CHECK_IN,
    clinic,
    drive_journey,
    in_intensive_week,
    make_enrolment,
)
from workflows.patient_journey import PatientJourneyWorkflow


@asynccontextmanager
async def manual_clock(env: WorkflowEnvironment) -> AsyncIterator[None]:
    with env.auto_time_skipping_disabled():
        yield


REASSESSED = DimensionRatings(
    withdrawal=1, biomedical=0, emotional=2, readiness=2, relapse=3, environment=3
)


async def relapse_during(
    env: WorkflowEnvironment, c: Any, until: Any, ratings: DimensionRatings = REASSESSED
) -> tuple[Any, JourneyStatus, JourneyStatus]:
    enrolment = make_enrolment()
    handle, before, _ = await c.enrol_and_drive(env, enrolment, until=until)
    await handle.execute_update(
        PatientJourneyWorkflow.report_relapse,
        RelapseReport(case_manager_id="CM-02", ratings=ratings),
    )
    after, _ = await drive_journey(
        env, handle, until=lambda s: s.episode == 2 and s.phase == Phase.intensive and s.week >= 1
    )
    return handle, before, after


def assert_relinked(before: JourneyStatus, after: JourneyStatus) -> None:
    assert after.episode == 2 and after.phase == Phase.intensive
    assert after.phase_history[-2].phase == Phase.intake
    assert "relapse (case_manager)" in after.phase_history[-2].reason
    # The new plan follows the reassessment: two ratings at 3 add two intensive weeks.
    assert after.weeks_in_phase == 10 and after.risk == "high"
    old = {s.session_id: s for s in after.sessions if s.session_id.startswith(("INT1", "STP1"))}
    assert all(s.status != SessionStatus.scheduled for s in old.values())
    assert any(s.session_id.startswith("INT2-W01") for s in after.sessions)
    assert set(before.sessions[i].session_id for i in range(len(before.sessions))) <= set(old)


async def test_relapse_in_intensive_reintensifies(env: WorkflowEnvironment, tmp_path) -> None:
    async with clinic(env.client, tmp_path) as c, manual_clock(env):
        _, before, after = await relapse_during(env, c, in_intensive_week(3))
        assert_relinked(before, after)
        booked = c.store.appointments(after.patient_id)
        cancelled = [r for r in booked if r.status == "cancelled"]
        assert cancelled and all(r.session_id.startswith("INT1") for r in cancelled)


async def test_relapse_in_step_down_goes_back_to_intensive(
    env: WorkflowEnvironment, tmp_path
) -> None:
    async with clinic(env.client, tmp_path) as c, manual_clock(env):
        _, before, after = await relapse_during(env, c, lambda s: s.phase == Phase.step_down)
        assert before.phase == Phase.step_down
        assert_relinked(before, after)


@pytest.mark.slow
async def test_relapse_in_aftercare_relinks_and_drops_pending_check_ins(
    env: WorkflowEnvironment, tmp_path
) -> None:
    async with clinic(env.client, tmp_path) as c, manual_clock(env):
        _, before, after = await relapse_during(
            env, c, lambda s: s.phase == Phase.aftercare and s.follow_ups[0].outcome is not None
        )
        assert_relinked(before, after)
        assert [f.call_id for f in after.follow_ups] == ["FU-D007"]  # the one that happened


async def test_relapse_that_needs_more_than_the_program_escalates(
    env: WorkflowEnvironment, tmp_path
) -> None:
    severe = REASSESSED.model_copy(update={"withdrawal": 4})
    async with clinic(env.client, tmp_path) as c, manual_clock(env):
        handle = await c.enrol(make_enrolment())
        await drive_journey(env, handle, until=in_intensive_week(2))
        await handle.execute_update(
            PatientJourneyWorkflow.report_relapse,
            RelapseReport(case_manager_id="CM-02", ratings=severe),
        )
        outcome = await handle.result()
        assert outcome.outcome == Phase.escalated
        kinds = [t.kind for t in c.store.tasks(patient_id=outcome.patient_id, include_done=True)]
        assert "escalation_referral" in kinds


async def test_relapse_refused_outside_treatment(env: WorkflowEnvironment, tmp_path) -> None:
    busy = [
        {"weekday": d, "start": "07:00", "end": "23:00", "kind": "work"}
        for d in ("mon", "tue", "wed", "thu", "fri", "sat")
    ]
    async with clinic(env.client, tmp_path) as c, manual_clock(env):
        handle = await c.enrol(make_enrolment(commitments=busy))  # waits in intake
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await handle.execute_update(
                PatientJourneyWorkflow.report_relapse,
                RelapseReport(case_manager_id="CM-02", ratings=REASSESSED),
            )
        assert "not during intake" in str(err.value.cause)


@pytest.mark.slow
async def test_use_found_on_a_check_in_relinks_the_patient(
    env: WorkflowEnvironment, tmp_path
) -> None:
    async with clinic(env.client, tmp_path, telephony=USE_ON_FIRST_CHECK_IN) as c:
        async with manual_clock(env):
            handle = await c.enrol(make_enrolment())
            status, _ = await drive_journey(
                env, handle, until=lambda s: s.episode == 2 and s.phase == Phase.intensive
            )
        assert "relapse (follow_up_call)" in status.phase_history[-2].reason
        kinds = [t.kind for t in c.store.tasks(patient_id=status.patient_id, include_done=True)]
        assert "reassessment" in kinds
        assert status.follow_ups[0].check_in == CheckIn(days_of_use=3)
