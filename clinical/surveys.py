"""The satisfaction and support questionnaire: when a journey sends it, what a valid set of
answers is, and how answers are scored. Pure rules; the items are the program's own
(`ProgramProtocol.survey`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from statistics import fmean
from typing import Literal

from pydantic import BaseModel, ConfigDict

from clinical.protocol import SupportAspect, SurveyConfig

Occasion = Literal["step_down", "end", "aftercare"]
"""Sent when stepping down, at completion or discharge, and in aftercare (month 3)."""
OCCASIONS: tuple[Occasion, ...] = ("step_down", "end", "aftercare")
Via = Literal["link", "call"]
"""Answered by the patient through the link, or read out at a follow-up call."""

SUPPORT_ASPECTS: tuple[SupportAspect, ...] = ("family", "peer")
"""The items that say how supported the patient feels (the report's support band)."""


class SurveyRefused(ValueError):
    """Answers (or a link) that cannot be recorded; the message says why, in one line."""


class AnswersRefused(SurveyRefused):
    """The answers themselves are wrong (an unknown or missing item, a point off the
    scale): bad input, where other refusals are the questionnaire's state."""


class SurveyScore(BaseModel):
    """A set of answers scored: each item's point, each aspect's mean on the 1-5 scale
    (items on other scales rescaled), and the support band from the support aspects."""

    model_config = ConfigDict(frozen=True)

    answers: dict[str, int]
    aspects: dict[str, float]
    support: float | None
    band: Literal["low", "middle", "high"] | None


def survey_key(patient_id: str, episode: int, occasion: Occasion) -> str:
    """The survey's idempotency key: one of each occasion per treatment episode."""
    return f"{patient_id}/survey/E{episode}-{occasion}"


def sent_at_end(outcome: str) -> bool:
    """A journey that ends completed or discharged (a patient who withdrew too: why they
    left is worth asking) is asked; one escalated or lost to contact is not (they are in
    other care, or there is no one to ask)."""
    return outcome in ("completed", "discharged", "withdrawn")


def aftercare_due(config: SurveyConfig, aftercare_day: float) -> bool:
    return aftercare_day >= config.aftercare_day


def check_answers(config: SurveyConfig, given: Mapping[str, str]) -> dict[str, int]:
    """The answers as points, every item answered within its scale; anything else refused
    (an unknown item, a missing one, a point off the scale), in one line."""
    known = {item.id: item for item in config.items}
    unknown = sorted(k for k in given if k not in known)
    if unknown:
        raise AnswersRefused(f"unknown question {unknown[0][:32]!r}")
    points: dict[str, int] = {}
    for item in config.items:
        raw = given.get(item.id)
        if raw is None or not str(raw).strip():
            raise AnswersRefused("please answer every question")
        text = str(raw).strip()
        top = len(item.anchors)
        if not text.isdigit() or not 1 <= int(text) <= top:
            raise AnswersRefused(f"an answer must be a number from 1 to {top}")
        points[item.id] = int(text)
    return points


def score(config: SurveyConfig, answers: Mapping[str, int]) -> SurveyScore:
    """Aspects on the common 1-5 scale (a 7-point item's 7 is a 5); the support band from
    family and peer support: low below 2.5, high from 3.5."""
    by_aspect: dict[str, list[float]] = {}
    for item in config.items:
        if item.id in answers:
            top = len(item.anchors)
            on_five = 1 + (answers[item.id] - 1) * 4 / (top - 1)
            by_aspect.setdefault(item.aspect, []).append(on_five)
    aspects = {a: round(fmean(v), 2) for a, v in by_aspect.items()}
    support_points = [p for a in SUPPORT_ASPECTS for p in by_aspect.get(a, [])]
    support = round(fmean(support_points), 2) if support_points else None
    return SurveyScore(
        answers=dict(answers),
        aspects=aspects,
        support=support,
        band=None if support is None else support_band(support),
    )


def support_band(support: float) -> Literal["low", "middle", "high"]:
    if support < 2.5:
        return "low"
    return "high" if support >= 3.5 else "middle"


def item_means(config: SurveyConfig, answered: Iterable[Mapping[str, int]]) -> dict[str, float]:
    """Each item's mean over a group's answers (items nobody answered left out)."""
    found: dict[str, list[int]] = {}
    for answers in answered:
        for item in config.items:
            if item.id in answers:
                found.setdefault(item.id, []).append(answers[item.id])
    return {k: round(fmean(v), 2) for k, v in found.items()}
