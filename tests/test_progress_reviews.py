"""Progress reviews and step-down criteria in the intensive phase."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from clinical.phases import Phase
from clinical.requests import ProgressReview
from tests.support import clinic, drive_journey, make_enrolment
from workflows.patient_journey import PatientJourneyWorkflow


def review(decision: str, **kw: object) -> ProgressReview:
    return ProgressReview.model_validate({"case_manager_id": "CM-03", "decision": decision, **kw})


async def refused(handle, request: ProgressReview) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update(PatientJourneyWorkflow.review_progress, request)
    return str(err.value.cause)


async def test_step_down_refused_then_approved(env: WorkflowEnvironment, tmp_path) -> None:
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            handle = await c.enrol(make_enrolment())

            def everything(n: int) -> str:
                return "attended"

            await drive_journey(
                env, handle, until=lambda s: s.week >= 3, choose=everything, approve_step_down=False
            )
            assert "needs 6 weeks of intensive care; 3 done" in await refused(
                handle, review("approve_step_down")
            )
            await drive_journey(
                env, handle, until=lambda s: s.week >= 6, choose=everything, approve_step_down=False
            )
            answer = await handle.execute_update(
                PatientJourneyWorkflow.review_progress, review("approve_step_down")
            )
            assert "now 6 weeks" in answer
            status, _ = await drive_journey(
                env,
                handle,
                until=lambda s: s.phase == Phase.step_down,
                choose=everything,
                approve_step_down=False,
            )
        intensive = [s for s in status.sessions if s.phase == Phase.intensive]
        assert max(s.week for s in intensive) == 6


async def test_extend_within_the_maximum_and_shorten_within_the_minimum(
    env: WorkflowEnvironment, tmp_path
) -> None:
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            handle = await c.enrol(make_enrolment())
            await drive_journey(env, handle, until=lambda s: s.week >= 2)
            assert "above the program's maximum of 12" in await refused(
                handle, review("extend", weeks=5)
            )
            assert "at least 6 are needed" in await refused(handle, review("shorten", weeks=3))
            assert "needs a number of weeks" in await refused(handle, review("extend"))
            assert "level must be one of" in await refused(
                handle, review("change_level", level="1")
            )
            await handle.execute_update(
                PatientJourneyWorkflow.review_progress, review("extend", weeks=2)
            )
            await handle.execute_update(
                PatientJourneyWorkflow.review_progress, review("change_level", level="2.5")
            )
            status, _ = await drive_journey(env, handle, until=lambda s: s.week >= 3)
        assert status.weeks_in_phase == 10 and status.level == "2.5"
        week3 = [s for s in status.sessions if s.session_id.startswith("INT1-W03")]
        assert len(week3) == 6 and all(s.level == "2.5" for s in week3)  # 5 visits + 1


async def test_without_the_criteria_intensive_extends_to_the_maximum_and_asks(
    env: WorkflowEnvironment, tmp_path
) -> None:
    async with clinic(env.client, tmp_path) as c:
        enrolment = make_enrolment()
        with env.auto_time_skipping_disabled():
            # Half attended: below the 70% step-down needs, so no approval is possible.
            _, status, _ = await c.enrol_and_drive(
                env,
                enrolment,
                choose=lambda n: "attended" if n % 2 else "excused",
                until=lambda s: s.phase == Phase.step_down,
                approve_step_down=False,
            )
        intensive_weeks = max(s.week for s in status.sessions if s.phase == Phase.intensive)
        assert intensive_weeks == 12
        kinds = [t.kind for t in c.store.tasks(patient_id=enrolment.patient_id, include_done=True)]
        assert kinds.count("step_down_decision") == 4  # weeks 8, 9, 10, 11
        assert kinds.count("review") >= 1  # at the maximum
