"""Record fresh workflow histories for the replay gate: `make histories`.

Runs each main path of every workflow type on the time-skipping server and writes every
run's history (following continue-as-new) to tests/histories/. Record only when a change
is intentional and in-flight patients are safe (guarded by `workflow.patched`); then keep
the old histories too, so the gate proves both old and new paths replay. See README.md."""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

from activities.telephony import CallPlaced
from clinical.aftercare import CallOutcome, CallReport, CheckIn
from clinical.assessment import Enrolment
from clinical.identifiers import referral_workflow_id
from clinical.inbound import AttendanceEvent, PartnerAnswerEvent
from clinical.instruments import BamAnswers, Phq9Answers
from clinical.phases import Phase
from clinical.referrals import ConsentGrant, PartnerAnswer, PartnerReport
from clinical.requests import (
    AttendanceMark,
    AttendanceSheet,
    CommitmentsRevision,
    DischargeReason,
    DischargeRequest,
    FamilyConsentChange,
    ProgressReview,
    Reassignment,
    RelapseReport,
)
from clinical.sites import Closure, SiteDirectory
from services.closures import announce_closure
from simulation.patients import steady_attendance
from simulation.telephony import answered
from tests.support import (
    NEEDS_A_HIGHER_LEVEL,
    NO_TRACK_FITS,
    OPEN_SITES,
    PROGRAMS,
    USE_ON_FIRST_CHECK_IN,
    Clinic,
    Scripted,
    attend_every_session,
    clinic,
    drive_journey,
    enrolment_data,
    first_session_of_week,
    in_intensive_week,
    journey_histories,
    make_enrolment,
    settle,
    start_time_skipping,
    write_holiday_sites,
)
from workflows.patient_journey import PatientJourneyWorkflow
from workflows.referral import ReferralWorkflow

HISTORY_DIR = Path(__file__).parent / "histories"
"""Files are named `<path>--<workflow id>.json`."""


async def discharge(handle: Any, case_manager_id: str, reason: DischargeReason) -> None:
    await handle.execute_update(
        PatientJourneyWorkflow.discharge,
        DischargeRequest(case_manager_id=case_manager_id, reason=reason),
    )


async def runs_of(c: Clinic, handle: Any, name: str) -> list[tuple[str, Any]]:
    """Every run of a journey, named `<name>--run<n>`."""
    runs = await journey_histories(c.client, handle)
    return [(f"{name}--run{i}", h) for i, h in enumerate(runs, 1)]


Scenario = Callable[[WorkflowEnvironment, Clinic], Awaitable[list[tuple[str, Any]]]]


async def full_year(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    enrolment = make_enrolment()
    with env.auto_time_skipping_disabled():
        handle, status, _ = await c.enrol_and_drive(env, enrolment)
    assert status.phase == Phase.completed
    runs = await journey_histories(c.client, handle)
    # The check-ins are in the journey's own history since check-in-in-journey (the
    # FollowUpCall histories recorded before it stay, for journeys from before).
    return [(f"journey_full_year--run{i}", h) for i, h in enumerate(runs, 1)]


async def holiday_week(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    """A site's holiday on a session day of week 2: the day's sessions cancelled and a
    make-up booked in the same week (the site's calendar: patch clinic-time)."""
    enrolment = make_enrolment()
    holiday = first_session_of_week(enrolment, await env.get_current_time(), week=2)
    write_holiday_sites(c.settings.sites_file, holiday.starts_at)
    with env.auto_time_skipping_disabled():
        handle = await c.enrol(enrolment)
        status, _ = await attend_every_session(env, handle, until=in_intensive_week(3))
        await discharge(handle, "CM-01", DischargeReason.withdrew)
    assert any(s.cancelled_for for s in status.sessions)
    return await runs_of(c, handle, "journey_holiday_week")


async def unplanned_closure(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    """Snow on a session day ahead, announced twice: cancelled once, the patient told."""
    sites = SiteDirectory.load(c.settings.sites_file)
    enrolment = make_enrolment()
    with env.auto_time_skipping_disabled():
        handle, status, _ = await c.enrol_and_drive(env, enrolment, until=in_intensive_week(1))
        ahead = min(
            (s for s in status.sessions if s.day > status.program_day + 1), key=lambda s: s.day
        )
        snow = Closure(site_id="north", date=ahead.starts_at.date(), reason="snow")
        for _ in range(2):
            await announce_closure(c.client, c.store, sites, snow, await env.get_current_time())
        await drive_journey(env, handle, until=in_intensive_week(2))
        await discharge(handle, "CM-01", DischargeReason.withdrew)
    return await runs_of(c, handle, "journey_unplanned_closure")


async def referral_ended_with_journey(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    """A discharge while a housing referral is open: the journey cancels it as it ends
    (patch end-referrals-with-journey)."""
    enrolment = Enrolment.model_validate(
        enrolment_data(social_needs=["housing"], consents={"partner_disclosure": ["housing"]})
    )
    with env.auto_time_skipping_disabled():
        handle, _, _ = await c.enrol_and_drive(
            env, enrolment, until=lambda s: s.phase == Phase.intensive and s.referrals != []
        )
        await discharge(handle, "CM-01", DischargeReason.withdrew)
        referral = c.client.get_workflow_handle(
            referral_workflow_id(enrolment.patient_id, "housing")
        )
        await referral.result()
    named = await runs_of(c, handle, "journey_referral_ended_with_journey")
    named.append(("referral--cancelled-by-journey", await referral.fetch_history()))
    return named


async def discharged(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    enrolment = make_enrolment()
    with env.auto_time_skipping_disabled():
        handle, _, _ = await c.enrol_and_drive(env, enrolment, until=in_intensive_week(2))
        await discharge(handle, "CM-01", DischargeReason.administrative)
    return await runs_of(c, handle, "journey_discharged")


async def reassigned(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    """A supervisor gives the patient another case manager in week 2; discharged after."""
    enrolment = make_enrolment()
    with env.auto_time_skipping_disabled():
        handle, _, _ = await c.enrol_and_drive(env, enrolment, until=in_intensive_week(2))
        await handle.execute_update(
            PatientJourneyWorkflow.reassign_case_manager,
            Reassignment(case_manager_id="CM-SUP1", to_case_manager_id="CM-02"),
        )
        await discharge(handle, "CM-02", DischargeReason.administrative)
    return await runs_of(c, handle, "journey_reassigned")


async def escalated(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    handle = await c.enrol(make_enrolment(ratings=NEEDS_A_HIGHER_LEVEL))
    outcome = await handle.result()
    assert outcome.outcome == Phase.escalated
    return [("journey_escalated--run1", await handle.fetch_history())]


async def schedule_conflict(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    busy = [
        {"weekday": d, "start": "07:00", "end": "23:00", "kind": "work"}
        for d in ("mon", "tue", "wed", "thu", "fri", "sat")
    ]
    with env.auto_time_skipping_disabled():
        handle = await c.enrol(make_enrolment(commitments=busy))
        await drive_journey(env, handle, until=lambda s: s.schedule_conflict)
        await handle.execute_update(
            PatientJourneyWorkflow.revise_commitments,
            CommitmentsRevision(case_manager_id="CM-01", commitments=()),
        )
        await drive_journey(env, handle, until=in_intensive_week(1))
        await discharge(handle, "CM-01", DischargeReason.withdrew)
    return await runs_of(c, handle, "journey_schedule_conflict")


async def attendance_sheets(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    """The case manager enters each intensive week's attendance as one sheet, a missed
    session on the second (engagement rules run on a sheet too)."""
    with env.auto_time_skipping_disabled():
        handle = await c.enrol(make_enrolment())
        status, _ = await drive_journey(
            env, handle, choose=lambda n: "none", until=lambda s: s.phase == Phase.intensive
        )
        for week in (1, 2):
            status, _ = await drive_journey(
                env,
                handle,
                choose=lambda n: "none",
                until=lambda s, w=week: s.week == w + 1,
            )
            marks = [
                AttendanceMark(
                    session_id=s.session_id, status="missed" if week == 2 else "attended"
                )
                for s in status.sessions
                if s.week == week
            ]
            await handle.execute_update(
                PatientJourneyWorkflow.record_attendance_sheet,
                AttendanceSheet(case_manager_id="CM-03", marks=marks),
            )
        await drive_journey(env, handle, until=lambda s: s.week >= 4)
        await discharge(handle, "CM-03", DischargeReason.administrative)
    return await runs_of(c, handle, "journey_attendance_sheets")


async def events_by_signal(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    """Other systems' events as the webhooks signal them: an EHR's attendance for the
    first intensive week (one event twice, one a session the journey does not know: a task)
    and a partner's answers to the housing referral (accepted twice: a task; completed)."""
    data = enrolment_data(social_needs=["housing"], consents={"partner_disclosure": ["housing"]})
    enrolment = Enrolment.model_validate(data)
    pid = enrolment.patient_id
    with env.auto_time_skipping_disabled():
        handle = await c.enrol(enrolment)
        await drive_journey(
            env, handle, choose=lambda n: "none", until=lambda s: s.phase == Phase.intensive
        )
        status, _ = await drive_journey(
            env, handle, choose=lambda n: "none", until=lambda s: s.week == 2
        )
        week_one = [s.session_id for s in status.sessions if s.week == 1]
        signal = PatientJourneyWorkflow.attendance_event
        events = [
            (f"ehr-{n}", session, "missed" if n == 1 else "attended")
            for n, session in enumerate(week_one)
        ]
        events += [events[0], ("ehr-x", "ZZZZ-NONE", "attended")]
        for event_id, session, mark in events:
            event = {"event_id": event_id, "sender": "ehr-north", "session_id": session}
            await handle.signal(signal, AttendanceEvent.model_validate(event | {"status": mark}))
        housing = c.client.get_workflow_handle(referral_workflow_id(pid, "housing"))
        for event_id, answer in (("p-1", "accepted"), ("p-2", "accepted"), ("p-3", "completed")):
            await housing.signal(
                ReferralWorkflow.partner_event,
                PartnerAnswerEvent(event_id=event_id, sender="housing-portal", answer=answer),
            )
        await housing.result()
        await drive_journey(env, handle, choose=lambda n: "none", until=lambda s: s.week >= 3)
        await discharge(handle, enrolment.case_manager_id, DischargeReason.administrative)
    named = await runs_of(c, handle, "journey_events_by_signal")
    return [*named, ("referral--events-by-signal", await housing.fetch_history())]


async def relapse_in_intensive(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    enrolment = make_enrolment()
    with env.auto_time_skipping_disabled():
        handle, _, _ = await c.enrol_and_drive(env, enrolment, until=in_intensive_week(3))
        await handle.execute_update(
            PatientJourneyWorkflow.report_relapse,
            RelapseReport(
                case_manager_id="CM-02",
                ratings=enrolment.assessment.ratings.model_copy(update={"relapse": 3}),
            ),
        )
        await drive_journey(env, handle, until=lambda s: s.episode == 2 and s.week >= 2)
        await discharge(handle, "CM-02", DischargeReason.transferred)
    return await runs_of(c, handle, "journey_relapse_in_intensive")


async def relapse_from_check_in(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    with env.auto_time_skipping_disabled():
        handle = await c.enrol(make_enrolment())
        await drive_journey(env, handle, until=lambda s: s.episode == 2 and s.week >= 1)
        await discharge(handle, "CM-02", DischargeReason.withdrew)
    return await runs_of(c, handle, "journey_relapse_from_check_in")


async def reviewed_step_down(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    """An overridden placement; no approval at the planned end (the journey extends and
    asks), a review that extends once more, then approval and step-down."""
    data = enrolment_data()
    data["placement_override"] = {"level": "2.5", "reason": "two failed attempts at 2.1"}
    enrolment = Enrolment.model_validate(data)
    with env.auto_time_skipping_disabled():
        handle, status, _ = await c.enrol_and_drive(
            env,
            enrolment,
            approve_step_down=False,
            choose=steady_attendance,
            until=lambda s: any(t.kind == "step_down_decision" for t in s.open_tasks),
        )
        assert status.phase == Phase.intensive
        for decision in ("extend", "approve_step_down"):
            await handle.execute_update(
                PatientJourneyWorkflow.review_progress,
                ProgressReview(case_manager_id="CM-04", decision=decision, weeks=1)
                if decision == "extend"
                else ProgressReview(case_manager_id="CM-04", decision=decision),
            )
        await drive_journey(
            env,
            handle,
            choose=steady_attendance,
            until=lambda s: s.phase == Phase.step_down and s.week >= 1,
        )
        await discharge(handle, "CM-04", DischargeReason.transferred)
    return await runs_of(c, handle, "journey_reviewed_step_down")


async def referrals(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    """Referrals from intake: housing (consented) accepted then completed; medical (not
    consented) waits for consent, is sent, then declined."""
    data = enrolment_data(
        social_needs=["housing", "medical"], consents={"partner_disclosure": ["housing"]}
    )
    enrolment = Enrolment.model_validate(data)
    pid = enrolment.patient_id
    with env.auto_time_skipping_disabled():
        handle, _, _ = await c.enrol_and_drive(env, enrolment, until=lambda s: s.program_day >= 2)
        housing = c.client.get_workflow_handle(referral_workflow_id(pid, "housing"))
        medical = c.client.get_workflow_handle(referral_workflow_id(pid, "medical"))
        await medical.execute_update(
            ReferralWorkflow.record_consent, ConsentGrant(case_manager_id="CM-01")
        )
        await drive_journey(env, handle, until=lambda s: s.program_day >= 3)
        for child, answers in ((housing, ("accepted", "completed")), (medical, ("declined",))):
            for answer in answers:
                await child.execute_update(
                    ReferralWorkflow.partner_response,
                    PartnerReport(answer=PartnerAnswer(answer), reported_by="partner-portal"),
                )
        await drive_journey(env, handle, until=lambda s: all(r.outcome for r in s.referrals))
        await handle.execute_update(
            PatientJourneyWorkflow.discharge,
            DischargeRequest(case_manager_id="CM-01", reason=DischargeReason.administrative),
        )
    runs = await journey_histories(c.client, handle)
    named = [(f"journey_referrals--run{i}", h) for i, h in enumerate(runs, 1)]
    named += [
        ("referral--completed", await housing.fetch_history()),
        ("referral--consent-then-declined", await medical.fetch_history()),
    ]
    return named


async def family_consent_withdrawn(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    data = enrolment_data(consents={"family_involvement": True})
    enrolment = Enrolment.model_validate(data)
    with env.auto_time_skipping_disabled():
        handle, _, _ = await c.enrol_and_drive(env, enrolment, until=in_intensive_week(2))
        await handle.execute_update(
            PatientJourneyWorkflow.change_family_consent,
            FamilyConsentChange(case_manager_id="CM-03", granted=False),
        )
        await drive_journey(env, handle, until=lambda s: s.week >= 3)
        await discharge(handle, "CM-03", DischargeReason.withdrew)
    return await runs_of(c, handle, "journey_family_consent_withdrawn")


async def check_in_findings(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    """Instruments at check-ins (scripted by TELEPHONY below): PHQ-9 item 9 at day 30, BAM
    use at day 60 (re-linkage), then discharge in the new episode."""
    with env.auto_time_skipping_disabled():
        handle = await c.enrol(make_enrolment())
        await drive_journey(env, handle, choose=steady_attendance, until=lambda s: s.episode == 2)
        await discharge(handle, "CM-06", DischargeReason.withdrew)
    return await runs_of(c, handle, "journey_check_in_findings")


async def lost_to_contact(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    with env.auto_time_skipping_disabled():
        handle = await c.enrol(make_enrolment())
        status, _ = await drive_journey(env, handle, choose=steady_attendance)
    assert status.phase == Phase.lost_to_contact
    runs = await journey_histories(c.client, handle)
    return [(f"journey_lost_to_contact--run{i}", h) for i, h in enumerate(runs, 1)]


async def text_before_retry(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    """A check-in reached on the second attempt, after a text; alumni invitations queued."""
    with env.auto_time_skipping_disabled():
        handle = await c.enrol(make_enrolment())
        await drive_journey(
            env,
            handle,
            choose=steady_attendance,
            until=lambda s: any(f.outcome for f in s.follow_ups),
        )
        await handle.execute_update(
            PatientJourneyWorkflow.discharge,
            DischargeRequest(case_manager_id="CM-06", reason=DischargeReason.lost_to_contact),
        )
    runs = await journey_histories(c.client, handle)
    return [(f"journey_text_before_retry--run{i}", h) for i, h in enumerate(runs, 1)]


async def group_tracks(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    """One-seat tracks (patch group-tracks): the first patient seated in the morning track,
    the second in the evening one, the third on the morning waitlist until the first steps
    down to the step-down track and the seat is handed on; both then discharged."""
    with env.auto_time_skipping_disabled():
        handles = []
        for _ in range(3):
            handles.append(await c.enrol(make_enrolment(), program_id="small-groups-iop"))
            await settle(env.client, handles[-1].id)
        first, _, third = handles
        status, _ = await drive_journey(
            env,
            first,
            until=lambda s: s.phase == Phase.step_down and s.week >= 1,
            choose=lambda n: "attended",
            sheets=True,
        )
        assert status.group_tracks == {"step_down": "north-step-down"}
        waited, _ = await drive_journey(env, third, until=in_intensive_week(1))
        assert waited.group_tracks == {"intensive": "north-morning"}
        await discharge(first, "CM-01", DischargeReason.administrative)
        await discharge(third, "CM-01", DischargeReason.transferred)
    return [
        *await runs_of(c, first, "journey_group_tracks_stepped_down"),
        *await runs_of(c, third, "journey_group_tracks_waited"),
    ]


async def support_surveys(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    """A year to completion (patch support-surveys): the questionnaire sent at step-down,
    at aftercare's day-90 check-in and at completion, once each."""
    enrolment = make_enrolment()
    with env.auto_time_skipping_disabled():
        handle, status, _ = await c.enrol_and_drive(env, enrolment)
    assert status.phase == Phase.completed
    sent = [s.occasion for s in c.operations.store.surveys(enrolment.patient_id)]
    assert sent == ["step_down", "aftercare", "end"], sent
    return await runs_of(c, handle, "journey_support_surveys")


async def group_no_fit(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    """No track fits the patient's commitments (patch group-no-fit-task): own group
    sessions and a case-manager task saying why and what comes nearest; then discharged."""
    with env.auto_time_skipping_disabled():
        handle = await c.enrol(
            make_enrolment(commitments=NO_TRACK_FITS), program_id="small-groups-iop"
        )
        status, _ = await drive_journey(env, handle, until=in_intensive_week(1))
        assert status.group_tracks == {}
        assert any(t.kind == "group_no_fit" for t in status.open_tasks)
        await discharge(handle, "CM-01", DischargeReason.withdrew)
    return await runs_of(c, handle, "journey_group_no_fit")


async def counsellor_calendars(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    """A one-session-a-week counsellor (patch counsellor-calendars): one patient's
    individual session gets them (whichever week is booked first), the other's a
    counsellor_needed task; both discharged, their counsellor sessions from then on freed."""
    with env.auto_time_skipping_disabled():
        handles = []
        for _ in range(2):
            handles.append(await c.enrol(make_enrolment(), program_id="counsellors-iop"))
            await settle(env.client, handles[-1].id)
        for h in handles:
            await drive_journey(env, h, until=in_intensive_week(1))
        for h in handles:
            await discharge(h, "CM-01", DischargeReason.withdrew)
    return [
        *await runs_of(c, handles[0], "journey_counsellor_calendars_first"),
        *await runs_of(c, handles[1], "journey_counsellor_calendars_second"),
    ]


async def counsellors_after_closure(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    """Snow on the day of the patient's individual session (patch
    counsellors-follow-closures): its counsellor is freed and the week's make-ups staffed."""
    sites = SiteDirectory.load(c.settings.sites_file)
    with env.auto_time_skipping_disabled():
        handle = await c.enrol(make_enrolment(), program_id="counsellors-iop")
        status, _ = await drive_journey(env, handle, until=in_intensive_week(1))
        individual = next(s for s in status.sessions if s.session_type == "individual_therapy")
        day = individual.starts_at.astimezone(sites.get("north").zone_info).date()
        snow = Closure(site_id="north", date=day, reason="snow")
        await announce_closure(c.client, c.store, sites, snow, await env.get_current_time())
        await drive_journey(env, handle, until=in_intensive_week(2))
        await discharge(handle, "CM-01", DischargeReason.withdrew)
    return await runs_of(c, handle, "journey_counsellors_after_closure")


class CallsByCallback:
    """A provider whose word comes later, by callback (the scenario delivers it, as the
    webhook does), except on the day-90 check-in, which it answers as it places (the
    in-process provider's way). Keeps the references placed."""

    def __init__(self) -> None:
        self.placed: list[str] = []

    def __call__(self, store: Any) -> CallsByCallback:
        return self

    def place_call(
        self, reference: str, patient_id: str, phone: str, instruments: tuple[str, ...] = ()
    ) -> CallPlaced:
        self.placed.append(reference)
        if "FU-D090" in reference:
            return answered(reference, CallOutcome.reached, CheckIn(days_of_use=0))
        return CallPlaced(provider_call_id=f"CA{len(self.placed):06d}")


CALLBACKS = CallsByCallback()


async def calls_by_callback(env: WorkflowEnvironment, c: Clinic) -> list[tuple[str, Any]]:
    """Check-ins whose outcome comes by the provider's callback, inside the journey (patch
    check-in-in-journey; the FollowUpCall histories that call-outcome-by-callback recorded
    before it stay): day 7 reached by callback; day 30 silent on the first attempt
    (unreachable when the wait ends), declined by callback on the second; day 90 answered
    with the placing."""
    enrolment = make_enrolment()
    pid = enrolment.patient_id

    async def placed(reference: str) -> None:
        for _ in range(300):
            if reference in CALLBACKS.placed:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{reference} never placed")

    async def to_due(handle: Any, call_id: str) -> Any:
        def near(s: Any) -> bool:
            due = [f for f in s.follow_ups if f.call_id == call_id]
            return s.phase == Phase.aftercare and bool(due) and s.program_day + 1 >= due[0].day

        status, _ = await drive_journey(env, handle, choose=steady_attendance, until=near)
        (due,) = [f for f in status.follow_ups if f.call_id == call_id]
        await env.sleep(due.due_at - await env.get_current_time() + timedelta(minutes=1))
        return status

    async def concluded(handle: Any, call_id: str) -> None:
        await drive_journey(
            env,
            handle,
            choose=steady_attendance,
            until=lambda s: any(f.call_id == call_id and f.outcome for f in s.follow_ups),
        )

    def report(call: str, attempt: int, outcome: CallOutcome) -> CallReport:
        check_in = CheckIn(days_of_use=0) if outcome == CallOutcome.reached else None
        return CallReport(
            reference=f"{pid}/{call}/attempt-{attempt}", outcome=outcome, check_in=check_in
        )

    with env.auto_time_skipping_disabled():
        handle = await c.enrol(enrolment)
        await to_due(handle, "FU-D007")
        await placed(f"{pid}/FU-D007/attempt-1")
        await handle.execute_update(
            PatientJourneyWorkflow.call_outcome, report("FU-D007", 1, CallOutcome.reached)
        )
        await concluded(handle, "FU-D007")
        await to_due(handle, "FU-D030")
        await placed(f"{pid}/FU-D030/attempt-1")
        await env.sleep(timedelta(minutes=30, seconds=1))  # the wait runs out: unreachable
        while not c.store.call_attempts(pid)[1:]:
            await asyncio.sleep(0.02)
        await env.sleep(timedelta(days=2, minutes=1))  # the attempts' spacing
        await placed(f"{pid}/FU-D030/attempt-2")
        declined = report("FU-D030", 2, CallOutcome.declined)
        await handle.execute_update(PatientJourneyWorkflow.call_outcome, declined)
        await concluded(handle, "FU-D030")
        await to_due(handle, "FU-D090")
        await concluded(handle, "FU-D090")
        await discharge(handle, "CM-01", DischargeReason.withdrew)
    return await runs_of(c, handle, "journey_check_ins_in_journey")


def _findings_at_check_ins(reference: str) -> tuple[CallOutcome, CheckIn | None]:
    bam = [0] * 17
    if "FU-D060" in reference:
        bam[3] = 2  # BAM item 4: use
    item9 = 1 if "FU-D030" in reference else 0
    return CallOutcome.reached, CheckIn(
        days_of_use=0,
        bam=BamAnswers(items=tuple(bam)),
        phq9=Phq9Answers(items=(0,) * 8 + (item9,)),
    )


SCENARIOS: dict[str, Scenario] = {
    s.__name__: s
    for s in (
        full_year,
        holiday_week,
        unplanned_closure,
        referral_ended_with_journey,
        discharged,
        reassigned,
        escalated,
        schedule_conflict,
        attendance_sheets,
        events_by_signal,
        relapse_in_intensive,
        relapse_from_check_in,
        reviewed_step_down,
        referrals,
        family_consent_withdrawn,
        check_in_findings,
        lost_to_contact,
        text_before_retry,
        group_tracks,
        calls_by_callback,
        support_surveys,
        group_no_fit,
        counsellor_calendars,
        counsellors_after_closure,
    )
}
PROGRAMS_DIRS: dict[str, Path] = {
    "group_tracks": Path(__file__).parent / "programs",
    "group_no_fit": Path(__file__).parent / "programs",
    "counsellor_calendars": Path(__file__).parent / "programs",
    "counsellors_after_closure": Path(__file__).parent / "programs",
}
"""Scenarios on a test program (tests/programs) rather than the clinic's."""
TELEPHONY: dict[str, Any] = {
    "calls_by_callback": CALLBACKS,
    "relapse_from_check_in": USE_ON_FIRST_CHECK_IN,
    "check_in_findings": Scripted(_findings_at_check_ins),
    "lost_to_contact": Scripted(lambda reference: (CallOutcome.unreachable, None)),
    "text_before_retry": Scripted(
        lambda reference: (
            (CallOutcome.unreachable, None)
            if reference.endswith("FU-D007/attempt-1")
            else (CallOutcome.reached, CheckIn(days_of_use=0))
        )
    ),
}


async def record(names: list[str], directory: Path = HISTORY_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names or list(SCENARIOS):
        scenario = SCENARIOS[name]
        # A fresh server per scenario: a journey one leaves behind cannot hold the next.
        env = await start_time_skipping()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                sites = Path(tmp) / "sites.toml"
                shutil.copy(OPEN_SITES, sites)  # a scenario may give its site holidays
                async with clinic(
                    env.client,
                    Path(tmp),
                    programs_dir=PROGRAMS_DIRS.get(name, PROGRAMS),
                    telephony=TELEPHONY.get(name),
                    sites=sites,
                ) as c:
                    for name, history in await scenario(env, c):
                        # Replay needs the real workflow ID (child IDs derive from it).
                        path = directory / f"{name}--{history.workflow_id}.json"
                        path.write_text(history.to_json())
                        written.append(path)
        finally:
            await env.shutdown()
    return written


if __name__ == "__main__":
    unknown = set(sys.argv[1:]) - set(SCENARIOS)
    if unknown:
        sys.exit(f"unknown scenario(s) {sorted(unknown)}; known: {sorted(SCENARIOS)}")
    for path in asyncio.run(record(sys.argv[1:])):
        print(f"wrote {path}")
