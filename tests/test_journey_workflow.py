"""Journeys on the time-skipping server: a whole year in seconds, with a case manager
recording attendance as the weeks pass."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from clinical.attendance import SessionStatus
from clinical.careplan import treatment_week_of
from clinical.phases import Phase
from clinical.requests import (
    AttendanceMark,
    AttendanceReport,
    AttendanceSheet,
    DischargeReason,
    DischargeRequest,
    ProgressReview,
)
from simulation.patients import steady_attendance
from tests.support import (
    clinic,
    in_intensive_week,
    journey_histories,
    make_enrolment,
    settle,
)
from workflows.patient_journey import PatientJourneyWorkflow


@pytest.mark.slow
async def test_a_full_year_journey(env: WorkflowEnvironment, tmp_path, database_url) -> None:
    """Every phase in order; sessions and calls in the store (SQLite, then PostgreSQL);
    attendance arithmetic."""
    async with clinic(env.client, tmp_path, database_url=database_url) as c:
        enrolment = make_enrolment()
        with env.auto_time_skipping_disabled():
            # About 78% attended: enough for step-down when the 8 planned weeks end.
            handle, status, reported = await c.enrol_and_drive(
                env,
                enrolment,
                choose=steady_attendance,
            )
            outcome = await handle.result()
            runs = await journey_histories(c.client, handle)

    assert outcome.outcome == Phase.completed
    # Continue-as-new at every phase boundary keeps each run's history small (the budget is
    # 10,000 events a run for a whole patient-year).
    assert len(runs) == 4
    assert max(len(r.events) for r in runs) < 2_000, [len(r.events) for r in runs]
    phases = [p.phase for p in status.phase_history]
    assert phases == [
        Phase.intake,
        Phase.intensive,
        Phase.step_down,
        Phase.aftercare,
        Phase.completed,
    ]
    # Default program, no rating >= 3: 8 intensive weeks of 3 group visits + 1 individual,
    # a 2-week taper (2 + 1), then 4 outpatient weeks (1 + 1).
    assert len(status.sessions) == 8 * 4 + 2 * 3 + 4 * 2
    booked = c.store.appointments(enrolment.patient_id)
    assert sorted(r.session_id for r in booked) == sorted(s.session_id for s in status.sessions)
    attended = sum(1 for v in reported.values() if v == "attended")
    missed = sum(1 for v in reported.values() if v != "attended")
    assert len(reported) == len(status.sessions)
    assert (outcome.attendance.attended, outcome.attendance.missed) == (attended, missed)
    assert outcome.attendance.rate == pytest.approx(attended / (attended + missed))
    by_status = {st: sum(1 for r in booked if r.status == st) for st in SessionStatus}
    assert by_status[SessionStatus.attended] == attended
    assert by_status[SessionStatus.missed] == missed
    assert sum(1 for r in booked if r.missed_by_grace) == sum(
        1 for v in reported.values() if v == "none"
    )
    # Aftercare: day 7, 30, 60, 90, 180, 270 and 365, each call attempted until reached.
    assert [f.day_offset for f in status.follow_ups] == [7, 30, 60, 90, 180, 270, 365]
    assert all(f.outcome is not None for f in status.follow_ups)
    calls = c.store.call_attempts(enrolment.patient_id)
    assert len(calls) == sum(f.attempts for f in status.follow_ups)
    # Each case-manager update is in the audit trail once.
    audit = c.store.audit_trail(enrolment.patient_id)
    assert sum(1 for a in audit if a.action == "attendance_recorded") == sum(
        1 for v in reported.values() if v != "none"
    )
    assert [r.phase for r in c.store.phase_changes(enrolment.patient_id)] == [
        "intensive",
        "step_down",
        "aftercare",
        "completed",
    ]
    assert c.store.duplicate_counts() == dict.fromkeys(c.store.duplicate_counts(), 0)


@pytest.mark.parametrize(
    ("reason", "outcome"),
    [
        (DischargeReason.withdrew, Phase.withdrawn),
        (DischargeReason.administrative, Phase.discharged),
        (DischargeReason.lost_to_contact, Phase.lost_to_contact),
    ],
)
async def test_explicit_exits_end_the_journey_with_their_reason(
    env: WorkflowEnvironment, tmp_path, reason: DischargeReason, outcome: Phase
) -> None:
    async with clinic(env.client, tmp_path) as c:
        enrolment = make_enrolment()
        with env.auto_time_skipping_disabled():
            handle, _, _ = await c.enrol_and_drive(env, enrolment, until=in_intensive_week(2))
            ended = await handle.execute_update(
                PatientJourneyWorkflow.discharge,
                DischargeRequest(case_manager_id="CM-07", reason=reason),
            )
            status = await c.status(handle)
        booked = c.store.appointments(enrolment.patient_id)
        audit = c.store.audit_trail(enrolment.patient_id)
        reminders = {
            n.key.rsplit("/", 1)[-1]: n
            for n in c.store.outbox(enrolment.patient_id)
            if n.kind == "session_reminder"
        }

    assert (ended.outcome, ended.reason) == (outcome, f"discharged: {reason}")
    # Every session booked got a reminder inside the contact window; the cancelled ones'
    # reminders are withdrawn.
    assert set(reminders) == {r.session_id for r in booked}
    for r in booked:
        withdrawn = reminders[r.session_id].withdrawn_at is not None
        assert withdrawn == (r.status == "cancelled"), r.session_id
    assert status.phase == outcome and status.phase_history[-1].phase == outcome
    # Nothing is left booked after the exit; what was due before it stays on the record.
    ended_day = status.phase_history[-1].day
    later = {x.session_id for x in status.sessions if x.day > ended_day}
    assert later, "the test ends the journey while sessions are still booked ahead"
    assert {r.session_id: r.status for r in booked if r.session_id in later} == dict.fromkeys(
        later, "cancelled"
    )
    assert [(a.actor, a.action) for a in audit if a.action == "discharge_requested"] == [
        ("CM-07", "discharge_requested")
    ]


async def test_updates_racing_the_continue_as_new_boundary_are_not_lost(
    env: WorkflowEnvironment, tmp_path
) -> None:
    """Attendance for the last intensive week is sent while the clock crosses into step-down
    (the journey continues as new there): every report lands once, in the new run's state
    and in the store."""
    async with clinic(env.client, tmp_path) as c:
        enrolment = make_enrolment()
        with env.auto_time_skipping_disabled():
            handle, status, _ = await c.enrol_and_drive(
                env,
                enrolment,
                choose=lambda n: "attended",
                until=lambda s: s.phase == Phase.intensive and s.week == s.weeks_in_phase,
            )
            await handle.execute_update(
                PatientJourneyWorkflow.review_progress,
                ProgressReview(case_manager_id="CM-01", decision="approve_step_down"),
            )
            last_week = [s.session_id for s in status.sessions if s.week == status.week]
            runs_before = len(await journey_histories(c.client, handle))

            async def report(session_id: str) -> None:
                await handle.execute_update(
                    PatientJourneyWorkflow.record_attendance,
                    AttendanceReport(
                        case_manager_id="CM-01", session_id=session_id, status="excused"
                    ),
                )

            # Past the week's last session (the boundary is at the next week's start) ...
            last_day = max(s.day for s in status.sessions if s.week == status.week)
            await env.sleep(timedelta(days=last_day - status.program_day + 0.1))
            # ... then the clock crosses the boundary (the next treatment week's Monday) while
            # the reports arrive.
            assert status.phase_start_day is not None
            boundary = status.phase_start_day + 7 * status.week
            to_boundary = timedelta(days=boundary - last_day + 0.4)
            await asyncio.gather(env.sleep(to_boundary), *map(report, last_week))
            await settle(c.client, handle.id)
            after = await c.status(handle)
            runs_after = len(await journey_histories(c.client, handle))
        rows = {r.session_id: r for r in c.store.appointments(enrolment.patient_id)}
        audit = c.store.audit_trail(enrolment.patient_id)

    assert after.phase == Phase.step_down
    assert runs_after == runs_before + 1  # the boundary was crossed
    recorded = {s.session_id: s.status for s in after.sessions}
    assert {recorded[sid] for sid in last_week} == {SessionStatus.excused}
    assert {rows[sid].status for sid in last_week} == {"excused"}
    keys = [a.key for a in audit if a.action == "attendance_recorded"]
    assert len(keys) == len(set(keys))


async def test_a_weeks_attendance_sheet_lands_whole_or_not_at_all(
    env: WorkflowEnvironment, tmp_path
) -> None:
    """A case manager enters the first intensive week's sign-in sheets in one request: a
    sheet with one mark the rules refuse changes nothing; a good one records every session
    (state, audit entry per session, and the store with the next week's write)."""
    enrolment = make_enrolment()
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            handle, status, _ = await c.enrol_and_drive(
                env,
                enrolment,
                choose=lambda n: "none",
                until=in_intensive_week(1),
            )
            week = [s for s in status.sessions if s.week == 1]
            await env.sleep(timedelta(days=max(s.day for s in week) - status.program_day + 0.1))
            await settle(c.client, handle.id)
            marks = [
                AttendanceMark(session_id=s.session_id, status="missed" if i == 1 else "attended")
                for i, s in enumerate(week)
            ]
            bad = AttendanceSheet(
                case_manager_id="CM-02",
                marks=[*marks, AttendanceMark(session_id="INT1-W09-S1", status="attended")],
            )
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await handle.execute_update(PatientJourneyWorkflow.record_attendance_sheet, bad)
            untouched = await c.status(handle)
            summary = await handle.execute_update(
                PatientJourneyWorkflow.record_attendance_sheet,
                AttendanceSheet(case_manager_id="CM-02", marks=marks),
            )
            after = await c.status(handle)
            # Into the next treatment week (weeks count from the phase's first Monday, not
            # from the enrolment day), when the journey writes the past week's marks.
            assert after.phase_start_day is not None
            next_week = after.phase_start_day + 7 * after.week
            await env.sleep(timedelta(days=next_week - after.program_day + 0.5))
            await settle(c.client, handle.id)
        rows = {r.session_id: r for r in c.store.appointments(enrolment.patient_id)}
        audit = [
            a
            for a in c.store.audit_trail(enrolment.patient_id)
            if a.action == "attendance_recorded"
        ]
        histories = await journey_histories(c.client, handle)

    assert "unknown session 'INT1-W09-S1'" in str(refused.value.cause)
    assert {s.status for s in untouched.sessions if s.week == 1} == {SessionStatus.scheduled}
    assert (summary.attended, summary.missed) == (len(week) - 1, 1)
    wanted = {m.session_id: m.status for m in marks}
    assert {s.session_id: s.status.value for s in after.sessions if s.week == 1} == wanted
    assert {sid: rows[sid].status for sid in wanted} == wanted
    assert {sid: rows[sid].recorded_by for sid in wanted} == dict.fromkeys(wanted, "CM-02")
    assert sorted(a.actor for a in audit) == ["CM-02"] * len(week)
    assert len({a.key for a in audit}) == len(week)
    # The refused sheet never reached the history: one update accepted, the good one.
    accepted = [
        e
        for h in histories
        for e in h.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    ]
    assert len(accepted) == 1


async def test_the_drivers_case_manager_can_enter_a_sheet_a_week(
    env: WorkflowEnvironment, tmp_path
) -> None:
    """`drive_journey(sheets=True)` (benchmark 4's case manager, as a clinic works): each
    treatment week's sessions on one sheet once the week is over, every session marked as
    the per-session driver would mark it."""
    enrolment = make_enrolment()
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            handle, status, reported = await c.enrol_and_drive(
                env,
                enrolment,
                choose=steady_attendance,
                sheets=True,
                until=in_intensive_week(3),
            )
        histories = await journey_histories(c.client, handle)
    updates = [
        e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
        for h in histories
        for e in h.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    ]
    weeks = {treatment_week_of(sid) for sid in reported}
    assert updates == ["record_attendance_sheet"] * len(weeks)
    assert weeks == {"INT1-W01", "INT1-W02"}
    marked = {sid: choice for sid, choice in reported.items() if choice != "none"}
    assert {s.session_id: s.status.value for s in status.sessions if s.session_id in marked} == (
        marked
    )
