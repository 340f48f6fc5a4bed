"""Standardised instruments asked at aftercare check-ins, and what their answers mean.

Brief Addiction Monitor (BAM, VA; Likert form, past 30 days): 17 items scored 0-4. Use =
items 4+5+6 (0-12, flag at >= 1), Risk = items 1, 2, 3, 8, 11, 15 (0-24, flag at >= 12),
Protective = items 9, 10, 12, 13, 14, 16 (0-24, flag at <= 12). No total score.
PHQ-9: 9 items scored 0-3, total 0-27 (cut points 5/10/15/20); any answer above 0 on item 9
(thoughts of self-harm) needs same-day clinical follow-up. See ../shared/DOMAIN.md."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

BAM_USE_ITEMS = (4, 5, 6)
BAM_RISK_ITEMS = (1, 2, 3, 8, 11, 15)
BAM_PROTECTIVE_ITEMS = (9, 10, 12, 13, 14, 16)
BAM_USE_FLAG_AT = 1
BAM_RISK_FLAG_AT = 12
BAM_PROTECTIVE_FLAG_AT_OR_BELOW = 12
PHQ9_CUT_POINTS = ((20, "severe"), (15, "moderately severe"), (10, "moderate"), (5, "mild"))


class _Answers(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BamAnswers(_Answers):
    """The 17 BAM items in order, each 0-4 (Likert form)."""

    items: tuple[Annotated[int, Field(ge=0, le=4)], ...] = Field(min_length=17, max_length=17)

    def item(self, n: int) -> int:
        return self.items[n - 1]


class BamScore(_Answers):
    use: int
    risk: int
    protective: int

    @property
    def use_flag(self) -> bool:
        return self.use >= BAM_USE_FLAG_AT

    @property
    def risk_flag(self) -> bool:
        return self.risk >= BAM_RISK_FLAG_AT

    @property
    def protective_flag(self) -> bool:
        """Protective factors too low."""
        return self.protective <= BAM_PROTECTIVE_FLAG_AT_OR_BELOW


def score_bam(answers: BamAnswers) -> BamScore:
    return BamScore(
        use=sum(answers.item(n) for n in BAM_USE_ITEMS),
        risk=sum(answers.item(n) for n in BAM_RISK_ITEMS),
        protective=sum(answers.item(n) for n in BAM_PROTECTIVE_ITEMS),
    )


class Phq9Answers(_Answers):
    """The nine PHQ-9 items in order, each 0-3."""

    items: tuple[Annotated[int, Field(ge=0, le=3)], ...] = Field(min_length=9, max_length=9)


class Phq9Score(_Answers):
    total: int
    severity: Literal["minimal", "mild", "moderate", "moderately severe", "severe"]
    self_harm_flag: bool


def score_phq9(answers: Phq9Answers) -> Phq9Score:
    total = sum(answers.items)
    severity = next((name for cut, name in PHQ9_CUT_POINTS if total >= cut), "minimal")
    return Phq9Score(total=total, severity=severity, self_harm_flag=answers.items[8] > 0)


FindingKind = Literal["relapse", "self_harm", "risk", "low_protective"]


class Finding(_Answers):
    kind: FindingKind
    detail: str


def check_in_findings(
    days_of_use: int, bam: BamAnswers | None, phq9: Phq9Answers | None
) -> list[Finding]:
    """What a reached check-in calls for, most urgent first. Scores only, never answers,
    go into the details (they become task text)."""
    findings: list[Finding] = []
    if phq9 is not None:
        phq = score_phq9(phq9)
        if phq.self_harm_flag:
            findings.append(
                Finding(
                    kind="self_harm",
                    detail=f"PHQ-9 item 9 answered above 0 (total {phq.total}, {phq.severity}): "
                    "same-day clinical follow-up",
                )
            )
    score = score_bam(bam) if bam is not None else None
    if days_of_use > 0 or (score is not None and score.use_flag):
        use = f"BAM Use {score.use}" if score is not None else "no BAM"
        findings.append(
            Finding(kind="relapse", detail=f"use reported: {days_of_use} day(s) of use, {use}")
        )
    if score is not None and score.risk_flag:
        findings.append(
            Finding(kind="risk", detail=f"BAM Risk {score.risk} (flag at {BAM_RISK_FLAG_AT})")
        )
    if score is not None and score.protective_flag:
        findings.append(
            Finding(
                kind="low_protective",
                detail=f"BAM Protective {score.protective} "
                f"(flag at {BAM_PROTECTIVE_FLAG_AT_OR_BELOW} or below)",
            )
        )
    return findings
