"""An event for a subscriber as FHIR: the resource that says what happened, carrying the
Part 2 security labels, in a small envelope with the event's ID.

  phase_changed        EpisodeOfCare: its status now, the phase in a statusHistory entry
  task_opened/closed   Task: a case manager's task (its kind, never its free-text detail)
  referral_closed      Task whose focus is the referral's ServiceRequest, with its outcome
  check_in_concluded   Observation: the check-in's outcome, and for a reached patient the
                       days of use, BAM Use/Risk/Protective and the PHQ-9 total

Resources name the patient by the opaque patient ID (a logical reference by identifier: the
receiver resolves it in its own records) and reuse the export's ids (operators.fhir), so an
event's Task is the same resource the export holds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhir.resources.R4B.domainresource import DomainResource
from fhir.resources.R4B.episodeofcare import EpisodeOfCare
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.task import Task

from clinical.aftercare import CheckIn
from clinical.instruments import score_bam, score_phq9
from clinical.phases import Phase
from clinical.referrals import ReferralOutcome, ReferralStage
from infra.store.events import (
    CHECK_IN_CONCLUDED,
    PHASE_CHANGED,
    REFERRAL_CLOSED,
    TASK_CLOSED,
    TASK_OPENED,
    StoredEvent,
)
from operators.fhir import (
    CAREPATH_FHIR,
    PART2_SECURITY,
    PATIENT_ID_SYSTEM,
    PHASE_EXTENSION,
    PHASE_SYSTEM,
    RECORD_KEY_SYSTEM,
    SOCIAL_NEED_SYSTEM,
    STAFF_ID_SYSTEM,
    episode_status,
    resource_id,
    task_status,
)

Json = dict[str, Any]
EVENT_TYPE_PREFIX = "carepath."
TASK_KIND_SYSTEM = f"{CAREPATH_FHIR}/CodeSystem/task-kind"
CHECK_IN_SYSTEM = f"{CAREPATH_FHIR}/CodeSystem/check-in"
_MODELS: dict[str, type[DomainResource]] = {
    "EpisodeOfCare": EpisodeOfCare,
    "Task": Task,
    "Observation": Observation,
}


def _patient(patient_id: str) -> Json:
    return {"identifier": {"system": PATIENT_ID_SYSTEM, "value": patient_id}}


def _coding(system: str, code: str) -> Json:
    return {"system": system, "code": code}


def event_resource(event: StoredEvent) -> Json:
    """The event's FHIR resource (validated by its R4B model), labelled for Part 2."""
    build = _BUILDERS[event.kind]
    body = {**build(event), "meta": {"security": [dict(label) for label in PART2_SECURITY]}}
    model = _MODELS[body["resourceType"]].model_validate(body)
    resource: Json = model.model_dump(mode="json", exclude_none=True)
    return resource


def event_payload(event: StoredEvent) -> Json:
    """What a subscriber receives: the envelope and the resource."""
    return {
        "id": event.event_id,
        "type": EVENT_TYPE_PREFIX + event.kind,
        "occurred_at": event.at.isoformat(),
        "patient_id": event.patient_id,
        "site_id": event.site_id,
        "resource": event_resource(event),
    }


def description(event: StoredEvent) -> str:
    """What was sent, for the accounting of disclosures."""
    f = event.facts
    return {
        PHASE_CHANGED: f"phase change to {f.get('phase')} (EpisodeOfCare)",
        TASK_OPENED: f"a {f.get('task_kind')} task opened (Task)",
        TASK_CLOSED: f"a {f.get('task_kind')} task closed (Task)",
        REFERRAL_CLOSED: f"the {f.get('need')} referral's outcome, {f.get('outcome')} (Task)",
        CHECK_IN_CONCLUDED: f"a check-in's result, {f.get('outcome')}, with any scores "
        "(Observation)",
    }[event.kind]


def _episode(event: StoredEvent) -> Json:
    phase = Phase(event.facts["phase"])
    status = episode_status(phase, first_intake=True)
    return {
        "resourceType": "EpisodeOfCare",
        "id": resource_id("EpisodeOfCare", event.patient_id),
        "status": status,
        "statusHistory": [
            {
                "extension": [
                    {"url": PHASE_EXTENSION, "valueCoding": _coding(PHASE_SYSTEM, phase)}
                ],
                "status": status,
                "period": {"start": event.at.isoformat()},
            }
        ],
        "patient": _patient(event.patient_id),
    }


def _task(event: StoredEvent) -> Json:
    f, key = event.facts, _key(event)
    body: Json = {
        "resourceType": "Task",
        "id": resource_id("Task", key),
        "identifier": [{"system": RECORD_KEY_SYSTEM, "value": key}],
        "status": "requested" if event.kind == TASK_OPENED else "completed",
        "intent": "order",
        "code": {"coding": [_coding(TASK_KIND_SYSTEM, f["task_kind"])], "text": f["task_kind"]},
        "for": _patient(event.patient_id),
        "lastModified": event.at.isoformat(),
    }
    if event.kind == TASK_OPENED:
        body["authoredOn"] = event.at.isoformat()
        body["owner"] = {"identifier": {"system": STAFF_ID_SYSTEM, "value": f["case_manager_id"]}}
    if f.get("due_at"):
        body["restriction"] = {"period": {"end": f["due_at"]}}
    return body


def _referral(event: StoredEvent) -> Json:
    f, key = event.facts, _key(event)
    outcome = ReferralOutcome(f["outcome"])
    return {
        "resourceType": "Task",
        "id": resource_id("Task", key),
        "identifier": [{"system": RECORD_KEY_SYSTEM, "value": key}],
        "status": task_status(ReferralStage.closed, outcome),
        "businessStatus": {"text": f"closed: {outcome}"},
        "intent": "order",
        "code": {"coding": [_coding("http://hl7.org/fhir/CodeSystem/task-code", "fulfill")]},
        "focus": {"reference": f"ServiceRequest/{resource_id('ServiceRequest', key)}"},
        "for": _patient(event.patient_id),
        "reasonCode": {"coding": [_coding(SOCIAL_NEED_SYSTEM, f["need"])]},
        "lastModified": event.at.isoformat(),
    }


def _check_in(event: StoredEvent) -> Json:
    f = event.facts
    body: Json = {
        "resourceType": "Observation",
        "id": resource_id("Observation", f"{_key(event)}/check-in"),
        "status": "final",
        "category": [
            {
                "coding": [
                    _coding("http://terminology.hl7.org/CodeSystem/observation-category", "survey")
                ]
            }
        ],
        "code": {"coding": [_coding(CHECK_IN_SYSTEM, "outcome")], "text": "aftercare check-in"},
        "subject": _patient(event.patient_id),
        "effectiveDateTime": event.at.isoformat(),
        "valueCodeableConcept": {"coding": [_coding(CHECK_IN_SYSTEM, f["outcome"])]},
    }
    if f.get("check_in"):
        body["component"] = _scores(CheckIn.model_validate(f["check_in"]))
    return body


def _scores(answers: CheckIn) -> list[Json]:
    found = [("days-of-use", answers.days_of_use)]
    if answers.bam is not None:
        bam = score_bam(answers.bam)
        found += [("bam-use", bam.use), ("bam-risk", bam.risk), ("bam-protective", bam.protective)]
    if answers.phq9 is not None:
        found.append(("phq9-total", score_phq9(answers.phq9).total))
    return [
        {"code": {"coding": [_coding(CHECK_IN_SYSTEM, name)]}, "valueInteger": value}
        for name, value in found
    ]


def _key(event: StoredEvent) -> str:
    # The change's own key travels in the facts only where the resource needs it.
    return str(event.facts.get("key", event.event_id))


_BUILDERS: Mapping[str, Any] = {
    PHASE_CHANGED: _episode,
    TASK_OPENED: _task,
    TASK_CLOSED: _task,
    REFERRAL_CLOSED: _referral,
    CHECK_IN_CONCLUDED: _check_in,
}
