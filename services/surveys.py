"""The one way a survey is opened and answered: by its signed link (the page that needs no
sign-in, and the demo's simulated patients), or read out at a follow-up call by staff.
Every refusal is one line for the page and changes nothing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from clinical.protocol import ProgramCatalog, ProtocolError, SurveyConfig
from clinical.surveys import SurveyRefused, check_answers
from infra.logging import get_logger
from infra.store import CareStore, SurveyRecord
from infra.survey_links import LinkRefused, LinkSigner

log = get_logger("carepath.surveys")

PATIENT_BY_LINK = "patient (survey link)"
"""The actor of answers given through a link: whoever holds it, which is the patient's."""


@dataclass(frozen=True)
class OpenSurvey:
    """What the page shows: the questions, nothing of the patient."""

    survey: SurveyRecord
    config: SurveyConfig


class SurveyDoor:
    def __init__(self, store: CareStore, links: LinkSigner, catalog: ProgramCatalog) -> None:
        self.store, self.links, self.catalog = store, links, catalog

    def open(self, link: str, now: datetime) -> OpenSurvey:
        """The survey behind a link that is ours, unexpired, known and not yet answered."""
        try:
            token = self.links.token_of(link, now)
        except LinkRefused as exc:
            raise SurveyRefused(str(exc)) from None
        survey = self.store.survey_of_token(token)
        if survey is None:
            raise SurveyRefused("this link is not valid")
        if survey.answered_at is not None:
            raise SurveyRefused("these questions have been answered already: thank you")
        if now >= survey.expires_at:
            raise SurveyRefused("this link has expired")
        return OpenSurvey(survey=survey, config=self._config(survey))

    def answer(self, link: str, given: Mapping[str, str], now: datetime) -> OpenSurvey:
        """Record the answers once; refused (nothing recorded) if the link or an answer is
        not good, or the survey was answered meanwhile."""
        opened = self.open(link, now)
        points = check_answers(opened.config, given)
        if not self.store.answer_survey(opened.survey.token, points, "link", PATIENT_BY_LINK, now):
            raise SurveyRefused("these questions have been answered already: thank you")
        log.info("survey_answered", patient_id=opened.survey.patient_id, via="link")
        return opened

    def _config(self, survey: SurveyRecord) -> SurveyConfig:
        return _config_of(self.catalog, survey)


def _config_of(catalog: ProgramCatalog, survey: SurveyRecord) -> SurveyConfig:
    try:
        config = catalog.load(survey.program_id).survey
    except ProtocolError:
        config = None
    if config is None:
        raise SurveyRefused("these questions are no longer asked")
    return config


def awaiting_answers(
    store: CareStore, catalog: ProgramCatalog, patient_id: str
) -> list[tuple[str, SurveyConfig]]:
    """The questionnaires a case manager may still read out at a call, by occasion: the
    latest sent of each, unanswered, of a program that still asks it."""
    latest = {s.occasion: s for s in store.surveys(patient_id)}  # oldest first: last wins
    waiting: list[tuple[str, SurveyConfig]] = []
    for occasion, survey in latest.items():
        if survey.answered_at is not None:
            continue
        try:
            waiting.append((occasion, _config_of(catalog, survey)))
        except SurveyRefused:
            continue
    return waiting


def answer_at_call(
    store: CareStore,
    catalog: ProgramCatalog,
    patient_id: str,
    occasion: str,
    given: Mapping[str, str],
    by: str,
    now: datetime,
) -> SurveyRecord:
    """Answers read out at a follow-up call, recorded by staff (`by`) for the patient's
    latest questionnaire of this occasion, once: even after its link expired (the call
    asked), never over answers already given."""
    sent = [s for s in store.surveys(patient_id) if s.occasion == occasion]
    if not sent:
        raise SurveyRefused(f"no {occasion} questionnaire was sent to {patient_id}")
    survey = sent[-1]
    if survey.answered_at is not None:
        raise SurveyRefused(f"the {occasion} questionnaire is answered already")
    points = check_answers(_config_of(catalog, survey), given)
    if not store.answer_survey(survey.token, points, "call", by, now, until_expiry=False):
        raise SurveyRefused(f"the {occasion} questionnaire is answered already")
    log.info("survey_answered", patient_id=patient_id, via="call")
    return survey
