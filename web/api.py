"""/api/v1: what the command line does, as JSON for other systems (an EHR, a partner portal,
a script). The same requests, validators and updates as the command line and the console
(services.journeys, services.enrolment); the caller is an API client (web.api_security),
and a request made on a patient's journey is made for the patient's own case manager, with
the client named in the access log.

Every POST honours an `Idempotency-Key`: the key is recorded before acting, the answer once
acted, and the workflows dedupe the key themselves (it is the update's ID; an enrolment's
key is in its journey's memo), so a retry after a lost answer, even one whose process died
mid-request, acts once and gets the first answer."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import date
from typing import Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from temporalio.service import RPCError

from clinical.assessment import DimensionRatings, Enrolment, SocialNeed
from clinical.consents import api_client_kind
from clinical.disclosures import accounting_since
from clinical.identifiers import (
    CaseManagerId,
    PatientId,
    SiteId,
    referral_workflow_id,
)
from clinical.phases import Phase
from clinical.protocol import ProgramCatalog, describe_validation_error
from clinical.referrals import CancelReason, PartnerAnswer, PartnerReport, ReferralCancel
from clinical.requests import (
    AttendanceMark,
    AttendanceSheet,
    CheckInAdjustment,
    DischargeReason,
    DischargeRequest,
    FamilyConsentChange,
    ProgressReview,
    ReferralRequest,
    RelapseReport,
    TaskDone,
)
from infra.store.access_log import Touch
from infra.store.api_clients import KEY, Answered, Mismatch
from operators import report
from operators.caseload import Scope, inbox
from operators.find import PatientQuery, find_patients
from operators.snapshot import stored_snapshot
from services.consents import ConsentRefused, WrittenForm, consent_rows
from services.consents import record as record_consent
from services.enrolment import EnrolmentRefused, enrol, journey_input
from services.journeys import (
    RequestFailed,
    Why,
    deliver,
    query_status,
    send_event,
    task_completion,
    worker_running,
)
from web.actions import ACTIONS
from web.api_security import (
    API,
    PROBLEM,
    Caller,
    Problem,
    action_of,
    actor_of,
    caller,
    grant,
    log_call,
    log_touches,
    problem_body,
    problem_response,
)
from web.context import Console, console_of
from workflows.patient_journey import PatientJourneyWorkflow
from workflows.referral import ReferralWorkflow

STATUS_FOR = {Why.bad_input: 422, Why.refused: 409, Why.unreachable: 503}
PATIENT_ID: TypeAdapter[str] = TypeAdapter(PatientId)  # built once: building one costs
JSON = "application/json"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AttendanceBody(_Body):
    marks: list[AttendanceMark] = Field(min_length=1, max_length=64)


class DischargeBody(_Body):
    reason: DischargeReason


class RelapseBody(_Body):
    ratings: DimensionRatings


class ReviewBody(_Body):
    decision: Literal["extend", "shorten", "approve_step_down", "change_level"]
    weeks: int | None = None
    level: str | None = None


class ReferralBody(_Body):
    need: SocialNeed


class CancelReferralBody(_Body):
    reason: CancelReason


class PartnerAnswerBody(_Body):
    answer: PartnerAnswer


class FamilyConsentBody(_Body):
    granted: bool


class ConsentBody(_Body):
    """A consent given in writing (as `starter.py consents ... give`): to whom (`api:NAME`,
    `subscriber:NAME`, `partner:NEED`, `family`, or a recipient in words), for what purpose,
    what information, until a day (`expires`, YYYY-MM-DD) or an event (`until_event`)."""

    to: str = Field(max_length=100)
    purpose: str = Field(default="treatment", max_length=40)
    information: str | None = Field(default=None, max_length=400)
    expires: str | None = Field(default=None, max_length=20)
    until_event: str | None = Field(default=None, max_length=400)
    signed_on: str | None = Field(default=None, max_length=20)
    signed_by: str = Field(default="patient", max_length=20)


class RevokeBody(_Body):
    """Whom the revoked consent named (as `starter.py consents ... revoke --to`)."""

    to: str = Field(max_length=100)


class CheckInsBody(_Body):
    days: list[int] = Field(min_length=1, max_length=24)
    reason: Literal["patient_request", "clinical"]


class Answer(BaseModel):
    """A request's one-line answer (as the command line prints it) and the workflow's."""

    message: str
    result: Any = None


def _built(model: type[BaseModel], **fields: Any) -> Any:
    try:
        return model(**fields)
    except ValidationError as exc:
        raise Problem(422, describe_validation_error(exc)) from None


def by_case_manager(
    update: Any, model: type[BaseModel], body: BaseModel
) -> Callable[[str, str], tuple[Any, BaseModel, str | None]]:
    """The journey's `update` with `model` built from the body, in the name of the patient's
    case manager: what most of the API's journey requests are."""
    return lambda pid, cm: (update, _built(model, case_manager_id=cm, **body.model_dump()), None)


def _json(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return jsonable_encoder(value)


def patient_of(request: Request, found: Caller, patient_id: str) -> tuple[str, str]:
    """The patient's ID and case manager, if the patient is at the client's site; otherwise
    404 (another site's patient looks like none), logged as denied."""
    console = console_of(request)
    try:
        valid: str = PATIENT_ID.validate_python(patient_id)
    except ValidationError:
        raise Problem(404, "no such patient") from None
    row = console.store.patient(valid)
    if row is None or row.site_id != found.client.site_id:
        log_call(request, actor_of(found.client), action_of(request), valid, "denied")
        raise Problem(404, f"no patient {valid} at site {found.client.site_id}")
    request.state.patient_id = valid
    return valid, row.case_manager_id


def _fingerprint(request: Request, body: bytes) -> str:
    return hashlib.sha256(f"{request.method} {request.url.path}\n".encode() + body).hexdigest()


async def once(
    request: Request,
    found: Caller,
    act: Callable[[str | None], Awaitable[tuple[int, Any]]],
) -> Response:
    """Carry out a POST once per `Idempotency-Key` (if given): `act` receives the ID the
    workflow dedupes by, and answers (status, JSON body); a 4xx answer is an answer too."""
    key = request.headers.get("idempotency-key")
    if key is None:
        status, body = await act(None)
        return answered(request, status, json.dumps(_json(body)))
    if not KEY.fullmatch(key):
        raise Problem(400, "Idempotency-Key: 1-64 of A-Z, a-z, 0-9, '.', '_', ':', '-'")
    fingerprint = _fingerprint(request, await request.body())
    return await taken_once(
        request, actor_of(found.client), key, fingerprint, act, {"Idempotent-Replayed": "true"}
    )


async def taken_once(
    request: Request,
    owner: str,
    key: str,
    fingerprint: str,
    act: Callable[[str | None], Awaitable[tuple[int, Any]]],
    replayed: dict[str, str],
) -> Response:
    """`act` once for `owner`'s `key`: recorded before acting, its answer after; a key
    answered before gives that answer again (with the `replayed` headers). The workflow
    dedupes by the ID `act` receives, so a key whose process died acts once too."""
    console = console_of(request)
    claim = console.clients.claim(owner, key, fingerprint, console.now())
    if isinstance(claim, Mismatch):
        raise Problem(422, f"{key} was used for another request")
    if isinstance(claim, Answered):
        log_call(
            request,
            request.state.actor,
            action_of(request) + " (replayed)",
            getattr(request.state, "patient_id", None),
            "allowed" if claim.status_code < 400 else "refused",
        )
        media = JSON if claim.status_code < 400 else PROBLEM
        return Response(
            claim.body, status_code=claim.status_code, media_type=media, headers=replayed
        )
    try:
        status, body = await act(f"{owner}:{key}")
    except Problem as problem:
        if problem.status < 500 and problem.status != 429:
            refusal = problem_body(problem.status, problem.detail)
            console.clients.answer(owner, key, problem.status, refusal)
        else:  # nothing was taken: the sender's retry is a request of its own
            console.clients.release(owner, key)
        raise
    text = json.dumps(_json(body))
    return answered(request, status, text, console.clients.answering(owner, key, status, text))


def answered(
    request: Request, status: int, text: str, along: Callable[[Any], object] | None = None
) -> Response:
    """A success, in the access log under the request's actor (with `along`, the key's
    answer, in the same transaction): an entry for its patient, or for each patient it
    touched (`request.state.touched`, a webhook's bundle)."""
    touched = getattr(request.state, "touched", None) or [
        Touch(getattr(request.state, "patient_id", None))
    ]
    log_touches(request, request.state.actor, action_of(request), touched, along)
    return Response(text, status_code=status, media_type=JSON)


async def deliver_to(
    console: Console,
    patient_id: str,
    update: Any,
    payload: Any,
    workflow_id: str | None,
    update_id: str | None,
) -> Any:
    try:
        client = await console.connect()
        return await deliver(
            client, console.settings.task_queue, patient_id, update, payload, workflow_id, update_id
        )
    except RequestFailed as exc:
        raise Problem(STATUS_FOR[exc.why], str(exc)) from None


async def signal_to(
    console: Console, patient_id: str, signal: Any, event: Any, workflow_id: str | None
) -> None:
    try:
        client = await console.connect()
        await send_event(client, patient_id, signal, event, workflow_id)
    except RequestFailed as exc:
        raise Problem(STATUS_FOR[exc.why], str(exc)) from None


def install(app: FastAPI) -> None:
    """Adds /api/v1's routes to the app (flat: the route-enumeration test walks them)."""
    seen = Depends(caller)

    async def journey_update(
        request: Request,
        found: Caller,
        patient_id: str,
        action: str,
        build: Callable[[str, str], tuple[Any, BaseModel, str | None]],
    ) -> Response:
        """A request to one of the patient's workflows: `build(patient, case manager)`
        gives the update, its request and the workflow (None: the journey)."""
        pid, cm = patient_of(request, found, patient_id)
        console = console_of(request)

        async def act(update_id: str | None) -> tuple[int, Any]:
            update, payload, workflow_id = build(pid, cm)
            result = await deliver_to(console, pid, update, payload, workflow_id, update_id)
            return 200, Answer(message=ACTIONS[action].describe(result), result=_json(result))

        return await once(request, found, act)

    @app.post(f"{API}/patients", status_code=201, tags=["patients"])
    @grant("patients:write")
    async def api_enrol(request: Request, enrolment: Enrolment, found: Caller = seen) -> Response:
        """Enrol a patient at the client's site: the journey starts (refused, 409, if the
        patient was enrolled before)."""
        console = console_of(request)
        if enrolment.site_id != found.client.site_id:
            raise Problem(
                403, f"client {found.client.name} enrols at site {found.client.site_id} only"
            )
        request.state.patient_id = enrolment.patient_id

        async def act(key: str | None) -> tuple[int, Any]:
            try:
                journey = journey_input(enrolment, console.settings, console.store, console.now())
                client = await console.connect()
                await enrol(client, console.settings.task_queue, journey, key)
            except EnrolmentRefused as exc:
                raise Problem(422 if exc.bad_input else 409, str(exc)) from None
            except RequestFailed as exc:
                raise Problem(STATUS_FOR[exc.why], str(exc)) from None
            except RPCError as exc:
                raise Problem(503, f"the Temporal server refused: {exc.message}") from None
            return 201, Answer(
                message=f"enrolled {enrolment.patient_id} in {enrolment.program_id}",
                result={"patient_id": enrolment.patient_id},
            )

        return await once(request, found, act)

    @app.get(f"{API}/patients/{{patient_id}}", tags=["patients"])
    @grant("patients:read", patient=True)
    async def api_status(request: Request, patient_id: str, found: Caller = seen) -> Response:
        """Where the patient's journey stands: the journey's own answer where a worker
        runs (`source` journey), else what the store knew (`source` store, with `as_of`)."""
        pid, _ = patient_of(request, found, patient_id)
        console = console_of(request)
        try:
            client = await console.connect()
            live = await worker_running(client, console.settings.task_queue)
            status: Any = await query_status(client, pid) if live else None
        except RequestFailed as exc:
            if exc.why is not Why.unreachable:
                raise Problem(STATUS_FOR[exc.why], str(exc)) from None
            status = None
        if status is None:
            snapshot = stored_snapshot(console.store, pid, console.zone_of(found.client.site_id))
            if snapshot is None:
                raise Problem(404, f"no patient {pid} at site {found.client.site_id}")
            return answered(request, 200, snapshot.model_dump_json())
        body = {"source": "journey", **status.model_dump(mode="json")}
        return answered(request, 200, json.dumps(body))

    @app.post(f"{API}/patients/{{patient_id}}/attendance", tags=["journey"])
    @grant("attendance:write", patient=True)
    async def api_attendance(
        request: Request, patient_id: str, sheet: AttendanceBody, found: Caller = seen
    ) -> Response:
        """An attendance sheet: one or more sessions' marks, recorded whole or refused whole."""
        return await journey_update(
            request,
            found,
            patient_id,
            "attendance",
            by_case_manager(PatientJourneyWorkflow.record_attendance_sheet, AttendanceSheet, sheet),
        )

    @app.post(f"{API}/patients/{{patient_id}}/discharge", tags=["journey"])
    @grant("patients:write", patient=True)
    async def api_discharge(
        request: Request, patient_id: str, body: DischargeBody, found: Caller = seen
    ) -> Response:
        return await journey_update(
            request,
            found,
            patient_id,
            "discharge",
            by_case_manager(PatientJourneyWorkflow.discharge, DischargeRequest, body),
        )

    @app.post(f"{API}/patients/{{patient_id}}/reviews", tags=["journey"])
    @grant("patients:write", patient=True)
    async def api_review(
        request: Request, patient_id: str, body: ReviewBody, found: Caller = seen
    ) -> Response:
        """A progress review of the intensive phase."""
        return await journey_update(
            request,
            found,
            patient_id,
            "review",
            by_case_manager(PatientJourneyWorkflow.review_progress, ProgressReview, body),
        )

    @app.post(f"{API}/patients/{{patient_id}}/relapse", tags=["journey"])
    @grant("patients:write", patient=True)
    async def api_relapse(
        request: Request, patient_id: str, body: RelapseBody, found: Caller = seen
    ) -> Response:
        """A relapse, with the reassessment's six ratings."""
        return await journey_update(
            request,
            found,
            patient_id,
            "relapse",
            by_case_manager(PatientJourneyWorkflow.report_relapse, RelapseReport, body),
        )

    @app.post(f"{API}/patients/{{patient_id}}/family-consent", tags=["journey"])
    @grant("patients:write", patient=True)
    async def api_family_consent(
        request: Request, patient_id: str, body: FamilyConsentBody, found: Caller = seen
    ) -> Response:
        """The patient gives (`granted` true) or withdraws family consent."""
        return await journey_update(
            request,
            found,
            patient_id,
            "family-consent",
            by_case_manager(
                PatientJourneyWorkflow.change_family_consent, FamilyConsentChange, body
            ),
        )

    @app.post(f"{API}/patients/{{patient_id}}/check-ins", tags=["journey"])
    @grant("patients:write", patient=True)
    async def api_check_ins(
        request: Request, patient_id: str, body: CheckInsBody, found: Caller = seen
    ) -> Response:
        """Reschedule the aftercare check-ins ahead (aftercare days)."""
        return await journey_update(
            request,
            found,
            patient_id,
            "check-ins",
            by_case_manager(PatientJourneyWorkflow.adjust_check_ins, CheckInAdjustment, body),
        )

    @app.post(f"{API}/patients/{{patient_id}}/referrals", tags=["referrals"])
    @grant("referrals:write", patient=True)
    async def api_refer(
        request: Request, patient_id: str, body: ReferralBody, found: Caller = seen
    ) -> Response:
        """Refer the patient to a partner service for a need (its loop starts)."""
        return await journey_update(
            request,
            found,
            patient_id,
            "refer",
            by_case_manager(PatientJourneyWorkflow.refer, ReferralRequest, body),
        )

    @app.post(f"{API}/patients/{{patient_id}}/referrals/{{need}}/cancel", tags=["referrals"])
    @grant("referrals:write", patient=True)
    async def api_cancel_referral(
        request: Request,
        patient_id: str,
        need: SocialNeed,
        body: CancelReferralBody,
        found: Caller = seen,
    ) -> Response:
        """End a referral that is no longer wanted."""
        return await journey_update(
            request,
            found,
            patient_id,
            "cancel-referral",
            lambda pid, cm: (
                ReferralWorkflow.cancel,
                _built(ReferralCancel, case_manager_id=cm, **body.model_dump()),
                referral_workflow_id(pid, need.value),
            ),
        )

    @app.post(f"{API}/patients/{{patient_id}}/referrals/{{need}}/answer", tags=["referrals"])
    @grant("referrals:answer", patient=True)
    async def api_partner_answer(
        request: Request,
        patient_id: str,
        need: SocialNeed,
        body: PartnerAnswerBody,
        found: Caller = seen,
    ) -> Response:
        """A partner service's answer to a referral (reported by this client)."""
        return await journey_update(
            request,
            found,
            patient_id,
            "partner-answer",
            lambda pid, cm: (
                ReferralWorkflow.partner_response,
                _built(PartnerReport, answer=body.answer, reported_by=actor_of(found.client)),
                referral_workflow_id(pid, need.value),
            ),
        )

    @app.get(f"{API}/tasks", tags=["tasks"])
    @grant("tasks:read")
    async def api_tasks(
        request: Request,
        found: Caller = seen,
        patient: str | None = Query(default=None, max_length=16),
        case_manager: str | None = Query(default=None, max_length=16),
    ) -> Response:
        """The open tasks of the client's site (of one patient, or one case manager)."""
        console = console_of(request)
        found_tasks = [
            asdict(t)
            for t in inbox(console.store, Scope(site_id=found.client.site_id), console.now())
            if (patient is None or t.patient_id == patient)
            and (case_manager is None or t.case_manager_id == case_manager)
        ]
        return answered(request, 200, json.dumps(jsonable_encoder(found_tasks)))

    @app.post(f"{API}/tasks/{{task_id}}/done", tags=["tasks"])
    @grant("tasks:write", patient=True)
    async def api_task_done(request: Request, task_id: int, found: Caller = seen) -> Response:
        """Mark a task done: delivered to the workflow that opened it, which decides what
        done means (a consent task records the consent and sends the referral)."""
        console = console_of(request)
        open_task = console.store.task(task_id)
        if open_task is None:
            raise Problem(404, f"no task {task_id}")
        pid, _ = patient_of(request, found, open_task.patient_id)

        async def act(update_id: str | None) -> tuple[int, Any]:
            # With a key, a done task may be this request's own, done before its process
            # died: the workflow answers that (it dedupes the key), or refuses.
            if not open_task.open and update_id is None:
                raise Problem(409, f"task {task_id} is already done (by {open_task.completed_by})")
            update, workflow_id = task_completion(open_task)
            done = TaskDone(case_manager_id=open_task.case_manager_id, task_key=open_task.key)
            message = await deliver_to(console, pid, update, done, workflow_id, update_id)
            return 200, Answer(message=f"task {task_id} ({pid}): {message}")

        return await once(request, found, act)

    @app.get(f"{API}/caseload", tags=["patients"])
    @grant("patients:read")
    async def api_caseload(
        request: Request,
        found: Caller = seen,
        case_manager: str | None = Query(default=None, max_length=16),
        phase: str | None = Query(default=None, max_length=16),
    ) -> Response:
        """The site's active patients (of one case manager, in one phase): where each
        stands, from the store. IDs only: the client has the names."""
        console = console_of(request)
        entries = console.store.caseload(
            console.now(), case_manager_id=case_manager, site_id=found.client.site_id
        )
        rows = [
            asdict(e.patient)
            | {
                "week": e.week,
                "attended": e.attended,
                "missed": e.missed,
                "attendance_rate": e.attendance_rate,
                "open_tasks": e.open_tasks,
                "next_contact": e.next_contact,
            }
            for e in entries
            if phase is None or e.patient.phase.value == phase
        ]
        return answered(request, 200, json.dumps(jsonable_encoder(rows)))

    @app.get(f"{API}/patients", tags=["patients"])
    @grant("patients:read")
    async def api_find(
        request: Request,
        found: Caller = seen,
        phase: Phase | None = None,
        case_manager: CaseManagerId | None = None,
        site: SiteId | None = None,
        risk: Literal["low", "moderate", "high"] | None = None,
        overdue: bool = False,
        enrolled_from: date | None = None,
        enrolled_to: date | None = None,
        active: bool = False,
    ) -> Response:
        """Find the site's patients (as `find --json`): by phase, case manager, risk,
        overdue contact (the next session or task past due), enrolment day (UTC, `to`
        exclusive), journeys still running. From the store; IDs only."""
        if site is not None and site != found.client.site_id:
            raise Problem(403, f"client {found.client.name} reads site {found.client.site_id} only")
        console = console_of(request)
        query = PatientQuery(
            phase=phase,
            case_manager_id=case_manager,
            site_id=found.client.site_id,
            risk=risk,
            overdue=overdue,
            enrolled_from=enrolled_from,
            enrolled_to=enrolled_to,
            active=active,
        )
        rows = find_patients(console.store, query, console.now())
        return answered(request, 200, json.dumps(rows))

    @app.get(f"{API}/reports/outcomes", tags=["reports"])
    @grant("reports:read")
    async def api_outcomes(
        request: Request,
        found: Caller = seen,
        case_manager: str | None = Query(default=None, max_length=16),
        program: str | None = Query(default=None, max_length=64),
        enrolled_from: str | None = Query(default=None, max_length=10),
        enrolled_to: str | None = Query(default=None, max_length=10),
    ) -> Response:
        """The outcomes report of the client's site (as `report --json`)."""
        console = console_of(request)
        try:
            cohort = report.cohort_filter(
                found.client.site_id, case_manager, program, enrolled_from, enrolled_to
            )
        except report.ReportError as exc:
            raise Problem(422, str(exc)) from None
        outcomes = report.cohort_report(
            console.store, ProgramCatalog.of(console.settings.programs_dir), cohort, console.now()
        )
        return answered(request, 200, json.dumps(report.as_json(outcomes)))

    @app.get(f"{API}/patients/{{patient_id}}/fhir", tags=["patients"])
    @grant("patients:read", patient=True)
    async def api_fhir(request: Request, patient_id: str, found: Caller = seen) -> Response:
        """The patient's journey as a FHIR R4 Bundle (as `export --fhir`)."""
        # Imported here: the FHIR models take ~0.3 s to load, which no other route should pay.
        from operators.fhir import ExportError, journey_bundle, journey_record, with_partner_answers

        pid, _ = patient_of(request, found, patient_id)
        console = console_of(request)
        # A copy for the client is a disclosure to it: only under the patient's consent.
        why_not = console.store.why_not_consented(
            pid, api_client_kind(found.client.name), "treatment", console.now()
        )
        if why_not is not None:
            raise Problem(
                409,
                f"refused: no consent of {pid}'s covers disclosure to API client "
                f"{found.client.name} for treatment ({why_not})",
            )
        site = console.sites.sites.get(found.client.site_id)
        try:
            record = journey_record(
                console.store,
                ProgramCatalog.of(console.settings.programs_dir),
                pid,
                "UTC" if site is None else site.zone,
            )
            if record.awaiting_partners:
                record = await with_partner_answers(record, await console.connect())
        except ExportError as exc:
            raise Problem(422, str(exc)) from None
        except RequestFailed as exc:
            raise Problem(STATUS_FOR[exc.why], str(exc)) from None
        except RPCError as exc:
            raise Problem(503, f"cannot read a referral's history: {exc.message}") from None
        now = console.now()
        bundle = journey_bundle(record, now)
        # Disclosed to the calling system: on the patient's accounting.
        console.store.record_export(
            patient_id=pid,
            by=f"api:{found.client.name}",
            recipient=f"API client {found.client.name} (site {found.client.site_id})",
            purpose="treatment",
            description=f"the journey as a FHIR R4 Bundle of {len(bundle.entry or [])} "
            "resources (no name, birth date or contact details)",
            at=now,
        )
        return answered(request, 200, bundle.model_dump_json())

    @app.get(f"{API}/patients/{{patient_id}}/disclosures", tags=["patients"])
    @grant("patients:read", patient=True)
    async def api_disclosures(request: Request, patient_id: str, found: Caller = seen) -> Response:
        """The patient's disclosures of the past three years (as `disclosures --json`)."""
        pid, _ = patient_of(request, found, patient_id)
        console = console_of(request)
        listed = console.store.disclosures(pid, accounting_since(console.now()))
        return answered(request, 200, json.dumps([d.as_json() for d in listed]))

    @app.get(f"{API}/patients/{{patient_id}}/consents", tags=["consents"])
    @grant("consents:read", patient=True)
    async def api_consents(request: Request, patient_id: str, found: Caller = seen) -> Response:
        """The patient's consents to disclose, oldest first (as `consents --json`): each
        with its terms and whether it is the one in force."""
        pid, _ = patient_of(request, found, patient_id)
        console = console_of(request)
        rows = consent_rows(console.store, pid, found.client.site_id)
        return answered(request, 200, json.dumps(rows))

    async def consent_change(
        request: Request, found: Caller, patient_id: str, to: str, form: WrittenForm | None
    ) -> Response:
        """A consent given (with its written `form`) or revoked, recorded for the patient's
        case manager as `starter.py consents` records it."""
        pid, cm = patient_of(request, found, patient_id)
        console = console_of(request)

        async def act(key: str | None) -> tuple[int, Any]:
            try:
                said = record_consent(
                    console.store, pid, form is not None, to, cm, console.now(), form, key, ""
                )
            except ConsentRefused as exc:
                raise Problem(422 if exc.bad_input else 409, str(exc)) from None
            return (201 if form else 200), Answer(message=said)

        return await once(request, found, act)

    @app.post(f"{API}/patients/{{patient_id}}/consents", status_code=201, tags=["consents"])
    @grant("consents:write", patient=True)
    async def api_give_consent(
        request: Request, patient_id: str, body: ConsentBody, found: Caller = seen
    ) -> Response:
        """Record the patient's consent given in writing (42 CFR Part 2 §2.31), with every
        element the rule requires (422 if one is missing or wrong)."""
        form = WrittenForm(**body.model_dump(exclude={"to"}))
        return await consent_change(request, found, patient_id, body.to, form)

    @app.post(f"{API}/patients/{{patient_id}}/consents/revoke", tags=["consents"])
    @grant("consents:write", patient=True)
    async def api_revoke_consent(
        request: Request, patient_id: str, body: RevokeBody, found: Caller = seen
    ) -> Response:
        """Record the patient's revocation of a consent: nothing more is disclosed under it."""
        return await consent_change(request, found, patient_id, body.to, None)


def problem_handlers(app: FastAPI) -> None:
    """Refusals and bad requests under /api as problem details (never a page, never a
    stack trace); the access log records the refusal."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, problem: Problem) -> Response:
        actor: str | None = getattr(request.state, "actor", None)
        if actor is not None and problem.status not in (401, 403, 429):
            log_call(
                request,
                actor,
                action_of(request),
                getattr(request.state, "patient_id", None),
                "failed" if problem.status >= 500 else "refused",
            )
        return problem_response(problem)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if not request.url.path.startswith(API):
            return await request_validation_exception_handler(request, exc)
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "(body)"
        more = len(exc.errors()) - 1
        detail = f"{where}: {str(first['msg']).removeprefix('Value error, ')}" + (
            f" (and {more} more problem(s))" if more else ""
        )
        return await _problem(request, Problem(422, detail))
