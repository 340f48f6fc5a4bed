"""Fuzzing every case manager's and partner's request: a request either validates and is
applied, or is refused with a specific message. Nothing else: no other exception (which
would fail a workflow task), and a refused update leaves the journey running."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from clinical.alumni import check_alumni_attendance
from clinical.assessment import Enrolment
from clinical.attendance import SessionRecord
from clinical.careplan import week_sessions
from clinical.check_ins import apply_check_in_adjustment, check_check_in_adjustment
from clinical.journey import JourneyState, start_journey
from clinical.phases import Phase
from clinical.protocol import ProgramCatalog
from clinical.referrals import (
    PartnerReport,
    ReferralRefused,
    ReferralStage,
    ReferralState,
    apply_partner_report,
    check_partner_report,
)
from clinical.requests import (
    AlumniAttendance,
    AttendanceReport,
    AttendanceSheet,
    CheckInAdjustment,
    ProgressReview,
    RelapseReport,
    RequestRefused,
)
from clinical.treatment import (
    apply_attendance,
    apply_review,
    check_attendance,
    check_attendance_sheet,
    check_relapse,
    check_review,
)
from tests.support import (
    PROGRAMS,
    clinic,
    drive_journey,
    enrolment_data,
    in_intensive_week,
    make_enrolment,
)
from workflows.patient_journey import PatientJourneyWorkflow

PROTOCOL = ProgramCatalog(PROGRAMS).load("default-iop")
START = datetime(2026, 3, 2, tzinfo=UTC)


def journey_in(phase: Phase, week: int) -> JourneyState:
    state = start_journey(Enrolment.model_validate(enrolment_data()), PROTOCOL, START)
    if phase in (Phase.intensive, Phase.step_down):
        week = min(week, state.plan.weeks_in(phase))
    state.phase, state.week, state.phase_start_day = phase, week, 7
    if phase in (Phase.intensive, Phase.step_down):
        for w in range(1, week + 1):
            specs = week_sessions(state.plan, phase, 1, w, 7 * w, state.clock, PROTOCOL)
            state.sessions += [SessionRecord.booked(s) for s in specs]
    if phase == Phase.aftercare:
        state.aftercare_start_day = 100
    return state


texts = st.text(min_size=0, max_size=40)
case_managers = st.one_of(st.just("CM-01"), texts)
phases = st.sampled_from([Phase.intake, Phase.intensive, Phase.step_down, Phase.aftercare])

REQUESTS: dict[str, Any] = {
    "attendance": st.fixed_dictionaries(
        {
            "case_manager_id": case_managers,
            "session_id": st.one_of(texts, st.just("INT1-W01-S1"), st.just("INT1-W09-S1")),
            "status": st.one_of(st.sampled_from(["attended", "missed", "excused"]), texts),
        }
    ),
    "attendance_sheet": st.fixed_dictionaries(
        {
            "case_manager_id": case_managers,
            "marks": st.lists(
                st.fixed_dictionaries(
                    {
                        "session_id": st.one_of(
                            texts, st.sampled_from(["INT1-W01-S1", "INT1-W01-S2", "INT1-W09-S1"])
                        ),
                        "status": st.one_of(
                            st.sampled_from(["attended", "missed", "excused"]), texts
                        ),
                    }
                ),
                max_size=4,
            ),
        }
    ),
    "review": st.fixed_dictionaries(
        {
            "case_manager_id": case_managers,
            "decision": st.one_of(
                st.sampled_from(["extend", "shorten", "approve_step_down", "change_level"]), texts
            ),
            "weeks": st.one_of(st.none(), st.integers(-5, 60)),
            "level": st.one_of(st.none(), st.sampled_from(["1", "2.1", "2.5", "3.7"]), texts),
        }
    ),
    "check_ins": st.fixed_dictionaries(
        {
            "case_manager_id": case_managers,
            "days": st.lists(st.integers(-3, 800), max_size=6),
            "reason": st.one_of(st.sampled_from(["patient_request", "clinical"]), texts),
        }
    ),
    "alumni": st.fixed_dictionaries({"case_manager_id": case_managers, "meeting_id": texts}),
    "relapse": st.fixed_dictionaries(
        {
            "case_manager_id": case_managers,
            "ratings": st.dictionaries(
                st.sampled_from(
                    ["withdrawal", "biomedical", "emotional", "readiness", "relapse", "environment"]
                ),
                st.integers(-1, 5),
            ),
        }
    ),
}


def refused_or_applied(kind: str, state: JourneyState, raw: dict[str, Any]) -> None:
    today = state.clock.day(START + timedelta(days=30))
    try:
        if kind == "attendance":
            report = AttendanceReport.model_validate(raw)
            check_attendance(state, report, today)
            apply_attendance(state, report)
        elif kind == "attendance_sheet":
            sheet = AttendanceSheet.model_validate(raw)
            before = list(state.sessions)
            try:
                check_attendance_sheet(state, sheet, today)
            except RequestRefused:
                assert state.sessions == before, "a refused sheet changes nothing"
                raise
            for report in sheet.reports():
                apply_attendance(state, report)
        elif kind == "review":
            review = ProgressReview.model_validate(raw)
            check_review(state, review)
            apply_review(state, review)
        elif kind == "check_ins":
            adjustment = CheckInAdjustment.model_validate(raw)
            check_check_in_adjustment(state, adjustment, today)
            apply_check_in_adjustment(state, adjustment)
        elif kind == "alumni":
            check_alumni_attendance(state, AlumniAttendance.model_validate(raw), today)
        else:
            check_relapse(state, RelapseReport.model_validate(raw))
    except (ValidationError, RequestRefused) as refusal:
        assert str(refusal).strip(), "a refusal says why"


@pytest.mark.parametrize("kind", sorted(REQUESTS))
def test_every_request_is_refused_with_a_reason_or_applied(kind: str) -> None:
    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(phase=phases, week=st.integers(1, 8), raw=REQUESTS[kind])
    def check(phase: Phase, week: int, raw: dict[str, Any]) -> None:
        refused_or_applied(kind, journey_in(phase, week), raw)

    check()


@settings(max_examples=150, deadline=None)
@given(
    stage=st.sampled_from(list(ReferralStage)),
    answer=st.one_of(st.sampled_from(["accepted", "declined", "completed", "no_show"]), texts),
    by=texts,
)
def test_partner_answers_are_refused_with_a_reason_or_applied(
    stage: ReferralStage, answer: str, by: str
) -> None:
    state = ReferralState(stage=stage, sent_day=1.0)
    try:
        report = PartnerReport.model_validate({"answer": answer, "reported_by": by})
        check_partner_report(state, report)
        apply_partner_report(state, report, 3.0)
    except (ValidationError, ReferralRefused) as refusal:
        assert str(refusal).strip()


BAD_UPDATES: list[tuple[str, Any]] = [
    ("record_attendance", {"case_manager_id": "CM-01"}),
    ("record_attendance", {"case_manager_id": "Jane Doe", "session_id": "x", "status": "attended"}),
    ("record_attendance", {"case_manager_id": "CM-01", "session_id": "INT1-W01-S1", "status": "?"}),
    ("record_attendance", "not an object"),
    ("review_progress", {"case_manager_id": "CM-01", "decision": "extend", "weeks": 400}),
    ("review_progress", {"case_manager_id": "CM-01", "decision": "change_level", "level": "9"}),
    ("discharge", {"case_manager_id": "CM-01", "reason": "bored"}),
    ("report_relapse", {"case_manager_id": "CM-01", "ratings": {"relapse": 7}}),
    ("adjust_check_ins", {"case_manager_id": "CM-01", "days": [30], "reason": "clinical"}),
    ("complete_task", {"case_manager_id": "CM-01", "task_key": "P-0000/task/none"}),
    ("refer", {"case_manager_id": "CM-01", "need": "spaceship"}),
    ("change_family_consent", {"case_manager_id": "CM-01", "granted": False}),
    ("report_alumni_attendance", {"case_manager_id": "CM-01", "meeting_id": "ALUMNI-E1-D001"}),
    ("no_such_update", {}),
]


async def test_bad_updates_are_refused_and_the_journey_goes_on(
    env: WorkflowEnvironment, tmp_path
) -> None:
    enrolment = make_enrolment()
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            handle, before, _ = await c.enrol_and_drive(env, enrolment, until=in_intensive_week(2))
            for name, arg in BAD_UPDATES:
                with pytest.raises(WorkflowUpdateFailedError):
                    await handle.execute_update(name, arg)
            after, _ = await drive_journey(env, handle, until=in_intensive_week(3))
            # A good request still lands.
            due = next(s for s in after.sessions if s.day <= after.program_day)
            await handle.execute_update(
                PatientJourneyWorkflow.record_attendance,
                AttendanceReport(
                    case_manager_id="CM-01", session_id=due.session_id, status="excused"
                ),
            )
    assert after.week == before.week + 1 and after.phase == Phase.intensive
