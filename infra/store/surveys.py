"""Satisfaction and support surveys: issued once per key with the outbox message carrying
its link (one transaction), answered once through the link's token or at a call, read back
for the report and the FHIR export."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from infra.store._core import StoreCore, insert_once
from infra.store._schema import surveys
from infra.store.audit import AuditFact, write_audit
from infra.store.outbox import OutboxMessage, post


@dataclass(frozen=True)
class _Survey:
    """What a survey is when issued: the same for the one to issue and the one on record."""

    key: str
    token: str
    patient_id: str
    program_id: str
    site_id: str
    track_id: str | None
    occasion: str
    episode: int
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class NewSurvey(_Survey):
    channel: str
    """Where its link goes: the patient's channel (sms or email)."""


@dataclass(frozen=True)
class SurveyRecord(_Survey):
    answered_at: datetime | None
    answered_via: str | None
    answers: dict[str, int] | None


SURVEY_MESSAGE = "survey_invitation"


class SurveyRecords(StoreCore):
    def issue_survey(self, survey: NewSurvey, body_of: Callable[[str], str]) -> SurveyRecord:
        """The survey and the message carrying its link (`body_of(token)`), once per key:
        issuing it again (a retried activity) returns the survey issued first and posts
        nothing."""
        with self._transaction() as conn:
            new = insert_once(
                conn,
                surveys,
                [
                    {
                        "idempotency_key": survey.key,
                        "token": survey.token,
                        "patient_id": survey.patient_id,
                        "program_id": survey.program_id,
                        "site_id": survey.site_id,
                        "track_id": survey.track_id,
                        "occasion": survey.occasion,
                        "episode": survey.episode,
                        "issued_at": survey.issued_at,
                        "expires_at": survey.expires_at,
                    }
                ],
            )
            if new:
                message = OutboxMessage(
                    key=survey.key,
                    channel=survey.channel,
                    recipient=f"patient:{survey.patient_id}",
                    patient_id=survey.patient_id,
                    kind=SURVEY_MESSAGE,
                    body=body_of(survey.token),
                    created_at=survey.issued_at,
                )
                post(conn, [message])
            row = (
                conn.execute(select(surveys).where(surveys.c.idempotency_key == survey.key))
                .mappings()
                .one()
            )
            return _record(row)

    def survey_of_token(self, token: str) -> SurveyRecord | None:
        found = self._read(select(surveys).where(surveys.c.token == token))
        return _record(found[0]) if found else None

    def answer_survey(
        self,
        token: str,
        answers: dict[str, int],
        via: str,
        by: str,
        at: datetime,
        until_expiry: bool = True,
    ) -> bool:
        """Record the answers if the survey is open (not answered; not expired, unless
        `until_expiry` is off: asked at a call): True; False changes nothing. Two
        submissions at once: one wins (the row's own guard)."""
        c = surveys.c
        open_ = [c.token == token, c.answered_at.is_(None)]
        if until_expiry:
            open_.append(c.expires_at > at)
        with self._transaction() as conn:
            done = conn.execute(
                update(surveys)
                .where(*open_)
                .values(answered_at=at, answered_via=via, answers_json=json.dumps(answers))
                .returning(c.idempotency_key, c.patient_id, c.occasion)
            ).first()
            if done is None:
                return False
            write_audit(
                conn,
                [
                    AuditFact(
                        key=f"{done.idempotency_key}/answered",
                        patient_id=done.patient_id,
                        actor=by,
                        action="survey_answered",
                        purpose="treatment",
                        at=at,
                        detail={"occasion": done.occasion, "via": via},
                    )
                ],
            )
            return True

    def surveys(self, patient_id: str | None = None) -> list[SurveyRecord]:
        """Every survey issued (a patient's, if named), oldest first."""
        stmt = select(surveys)
        if patient_id is not None:
            stmt = stmt.where(surveys.c.patient_id == patient_id)
        return [_record(r) for r in self._read(stmt.order_by(surveys.c.id))]


def _record(row: Any) -> SurveyRecord:
    raw = row["answers_json"]
    return SurveyRecord(
        key=row["idempotency_key"],
        token=row["token"],
        patient_id=row["patient_id"],
        program_id=row["program_id"],
        site_id=row["site_id"],
        track_id=row["track_id"],
        occasion=row["occasion"],
        episode=row["episode"],
        issued_at=row["issued_at"],
        expires_at=row["expires_at"],
        answered_at=row["answered_at"],
        answered_via=row["answered_via"],
        answers=None if raw is None else {str(k): int(v) for k, v in json.loads(raw).items()},
    )
