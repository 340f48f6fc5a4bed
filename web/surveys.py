"""The satisfaction and support questionnaire's page: the one door of the console that
needs no sign-in. The signed, single-use, expiring link is itself the capability (no
session and no cookie, so there is nothing for another site to ride on: no CSRF token);
the page shows the program's questions and nothing of the patient, records the answers
once, and gives every bad link or answer one line, recording nothing. Rate-limited per
client address; each answer and refusal goes to the access log (no PHI, the opaque
patient ID only on an answer)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from clinical.surveys import SurveyRefused
from infra.survey_links import SURVEY_PATH
from web.context import Console, console_of, page
from web.security import PUBLIC, allow, client_address

SURVEY_ENDPOINTS = frozenset({"survey_page", "survey_answer"})
"""Reached without signing in (web.signin.PUBLIC_ENDPOINTS lists them with sign-in's)."""
LINK_MAX = 200
FORM_FIELDS_MAX = 20


def _turned_away(request: Request, console: Console) -> Response | None:
    """Before any link is read: too many tries from this address, or no questionnaires here."""
    wait = console.survey_limit.wait(client_address(request), console.now())
    if wait:
        response = _refused(request, console, 429, "too many tries from here: wait a minute")
        response.headers["Retry-After"] = str(max(1, round(wait + 0.5)))
        return response
    if console.surveys is None:
        return _refused(request, console, 404, "questionnaires are not available here")
    return None


def _refused(request: Request, console: Console, status: int, message: str) -> Response:
    console.access.append(
        console.now(),
        "survey-link",
        "-",
        f"{request.method} {SURVEY_PATH}",
        outcome="refused",
        address=client_address(request),
    )
    return page(request, "survey.html", status, refused=message, done=False, survey=None)


def install(app: FastAPI) -> None:
    @app.get(f"{SURVEY_PATH}/{{link}}", response_class=HTMLResponse)
    @allow(*PUBLIC.roles)
    async def survey_page(request: Request, link: str) -> Response:
        console = console_of(request)
        turned_away = _turned_away(request, console)
        if turned_away is not None:
            return turned_away
        assert console.surveys is not None  # else turned away
        try:
            opened = console.surveys.open(link[:LINK_MAX], console.now())
        except SurveyRefused as exc:
            return _refused(request, console, 404, str(exc))
        return page(
            request, "survey.html", refused=None, done=False, survey=opened.config, link=link
        )

    @app.post(f"{SURVEY_PATH}/{{link}}", response_class=HTMLResponse)
    @allow(*PUBLIC.roles)
    async def survey_answer(request: Request, link: str) -> Response:
        console = console_of(request)
        turned_away = _turned_away(request, console)
        if turned_away is not None:
            return turned_away
        assert console.surveys is not None  # else turned away
        form = await request.form(max_fields=FORM_FIELDS_MAX)
        given = {k: v for k, v in form.items() if isinstance(v, str)}
        try:
            opened = console.surveys.answer(link[:LINK_MAX], given, console.now())
        except SurveyRefused as exc:
            return _refused(request, console, 400, str(exc))
        console.access.append(
            console.now(),
            "survey-link",
            "-",
            f"POST {SURVEY_PATH}",
            opened.survey.patient_id,
            address=client_address(request),
        )
        return page(request, "survey.html", refused=None, done=True, survey=None)
