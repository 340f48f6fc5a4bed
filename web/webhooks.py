"""Events in: signed webhooks from other systems, under /api/v1/webhooks/{sender}. A sender
(infra.webhooks) sends one kind of event for one site; each event is checked (signature over
its ID, timestamp and body; the replay window), taken once by its ID (a duplicate gets the
first answer, and the workflow dedupes by the same ID), and answered 2xx only once the
journey has taken it (the update has completed: it is in the workflow's history). A bad
event is a 4xx the sender should not retry; what is logged names the sender, the route
and the patient's opaque ID, never the body."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from clinical.assessment import SocialNeed
from clinical.identifiers import PatientId, referral_workflow_id
from clinical.protocol import describe_validation_error
from clinical.referrals import PartnerAnswer, PartnerReport
from clinical.requests import AttendanceSheet
from infra.store.api_clients import KEY
from infra.webhooks import EventKind, WebhookRefused, WebhookSender, check_signed
from web.actions import ACTIONS
from web.api import Answer, deliver_to, taken_once
from web.api_security import API, Problem, action_of, log_call
from web.context import Console, console_of
from workflows.patient_journey import PatientJourneyWorkflow
from workflows.referral import ReferralWorkflow

# What an EHR's Appointment status means for a session (others are not attendance).
ATTENDANCE_OF = {"fulfilled": "attended", "noshow": "missed"}
Event = tuple[str, Any, BaseModel, str | None, str]
"""The patient, the update, its request, the workflow (None: the journey), the action."""


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


def _appointment(console: Console, sender: WebhookSender, body: bytes) -> Event:
    """A FHIR Appointment whose status became fulfilled or noshow, naming the session by
    the identifier CarePath's FHIR export gave it (`{patient}/{session}`)."""
    from operators.fhir import RECORD_KEY_SYSTEM  # the FHIR models load only for this

    resource = _json_of(body)
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
    cm = _case_manager(console, sender, patient_id)
    try:
        sheet = AttendanceSheet(
            case_manager_id=cm, marks=[{"session_id": session_id, "status": status}]
        )
    except ValidationError as exc:
        raise Problem(422, describe_validation_error(exc)) from None
    update = PatientJourneyWorkflow.record_attendance_sheet
    return patient_id, update, sheet, None, "attendance"


def _partner_answer(console: Console, sender: WebhookSender, body: bytes) -> Event:
    try:
        event = PartnerEvent.model_validate(_json_of(body))
    except ValidationError as exc:
        raise Problem(422, describe_validation_error(exc)) from None
    _case_manager(console, sender, event.patient_id)
    report = PartnerReport(answer=event.answer, reported_by=f"webhook:{sender.name}")
    workflow_id = referral_workflow_id(event.patient_id, event.need.value)
    return (
        event.patient_id,
        ReferralWorkflow.partner_response,
        report,
        workflow_id,
        "partner-answer",
    )


def _case_manager(console: Console, sender: WebhookSender, patient_id: str) -> str:
    """The patient's case manager, if the patient is at the sender's site; else 404."""
    try:
        valid = TypeAdapter(PatientId).validate_python(patient_id)
    except ValidationError:
        raise Problem(404, "no such patient") from None
    found = console.store.patient(valid)
    if found is None or found.site_id != sender.site_id:
        raise Problem(404, f"no patient {valid} at site {sender.site_id}")
    return found.case_manager_id


EVENTS: dict[EventKind, Callable[[Console, WebhookSender, bytes], Event]] = {
    EventKind.ehr_appointments: _appointment,
    EventKind.partner_referrals: _partner_answer,
}


def install(app: FastAPI) -> None:
    @app.post(f"{API}/webhooks/{{sender}}", tags=["webhooks"])
    async def api_webhook(request: Request, sender: str) -> Response:
        """An event from a webhook sender, signed as Standard Webhooks signs (headers
        webhook-id, webhook-timestamp, webhook-signature)."""
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
            patient_id, update, payload, workflow_id, action = EVENTS[known.kind](
                console, known, body
            )
            request.state.patient_id = patient_id
            result = await deliver_to(console, patient_id, update, payload, workflow_id, update_id)
            return 200, Answer(message=ACTIONS[action].describe(result))

        fingerprint = hashlib.sha256(body).hexdigest()
        return await taken_once(
            request, actor, event_id, fingerprint, act, {"Webhook-Duplicate": "true"}
        )
