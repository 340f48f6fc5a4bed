"""Events in: signed webhooks from other systems, under /api/v1/webhooks/{sender}. A sender
(infra.webhooks) sends one kind of event for one site (the telephony provider: for every
site); each event is checked (signature over its ID, timestamp and body; the replay
window) and taken once by its ID (a claim in the store: a duplicate gets the first answer).

An EHR's attendance and a partner's answer are answered 202 once Temporal has stored them
in the workflow's history (a signal carrying the event's ID): what a sender must hear about
at once (the patient, the session or referral, whether it can take an event yet) is checked
from the store first, and the workflow applies the event shortly after, once by its ID, a
refusal by the journey's rules becoming a task for the case manager. A telephony callback is
answered 200 once the call's workflow has taken it (an update). A bad event is a 4xx the
sender should not retry; a 503 (Temporal did not take it) frees the event ID for the retry.
What is logged names the sender, the route and the patient's opaque ID, never the body."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clinical.aftercare import (
    CALL_REFERENCE,
    CallOutcome,
    CallReport,
    CheckIn,
    follow_up_call_workflow_id,
)
from clinical.assessment import SocialNeed
from clinical.attendance import SessionStatus
from clinical.identifiers import PatientId, journey_workflow_id, referral_workflow_id
from clinical.inbound import AttendanceEvent, PartnerAnswerEvent
from clinical.protocol import ProgramCatalog, ProtocolError, describe_validation_error
from clinical.referrals import PartnerAnswer
from infra.store import EnrolledPatient
from infra.store.api_clients import KEY
from infra.webhooks import ANY_SITE, EventKind, WebhookRefused, WebhookSender, check_signed
from web.api import PATIENT_ID, Answer, deliver_to, signal_to, taken_once
from web.api_security import API, Problem, action_of, log_call
from web.context import Console, console_of
from web.webhook_bundles import is_bundle, take_bundle
from workflows.follow_up_call import FollowUpCallWorkflow
from workflows.patient_journey import PatientJourneyWorkflow
from workflows.referral import ReferralWorkflow

# What an EHR's Appointment status means for a session (others are not attendance).
ATTENDANCE_OF = {"fulfilled": "attended", "noshow": "missed"}
# How a telephony provider's call statuses read as a check-in attempt's outcome.
OUTCOME_OF = {
    "completed": CallOutcome.reached,
    "declined": CallOutcome.declined,
    "no-answer": CallOutcome.unreachable,
    "busy": CallOutcome.unreachable,
    "failed": CallOutcome.unreachable,
}


@dataclass(frozen=True)
class Event:
    """What an event asks: `update` (or `signal`) with `payload` on the patient's workflow
    (None: the journey), described for the sender by `describe` (a signal's: `accepted`);
    or nothing left to do (`settled`)."""

    patient_id: str
    update: Any = None
    payload: BaseModel | None = None
    workflow_id: str | None = None
    describe: Callable[[Any], str] = str
    settled: str | None = None
    signal: Any = None
    accepted: str = ""


class PartnerEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patient_id: PatientId
    need: SocialNeed
    answer: PartnerAnswer


def _json_of(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise Problem(422, "the body is not JSON") from None


def _appointment(console: Console, sender: WebhookSender, resource: Any, event_id: str) -> Event:
    """A FHIR Appointment whose status became fulfilled or noshow, naming the session by
    the identifier CarePath's FHIR export gave it (`{patient}/{session}`)."""
    from operators.fhir import RECORD_KEY_SYSTEM  # the FHIR models load only for this

    if not isinstance(resource, dict) or resource.get("resourceType") != "Appointment":
        raise Problem(422, "resourceType: an Appointment")
    status = ATTENDANCE_OF.get(str(resource.get("status")))
    if status is None:
        raise Problem(
            422, f"status: {str(resource.get('status'))[:20]!r} is not fulfilled or noshow"
        )
    keys = [
        i.get("value", "")
        for i in resource.get("identifier") or ()
        if isinstance(i, dict) and i.get("system") == RECORD_KEY_SYSTEM
    ]
    if len(keys) != 1 or not isinstance(keys[0], str) or keys[0].count("/") != 1:
        raise Problem(
            422, f"identifier: one of system {RECORD_KEY_SYSTEM}, as CarePath exported it"
        )
    patient_id, session_id = keys[0].split("/")
    found = _patient(console, sender, patient_id)
    try:
        event = AttendanceEvent(
            event_id=event_id, sender=sender.name, session_id=session_id, status=status
        )
    except ValidationError as exc:
        raise Problem(422, describe_validation_error(exc)) from None
    # What the journey's rule (check_attendance) would refuse, as far as the store knows.
    if found.phase.is_terminal:
        raise Problem(409, f"refused: the journey has ended ({found.phase.value})")
    session = console.store.appointment(found.patient_id, session_id)
    if session is None:
        raise Problem(409, f"refused: unknown session {session_id!r} for this patient")
    if session.status == SessionStatus.cancelled:
        raise Problem(409, f"refused: session {session_id} was cancelled")
    if session.starts_at > console.now() and _on_real_days(console, found.program_id):
        raise Problem(
            409,
            f"refused: session {session_id} is on {session.starts_at:%Y-%m-%d %H:%M} UTC "
            "and has not happened yet",
        )
    return Event(
        found.patient_id,
        payload=event,
        signal=PatientJourneyWorkflow.attendance_event,
        accepted=f"accepted: session {session_id} {status}; the journey records it shortly",
    )


REAL_DAY = 86400.0


def _on_real_days(console: Console, program_id: str) -> bool:
    """Whether the program's days are real days, so a session's stored start is when it
    happens (a compressed clock, for demos and benchmarks, holds sessions before their
    calendar start: then the journey alone can tell)."""
    try:
        protocol = ProgramCatalog.of(console.settings.programs_dir).load(program_id)
    except ProtocolError:
        return False
    return protocol.clock.seconds_per_day == REAL_DAY


def _partner_answer(console: Console, sender: WebhookSender, body: bytes, event_id: str) -> Event:
    try:
        answer = PartnerEvent.model_validate(_json_of(body))
        event = PartnerAnswerEvent(event_id=event_id, sender=sender.name, answer=answer.answer)
    except ValidationError as exc:
        raise Problem(422, describe_validation_error(exc)) from None
    found = _patient(console, sender, answer.patient_id)
    workflow_id = referral_workflow_id(found.patient_id, answer.need.value)
    # What the referral's rule (check_partner_report) would refuse, as far as the store
    # knows: its stages within "sent" (accepted or not) only the referral knows.
    referral = console.store.referral_of(workflow_id)
    if referral is None:
        raise Problem(404, f"no {answer.need.value} referral for patient {found.patient_id}")
    if referral.status == "closed":
        raise Problem(409, f"refused: the referral is closed ({referral.outcome})")
    if referral.status != "sent":
        raise Problem(409, f"refused: the referral has not been sent yet ({referral.status})")
    return Event(
        found.patient_id,
        payload=event,
        workflow_id=workflow_id,
        signal=ReferralWorkflow.partner_event,
        accepted=(
            f"accepted: {answer.need.value} referral {answer.answer.value}; "
            "the referral records it shortly"
        ),
    )


class CallEvent(BaseModel):
    """A telephony provider's callback: a call it placed has ended. Fields a provider adds
    are ignored; the answers are the check-in's, when the patient was reached."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["call.completed"]
    call_id: str = Field(max_length=64)
    reference: str = Field(pattern=CALL_REFERENCE, max_length=96)
    status: Literal["completed", "declined", "no-answer", "busy", "failed"]
    answers: CheckIn | None = None


def _call_outcome(console: Console, sender: WebhookSender, body: bytes, event_id: str) -> Event:
    """How a check-in call ended, to the workflow that placed it, as the store recorded at
    the placing: the journey (which calls inside its run) or, for journeys from before, the
    check-in's FollowUpCall workflow. A call whose outcome is recorded already (a callback
    again, after the check-in moved on) is answered from the store and changes nothing."""
    try:
        event = CallEvent.model_validate(_json_of(body))
        report = CallReport(
            reference=event.reference, outcome=OUTCOME_OF[event.status], check_in=event.answers
        )
    except ValidationError as exc:
        raise Problem(422, describe_validation_error(exc)) from None
    if report.outcome is CallOutcome.reached and report.check_in is None:
        raise Problem(422, "answers: a completed call carries the check-in's answers")
    patient_id = report.reference.split("/")[0]
    _patient(console, sender, patient_id)
    recorded = console.store.call_attempt(report.reference)
    if recorded is not None:
        return Event(
            patient_id,
            settled=f"call {report.reference}: {recorded.outcome.value}, recorded before",
        )
    placed_by = console.store.call_placed_by(report.reference)
    if placed_by == journey_workflow_id(patient_id):
        return Event(patient_id, PatientJourneyWorkflow.call_outcome, report)
    # A check-in's own workflow (also a call placed before the store named who placed it).
    workflow_id = follow_up_call_workflow_id(report.reference)
    return Event(patient_id, FollowUpCallWorkflow.call_outcome, report, workflow_id)


def _patient(console: Console, sender: WebhookSender, patient_id: str) -> EnrolledPatient:
    """The patient, if at the sender's site; else 404."""
    try:
        valid = PATIENT_ID.validate_python(patient_id)
    except ValidationError:
        raise Problem(404, "no such patient") from None
    found = console.store.patient(valid)
    if found is None or sender.site_id not in (found.site_id, ANY_SITE):
        where = "" if sender.site_id == ANY_SITE else f" at site {sender.site_id}"
        raise Problem(404, f"no patient {valid}{where}")
    return found


# An EHR's event is an Appointment, or a Bundle of them (web.webhook_bundles).
EVENTS: dict[EventKind, Callable[[Console, WebhookSender, bytes, str], Event]] = {
    EventKind.partner_referrals: _partner_answer,
    EventKind.telephony_calls: _call_outcome,
}


def install(app: FastAPI) -> None:
    @app.post(
        f"{API}/webhooks/{{sender}}",
        tags=["webhooks"],
        status_code=202,
        responses={
            200: {"description": "A telephony callback: the call's workflow has taken it."},
            202: {
                "description": "Accepted: the event is stored in the workflow's history "
                "(durable with Temporal) and is applied shortly after, once by its ID; a "
                "refusal by the journey's rules then becomes a task for the case manager."
            },
            503: {"description": "Temporal did not take the event: retry it (same ID)."},
        },
    )
    async def api_webhook(request: Request, sender: str) -> Response:
        """An event from a webhook sender, signed as Standard Webhooks signs (headers
        webhook-id, webhook-timestamp, webhook-signature). An EHR's attendance and a
        partner's answer are answered 202 once Temporal has stored them: what the sender
        must hear about at once (unknown or other-site patient, unknown or not yet held
        session, unknown referral or one not with the partner) is checked first and
        refused with a 4xx. A telephony callback is answered 200 once taken. An EHR may
        send a FHIR Bundle of up to 100 Appointments (a subscription notification, a batch or
        a collection): each entry is an event of its own (ID `{webhook-id}:{index}`), and the
        answer (202 if any was accepted) gives each entry's status and detail in
        `result.entries`; 503 if Temporal did not take one of them (the retry sends all)."""
        console = console_of(request)
        known = console.senders.get(sender)
        body = await request.body()
        if known is None:
            log_call(request, "-", action_of(request), outcome="denied")
            raise Problem(401, "no such webhook sender")
        actor = f"webhook:{known.name}"
        event_id = request.headers.get("webhook-id", "")
        try:
            if not KEY.fullmatch(event_id):
                raise WebhookRefused("webhook-id: 1-64 of A-Z, a-z, 0-9, '.', '_', ':', '-'")
            check_signed(
                known,
                event_id,
                request.headers.get("webhook-timestamp", ""),
                request.headers.get("webhook-signature", ""),
                body,
                console.now(),
            )
        except WebhookRefused as exc:
            log_call(request, actor, action_of(request), outcome="denied")
            raise Problem(401, str(exc)) from None
        request.state.actor = actor

        async def act(update_id: str | None) -> tuple[int, Any]:
            if known.kind is EventKind.ehr_appointments:
                resource = _json_of(body)
                if is_bundle(resource):
                    status, answer, request.state.touched = await take_bundle(
                        console, known, resource, event_id, _appointment
                    )
                    return status, answer
                event = _appointment(console, known, resource, event_id)
            else:
                event = EVENTS[known.kind](console, known, body, event_id)
            request.state.patient_id = event.patient_id
            if event.settled is not None:
                return 200, Answer(message=event.settled)
            if event.signal is not None:
                await signal_to(
                    console, event.patient_id, event.signal, event.payload, event.workflow_id
                )
                return 202, Answer(message=event.accepted)
            result = await deliver_to(
                console, event.patient_id, event.update, event.payload, event.workflow_id, update_id
            )
            return 200, Answer(message=event.describe(result))

        fingerprint = hashlib.sha256(body).hexdigest()
        return await taken_once(
            request, actor, event_id, fingerprint, act, {"Webhook-Duplicate": "true"}
        )
