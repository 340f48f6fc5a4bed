"""A patient's journey as a FHIR R4 Bundle (models from `fhir.resources.R4B`).

What the bundle holds, read from the care store (and, for a referral still open, the
partner's answers in the referral's Temporal history, which the store does not keep):

  Patient                the program's opaque patient ID, nothing else (see Identifiers)
  Practitioner           each case manager it names, by staff ID only
  EpisodeOfCare          the enrolment: status, period, and a statusHistory entry per phase
                         (intake, intensive, step-down, aftercare, the ending; again after a
                         relapse), each tagged with its phase in a CarePath extension
  CarePlan               one per treatment phase (intensive, step-down, aftercare), with an
                         activity per session type at the weekly cadence booked (aftercare:
                         the check-in calls placed)
  Appointment            every booked session; an Encounter for each one attended
  ServiceRequest + Task  each referral to a partner service; the Task tracks the loop
  QuestionnaireResponse + Observation   each instrument a reached check-in administered
  Consent                each consent record (family involvement, disclosures to partners)

Identifiers. The Patient carries one identifier: the program's opaque patient ID (`P-` and
eight characters) under a CarePath system URI. It is what CarePath already shows operators
everywhere (workflow IDs, search attributes, logs) and it names no one without the care
store. The export never reads names, birth date, phone, e-mail or the assessment (it selects
the patient's other columns only), so no bundle can carry them. A receiver that must match
the patient to its own record gets those under its own consent and agreement (42 CFR Part 2),
not in a bulk export. Case managers appear by staff ID.

Bundle type: "collection". A "document" is an attested clinical document (a Composition
first, authored, signed, immutable once sent); this is an operator's export of the facts as
they stand, re-made at will, which no clinician attests. A "transaction" would tell the
receiver what to write; a collection lets it choose. Every entry has a `urn:uuid:` fullUrl
and every reference points at one of them, so the bundle stands alone.

Ids are UUIDv5 of the resource type and the store's own key for the fact (the idempotency
key of the appointment, referral, consent or call; the phase change's key), so exporting the
same journey again gives the same ids.

Codes. LOINC where real codes exist: the PHQ-9 (Questionnaire http://loinc.org/q/44249-1,
item and answer codes, total score 44261-6). We found no LOINC panel for the Brief Addiction
Monitor, and the Likert form CarePath asks differs from the VA's original anyway, so BAM
items and scores use a CarePath code system. Phases, session types, social needs, consent
kinds and programs are CarePath code systems under CAREPATH_FHIR, a placeholder domain that
a program publishing these profiles replaces with its own.

Labels. These are substance-use-disorder treatment records (42 CFR Part 2): the Bundle and
every resource in it carry the DS4P security labels in `meta.security` (confidentiality
restricted, the 42CFRPart2 policy, and the refrain from redisclosure without the patient's
consent), so a receiver's access control knows what it holds and may not pass on.

Times. Sessions and check-ins are on the clinic's calendar already; phase changes, referrals
and consents are recorded at workflow instants, which a compressed program clock (the demo's)
runs faster than the calendar, so they are put on the calendar with the journey's clock.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta
from fractions import Fraction
from typing import Any

from fhir.resources.R4B.appointment import Appointment
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.careplan import CarePlan
from fhir.resources.R4B.consent import Consent
from fhir.resources.R4B.domainresource import DomainResource
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.episodeofcare import EpisodeOfCare
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.practitioner import Practitioner
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task
from temporalio.client import Client

from clinical.aftercare import CallOutcome, CheckIn
from clinical.attendance import SessionStatus
from clinical.careplan import FAMILY_EDUCATION, FAMILY_THERAPY
from clinical.clock import ProgramClock
from clinical.consents import TPO, ConsentTerms
from clinical.instruments import BamAnswers, Phq9Answers, score_bam, score_phq9
from clinical.phases import Phase
from clinical.protocol import ProgramCatalog, ProtocolError, SurveyConfig
from clinical.referrals import (
    PartnerAnswer,
    PartnerReport,
    ReferralOutcome,
    ReferralStage,
    ReferralState,
    apply_partner_report,
)
from infra.store import CareStore, ReferralEntry
from operators.history import partner_answers

Json = dict[str, Any]

CAREPATH_FHIR = "https://carepath.example.org/fhir"
PATIENT_ID_SYSTEM = f"{CAREPATH_FHIR}/sid/patient-id"
STAFF_ID_SYSTEM = f"{CAREPATH_FHIR}/sid/case-manager-id"
JOURNEY_ID_SYSTEM = f"{CAREPATH_FHIR}/sid/journey-id"
RECORD_KEY_SYSTEM = f"{CAREPATH_FHIR}/sid/record-key"
"""The store's idempotency key of the fact a resource was made from."""
PHASE_SYSTEM = f"{CAREPATH_FHIR}/CodeSystem/journey-phase"
PHASE_EXTENSION = f"{CAREPATH_FHIR}/StructureDefinition/journey-phase"
PROGRAM_SYSTEM = f"{CAREPATH_FHIR}/CodeSystem/program"
SESSION_TYPE_SYSTEM = f"{CAREPATH_FHIR}/CodeSystem/session-type"
SOCIAL_NEED_SYSTEM = f"{CAREPATH_FHIR}/CodeSystem/social-need"
CONSENT_KIND_SYSTEM = f"{CAREPATH_FHIR}/CodeSystem/consent-kind"
BAM_SYSTEM = f"{CAREPATH_FHIR}/CodeSystem/bam"
BAM_QUESTIONNAIRE = f"{CAREPATH_FHIR}/Questionnaire/bam-likert"
SUPPORT_QUESTIONNAIRE = f"{CAREPATH_FHIR}/Questionnaire/support"
"""The satisfaction and support questionnaire's canonical, followed by the program's ID."""
LOINC = "http://loinc.org"
PHQ9_QUESTIONNAIRE = "http://loinc.org/q/44249-1"
PHQ9_TOTAL = ("44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]")
PHQ9_ITEMS = (
    ("44250-9", "Little interest or pleasure in doing things"),
    ("44255-8", "Feeling down, depressed, or hopeless"),
    ("44259-0", "Trouble falling or staying asleep, or sleeping too much"),
    ("44254-1", "Feeling tired or having little energy"),
    ("44251-7", "Poor appetite or overeating"),
    ("44258-2", "Feeling bad about yourself"),
    ("44252-5", "Trouble concentrating on things"),
    ("44253-3", "Moving or speaking slowly, or being fidgety or restless"),
    ("44260-8", "Thoughts that you would be better off dead, or of hurting yourself"),
)
PHQ9_ANSWERS = (
    ("LA6568-5", "Not at all"),
    ("LA6569-3", "Several days"),
    ("LA6570-1", "More than half the days"),
    ("LA6571-9", "Nearly every day"),
)
_V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_V3_ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
_V3_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_FAMILY_MEMBER = {"coding": [{"system": _V3_ROLE_CODE, "code": "FAMMEMB"}], "text": "family"}
_PART_2 = "https://www.ecfr.gov/current/title-42/chapter-I/subchapter-A/part-2"
_V3_CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
_V3_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
_PURPOSE_CODES = {
    "treatment": ("TREAT", "treatment"),
    "payment": ("HPAYMT", "healthcare payment"),
    "health_care_operations": ("HOPERAT", "healthcare operations"),
    "care_coordination": ("CAREMGT", "care management"),
}


def _purposes(purpose: str) -> tuple[str, ...]:
    return ("treatment", "payment", "health_care_operations") if purpose == TPO else (purpose,)


PART2_SECURITY: tuple[Json, ...] = (
    {"system": _V3_CONFIDENTIALITY, "code": "R", "display": "restricted"},
    {"system": _V3_ACT_CODE, "code": "42CFRPart2", "display": "42 CFR Part2"},
    {
        "system": _V3_ACT_CODE,
        "code": "NORDSCLCD",
        "display": "no redisclosure without consent directive",
    },
)
"""The DS4P labels of a Part 2 record: on the Bundle and on every resource in it."""

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, CAREPATH_FHIR)


class ExportError(Exception):
    """Why a journey cannot be exported, in one line."""


# --- what the export reads ---------------------------------------------------------------


@dataclass(frozen=True)
class PhasePeriod:
    key: str
    """The store's key of the phase change (the enrolment's, for the first intake)."""
    phase: Phase
    episode: int
    """Treatment episode: 1, and one more after each relapse."""
    start: datetime
    end: datetime | None
    reason: str


@dataclass(frozen=True)
class BookedSession:
    key: str
    session_id: str
    phase: Phase
    episode: int
    week: int
    level: str
    starts_at: datetime
    hours: float
    session_type: str
    modality: str
    status: SessionStatus

    @property
    def ends_at(self) -> datetime:
        return self.starts_at + timedelta(hours=self.hours)


@dataclass(frozen=True)
class CheckInCall:
    """One aftercare check-in (all its attempts)."""

    key: str
    """The store's key of its last attempt."""
    call_id: str
    episode: int
    due_at: datetime
    outcome: CallOutcome
    attempts: int
    answered_at: datetime | None
    answers: CheckIn | None


@dataclass(frozen=True)
class ReferralLoop:
    key: str
    referral_id: str
    workflow_id: str
    need: str
    case_manager_id: str
    requested_at: datetime
    sent_at: datetime | None
    closed_at: datetime | None
    stage: ReferralStage
    outcome: ReferralOutcome | None
    reminders: int
    no_shows: int = 0


@dataclass(frozen=True)
class ConsentOnFile:
    key: str
    kind: str
    granted: bool
    recorded_at: datetime
    in_force: bool
    """The latest record of its kind; earlier ones are superseded."""
    terms: ConsentTerms | None = None
    """Its written form's §2.31 elements (None: the program's standard form)."""


@dataclass(frozen=True)
class AnsweredSurvey:
    """A satisfaction and support questionnaire the patient answered: (item, text, point)."""

    key: str
    occasion: str
    answered_at: datetime
    answers: tuple[tuple[str, str, int], ...]


@dataclass(frozen=True)
class JourneyRecord:
    """What the export knows about one patient: no contact details, no assessment."""

    patient_id: str
    case_manager_id: str
    program_id: str
    enrolled_at: datetime
    phases: tuple[PhasePeriod, ...]
    sessions: tuple[BookedSession, ...]
    check_ins: tuple[CheckInCall, ...]
    referrals: tuple[ReferralLoop, ...]
    consents: tuple[ConsentOnFile, ...]
    surveys: tuple[AnsweredSurvey, ...] = ()

    @property
    def awaiting_partners(self) -> tuple[ReferralLoop, ...]:
        """Referrals sent and still open: whether the partner accepted is in their history."""
        return tuple(r for r in self.referrals if r.stage == ReferralStage.sent)


# Session IDs are made by clinical.careplan.week_sessions (INT2-W03-S1: phase code, episode,
# week, session); check-in IDs by FollowUpCallRequest.call_ref (E2-FU-D007 from episode 2).
_SESSION_EPISODE = re.compile(r"^[A-Z]+(\d+)-W\d+-")
_CALL_EPISODE = re.compile(r"^E(\d+)-")


def _episode_of_session(session_id: str) -> int:
    found = _SESSION_EPISODE.match(session_id)
    return int(found.group(1)) if found else 1


def _episode_of_call(call_ref: str) -> tuple[int, str]:
    found = _CALL_EPISODE.match(call_ref)
    if found is None:
        return 1, call_ref
    return int(found.group(1)), call_ref[found.end() :]


def journey_record(
    store: CareStore, catalog: ProgramCatalog, patient_id: str, zone: str = "UTC"
) -> JourneyRecord:
    """Everything the store knows about one patient's journey that an export may carry, its
    times at the site's `zone` (local, with their offset)."""
    patient = store.patient(patient_id)
    if patient is None:
        raise ExportError(f"no patient {patient_id} in the care store")
    try:
        protocol = catalog.load(patient.program_id)
    except ProtocolError as exc:
        raise ExportError(f"cannot read the program {patient.program_id}: {exc}") from None
    enrolled = patient.enrolled_at
    # The journey's clock, as the workflow made it at enrolment.
    clock = ProgramClock.starting_at(enrolled, protocol.clock.seconds_per_day, zone)
    open_tasks = {t.key for t in store.tasks(patient_id=patient_id)}
    return JourneyRecord(
        patient_id=patient.patient_id,
        case_manager_id=patient.case_manager_id,
        program_id=patient.program_id,
        enrolled_at=clock.calendar_of(enrolled),
        phases=_phases(store, patient_id, enrolled, clock),
        sessions=_sessions(store, patient_id),
        check_ins=_check_ins(
            store, patient_id, timedelta(days=protocol.aftercare.attempt_spacing_days)
        ),
        referrals=tuple(
            _referral(r, clock, f"{r.key}/task/consent_needed" in open_tasks)
            for r in store.referrals(patient_id=patient_id)
        ),
        consents=_consents(store, patient_id, clock),
        surveys=_surveys(store, patient_id, protocol.survey, clock),
    )


def _surveys(
    store: CareStore, patient_id: str, config: SurveyConfig | None, clock: ProgramClock
) -> tuple[AnsweredSurvey, ...]:
    """The answered questionnaires, each item with the program's text (items the program
    no longer asks keep their ID as text)."""
    texts = {} if config is None else {i.id: i.text for i in config.items}
    return tuple(
        AnsweredSurvey(
            key=s.key,
            occasion=s.occasion,
            answered_at=clock.calendar_of(s.answered_at),
            answers=tuple((k, texts.get(k, k), v) for k, v in s.answers.items()),
        )
        for s in store.surveys(patient_id)
        if s.answers is not None and s.answered_at is not None
    )


async def with_partner_answers(record: JourneyRecord, client: Client) -> JourneyRecord:
    """The record with each open referral's stage as the partner's answers left it (read
    from the referral's history and applied by the referral rules)."""
    loops = []
    for loop in record.referrals:
        if loop.stage == ReferralStage.sent:
            state = ReferralState(stage=ReferralStage.sent)
            for answer in await partner_answers(client, loop.workflow_id):
                report = PartnerReport(answer=PartnerAnswer(answer), reported_by="history")
                apply_partner_report(state, report, day=0.0)
            loop = replace(loop, stage=state.stage, no_shows=state.no_shows, outcome=state.outcome)
        loops.append(loop)
    return replace(record, referrals=tuple(loops))


def _phases(
    store: CareStore, patient_id: str, enrolled: datetime, clock: ProgramClock
) -> tuple[PhasePeriod, ...]:
    # Enrolment starts the first intake; every later phase is a recorded change, in order.
    starts = [(f"{patient_id}/enrolled", Phase.intake, enrolled, "enrolled")]
    for change in store.phase_changes(patient_id):
        starts.append((change.key, change.phase, change.at, change.reason))
    periods = []
    episode = 0
    for n, (key, phase, at, reason) in enumerate(starts):
        episode += phase == Phase.intake  # a relapse re-links through a new intake
        end = clock.calendar_of(starts[n + 1][2]) if n + 1 < len(starts) else None
        periods.append(PhasePeriod(key, phase, episode, clock.calendar_of(at), end, reason))
    return tuple(periods)


def _sessions(store: CareStore, patient_id: str) -> tuple[BookedSession, ...]:
    return tuple(
        BookedSession(
            key=a.key,
            session_id=a.session_id,
            phase=a.phase,
            episode=_episode_of_session(a.session_id),
            week=a.week,
            level=a.level,
            starts_at=a.starts_at,
            hours=a.hours,
            session_type=a.session_type,
            modality=a.modality,
            status=a.status,
        )
        for a in store.appointments(patient_id)
    )


def _check_ins(store: CareStore, patient_id: str, spacing: timedelta) -> tuple[CheckInCall, ...]:
    last = {}
    for a in store.call_attempts(patient_id):
        last[a.call_ref] = a  # attempts in order: the last one tells how the check-in ended
    calls = []
    for call_ref, a in last.items():
        episode, call_id = _episode_of_call(call_ref)
        reached = a.outcome == CallOutcome.reached
        calls.append(
            CheckInCall(
                key=a.key,
                call_id=call_id,
                episode=episode,
                due_at=a.due_at,
                outcome=a.outcome,
                attempts=a.attempt,
                # Attempts are spaced by the program from the check-in's due time.
                answered_at=a.due_at + (a.attempt - 1) * spacing if reached else None,
                answers=a.check_in if reached else None,
            )
        )
    return tuple(calls)


def _referral(r: ReferralEntry, clock: ProgramClock, consent_pending: bool) -> ReferralLoop:
    if r.closed_at is not None:
        stage = ReferralStage.closed
    elif r.sent_at is not None:
        stage = ReferralStage.sent
    else:
        stage = ReferralStage.awaiting_consent if consent_pending else ReferralStage.requested

    def calendar(at: datetime | None) -> datetime | None:
        return None if at is None else clock.calendar_of(at)

    return ReferralLoop(
        key=r.key,
        referral_id=r.referral_id,
        workflow_id=r.workflow_id,
        need=r.need,
        case_manager_id=r.case_manager_id,
        requested_at=clock.calendar_of(r.requested_at),
        sent_at=calendar(r.sent_at),
        closed_at=calendar(r.closed_at),
        stage=stage,
        outcome=r.outcome,
        reminders=r.reminders,
    )


def _consents(store: CareStore, patient_id: str, clock: ProgramClock) -> tuple[ConsentOnFile, ...]:
    recorded = store.consents(patient_id)
    latest = {c.kind: c.key for c in recorded}
    return tuple(
        ConsentOnFile(
            key=c.key,
            kind=c.kind,
            granted=c.granted,
            recorded_at=clock.calendar_of(c.recorded_at),
            in_force=latest[c.kind] == c.key,
            terms=c.terms,
        )
        for c in recorded
    )


# --- how CarePath's states read in FHIR ----------------------------------------------------

# Where a journey may go next in its ordinary course; anything else ends a phase early.
_COURSE = (Phase.intake, Phase.intensive, Phase.step_down, Phase.aftercare, Phase.completed)

APPOINTMENT_STATUS = {
    SessionStatus.scheduled: "booked",
    SessionStatus.attended: "fulfilled",
    SessionStatus.missed: "noshow",
    # Excused: the patient had a reason the clinic accepts; it is not a no-show.
    SessionStatus.excused: "cancelled",
    SessionStatus.cancelled: "cancelled",
}

_TASK_STATUS_CLOSED = {
    ReferralOutcome.completed: "completed",
    ReferralOutcome.declined: "rejected",
    ReferralOutcome.cancelled: "cancelled",
    ReferralOutcome.expired: "failed",
}


def episode_status(phase: Phase, first_intake: bool = True) -> str:
    """EpisodeOfCare.status for a phase. The first intake is "planned" (assessment and
    placement before care starts); a later one (a relapse's reassessment) is care going on.
    Completing the program is "finished"; every other ending (discharged, withdrawn,
    escalated, lost to contact) left the planned course: "cancelled"."""
    if phase == Phase.intake:
        return "planned" if first_intake else "active"
    if phase == Phase.completed:
        return "finished"
    return "cancelled" if phase.is_terminal else "active"


def appointment_status(status: SessionStatus) -> str:
    return APPOINTMENT_STATUS[status]


def care_plan_status(phase: Phase, next_phase: Phase | None) -> str:
    """A phase's plan is "active" while the phase lasts, "completed" when the journey moved
    on in its ordinary course, "revoked" when it was cut short (a relapse, an exit)."""
    if next_phase is None:
        return "active"
    if next_phase in _COURSE and _COURSE.index(next_phase) > _COURSE.index(phase):
        return "completed"
    return "revoked"


def task_status(stage: ReferralStage, outcome: ReferralOutcome | None, no_shows: int = 0) -> str:
    """The referral loop as a FHIR Task: "draft" until the partner is asked (being sent, or
    waiting for the patient's consent to the disclosure), "requested" once sent, "accepted"
    by the partner, "in-progress" once the partner has tried to serve (a reported no-show),
    then completed / rejected (declined) / cancelled / failed (expired)."""
    if stage == ReferralStage.closed:
        assert outcome is not None, "a closed referral has an outcome"
        return _TASK_STATUS_CLOSED[outcome]
    if stage == ReferralStage.accepted:
        return "in-progress" if no_shows else "accepted"
    if stage == ReferralStage.sent:
        return "requested"
    return "draft"


def service_request_status(stage: ReferralStage, outcome: ReferralOutcome | None) -> str:
    if stage == ReferralStage.closed:
        return "completed" if outcome == ReferralOutcome.completed else "revoked"
    return "active" if stage in (ReferralStage.sent, ReferralStage.accepted) else "draft"


def weekly_cadence(sessions: int, weeks: int) -> tuple[int, int]:
    """`sessions` over `weeks` weeks as (frequency, period in weeks), in lowest terms:
    8 over 8 is once a week, 2 over 8 once every 4 weeks, 16 over 8 twice a week."""
    cadence = Fraction(sessions, weeks)
    return cadence.numerator, cadence.denominator


# --- the bundle ------------------------------------------------------------------------------

_MODELS: dict[str, type[DomainResource]] = {
    m.__name__: m
    for m in (
        Patient,
        Practitioner,
        EpisodeOfCare,
        CarePlan,
        Appointment,
        Encounter,
        ServiceRequest,
        Task,
        QuestionnaireResponse,
        Observation,
        Consent,
    )
}


def resource_id(resource_type: str, key: str) -> str:
    """A stable id: the same fact (by its store key) gets the same id in every export."""
    return str(uuid.uuid5(_NAMESPACE, f"{resource_type}/{key}"))


def _ref(resource_type: str, key: str) -> Json:
    return {"reference": f"urn:uuid:{resource_id(resource_type, key)}"}


def _coding(system: str, code: str, display: str | None = None) -> Json:
    coding = {"system": system, "code": code}
    return {**coding, "display": display} if display else coding


def _concept(system: str, code: str, text: str | None = None) -> Json:
    return {"coding": [_coding(system, code)], "text": text or code.replace("_", " ")}


def _key_identifier(key: str) -> list[Json]:
    return [{"system": RECORD_KEY_SYSTEM, "value": key}]


def _period(start: datetime | None, end: datetime | None) -> Json:
    return {k: v for k, v in (("start", start), ("end", end)) if v is not None}


def _labelled() -> Json:
    return {"security": [dict(label) for label in PART2_SECURITY]}


def journey_bundle(record: JourneyRecord, exported_at: datetime) -> Bundle:
    """The journey as a FHIR R4 collection Bundle; every resource validated by its model."""
    resources = _Resources(record)
    bundle: Bundle = Bundle.model_validate(
        {
            "resourceType": "Bundle",
            "meta": _labelled(),
            "type": "collection",
            "timestamp": exported_at,
            "entry": [
                {
                    "fullUrl": f"urn:uuid:{body['id']}",
                    "resource": _MODELS[body["resourceType"]].model_validate(
                        {**body, "meta": _labelled()}
                    ),
                }
                for body in resources.all()
            ],
        }
    )
    return bundle


class _Resources:
    """Builds each resource of one journey as FHIR JSON."""

    def __init__(self, record: JourneyRecord) -> None:
        self.r = record
        self.patient = _ref("Patient", record.patient_id)
        self.case_manager = _ref("Practitioner", record.case_manager_id)
        # Everyone a resource names: the patient's case manager, each referral's.
        self.staff = dict.fromkeys(
            [record.case_manager_id, *(loop.case_manager_id for loop in record.referrals)]
        )
        self.episode = _ref("EpisodeOfCare", record.patient_id)
        self.plans = [
            (period, nxt.phase if nxt else None)
            for period, nxt in zip(record.phases, [*record.phases[1:], None], strict=True)
            if period.phase in (Phase.intensive, Phase.step_down, Phase.aftercare)
        ]

    def all(self) -> list[Json]:
        r = self.r
        asked = [pair for c in r.check_ins if c.answers is not None for pair in self.instruments(c)]
        return [
            self.patient_resource(),
            *(self.practitioner(staff_id) for staff_id in self.staff),
            self.episode_of_care(),
            *(self.care_plan(period, nxt) for period, nxt in self.plans),
            *(self.appointment(s) for s in r.sessions),
            *(self.encounter(s) for s in r.sessions if s.status == SessionStatus.attended),
            *(self.service_request(loop) for loop in r.referrals),
            *(self.task(loop) for loop in r.referrals),
            *(response for response, _ in asked),
            *(observation for _, observation in asked),
            *(self.survey_response(s) for s in r.surveys),
            *(self.consent(c) for c in r.consents),
        ]

    def _plan_key(self, phase: Phase, episode: int) -> str | None:
        found = [p for p, _ in self.plans if (p.phase, p.episode) == (phase, episode)]
        return found[-1].key if found else None

    # --- people and the enrolment ---------------------------------------------------------

    def patient_resource(self) -> Json:
        return {
            "resourceType": "Patient",
            "id": resource_id("Patient", self.r.patient_id),
            # The only identifier the program allows out (see the module's docstring).
            "identifier": [
                {"use": "usual", "system": PATIENT_ID_SYSTEM, "value": self.r.patient_id}
            ],
        }

    @staticmethod
    def practitioner(staff_id: str) -> Json:
        return {
            "resourceType": "Practitioner",
            "id": resource_id("Practitioner", staff_id),
            "identifier": [{"system": STAFF_ID_SYSTEM, "value": staff_id}],
        }

    def episode_of_care(self) -> Json:
        r = self.r
        history = []
        for n, p in enumerate(r.phases):
            history.append(
                {
                    "extension": [
                        {"url": PHASE_EXTENSION, "valueCoding": _coding(PHASE_SYSTEM, p.phase)}
                    ],
                    "status": episode_status(p.phase, first_intake=n == 0),
                    "period": _period(p.start, p.end),
                }
            )
        last = r.phases[-1]
        return {
            "resourceType": "EpisodeOfCare",
            "id": resource_id("EpisodeOfCare", r.patient_id),
            "identifier": [{"system": JOURNEY_ID_SYSTEM, "value": f"journey-{r.patient_id}"}],
            "status": episode_status(last.phase, first_intake=len(r.phases) == 1),
            "statusHistory": history,
            "type": [_concept(PROGRAM_SYSTEM, r.program_id, f"program {r.program_id}")],
            "patient": self.patient,
            "period": _period(r.enrolled_at, last.start if last.phase.is_terminal else None),
            "careManager": self.case_manager,
        }

    # --- plans and sessions ---------------------------------------------------------------

    def care_plan(self, period: PhasePeriod, next_phase: Phase | None) -> Json:
        status = care_plan_status(period.phase, next_phase)
        activity_status = {"active": "in-progress", "completed": "completed"}.get(status, "stopped")
        if period.phase == Phase.aftercare:
            activities = self._check_in_activity(period, activity_status)
        else:
            activities = self._session_activities(period, activity_status)
        levels = list(dict.fromkeys(s.level for s in self._sessions_of(period)))  # in order
        level = f", level {' then '.join(levels)}" if levels else ""
        return {
            "resourceType": "CarePlan",
            "id": resource_id("CarePlan", period.key),
            "identifier": _key_identifier(period.key),
            "status": status,
            "intent": "plan",
            "title": f"{period.phase.value.replace('_', '-')} (episode {period.episode})",
            "description": f"{period.phase.value.replace('_', '-')} phase{level}",
            "subject": self.patient,
            "period": _period(period.start, period.end),
            "author": self.case_manager,
            "activity": activities,
        }

    def _sessions_of(self, period: PhasePeriod) -> list[BookedSession]:
        return [
            s for s in self.r.sessions if (s.phase, s.episode) == (period.phase, period.episode)
        ]

    def _session_activities(self, period: PhasePeriod, status: str) -> list[Json]:
        sessions = self._sessions_of(period)
        weeks = len({s.week for s in sessions})
        activities = []
        for session_type in dict.fromkeys(s.session_type for s in sessions):
            of_type = [s for s in sessions if s.session_type == session_type]
            frequency, every = weekly_cadence(len(of_type), weeks)
            attended = [s for s in of_type if s.status == SessionStatus.attended]
            # Every one cancelled (family sessions after consent was withdrawn): none happened.
            dropped = all(s.status == SessionStatus.cancelled for s in of_type)
            activity: Json = {
                "detail": {
                    "kind": "Appointment",
                    "code": _concept(SESSION_TYPE_SYSTEM, session_type),
                    "status": "cancelled" if dropped else status,
                    "scheduledTiming": {
                        "repeat": {
                            "boundsPeriod": _period(of_type[0].starts_at, of_type[-1].ends_at),
                            "frequency": frequency,
                            "period": every,
                            "periodUnit": "wk",
                        }
                    },
                }
            }
            if attended:
                activity["outcomeReference"] = [_ref("Encounter", s.key) for s in attended]
            activities.append(activity)
        return activities

    def _check_in_activity(self, period: PhasePeriod, status: str) -> list[Json]:
        calls = [c for c in self.r.check_ins if c.episode == period.episode]
        if not calls:
            return []
        activity: Json = {
            "detail": {
                "code": _concept(SESSION_TYPE_SYSTEM, "check_in_call", "aftercare check-in call"),
                "status": status,
                "scheduledTiming": {"event": [c.due_at for c in calls]},
            }
        }
        responses = [
            _ref("QuestionnaireResponse", f"{c.key}/{name}")
            for c in calls
            if c.answers is not None
            for name in self._instrument_names(c.answers)
        ]
        if responses:
            activity["outcomeReference"] = responses
        return [activity]

    def appointment(self, s: BookedSession) -> Json:
        plan = self._plan_key(s.phase, s.episode)
        body: Json = {
            "resourceType": "Appointment",
            "id": resource_id("Appointment", s.key),
            "identifier": _key_identifier(s.key),
            "status": appointment_status(s.status),
            "serviceType": [_concept(SESSION_TYPE_SYSTEM, s.session_type)],
            "description": f"{s.session_type.replace('_', ' ')} ({s.modality.replace('_', ' ')})",
            "start": s.starts_at,
            "end": s.ends_at,
            "minutesDuration": round(s.hours * 60),
            "participant": self._participants(s),
        }
        if plan is not None:
            body["supportingInformation"] = [_ref("CarePlan", plan)]
        if s.status == SessionStatus.excused:
            body["cancelationReason"] = {"text": "excused absence, recorded by the case manager"}
        elif s.status == SessionStatus.cancelled:
            body["cancelationReason"] = {"text": "cancelled by the program before it took place"}
        return body

    def _participants(self, s: BookedSession) -> list[Json]:
        # The family contact is PHI: named nowhere, only their role.
        family = {"type": [_FAMILY_MEMBER], "status": "accepted"}
        if s.session_type == FAMILY_EDUCATION:  # for the family alone
            patient = {"actor": self.patient, "required": "information-only", "status": "accepted"}
            return [family, patient]
        patient = {"actor": self.patient, "required": "required", "status": "accepted"}
        return [patient, family] if s.session_type == FAMILY_THERAPY else [patient]

    def encounter(self, s: BookedSession) -> Json:
        virtual = s.modality == "telehealth"
        return {
            "resourceType": "Encounter",
            "id": resource_id("Encounter", s.key),
            "identifier": _key_identifier(s.key),
            "status": "finished",
            "class": _coding(
                _V3_ACT_CODE, "VR" if virtual else "AMB", "virtual" if virtual else "ambulatory"
            ),
            "type": [_concept(SESSION_TYPE_SYSTEM, s.session_type)],
            "subject": self.patient,
            "episodeOfCare": [self.episode],
            "appointment": [_ref("Appointment", s.key)],
            "period": _period(s.starts_at, s.ends_at),
        }

    # --- referrals --------------------------------------------------------------------------

    def service_request(self, loop: ReferralLoop) -> Json:
        return {
            "resourceType": "ServiceRequest",
            "id": resource_id("ServiceRequest", loop.key),
            "identifier": _key_identifier(loop.key),
            "status": service_request_status(loop.stage, loop.outcome),
            "intent": "order",
            "category": [
                {
                    "coding": [_coding("http://snomed.info/sct", "3457005", "Patient referral")],
                    "text": "referral to a partner service",
                }
            ],
            "code": _concept(SOCIAL_NEED_SYSTEM, loop.need, f"{loop.need} support"),
            "subject": self.patient,
            "authoredOn": loop.requested_at,
            "requester": _ref("Practitioner", loop.case_manager_id),
            "performerType": {"text": f"{loop.need} partner service"},
        }

    def task(self, loop: ReferralLoop) -> Json:
        stage = loop.stage.value.replace("_", " ")
        business = f"closed: {loop.outcome}" if loop.outcome else stage
        body: Json = {
            "resourceType": "Task",
            "id": resource_id("Task", loop.key),
            "identifier": _key_identifier(loop.key),
            "status": task_status(loop.stage, loop.outcome, loop.no_shows),
            "businessStatus": {"text": business},
            "intent": "order",
            "code": {
                "coding": [_coding("http://hl7.org/fhir/CodeSystem/task-code", "fulfill")],
                "text": f"close the {loop.need} referral loop",
            },
            "focus": _ref("ServiceRequest", loop.key),
            "for": self.patient,
            "authoredOn": loop.requested_at,
            "requester": _ref("Practitioner", loop.case_manager_id),
            "performerType": [{"text": f"{loop.need} partner service"}],
        }
        if loop.sent_at is not None:
            body["executionPeriod"] = _period(loop.sent_at, loop.closed_at)
        if loop.stage == ReferralStage.awaiting_consent:
            body["statusReason"] = {"text": "awaiting the patient's consent to the disclosure"}
        if loop.outcome == ReferralOutcome.expired:
            body["statusReason"] = {"text": "no completion reported within the service level"}
        return body

    # --- check-ins ----------------------------------------------------------------------------

    @staticmethod
    def _instrument_names(answers: CheckIn) -> list[str]:
        return [name for name in ("bam", "phq9") if getattr(answers, name) is not None]

    def instruments(self, call: CheckInCall) -> list[tuple[Json, Json]]:
        """A QuestionnaireResponse and its scores' Observation per instrument asked."""
        assert call.answers is not None and call.answered_at is not None
        plan = self._plan_key(Phase.aftercare, call.episode)
        based_on = {"basedOn": [_ref("CarePlan", plan)]} if plan else {}
        found = []
        for name in self._instrument_names(call.answers):
            key = f"{call.key}/{name}"
            response: Json = {
                "resourceType": "QuestionnaireResponse",
                "id": resource_id("QuestionnaireResponse", key),
                "identifier": _key_identifier(key)[0],
                **based_on,
                "status": "completed",
                "subject": self.patient,
                "authored": call.answered_at,
                "source": self.patient,
            }
            observation: Json = {
                "resourceType": "Observation",
                "id": resource_id("Observation", key),
                "identifier": _key_identifier(key),
                **based_on,
                "status": "final",
                "category": [
                    {
                        "coding": [
                            _coding(
                                "http://terminology.hl7.org/CodeSystem/observation-category",
                                "survey",
                                "Survey",
                            )
                        ]
                    }
                ],
                "subject": self.patient,
                "effectiveDateTime": call.answered_at,
                "derivedFrom": [_ref("QuestionnaireResponse", key)],
            }
            if name == "phq9":
                assert call.answers.phq9 is not None
                response |= _phq9_response(call.answers.phq9)
                observation |= _phq9_observation(call.answers.phq9)
            else:
                assert call.answers.bam is not None
                response |= _bam_response(call.answers.bam)
                observation |= _bam_observation(call.answers.bam)
            found.append((response, observation))
        return found

    def survey_response(self, s: AnsweredSurvey) -> Json:
        """The program's own questionnaire (its canonical names the program), each answer
        the point on the item's scale."""
        return {
            "resourceType": "QuestionnaireResponse",
            "id": resource_id("QuestionnaireResponse", s.key),
            "identifier": _key_identifier(s.key)[0],
            "questionnaire": f"{SUPPORT_QUESTIONNAIRE}/{self.r.program_id}",
            "status": "completed",
            "subject": self.patient,
            "authored": s.answered_at,
            "source": self.patient,
            "item": [
                {"linkId": item, "text": text, "answer": [{"valueInteger": point}]}
                for item, text, point in s.answers
            ],
        }

    def consent(self, c: ConsentOnFile) -> Json:
        disclosure = c.kind.startswith("disclosure:")
        purpose = ("CAREMGT", "care management") if disclosure else ("TREAT", "treatment")
        purposes = [_coding(_V3_ACT_REASON, *purpose)]
        written: Json = {}
        if c.terms is not None:  # its written form: to whom, for what, until when
            t = c.terms
            purposes = [_coding(_V3_ACT_REASON, *_PURPOSE_CODES[p]) for p in _purposes(t.purpose)]
            written = {
                "period": _period(
                    datetime.combine(t.signed_on, time(), UTC),
                    datetime.combine(t.expires_on, time(), UTC) if t.expires_on else None,
                ),
                "actor": [
                    {
                        "role": {"coding": [_coding(_V3_PARTICIPATION, "IRCP", "recipient")]},
                        "reference": {"display": t.recipient},
                    }
                ],
            }
        return {
            "resourceType": "Consent",
            "id": resource_id("Consent", c.key),
            "identifier": _key_identifier(c.key),
            # The latest record of a kind is in force; earlier ones are superseded.
            "status": "active" if c.in_force else "inactive",
            "scope": {
                "coding": [
                    _coding(
                        "http://terminology.hl7.org/CodeSystem/consentscope",
                        "patient-privacy",
                        "Privacy Consent",
                    )
                ]
            },
            "category": [
                {"coding": [_coding(LOINC, "59284-0", "Patient Consent")]},
                _concept(
                    CONSENT_KIND_SYSTEM, c.kind, c.kind.replace(":", " to ").replace("_", " ")
                ),
            ],
            "patient": self.patient,
            "dateTime": c.recorded_at,
            "performer": [self.patient],
            "policy": [{"uri": _PART_2}],
            "provision": {
                "type": "permit" if c.granted else "deny",
                "action": [
                    {
                        "coding": [
                            _coding(
                                "http://terminology.hl7.org/CodeSystem/consentaction", "disclose"
                            )
                        ]
                    }
                ],
                "purpose": purposes,
                **written,
            },
        }


def _phq9_response(answers: Phq9Answers) -> Json:
    return {
        "questionnaire": PHQ9_QUESTIONNAIRE,
        "item": [
            {
                "linkId": f"/{code}",
                "text": text,
                "answer": [{"valueCoding": _coding(LOINC, *PHQ9_ANSWERS[value])}],
            }
            for (code, text), value in zip(PHQ9_ITEMS, answers.items, strict=True)
        ],
    }


def _phq9_observation(answers: Phq9Answers) -> Json:
    score = score_phq9(answers)
    return {
        "code": {"coding": [_coding(LOINC, *PHQ9_TOTAL)], "text": "PHQ-9 total score"},
        "valueInteger": score.total,
        "interpretation": [{"text": score.severity}],
    }


def _bam_response(answers: BamAnswers) -> Json:
    return {
        "questionnaire": BAM_QUESTIONNAIRE,
        "item": [
            {"linkId": str(n), "text": f"BAM item {n}", "answer": [{"valueInteger": value}]}
            for n, value in enumerate(answers.items, start=1)
        ],
    }


def _flag(flagged: bool, why: str) -> list[Json]:
    code = ("A", "Abnormal") if flagged else ("N", "Normal")
    return [
        {"coding": [_coding(_INTERPRETATION, *code)], "text": why if flagged else "not flagged"}
    ]


def _bam_observation(answers: BamAnswers) -> Json:
    score = score_bam(answers)
    scales: Iterable[tuple[str, int, bool, str]] = (
        ("use", score.use, score.use_flag, "any use reported"),
        ("risk", score.risk, score.risk_flag, "risk factors high"),
        ("protective", score.protective, score.protective_flag, "protective factors low"),
    )
    return {
        "code": {
            "coding": [_coding(BAM_SYSTEM, "scores")],
            "text": "Brief Addiction Monitor scores (Likert form): Use, Risk, Protective",
        },
        "component": [
            {
                "code": {"coding": [_coding(BAM_SYSTEM, name)], "text": f"BAM {name}"},
                "valueInteger": value,
                "interpretation": _flag(flagged, why),
            }
            for name, value, flagged, why in scales
        ],
    }
