"""/api/v1's questionnaire answers read out at a follow-up call (by a call centre's or the
telephony provider's system): the command line's `survey-answer` with its checks, recorded
under the patient's case manager. A store record: the journey does not wait for answers."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from pydantic import Field

from clinical.protocol import ProgramCatalog
from clinical.surveys import OCCASIONS, AnswersRefused, SurveyRefused
from services.surveys import answer_at_call
from web.api import Answer, _Body, once, patient_of
from web.api_security import API, Caller, Problem, caller, grant
from web.context import console_of


class SurveyAnswersBody(_Body):
    answers: dict[str, int] = Field(min_length=1, max_length=20)
    """Each item's point on its scale, e.g. {"care": 4, "group": 5, ...}: every item once."""


def install(app: FastAPI) -> None:
    seen = Depends(caller)

    @app.post(f"{API}/patients/{{patient_id}}/surveys/{{occasion}}/answers", tags=["surveys"])
    @grant("patients:write", patient=True)
    async def api_survey_answers(
        request: Request,
        patient_id: str,
        occasion: str,
        body: SurveyAnswersBody,
        found: Caller = seen,
    ) -> Response:
        """The answers to the patient's latest questionnaire of this occasion (`step_down`,
        `end`, `aftercare`) read out at a call: once, even after its link expired; never
        over answers already given (409)."""
        pid, cm = patient_of(request, found, patient_id)
        if occasion not in OCCASIONS:
            raise Problem(404, f"no questionnaire occasion {occasion[:20]!r}: one of {OCCASIONS}")
        console = console_of(request)

        async def act(_: str | None) -> tuple[int, Any]:
            given = {item: str(point) for item, point in body.answers.items()}
            try:
                answer_at_call(
                    console.store,
                    ProgramCatalog.of(console.settings.programs_dir),
                    pid,
                    occasion,
                    given,
                    cm,
                    console.now(),
                )
            except AnswersRefused as exc:
                raise Problem(422, str(exc)) from None
            except SurveyRefused as exc:
                raise Problem(409, str(exc)) from None
            return 200, Answer(
                message=f"{pid}: the {occasion} questionnaire's answers are recorded"
            )

        return await once(request, found, act)
