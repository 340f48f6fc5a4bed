"""The FHIR R4 export: a whole journey's mapping checked against the store, the status
mappings alone, and the command line's bad-input cases."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

import fhirkit
import pytest
from fhir.resources.R4B.bundle import Bundle
from temporalio.testing import WorkflowEnvironment

from cli import main as cli_main
from clinical.aftercare import CallOutcome, CheckIn
from clinical.assessment import Enrolment
from clinical.attendance import SessionStatus
from clinical.clock import ProgramClock
from clinical.consents import ConsentTerms
from clinical.instruments import BamAnswers, Phq9Answers, score_phq9
from clinical.phases import Phase
from clinical.referrals import (
    PartnerAnswer,
    PartnerReport,
    ReferralOutcome,
    ReferralStage,
)
from clinical.requests import FamilyConsentChange, ReferralRequest
from infra.store import CareStore
from operators.fhir import (
    AnsweredSurvey,
    BookedSession,
    CheckInCall,
    ConsentOnFile,
    JourneyRecord,
    PhasePeriod,
    ReferralLoop,
    appointment_status,
    care_plan_status,
    episode_status,
    journey_bundle,
    journey_record,
    service_request_status,
    task_status,
    weekly_cadence,
    with_partner_answers,
)
from simulation.patients import steady_attendance
from tests.support import TEST_KEYS_FILE, Scripted, clinic, drive_journey, enrolment_data, settle
from workflows.patient_journey import PatientJourneyWorkflow
from workflows.referral import ReferralWorkflow

# The enrolment's contact details (tests.support.enrolment_data) and its assessment's
# substance: none of it may leave in a bundle.
PHI = ("Avery", "Quinlan", "1988-04-02", "555 010 2030", "alcohol")

# FHIR R4 value sets of each resource's status: a mapping must never leave them.
STATUS_CODES = {
    "Appointment": {"proposed", "pending", "booked", "arrived", "fulfilled", "cancelled"}
    | {"noshow", "entered-in-error", "checked-in", "waitlist"},
    "Encounter": {"planned", "arrived", "triaged", "in-progress", "onleave", "finished"}
    | {"cancelled", "entered-in-error", "unknown"},
    "EpisodeOfCare": {"planned", "waitlist", "active", "onhold", "finished", "cancelled"}
    | {"entered-in-error"},
    "CarePlan": {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error"}
    | {"unknown"},
    "ServiceRequest": {"draft", "active", "on-hold", "revoked", "completed"}
    | {"entered-in-error", "unknown"},
    "Task": {"draft", "requested", "received", "accepted", "rejected", "ready", "cancelled"}
    | {"in-progress", "on-hold", "failed", "completed", "entered-in-error"},
    "Consent": {"draft", "proposed", "active", "rejected", "inactive", "entered-in-error"},
    "QuestionnaireResponse": {"in-progress", "completed", "amended", "entered-in-error"}
    | {"stopped"},
    "Observation": {"registered", "preliminary", "final", "amended", "corrected"}
    | {"cancelled", "entered-in-error", "unknown"},
}

PHQ9 = Phq9Answers(items=(1, 1, 2, 0, 1, 0, 1, 0, 0))
BAM = BamAnswers(items=(1, 1, 1, 0, 0, 0, 0, 1, 3, 3, 1, 2, 3, 3, 1, 3, 3))


def _check_ins(reference: str) -> Any:
    """Day 7 answers at the second attempt, day 30 is declined, the others answer at once;
    every answer is abstinent with both instruments."""
    if "FU-D007/attempt-1" in reference:
        return CallOutcome.unreachable, None
    if "FU-D030" in reference:
        return CallOutcome.declined, None
    return CallOutcome.reached, CheckIn(days_of_use=0, bam=BAM, phq9=PHQ9)


def _by_type(bundle: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for entry in bundle["entry"]:
        found.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    return found


PART2_LABELS = {
    ("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "R"),
    ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "42CFRPart2"),
    ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "NORDSCLCD"),
}


def _part2_labelled(resource: dict[str, Any]) -> bool:
    """Restricted, under 42 CFR Part 2, not to be redisclosed without consent: DS4P's labels."""
    security = resource.get("meta", {}).get("security", [])
    return {(c["system"], c["code"]) for c in security} == PART2_LABELS


def _references(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [value["reference"]] if isinstance(value.get("reference"), str) else []
        return own + [r for v in value.values() for r in _references(v)]
    if isinstance(value, list):
        return [r for v in value for r in _references(v)]
    return []


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.slow
async def test_a_whole_journey_exports_as_one_valid_bundle(
    env: WorkflowEnvironment, tmp_path, monkeypatch
) -> None:
    """Every phase, missed sessions, family sessions until consent is withdrawn, a referral
    closed in aftercare, check-ins with the BAM and PHQ-9: the bundle matches the store."""
    data = enrolment_data(consents={"family_involvement": True, "partner_disclosure": ["housing"]})
    enrolment = Enrolment.model_validate(data)
    pid = enrolment.patient_id
    async with clinic(env.client, tmp_path, telephony=Scripted(_check_ins)) as c:
        with env.auto_time_skipping_disabled():
            handle = await c.enrol(enrolment)
            reported: dict[str, str] = {}

            async def drive(until: Any = None, step: timedelta = timedelta(days=1)) -> None:
                await drive_journey(
                    env, handle, until=until, step=step, choose=steady_attendance, reported=reported
                )

            # Into step-down an hour at a time, so consent is withdrawn before any of its
            # family sessions (which weekday they fall on follows today's date).
            await drive(until=lambda s: s.phase == Phase.intensive and s.week >= s.weeks_in_phase)
            await drive(until=lambda s: s.phase == Phase.step_down, step=timedelta(hours=1))
            await handle.execute_update(
                PatientJourneyWorkflow.change_family_consent,
                FamilyConsentChange(case_manager_id="CM-01", granted=False),
            )
            await drive(until=lambda s: s.phase == Phase.aftercare)
            # A referral started and closed by the aftercare run (see TEMPORAL-NOTES on
            # referrals closing late across runs).
            ref = await handle.execute_update(
                PatientJourneyWorkflow.refer,
                ReferralRequest(case_manager_id="CM-01", need="housing"),
            )
            await settle(env.client, ref.workflow_id)
            for answer in (PartnerAnswer.accepted, PartnerAnswer.completed):
                await env.client.get_workflow_handle(ref.workflow_id).execute_update(
                    ReferralWorkflow.partner_response,
                    PartnerReport(answer=answer, reported_by="housing-portal"),
                )
            await drive()
        record = await with_partner_answers(
            journey_record(c.store, c.operations.catalog, pid), env.client
        )
        text = journey_bundle(record, datetime.now(UTC)).model_dump_json()
        again = journey_bundle(
            journey_record(c.store, c.operations.catalog, pid), datetime.now(UTC)
        )
        booked = c.store.appointments(pid)
        changes = c.store.phase_changes(pid)
        calls = c.store.call_attempts(pid)
        loops = c.store.referrals(patient_id=pid)
        consent_rows = c.store.consents(pid)

        # The command line writes the same bundle (nothing open: no Temporal needed).
        monkeypatch.setenv("CAREPATH_DATABASE_URL", c.settings.database_url)
        monkeypatch.setenv("CAREPATH_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("CAREPATH_KEYS_FILE", str(TEST_KEYS_FILE))  # the store is sealed
        monkeypatch.setattr(cli_main, "configure_logging", lambda *args: None)
        out = tmp_path / "bundle.json"
        # The patient's own copy: no consent needed (the recipient's is tested in test_consents).
        argv = ["export", pid, "--fhir", "--out", str(out), "--purpose", "patient_request"]
        assert await asyncio.to_thread(cli_main.main, argv) == 0

    # It validates: by an independent R4 validator, and re-parsed by the library, every
    # entry is its resource's model.
    assert fhirkit.validate(json.loads(text)) == []
    parsed = Bundle.model_validate_json(text)
    assert parsed.type == "collection"
    assert {type(e.resource).__name__ for e in parsed.entry or []} == {
        "Patient",
        "Practitioner",
        "EpisodeOfCare",
        "CarePlan",
        "Appointment",
        "Encounter",
        "ServiceRequest",
        "Task",
        "QuestionnaireResponse",
        "Observation",
        "Consent",
    }
    bundle = json.loads(text)
    assert all(_part2_labelled(r) for r in [bundle, *(e["resource"] for e in bundle["entry"])])
    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(urls) == len(set(urls))
    assert all(e["fullUrl"] == f"urn:uuid:{e['resource']['id']}" for e in bundle["entry"])
    # Every reference resolves inside the bundle.
    refs = _references(bundle)
    assert refs and set(refs) <= set(urls)
    # The same journey exported again: the same ids (and by the command line too).
    assert [e.fullUrl for e in again.entry or []] == urls
    assert [e.fullUrl for e in Bundle.model_validate_json(out.read_text()).entry or []] == urls
    # No PHI from the enrolment.
    assert [secret for secret in PHI if secret in text] == []
    found = _by_type(bundle)
    for kind, allowed in STATUS_CODES.items():
        assert {r["status"] for r in found[kind]} <= allowed, kind

    (patient,) = found["Patient"]
    assert set(patient) == {"resourceType", "id", "meta", "identifier"}  # meta: its labels
    assert [i["value"] for i in patient["identifier"]] == [pid]

    # Sessions: an Appointment per booking, no-shows for the missed, Encounters for the
    # attended, cancelled for the excused and the family sessions consent withdrew.
    by_status = Counter(r.status.value for r in booked)
    statuses = Counter(a["status"] for a in found["Appointment"])
    assert len(found["Appointment"]) == len(booked)
    assert statuses["noshow"] == by_status["missed"] > 0
    assert statuses["fulfilled"] == by_status["attended"] == len(found["Encounter"]) > 0
    assert statuses["cancelled"] == by_status["excused"] + by_status["cancelled"]
    assert by_status["cancelled"] > 0  # the family sessions after consent was withdrawn
    assert sum(1 for r in booked if r.missed_by_grace) > 0
    attended = {r.key for r in booked if r.status == "attended"}
    assert {e["identifier"][0]["value"] for e in found["Encounter"]} == attended

    # The enrolment: phases in order, each period starting where the last one ended.
    (episode,) = found["EpisodeOfCare"]
    history = episode["statusHistory"]
    phases = [h["extension"][0]["valueCoding"]["code"] for h in history]
    assert phases == ["intake", *(r.phase for r in changes)]
    assert phases == ["intake", "intensive", "step_down", "aftercare", "completed"]
    assert [h["status"] for h in history] == ["planned", "active", "active", "active", "finished"]
    for earlier, later in itertools.pairwise(history):
        assert earlier["period"]["end"] == later["period"]["start"]
        assert _at(earlier["period"]["start"]) <= _at(earlier["period"]["end"])
    assert "end" not in history[-1]["period"]
    assert episode["status"] == "finished"
    assert episode["period"]["end"] == history[-1]["period"]["start"]

    # A plan per treatment phase, each completed; in intensive care every session type
    # is weekly (three group visits rotating three types, one individual, family therapy).
    plans = found["CarePlan"]
    assert [p["status"] for p in plans] == ["completed"] * 3
    assert [p["period"] for p in plans] == [h["period"] for h in history[1:4]]
    intensive = {
        a["detail"]["code"]["coding"][0]["code"]: a["detail"]["scheduledTiming"]["repeat"]
        for a in plans[0]["activity"]
    }
    for session_type in (
        "group_therapy",
        "relapse_prevention",
        "addiction_education",
        "individual_therapy",
        "family_therapy",
    ):
        repeat = intensive[session_type]
        assert (repeat["frequency"], repeat["period"], repeat["periodUnit"]) == (1, 1, "wk")
    assert plans[1]["description"] == "step-down phase, level 2.1 then 1"  # taper, outpatient
    # Consent was withdrawn before step-down's family sessions took place.
    step_down = {
        a["detail"]["code"]["coding"][0]["code"]: a["detail"] for a in plans[1]["activity"]
    }
    assert step_down["family_therapy"]["status"] == "cancelled"
    assert step_down["individual_therapy"]["status"] == "completed"

    # The referral: one ServiceRequest and its Task, closed completed.
    assert len(found["ServiceRequest"]) == len(found["Task"]) == len(loops) == 1
    (request,), (task,) = found["ServiceRequest"], found["Task"]
    assert (request["status"], task["status"]) == ("completed", "completed")
    assert task["focus"]["reference"] == f"urn:uuid:{request['id']}"

    # Check-ins: a QuestionnaireResponse and an Observation per instrument administered.
    answered = [r.check_in for r in calls if r.check_in]
    administered = sum((a.bam is not None) + (a.phq9 is not None) for a in answered)
    assert len(found["QuestionnaireResponse"]) == len(found["Observation"]) == administered > 0
    phq9 = [o for o in found["Observation"] if o["code"]["coding"][0]["code"] == "44261-6"]
    assert len(phq9) == len(answered)
    assert {o["valueInteger"] for o in phq9} == {score_phq9(PHQ9).total}
    # Day 7 was answered at the second attempt, two days (the program's spacing) after due.
    (day7,) = [r for r in calls if r.call_ref == "FU-D007" and r.outcome == "reached"]
    authored = {q["identifier"]["value"]: q["authored"] for q in found["QuestionnaireResponse"]}
    assert _at(authored[f"{day7.key}/phq9"]) == day7.due_at + timedelta(days=2)

    # Consents: the two at intake and the withdrawal; the withdrawal is the one in force.
    assert len(found["Consent"]) == len(consent_rows) == 3
    shown = sorted(
        (c["category"][1]["coding"][0]["code"], c["status"], c["provision"]["type"])
        for c in found["Consent"]
    )
    assert shown == [
        ("disclosure:housing", "active", "permit"),
        ("family_involvement", "active", "deny"),
        ("family_involvement", "inactive", "permit"),
    ]


async def test_an_open_referral_shows_the_partners_answers(
    env: WorkflowEnvironment, tmp_path
) -> None:
    """The store does not keep a partner's acceptance: the export reads it from the
    referral's history."""
    data = enrolment_data(social_needs=["housing"], consents={"partner_disclosure": ["housing"]})
    enrolment = Enrolment.model_validate(data)
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            _, status, _ = await c.enrol_and_drive(
                env, enrolment, until=lambda s: s.program_day >= 2
            )
            referral = env.client.get_workflow_handle(status.referrals[0].workflow_id)

            async def exported_loop() -> tuple[str, str]:
                record = journey_record(c.store, c.operations.catalog, enrolment.patient_id)
                record = await with_partner_answers(record, env.client)
                found = _by_type(
                    json.loads(journey_bundle(record, datetime.now(UTC)).model_dump_json())
                )
                return found["ServiceRequest"][0]["status"], found["Task"][0]["status"]

            assert await exported_loop() == ("active", "requested")
            for answer, expected in (
                (PartnerAnswer.accepted, ("active", "accepted")),
                (PartnerAnswer.no_show, ("active", "in-progress")),
            ):
                await referral.execute_update(
                    ReferralWorkflow.partner_response,
                    PartnerReport(answer=answer, reported_by="housing-portal"),
                )
                assert await exported_loop() == expected


# --- the mappings alone --------------------------------------------------------------------


def test_appointment_statuses() -> None:
    assert {s: appointment_status(s) for s in SessionStatus} == {
        SessionStatus.scheduled: "booked",
        SessionStatus.attended: "fulfilled",
        SessionStatus.missed: "noshow",
        SessionStatus.excused: "cancelled",
        SessionStatus.cancelled: "cancelled",
    }


def test_episode_statuses() -> None:
    assert {p: episode_status(p) for p in Phase} == {
        Phase.intake: "planned",
        Phase.intensive: "active",
        Phase.step_down: "active",
        Phase.aftercare: "active",
        Phase.completed: "finished",
        Phase.discharged: "cancelled",
        Phase.withdrawn: "cancelled",
        Phase.escalated: "cancelled",
        Phase.lost_to_contact: "cancelled",
    }
    assert episode_status(Phase.intake, first_intake=False) == "active"  # a relapse's


@pytest.mark.parametrize(
    ("phase", "next_phase", "expected"),
    [
        (Phase.intensive, None, "active"),
        (Phase.intensive, Phase.step_down, "completed"),
        (Phase.intensive, Phase.aftercare, "completed"),  # a plan without step-down
        (Phase.aftercare, Phase.completed, "completed"),
        (Phase.aftercare, Phase.intake, "revoked"),  # relapse
        (Phase.step_down, Phase.withdrawn, "revoked"),
        (Phase.intensive, Phase.discharged, "revoked"),
        (Phase.aftercare, Phase.lost_to_contact, "revoked"),
    ],
)
def test_care_plan_statuses(phase: Phase, next_phase: Phase | None, expected: str) -> None:
    assert care_plan_status(phase, next_phase) == expected


@pytest.mark.parametrize(
    ("stage", "outcome", "no_shows", "task", "service_request"),
    [
        (ReferralStage.requested, None, 0, "draft", "draft"),
        (ReferralStage.awaiting_consent, None, 0, "draft", "draft"),
        (ReferralStage.sent, None, 0, "requested", "active"),
        (ReferralStage.accepted, None, 0, "accepted", "active"),
        (ReferralStage.accepted, None, 1, "in-progress", "active"),
        (ReferralStage.closed, ReferralOutcome.completed, 0, "completed", "completed"),
        (ReferralStage.closed, ReferralOutcome.declined, 0, "rejected", "revoked"),
        (ReferralStage.closed, ReferralOutcome.cancelled, 0, "cancelled", "revoked"),
        (ReferralStage.closed, ReferralOutcome.expired, 0, "failed", "revoked"),
    ],
)
def test_referral_loop_statuses(
    stage: ReferralStage,
    outcome: ReferralOutcome | None,
    no_shows: int,
    task: str,
    service_request: str,
) -> None:
    assert task_status(stage, outcome, no_shows) == task
    assert service_request_status(stage, outcome) == service_request
    assert task in STATUS_CODES["Task"] and service_request in STATUS_CODES["ServiceRequest"]


def test_weekly_cadence_in_lowest_terms() -> None:
    assert weekly_cadence(8, 8) == (1, 1)
    assert weekly_cadence(16, 8) == (2, 1)
    assert weekly_cadence(2, 8) == (1, 4)
    assert weekly_cadence(4, 6) == (2, 3)


def test_a_compressed_clock_puts_instants_on_the_clinic_calendar() -> None:
    start = datetime(2026, 3, 4, 15, 30, tzinfo=UTC)
    demo = ProgramClock.starting_at(start, seconds_per_day=0.4)
    real = ProgramClock.starting_at(start, seconds_per_day=86400)
    for day in (0.0, 1.5, 365.25):
        assert demo.calendar_of(demo.instant(day)) == demo.calendar(day)
    later = start + timedelta(days=3, seconds=7)
    assert real.calendar_of(later) == later  # a real clock: the same instant


def _relapse_record() -> JourneyRecord:
    """A journey that relapsed in aftercare and went back to intensive care (hand-made)."""
    pid = "P-7K2M9Q4D"
    t0 = datetime(2026, 1, 5, 8, tzinfo=UTC)

    def day(n: float) -> datetime:
        return t0 + timedelta(days=n)

    course = [
        (Phase.intake, 0, "enrolled"),
        (Phase.intensive, 0.01, "placed"),
        (Phase.aftercare, 56, "treatment phases completed"),
        (Phase.intake, 80, "relapse (case_manager): reassessed, episode 2"),
        (Phase.intensive, 80.01, "placed"),
    ]
    periods = []
    episode = 0
    for n, (phase, start, reason) in enumerate(course):
        episode += phase == Phase.intake
        end = day(course[n + 1][1]) if n + 1 < len(course) else None
        periods.append(PhasePeriod(f"{pid}/phase/{n}", phase, episode, day(start), end, reason))
    sessions = [
        BookedSession(
            f"{pid}/INT{ep}-W01-S1",
            f"INT{ep}-W01-S1",
            Phase.intensive,
            ep,
            1,
            "2.1",
            day(start + 7),
            3,
            "group_therapy",
            "telehealth",
            status,
        )
        for ep, start, status in ((1, 0, SessionStatus.attended), (2, 80, SessionStatus.scheduled))
    ]
    check_in = CheckInCall(
        f"{pid}/FU-D007/attempt-1",
        "FU-D007",
        1,
        day(63),
        CallOutcome.reached,
        1,
        day(63),
        CheckIn(days_of_use=2, phq9=PHQ9),
    )
    loop = ReferralLoop(
        f"{pid}/REF-legal-1",
        "REF-legal-1",
        f"journey-{pid}-REF-legal",
        "legal",
        "CM-07",  # another case manager's referral
        day(1),
        None,
        None,
        ReferralStage.awaiting_consent,
        None,
        0,
    )
    consent = ConsentOnFile(f"{pid}/consent/1", "family_involvement", False, day(0), True)
    written = ConsentTerms(
        discloser="the CarePath program at site north",
        information="the journey as a FHIR bundle",
        recipient="County EHR",
        purpose="treatment_payment_operations",
        expires_on=date(2027, 1, 5),
        signed_on=date(2026, 1, 5),
    )
    to_ehr = ConsentOnFile(f"{pid}/consent/2", "recipient:county-ehr", True, day(1), True, written)
    return JourneyRecord(
        pid,
        "CM-01",
        "default-iop",
        day(0),
        tuple(periods),
        tuple(sessions),
        (check_in,),
        (loop,),
        (consent, to_ehr),
        (
            AnsweredSurvey(
                f"{pid}/survey/E1-aftercare",
                "aftercare",
                day(70),
                (("care", "How satisfied are you with your care team?", 4), ("peers", "Peers?", 2)),
            ),
        ),
    )


def test_every_exported_resource_carries_the_part2_labels() -> None:
    # An export instant of its own: nothing here may read the day the suite runs.
    exported_at = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)
    text = journey_bundle(_relapse_record(), exported_at).model_dump_json()
    bundle = json.loads(text)
    resources = [e["resource"] for e in bundle["entry"]]
    assert {r["resourceType"] for r in resources} >= {"Patient", "EpisodeOfCare", "Appointment"}
    assert _part2_labelled(bundle) and all(_part2_labelled(r) for r in resources)
    # The labels survive the library's own validation of each resource's model.
    parsed = Bundle.model_validate_json(text)
    for entry in parsed.entry or []:
        assert entry.resource is not None and entry.resource.meta is not None
        codes = {c.code for c in entry.resource.meta.security or []}
        assert codes == {"R", "42CFRPart2", "NORDSCLCD"}


def test_the_labelled_export_passes_an_independent_r4_validator() -> None:
    """fhirkit (Rust, generated from the official R4 4.0.1 specification; not the models the
    export is built with) finds no problem in the bundle, Part 2 labels included; and it
    does find one when the bundle is wrong."""
    exported_at = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)
    bundle = json.loads(journey_bundle(_relapse_record(), exported_at).model_dump_json())
    assert fhirkit.validate(bundle) == []
    (survey,) = [
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "QuestionnaireResponse"
        and e["resource"]["questionnaire"].endswith("/Questionnaire/support/default-iop")
    ]
    assert [(i["linkId"], i["answer"][0]["valueInteger"]) for i in survey["item"]] == [
        ("care", 4),
        ("peers", 2),
    ]
    assert survey["status"] == "completed" and _part2_labelled(survey)
    (written,) = [
        e["resource"]["provision"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Consent" and "actor" in e["resource"]["provision"]
    ]
    assert written["actor"][0]["reference"]["display"] == "County EHR"
    assert [p["code"] for p in written["purpose"]] == ["TREAT", "HPAYMT", "HOPERAT"]
    assert written["period"]["end"].startswith("2027-01-05")
    parsed = fhirkit.parse(bundle)
    assert parsed.resource_type == "Bundle" and parsed.to_dict()["meta"] == bundle["meta"]
    broken = json.loads(json.dumps(bundle))
    appointment = next(
        e["resource"] for e in broken["entry"] if e["resource"]["resourceType"] == "Appointment"
    )
    appointment["start"] = "next Tuesday"
    del appointment["participant"]
    found = [str(issue) for issue in fhirkit.validate(broken)]
    assert any("resource.start" in i for i in found), found
    assert any("resource.participant: required" in i for i in found), found


def test_a_relapse_reads_as_a_second_episode_of_plans() -> None:
    record = _relapse_record()
    found = _by_type(json.loads(journey_bundle(record, datetime.now(UTC)).model_dump_json()))
    (episode,) = found["EpisodeOfCare"]
    assert [h["status"] for h in episode["statusHistory"]] == [
        "planned",
        "active",
        "active",
        "active",  # the relapse's reassessment: care goes on
        "active",
    ]
    assert episode["status"] == "active" and "end" not in episode["period"]
    plans = found["CarePlan"]
    assert [(p["title"], p["status"]) for p in plans] == [
        ("intensive (episode 1)", "completed"),
        ("aftercare (episode 1)", "revoked"),
        ("intensive (episode 2)", "active"),
    ]
    # Each session belongs to its own episode's plan; only the attended one is an encounter.
    plan_of = {
        a["identifier"][0]["value"]: a["supportingInformation"][0]["reference"]
        for a in found["Appointment"]
    }
    url = {p["title"]: f"urn:uuid:{p['id']}" for p in plans}
    assert plan_of == {
        "P-7K2M9Q4D/INT1-W01-S1": url["intensive (episode 1)"],
        "P-7K2M9Q4D/INT2-W01-S1": url["intensive (episode 2)"],
    }
    assert [e["class"]["code"] for e in found["Encounter"]] == ["VR"]
    # PHQ-9 only: one response and one score; based on the aftercare plan it was part of.
    # (and the support questionnaire answered in aftercare: its own canonical)
    response, support = found["QuestionnaireResponse"]
    assert support["questionnaire"].endswith("/Questionnaire/support/default-iop")
    assert response["questionnaire"] == "http://loinc.org/q/44249-1"
    assert response["basedOn"][0]["reference"] == url["aftercare (episode 1)"]
    assert [i["answer"][0]["valueCoding"]["code"] for i in response["item"]][:3] == [
        "LA6569-3",
        "LA6569-3",
        "LA6570-1",
    ]
    (task,) = found["Task"]
    assert task["status"] == "draft" and "consent" in task["statusReason"]["text"]
    staff = {f"urn:uuid:{p['id']}": p["identifier"][0]["value"] for p in found["Practitioner"]}
    assert staff[task["requester"]["reference"]] == "CM-07"
    assert staff[episode["careManager"]["reference"]] == "CM-01"
    assert "executionPeriod" not in task  # never sent
    consent, to_ehr = found["Consent"]
    assert (consent["status"], consent["provision"]["type"]) == ("active", "deny")
    assert (to_ehr["status"], to_ehr["provision"]["type"]) == ("active", "permit")


# --- the command line --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export", "P-7K2M9Q4D"], "export: say which format: --fhir"),
        (["export", "P-7K2M9Q4D", "--fhir"], "no patient P-7K2M9Q4D in the care store"),
        (["export", "Avery Quinlan", "--fhir"], "patient: Value error, patient_id must be"),
        (["export", "--fhir"], "the following arguments are required: patient"),
    ],
)
def test_export_refuses_bad_input_in_one_line(
    tmp_path, monkeypatch, capsys, argv: list[str], message: str
) -> None:
    monkeypatch.setenv("CAREPATH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CAREPATH_DATABASE_URL", raising=False)
    monkeypatch.setattr(cli_main, "configure_logging", lambda *args: None)
    store = CareStore(f"sqlite:///{tmp_path / 'data' / 'carepath.db'}")  # as a worker makes it
    store.migrate()
    store.dispose()
    out = tmp_path / "bundle.json"

    def run() -> int:
        try:
            return cli_main.main([*argv, "--out", str(out)])
        except SystemExit as exc:  # argparse's own refusals
            return int(exc.code or 0)

    # In a thread of its own: the command runs its own event loop, as from a shell.
    with ThreadPoolExecutor(1) as pool:
        code = pool.submit(run).result()
    stdout, stderr = capsys.readouterr()
    assert (code, stdout) == (2, "")
    assert stderr.startswith("error: ") and stderr.count("\n") == 1
    assert message in stderr
    assert not out.exists()
