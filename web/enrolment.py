"""Enrolling a patient from the console: the assessment form, the rules' placement shown
before anything starts (and the case manager's override with its reason), then the one
enrolment service every door uses. The enrolling case manager and their site are the
signed-in user's, never form fields."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from clinical.assessment import DIMENSIONS, AgeGroup, Enrolment, SocialNeed, parse_commitment
from clinical.identifiers import new_patient_id
from clinical.placement import PlacementRefused, place_enrolment
from clinical.protocol import ProgramCatalog, ProtocolError, describe_validation_error
from infra.store.accounts import Role, User
from services.enrolment import EnrolmentRefused, enrol, journey_input
from services.journeys import RequestFailed
from web.context import Console, console_of, page
from web.security import Visitor, allow

NEEDS = tuple(n.value for n in SocialNeed)


class FormRefused(ValueError):
    """The form does not make an enrolment: one line."""


def _listed(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def enrolment_from(form: dict[str, list[str]], user: User) -> Enrolment:
    """The form's fields as an enrolment, or FormRefused naming the first bad field."""

    def one(name: str, default: str = "") -> str:
        return (form.get(name) or [default])[0].strip()

    def checked(name: str) -> list[str]:
        return [v for v in form.get(name, []) if v]

    try:
        commitments = [
            parse_commitment(line) for line in one("commitments").splitlines() if line.strip()
        ]
    except ValueError as exc:
        raise FormRefused(str(exc)) from None
    override = None
    if one("override_level"):
        override = {"level": one("override_level"), "reason": one("override_reason")}
    data: dict[str, Any] = {
        "patient_id": one("patient_id"),
        "case_manager_id": user.case_manager_id,
        "site_id": user.site_id,
        "program_id": one("program_id", "default-iop"),
        "contact": {
            "given_name": one("given_name"),
            "family_name": one("family_name"),
            "date_of_birth": one("date_of_birth"),
            "phone": one("phone"),
            "email": one("email") or None,
        },
        "assessment": {
            "ratings": {d: one(d) for d in DIMENSIONS},
            "age_group": one("age_group", "adult"),
            "substances": _listed(one("substances")),
            "co_occurring": _listed(one("co_occurring")),
            "social_needs": checked("social_needs"),
            "commitments": commitments,
            "transport_barrier": one("transport_barrier") == "yes",
            "distance_km": one("distance_km") or None,
            "contact_window": {
                "start": one("window_start", "10:00"),
                "end": one("window_end", "18:00"),
                "reminders": one("reminders", "sms"),
            },
            "consents": {
                "family_involvement": one("family_involvement") == "yes",
                "partner_disclosure": checked("partner_disclosure"),
            },
        },
        "placement_override": override,
    }
    try:
        return Enrolment.model_validate(data)
    except ValidationError as exc:
        raise FormRefused(describe_validation_error(exc)) from None


def install(r: FastAPI, signed_in: Callable[..., Awaitable[Visitor]]) -> None:
    seen = Depends(signed_in)

    @r.get("/enrol", response_class=HTMLResponse)
    @allow(Role.case_manager)
    async def enrol_form(request: Request, visitor: Visitor = seen) -> Response:
        console = console_of(request)
        return page(
            request,
            "enrol.html",
            visitor=visitor,
            patient_id=new_patient_id(),
            programs=_programs(console),
            needs=NEEDS,
            dimensions=DIMENSIONS,
            age_groups=[a.value for a in AgeGroup],
        )

    @r.post("/enrol/preview", response_class=HTMLResponse)
    @allow(Role.case_manager)
    async def enrol_preview(request: Request, visitor: Visitor = seen) -> Response:
        """The placement the rules (or the override) give: nothing is started or stored."""
        console = console_of(request)
        try:
            enrolment = enrolment_from(await _form(request), visitor.user)
            protocol = ProgramCatalog.of(console.settings.programs_dir).load(enrolment.program_id)
            placement = place_enrolment(enrolment, protocol)
        except (FormRefused, ProtocolError, PlacementRefused) as exc:
            return page(request, "answer.html", 422, message=str(exc), ok=False)
        return page(request, "placement.html", placement=placement)

    @r.post("/enrol", response_class=HTMLResponse)
    @allow(Role.case_manager)
    async def enrol_patient(request: Request, visitor: Visitor = seen) -> Response:
        console = console_of(request)
        try:
            enrolment = enrolment_from(await _form(request), visitor.user)
            journey = journey_input(enrolment, console.settings, console.store, console.now())
            client = await console.connect()
            await enrol(client, console.settings.task_queue, journey)
        except (FormRefused, EnrolmentRefused) as exc:
            status = 422 if not isinstance(exc, EnrolmentRefused) or exc.bad_input else 409
            console.record(request, visitor.user, "enrol", outcome="refused")
            return _enrol_answer(request, visitor, str(exc), status, None)
        except RequestFailed as exc:
            console.record(request, visitor.user, "enrol", outcome="failed")
            return _enrol_answer(request, visitor, str(exc), 503, None)
        console.record(request, visitor.user, "enrol", enrolment.patient_id)
        return _enrol_answer(
            request,
            visitor,
            f"enrolled {enrolment.patient_id} in {enrolment.program_id}: the journey has started",
            200,
            enrolment.patient_id,
        )


async def _form(request: Request) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for key, value in (await request.form()).multi_items():
        if isinstance(value, str):
            found.setdefault(key, []).append(value)
    return found


def _programs(console: Console) -> list[str]:
    try:
        return ProgramCatalog.of(console.settings.programs_dir).program_ids()
    except ProtocolError:
        return ["default-iop"]


def _enrol_answer(
    request: Request, visitor: Visitor, message: str, status: int, patient_id: str | None
) -> Response:
    name = "answer.html" if "hx-request" in request.headers else "answer_page.html"
    return page(
        request,
        name,
        status,
        visitor=visitor,
        message=message,
        ok=status == 200,
        patient_id=patient_id,
    )
