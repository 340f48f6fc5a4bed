"""The questionnaire on a journey (time-skipping server): sent at step-down, at aftercare's
month 3 and at completion, once each even when the write is retried; at discharge; and
never by a program without one."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from clinical.phases import Phase
from clinical.requests import DischargeReason, DischargeRequest
from infra.store import CareStore
from tests.support import PROGRAMS, clinic, in_intensive_week, make_enrolment
from workflows.patient_journey import PatientJourneyWorkflow


def _fail_once_after_writing(store: CareStore) -> list[str]:
    """The store's survey write fails its first attempt for each key after it committed
    (a worker lost its answer): the retry must find it issued."""
    write: Callable[..., Any] = store.issue_survey
    failed: list[str] = []

    def flaky(survey: Any, body_of: Any) -> Any:
        issued = write(survey, body_of)
        if survey.key not in failed:
            failed.append(survey.key)
            raise RuntimeError("lost the answer")
        return issued

    store.issue_survey = flaky  # type: ignore[method-assign]
    return failed


@pytest.mark.slow
async def test_a_completed_journey_is_asked_at_step_down_month_3_and_the_end_once_each(
    env: WorkflowEnvironment, tmp_path: Path, database_url: str
) -> None:
    async with clinic(env.client, tmp_path, database_url=database_url) as c:
        store = c.operations.store
        failed = _fail_once_after_writing(store)
        enrolment = make_enrolment()
        with env.auto_time_skipping_disabled():
            _, status, _ = await c.enrol_and_drive(env, enrolment)
        assert status.phase == Phase.completed
        surveys = store.surveys(enrolment.patient_id)
        assert [s.occasion for s in surveys] == ["step_down", "aftercare", "end"]
        assert len(failed) == 3  # each write was retried, and made one survey
        step_down = next(p for p in status.phase_history if p.phase == Phase.step_down)
        aftercare = next(p for p in status.phase_history if p.phase == Phase.aftercare)
        assert abs(surveys[0].issued_at - step_down.at) < timedelta(minutes=1)
        # Month 3: the aftercare check-in on day 90, not before.
        assert (surveys[1].issued_at - aftercare.at).days >= 90
        assert surveys[0].track_id == "north-morning"
        messages = [m for m in store.outbox(enrolment.patient_id) if m.kind == "survey_invitation"]
        assert len(messages) == 3 and all(m.channel == "sms" for m in messages)
        assert all(s.token in m.body for s, m in zip(surveys, messages, strict=True))


@pytest.mark.slow
async def test_a_discharged_journey_is_asked_once_at_the_end(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with clinic(env.client, tmp_path) as c:
        enrolment = make_enrolment()
        with env.auto_time_skipping_disabled():
            handle, _, _ = await c.enrol_and_drive(env, enrolment, until=in_intensive_week(2))
            await handle.execute_update(
                PatientJourneyWorkflow.discharge,
                DischargeRequest(case_manager_id="CM-01", reason=DischargeReason.administrative),
            )
            await handle.result()
        surveys = c.operations.store.surveys(enrolment.patient_id)
        assert [(s.occasion, s.episode) for s in surveys] == [("end", 1)]


@pytest.mark.slow
async def test_a_program_without_a_questionnaire_sends_none(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    programs = tmp_path / "programs"
    programs.mkdir()
    default = (PROGRAMS / "default-iop.toml").read_text()
    assert "\n[survey]" in default
    (programs / "default-iop.toml").write_text(default.split("\n[survey]")[0])
    shutil.copy(PROGRAMS / "sites.toml", programs / "sites.toml")
    async with clinic(env.client, tmp_path, programs_dir=programs) as c:
        enrolment = make_enrolment()
        with env.auto_time_skipping_disabled():
            _, status, _ = await c.enrol_and_drive(env, enrolment)
        assert status.phase == Phase.completed
        assert c.operations.store.surveys() == []
