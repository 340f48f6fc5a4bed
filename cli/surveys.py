"""Answers to the satisfaction and support questionnaire read out at a follow-up call and
recorded by the case manager (`starter.py survey-answer`): the same checks as the page's."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from cli.common import CliError, care_store, console
from clinical.protocol import ProgramCatalog
from clinical.surveys import OCCASIONS, SurveyRefused
from infra.settings import Settings
from services.surveys import answer_at_call


def cmd_survey_answer(args: argparse.Namespace, settings: Settings) -> int:
    given: dict[str, str] = {}
    for word in args.answer or []:
        item, sep, point = word.partition("=")
        if not sep or item in given:
            raise CliError(f"--answer: {word[:40]!r} is not ITEM=POINT, once per item")
        given[item] = point
    store = care_store(settings)
    try:
        survey = answer_at_call(
            store,
            ProgramCatalog.of(settings.programs_dir),
            args.patient,
            args.occasion,
            given,
            args.case_manager,
            datetime.now(UTC),
        )
    except SurveyRefused as exc:
        raise CliError(str(exc)) from None
    finally:
        store.dispose()
    console.print(f"{args.patient}: the {survey.occasion} questionnaire's answers are recorded")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser(
        "survey-answer",
        help="a questionnaire's answers read out at a follow-up call",
    )
    s.add_argument("patient")
    s.add_argument("--occasion", choices=OCCASIONS, required=True)
    s.add_argument(
        "--answer", action="append", metavar="ITEM=POINT", help="e.g. care=4; every item once"
    )
    s.add_argument("--case-manager", required=True, help="who asked, e.g. CM-01")
