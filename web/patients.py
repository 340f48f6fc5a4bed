"""A case manager's pages: the caseload, the inbox, a patient's chart and what they record
on it. Each patient's route first checks that this user may see that patient; a patient
outside their caseload looks exactly like one that does not exist (404), and the attempt is
logged."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import TypeAdapter, ValidationError

from clinical.disclosures import accounting_since
from clinical.identifiers import PatientId
from clinical.protocol import ProgramCatalog
from clinical.requests import TaskDone
from clinical.status import JourneyStatus
from clinical.surveys import OCCASIONS, AnswersRefused, SurveyRefused
from infra.store.accounts import Role, User
from operators.caseload import CaseloadRow, Scope, caseload, inbox, overdue
from operators.snapshot import StoredSnapshot, stored_snapshot
from services.journeys import (
    RequestFailed,
    Why,
    deliver,
    query_status,
    task_completion,
)
from services.surveys import answer_at_call, awaiting_answers
from web.actions import ACTIONS, SUPERVISOR_ACTIONS, ActionRefused
from web.context import Console, console_of, page
from web.security import Forbidden, NotFound, Visitor, allow

RISK_ORDER = {"high": 0, "moderate": 1, "low": 2}
SORTS: dict[str, Callable[[CaseloadRow], Any]] = {
    "patient": lambda r: r.entry.patient.patient_id,
    "phase": lambda r: (r.entry.patient.phase.value, r.entry.patient.patient_id),
    "risk": lambda r: (RISK_ORDER.get(r.entry.patient.risk or "", 3), r.entry.patient.patient_id),
    "attendance": lambda r: (
        2.0 if r.entry.attendance_rate is None else r.entry.attendance_rate,
        r.entry.patient.patient_id,
    ),
    "next": lambda r: (
        r.entry.next_contact is None,
        r.entry.next_contact or 0,
        r.entry.patient.patient_id,
    ),
    "tasks": lambda r: (-r.entry.open_tasks, r.entry.patient.patient_id),
}
PAGE_ROWS = 100
STATUS_FOR = {Why.bad_input: 422, Why.refused: 409, Why.unreachable: 503}


def scope_of(user: User) -> Scope:
    if user.role is Role.case_manager:
        return Scope(case_manager_id=user.case_manager_id)
    return Scope(site_id=user.site_id)


def patient_in_scope(console: Console, request: Request, user: User, patient_id: str) -> str:
    """`patient_id` if this user may see that patient; otherwise 404, logged as denied."""
    try:
        valid: str = TypeAdapter(PatientId).validate_python(patient_id)
    except ValidationError:
        raise NotFound() from None
    found = console.store.patient(valid)
    allowed = found is not None and scope_of(user).holds(found.case_manager_id, found.site_id)
    if not allowed:
        console.record(request, user, "open patient", valid, outcome="denied")
        raise NotFound()
    return valid


async def chart_of(
    console: Console, patient_id: str
) -> tuple[JourneyStatus | None, StoredSnapshot | None]:
    found = console.store.patient(patient_id)
    snapshot = stored_snapshot(
        console.store, patient_id, console.zone_of(found.site_id if found else "")
    )
    client, status = await console.engine(), None
    if client is not None:
        try:
            status = await query_status(client, patient_id)
        except RequestFailed:
            status = None  # the worker went away meanwhile: the store's view stands
    return status, snapshot


def install(r: FastAPI, signed_in: Callable[..., Awaitable[Visitor]]) -> None:
    """Adds these pages' routes to the app (flat: the route-enumeration test walks them)."""
    seen = Depends(signed_in)

    @r.get("/caseload", response_class=HTMLResponse)
    @allow(Role.case_manager, Role.supervisor)
    async def caseload_page(
        request: Request,
        sort: str = "next",
        phase: str = "",
        page_number: int = Query(1, alias="page", ge=1, le=10_000),
        visitor: Visitor = seen,
    ) -> Response:
        console = console_of(request)
        rows = caseload(console.store, scope_of(visitor.user), console.now())
        if phase:
            rows = [row for row in rows if row.entry.patient.phase.value == phase]
        rows.sort(key=SORTS.get(sort, SORTS["next"]))
        # A site's caseload runs to thousands: a page of them at a time.
        pages = max(1, -(-len(rows) // PAGE_ROWS))
        page_number = min(page_number, pages)
        total = len(rows)
        rows = rows[(page_number - 1) * PAGE_ROWS : page_number * PAGE_ROWS]
        console.record(request, visitor.user, f"view caseload ({len(rows)} patients)")
        return page(
            request,
            "caseload.html",
            visitor=visitor,
            rows=rows,
            total=total,
            page_number=page_number,
            pages=pages,
            sort=sort,
            phase=phase,
            sorts=list(SORTS),
            zone_of=console.zone_of,
            now=console.now(),
        )

    @r.get("/inbox", response_class=HTMLResponse)
    @allow(Role.case_manager, Role.supervisor)
    async def inbox_page(request: Request, visitor: Visitor = seen) -> Response:
        console = console_of(request)
        tasks = inbox(console.store, scope_of(visitor.user), console.now())
        console.record(request, visitor.user, f"view inbox ({len(tasks)} tasks)")
        return page(
            request, "inbox.html", visitor=visitor, tasks=tasks, now=console.now(), overdue=overdue
        )

    async def show_chart(
        request: Request, patient_id: str, visitor: Visitor, template: str, what: str
    ) -> Response:
        console = console_of(request)
        pid = patient_in_scope(console, request, visitor.user, patient_id)
        status, snapshot = await chart_of(console, pid)
        console.record(request, visitor.user, what, pid)
        return page(
            request,
            template,
            visitor=visitor,
            patient_id=pid,
            status=status,
            snapshot=snapshot,
            disclosures=console.store.disclosures(pid, accounting_since(console.now())),
            name=console.store.patient_names([pid]).get(pid, ""),
            zone=console.zone_of(snapshot.site_id if snapshot else ""),
            surveys=awaiting_answers(
                console.store, ProgramCatalog.of(console.settings.programs_dir), pid
            )
            if template == "chart.html"
            else [],
        )

    @r.get("/patients/{patient_id}", response_class=HTMLResponse)
    @allow(Role.case_manager, Role.supervisor, patient=True)
    async def chart(request: Request, patient_id: str, visitor: Visitor = seen) -> Response:
        return await show_chart(request, patient_id, visitor, "chart.html", "view chart")

    @r.get("/patients/{patient_id}/live", response_class=HTMLResponse)
    @allow(Role.case_manager, Role.supervisor, patient=True, passive=True)
    async def chart_live(request: Request, patient_id: str, visitor: Visitor = seen) -> Response:
        """The chart's own refresh (every 3 s): no names in it."""
        return await show_chart(
            request, patient_id, visitor, "chart_live.html", "view chart (refresh)"
        )

    # Before the journey's actions below: its path would take "survey" for an action.
    @r.post("/patients/{patient_id}/survey", response_class=HTMLResponse)
    @allow(Role.case_manager, patient=True)
    async def survey_answers(
        request: Request, patient_id: str, visitor: Visitor = seen
    ) -> Response:
        """A questionnaire's answers read out at a follow-up call, recorded under the
        signed-in case manager with the command line's checks (a store record: the
        journey does not wait for answers)."""
        console = console_of(request)
        pid = patient_in_scope(console, request, visitor.user, patient_id)
        what = "survey answers at a call"
        form = {k: v for k, v in (await request.form()).multi_items() if isinstance(v, str)}
        form.pop("csrf", None)
        occasion = form.pop("occasion", "")
        if occasion not in OCCASIONS:
            message = f"occasion: one of {', '.join(OCCASIONS)}"
            return _answer(request, console, visitor, what, pid, message, 422)
        assert visitor.user.case_manager_id is not None  # a case manager's account has one
        catalog = ProgramCatalog.of(console.settings.programs_dir)
        try:
            answer_at_call(
                console.store,
                catalog,
                pid,
                occasion,
                form,
                visitor.user.case_manager_id,
                console.now(),
            )
        except AnswersRefused as exc:
            return _answer(request, console, visitor, what, pid, str(exc), 422)
        except SurveyRefused as exc:
            return _answer(request, console, visitor, what, pid, str(exc), 409)
        message = f"the {occasion} questionnaire's answers are recorded"
        return _answer(request, console, visitor, what, pid, message, 200)

    @r.post("/patients/{patient_id}/{action}", response_class=HTMLResponse)
    @allow(Role.case_manager, Role.supervisor, patient=True)
    async def act(
        request: Request, patient_id: str, action: str, visitor: Visitor = seen
    ) -> Response:
        """One of the chart's forms (ACTIONS): built into the same request the command
        line sends, delivered through the same update and validator. The actor is the
        signed-in case manager, never a form field."""
        console = console_of(request)
        pid = patient_in_scope(console, request, visitor.user, patient_id)
        known = ACTIONS.get(action)
        if known is None:
            raise NotFound()
        user = visitor.user
        if user.role is Role.supervisor and action not in SUPERVISOR_ACTIONS:
            console.record(request, user, known.title, pid, outcome="denied")
            raise Forbidden()
        if user.role is Role.case_manager and action == "reassign":
            console.record(request, user, known.title, pid, outcome="denied")
            raise Forbidden()
        form = {k: v for k, v in (await request.form()).multi_items() if isinstance(v, str)}
        if user.case_manager_id is None:
            message = "your account has no staff ID to record this under"
            return _answer(request, console, visitor, known.title, pid, message, 409)
        try:
            update, payload, workflow_id = known.build(pid, user.case_manager_id, form)
            client = await console.connect()
            answer = await deliver(
                client, console.settings.task_queue, pid, update, payload, workflow_id
            )
        except ActionRefused as exc:
            return _answer(request, console, visitor, known.title, pid, str(exc), 422)
        except RequestFailed as exc:
            return _answer(
                request, console, visitor, known.title, pid, str(exc), STATUS_FOR[exc.why]
            )
        return _answer(request, console, visitor, known.title, pid, known.describe(answer), 200)

    @r.post("/tasks/{task_id}/done", response_class=HTMLResponse)
    @allow(Role.case_manager, patient=True)
    async def task_done(request: Request, task_id: int, visitor: Visitor = seen) -> Response:
        """Mark a task done: delivered to the workflow that opened it (the journey or a
        referral), which decides what done means."""
        console = console_of(request)
        found = console.store.task(task_id)
        if found is None:
            raise NotFound()
        pid = patient_in_scope(console, request, visitor.user, found.patient_id)
        if not found.open:
            return _answer(
                request,
                console,
                visitor,
                "task done",
                pid,
                f"task {task_id} is already done (by {found.completed_by})",
                409,
            )
        assert visitor.user.case_manager_id is not None
        update, workflow_id = task_completion(found)
        done = TaskDone(case_manager_id=visitor.user.case_manager_id, task_key=found.key)
        try:
            client = await console.connect()
            message = await deliver(
                client, console.settings.task_queue, pid, update, done, workflow_id
            )
        except RequestFailed as exc:
            return _answer(
                request, console, visitor, "task done", pid, str(exc), STATUS_FOR[exc.why]
            )
        return _answer(request, console, visitor, "task done", pid, str(message), 200)


def _answer(
    request: Request,
    console: Console,
    visitor: Visitor,
    what: str,
    patient_id: str,
    message: str,
    status_code: int,
) -> Response:
    """The action's one-line answer: a fragment for htmx (swapped beside the form), a page
    otherwise. Logged with its outcome."""
    outcome = "allowed" if status_code == 200 else ("failed" if status_code == 503 else "refused")
    console.record(request, visitor.user, what, patient_id, outcome=outcome)
    name = "answer.html" if "hx-request" in request.headers else "answer_page.html"
    return page(
        request,
        name,
        status_code,
        visitor=visitor,
        message=message,
        ok=status_code == 200,
        patient_id=patient_id,
    )
