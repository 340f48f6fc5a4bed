"""Placement in group tracks at enrolment, on the time-skipping server: seats taken while
they last, a waitlist with a case-manager task when every fitting track is full, and a seat
freed by a discharge handed to the first who waits, whose journey then books the track's
sessions. Old journeys and programs without tracks keep their own sessions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from temporalio.testing import WorkflowEnvironment

from clinical.phases import Phase
from clinical.requests import DischargeReason, DischargeRequest
from clinical.status import JourneyStatus
from tests.support import NO_TRACK_FITS, clinic, drive_journey, make_enrolment, settle
from workflows.patient_journey import PatientJourneyWorkflow

TEST_PROGRAMS = Path(__file__).parent / "programs"
PROGRAM = "small-groups-iop"


async def _until(
    env: WorkflowEnvironment, handle: Any, ok: Callable[[JourneyStatus], bool]
) -> JourneyStatus:
    for _ in range(200):
        await settle(env.client, handle.id)
        status: JourneyStatus = await handle.query(PatientJourneyWorkflow.status)
        if ok(status):
            return status
        await env.sleep(timedelta(hours=6))
    raise AssertionError(f"{handle.id}: never reached the state wanted")


def _group_times(status: JourneyStatus, phase: Phase = Phase.intensive) -> set[tuple[str, str]]:
    """(weekday, local start) of the patient's group sessions of `phase` booked so far."""
    zone = ZoneInfo(status.clock.zone)
    local = [
        s.starts_at.astimezone(zone)
        for s in status.sessions
        if s.session_type != "individual_therapy" and s.attendee == "patient" and s.phase == phase
    ]
    return {(t.strftime("%a"), t.strftime("%H:%M")) for t in local}


async def test_seats_then_a_waitlist_then_the_freed_seat(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with clinic(env.client, tmp_path, programs_dir=TEST_PROGRAMS) as c:
        with env.auto_time_skipping_disabled():
            first, second, third = (make_enrolment() for _ in range(3))
            handles = []
            for e in (first, second, third):
                handles.append(await c.enrol(e, program_id=PROGRAM))
                await settle(env.client, handles[-1].id)
            one, two, three = handles
            s1 = await _until(env, one, lambda s: bool(s.group_tracks))
            s2 = await _until(env, two, lambda s: bool(s.group_tracks))
            s3 = await _until(env, three, lambda s: s.group_waiting is not None)
            # Equally free tracks: the program's order; then the one left; then the waitlist.
            assert s1.group_tracks == {"intensive": "north-morning"}
            assert s2.group_tracks == {"intensive": "north-evening"}
            assert s3.group_waiting == "north-morning" and s3.phase == Phase.intake
            assert c.store.roster(PROGRAM, "north-morning") == {1: first.patient_id}
            [waiting] = c.store.waitlist(PROGRAM, "north-morning")
            assert waiting.patient_id == third.patient_id
            [task] = c.store.tasks(patient_id=third.patient_id, kind="group_waitlist")
            assert "north-morning is full" in task.detail
            assert "next best: north-evening" in task.detail

            # The first patient's sessions are the morning track's: Mon, Wed, Fri at 09:00.
            s1 = await _until(env, one, lambda s: s.phase == Phase.intensive and s.week >= 1)
            assert _group_times(s1) == {("Mon", "09:00"), ("Wed", "09:00"), ("Fri", "09:00")}

            await one.execute_update(
                PatientJourneyWorkflow.discharge,
                DischargeRequest(case_manager_id="CM-01", reason=DischargeReason.withdrew),
            )
            # The freed seat goes to the third patient, whose journey books the track.
            s3 = await _until(env, three, lambda s: s.phase == Phase.intensive and s.week >= 1)
            assert s3.group_tracks == {"intensive": "north-morning"} and s3.group_waiting is None
            assert _group_times(s3) == {("Mon", "09:00"), ("Wed", "09:00"), ("Fri", "09:00")}
            assert c.store.roster(PROGRAM, "north-morning") == {1: third.patient_id}
            assert c.store.waitlist(PROGRAM, "north-morning") == []
            assert c.store.tasks(patient_id=third.patient_id, kind="group_waitlist") == []


async def test_step_down_moves_to_a_step_down_track_and_frees_the_seat(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with clinic(env.client, tmp_path, programs_dir=TEST_PROGRAMS) as c:
        with env.auto_time_skipping_disabled():
            first, second, third = (make_enrolment() for _ in range(3))
            handles = []
            for e in (first, second, third):
                handles.append(await c.enrol(e, program_id=PROGRAM))
                await settle(env.client, handles[-1].id)
            one, _, three = handles
            await _until(env, three, lambda s: s.group_waiting == "north-morning")
            status, _ = await drive_journey(
                env,
                one,
                until=lambda s: s.phase == Phase.step_down and s.week >= 1,
                choose=lambda n: "attended",
                sheets=True,
            )
            # The step-down track's days and hour; the morning seat to the one who waited.
            assert status.group_tracks == {"step_down": "north-step-down"}
            assert _group_times(status, Phase.step_down) == {("Tue", "18:00"), ("Thu", "18:00")}
            assert c.store.roster(PROGRAM, "north-step-down") == {1: first.patient_id}
            s3 = await _until(env, three, lambda s: s.phase == Phase.intensive)
            assert s3.group_tracks == {"intensive": "north-morning"}
            assert c.store.roster(PROGRAM, "north-morning") == {1: third.patient_id}


async def test_a_patient_no_track_fits_gets_own_sessions_and_a_task_saying_why(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Work every weekday morning and two evenings: neither north track fits, the patient
    keeps group sessions of their own and the case manager is told why and what is nearest
    (patch group-no-fit-task)."""
    async with clinic(env.client, tmp_path, programs_dir=TEST_PROGRAMS) as c:
        with env.auto_time_skipping_disabled():
            busy = make_enrolment(commitments=NO_TRACK_FITS)
            handle = await c.enrol(busy, program_id=PROGRAM)
            status = await _until(env, handle, lambda s: s.phase == Phase.intensive)
            assert status.group_tracks == {} and status.group_waiting is None
            [task] = c.store.tasks(patient_id=busy.patient_id, kind="group_no_fit")
            assert task.detail.startswith("no intensive group track takes the patient: ")
            assert "north-morning: meets mon 09:00, during the patient's work" in task.detail
            assert "north-evening: meets mon 18:00, during the patient's childcare" in task.detail
            assert "next best: north-evening, which clashes on 2 of its 3 day(s)" in task.detail
            assert c.store.roster(PROGRAM, "north-morning") == {}
            assert c.store.roster(PROGRAM, "north-evening") == {}
