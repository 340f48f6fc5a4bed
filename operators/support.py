"""Measuring support: the satisfaction and support questionnaire's results by site, track
and facilitator, and support (alumni meetings, family sessions, the questionnaire's support
band) set against completion and relapse. Pure arithmetic over the cohort's facts (read by
`operators.report`), part of `operators.outcomes`' report.

Small cells are suppressed: a group with fewer than SMALL_CELL answers (or patients) shows
its counts but no means or rates, so no one's answers can be read off a small group."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from pydantic import BaseModel, ConfigDict

from clinical.phases import TERMINAL_PHASES, Phase
from operators.rates import Rate

SMALL_CELL = 5


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SurveyFact(_Model):
    """A questionnaire sent: where the patient was, and their answers' points if given."""

    patient_id: str
    site_id: str
    track_id: str | None
    occasion: str
    issued_order: int
    """Its place among the cohort's questionnaires, oldest first."""
    answers: dict[str, int] | None = None
    band: str | None = None
    """The answers' support band (clinical.surveys.score: family and peer support)."""


class SupportFacts(_Model):
    surveys: list[SurveyFact] = []
    alumni_attended: dict[str, int] = {}
    """Alumni meetings attended, by patient (those with none left out)."""
    facilitators: dict[str, tuple[str, ...]] = {}
    """Each group track's facilitators."""


class SurveyCell(_Model):
    """The questionnaires of one site, track or facilitator."""

    group: str
    sent: int
    answered: int
    response: Rate | None
    """Answered / sent; None when suppressed (fewer than SMALL_CELL answers)."""
    item_means: dict[str, float] | None
    """Each item's mean points; None when suppressed."""


class SupportRow(_Model):
    """Patients with this much support: how many, and their completion and relapse."""

    measure: str
    band: str
    patients: int
    completion: Rate | None
    """Completed / journeys ended among them (None: suppressed, fewer than SMALL_CELL)."""
    relapse: Rate | None
    """Re-linked to care at least once / patients (None: suppressed)."""


class SupportReport(_Model):
    surveys_sent: int
    surveys_answered: int
    response: Rate
    by_site: list[SurveyCell]
    by_track: list[SurveyCell]
    by_facilitator: list[SurveyCell]
    against_outcomes: list[SupportRow]
    small_cell: int = SMALL_CELL


def _cell(group: str, surveys: list[SurveyFact]) -> SurveyCell:
    answered = [s.answers for s in surveys if s.answers is not None]
    if len(answered) < SMALL_CELL:
        return SurveyCell(
            group=group, sent=len(surveys), answered=len(answered), response=None, item_means=None
        )
    means = {}
    for item in sorted({k for a in answered for k in a}):
        points = [a[item] for a in answered if item in a]
        means[item] = round(sum(points) / len(points), 2)
    return SurveyCell(
        group=group,
        sent=len(surveys),
        answered=len(answered),
        response=Rate(numerator=len(answered), denominator=len(surveys)),
        item_means=means,
    )


def _cells(
    surveys: Iterable[SurveyFact], groups_of: Callable[[SurveyFact], Iterable[str]]
) -> list[SurveyCell]:
    groups: dict[str, list[SurveyFact]] = {}
    for s in surveys:
        for group in groups_of(s):
            groups.setdefault(group, []).append(s)
    return [_cell(group, found) for group, found in sorted(groups.items())]


def _latest_band(surveys: list[SurveyFact]) -> dict[str, str]:
    """Each patient's support band from their latest answered questionnaire."""
    bands: dict[str, str] = {}
    for s in sorted(surveys, key=lambda s: s.issued_order):
        if s.band is not None:
            bands[s.patient_id] = s.band
    return bands


def _count_band(n: int, top: int) -> str:
    if n == 0:
        return "none"
    return f"1-{top - 1}" if n < top else f"{top}+"


def _row(
    measure: str, band: str, patients: list[str], phases: Mapping[str, Phase], relapsed: set[str]
) -> SupportRow:
    if len(patients) < SMALL_CELL:
        return SupportRow(
            measure=measure, band=band, patients=len(patients), completion=None, relapse=None
        )
    ended = [p for p in patients if phases[p] in TERMINAL_PHASES]
    return SupportRow(
        measure=measure,
        band=band,
        patients=len(patients),
        completion=Rate(
            numerator=sum(phases[p] == Phase.completed for p in ended), denominator=len(ended)
        ),
        relapse=Rate(numerator=sum(p in relapsed for p in patients), denominator=len(patients)),
    )


def against_outcomes(
    phases: Mapping[str, Phase],
    relapsed: set[str],
    family_attended: Mapping[str, int],
    facts: SupportFacts,
) -> list[SupportRow]:
    """Completion and relapse by support: alumni meetings attended (none, 1-2, 3+), family
    sessions attended (none, 1-3, 4+), and the latest questionnaire's support band (low,
    middle, high, not answered)."""
    bands = _latest_band(facts.surveys)
    measures: list[tuple[str, Callable[[str], str], tuple[str, ...]]] = [
        (
            "alumni meetings attended",
            lambda p: _count_band(facts.alumni_attended.get(p, 0), 3),
            ("none", "1-2", "3+"),
        ),
        (
            "family sessions attended",
            lambda p: _count_band(family_attended.get(p, 0), 4),
            ("none", "1-3", "4+"),
        ),
        (
            "support band (questionnaire)",
            lambda p: bands.get(p, "not answered"),
            ("low", "middle", "high", "not answered"),
        ),
    ]
    rows: list[SupportRow] = []
    for measure, band_of, order in measures:
        by_band: dict[str, list[str]] = {b: [] for b in order}
        for p in sorted(phases):
            by_band[band_of(p)].append(p)
        rows += [_row(measure, b, by_band[b], phases, relapsed) for b in order]
    return rows


def support_report(
    phases: Mapping[str, Phase],
    relapsed: set[str],
    family_attended: Mapping[str, int],
    facts: SupportFacts,
) -> SupportReport:
    """`phases`: the cohort's patients and where they are now; `relapsed`: those re-linked
    to care at least once; `family_attended`: family sessions each attended."""
    surveys = [s for s in facts.surveys if s.patient_id in phases]
    answered = sum(s.answers is not None for s in surveys)
    return SupportReport(
        surveys_sent=len(surveys),
        surveys_answered=answered,
        response=Rate(numerator=answered, denominator=len(surveys)),
        by_site=_cells(surveys, lambda s: [s.site_id]),
        by_track=_cells(surveys, lambda s: [s.track_id] if s.track_id else []),
        by_facilitator=_cells(surveys, lambda s: facts.facilitators.get(s.track_id or "", ())),
        against_outcomes=against_outcomes(phases, relapsed, family_attended, facts),
    )


# --- for every rendering ------------------------------------------------------------------

SURVEY_HEADER = ("group", "sent", "answered", "response", "mean per item (1-5)")
OUTCOME_HEADER = ("support", "band", "patients", "completion", "relapse")


def survey_rows(support: SupportReport) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for label, cells in (
        ("site", support.by_site),
        ("track", support.by_track),
        ("facilitator", support.by_facilitator),
    ):
        for c in cells:
            means = (
                "suppressed"
                if c.item_means is None
                else ", ".join(f"{k} {v:.1f}" for k, v in c.item_means.items())
            )
            response = "-" if c.response is None else c.response.show()
            rows.append((f"{label} {c.group}", str(c.sent), str(c.answered), response, means))
    return rows


def outcome_rows(support: SupportReport) -> list[tuple[str, ...]]:
    return [
        (
            r.measure,
            r.band,
            str(r.patients),
            "suppressed" if r.completion is None else r.completion.show(),
            "suppressed" if r.relapse is None else r.relapse.show(),
        )
        for r in support.against_outcomes
    ]


def survey_title(support: SupportReport) -> str:
    return (
        f"Satisfaction and support questionnaire ({support.response.show()} answered; fewer "
        f"than {support.small_cell} answers: suppressed)"
    )


def outcome_title(support: SupportReport) -> str:
    return (
        "Support against outcomes (completed / ended; re-linked to care / patients; fewer "
        f"than {support.small_cell} patients: suppressed)"
    )
