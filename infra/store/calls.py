"""Follow-up calls: each attempt recorded once with its outcome and the check-in's answers
(sealed at rest), and the simulated telephony provider's own ledger of calls placed."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from clinical.aftercare import CallOutcome, CheckIn
from infra.store._core import StoreCore, insert_once, utcnow
from infra.store._schema import call_placements, follow_up_calls, telephony_ledger
from infra.store.audit import AuditFact, write_audit
from infra.store.events import CHECK_IN_CONCLUDED, CareEvent, publish

Answered = tuple[CallOutcome, CheckIn | None]


@dataclass(frozen=True)
class CallAttempt:
    key: str
    patient_id: str
    call_ref: str
    """The check-in within the patient's journey (E2-FU-D030 for a later episode's)."""
    attempt: int
    due_at: datetime
    placed_at: datetime
    outcome: CallOutcome
    check_in: CheckIn | None = None
    """What a reached patient answered."""


def call_attempt_of(row: Mapping[str, Any]) -> CallAttempt:
    check_in = None
    if row["check_in_json"]:
        check_in = CheckIn.model_validate_json(row["check_in_json"])
    elif row["days_of_use"] is not None:  # recorded before instruments were asked
        check_in = CheckIn(days_of_use=row["days_of_use"])
    return CallAttempt(
        key=row["idempotency_key"],
        patient_id=row["patient_id"],
        call_ref=row["call_id"],
        attempt=row["attempt"],
        due_at=row["due_at"],
        placed_at=row["placed_at"],
        outcome=CallOutcome(row["outcome"]),
        check_in=check_in,
    )


class CallRecords(StoreCore):
    def call_attempt(self, key: str) -> CallAttempt | None:
        """The attempt recorded under `key`, if it was (a retried call is not placed again)."""
        found = self._read(select(follow_up_calls).where(follow_up_calls.c.idempotency_key == key))
        return call_attempt_of(found[0]) if found else None

    def record_call_placement(self, reference: str, patient_id: str, workflow_id: str) -> None:
        """The workflow that waits for the provider's word on the call `reference` (once:
        a retried placing names the same workflow)."""
        row = {
            "reference": reference,
            "patient_id": patient_id,
            "workflow_id": workflow_id,
            "placed_at": utcnow(),
        }
        with self._transaction() as conn:
            insert_once(conn, call_placements, [row])

    def call_placed_by(self, reference: str) -> str | None:
        """The workflow that placed the call `reference`, if the store knows it (calls
        placed before it kept this were placed by their check-in's FollowUpCall)."""
        found = self._read(
            select(call_placements.c.workflow_id).where(call_placements.c.reference == reference)
        )
        return str(found[0]["workflow_id"]) if found else None

    def record_call_attempt(self, attempt: CallAttempt, concluded: AuditFact | None) -> bool:
        """The attempt once, and (when it ends the check-in) the check-in's conclusion on
        the audit trail; False if it was recorded before."""
        check_in = attempt.check_in
        row = {
            "idempotency_key": attempt.key,
            "patient_id": attempt.patient_id,
            "call_id": attempt.call_ref,
            "attempt": attempt.attempt,
            "due_at": attempt.due_at,
            "placed_at": attempt.placed_at,
            "outcome": attempt.outcome.value,
            "days_of_use": check_in.days_of_use if check_in else None,
            "check_in_json": check_in.model_dump_json() if check_in else None,
        }
        with self._transaction() as conn:
            if concluded is not None:
                write_audit(conn, [concluded])
                facts = {
                    "call_id": attempt.call_ref,
                    "outcome": attempt.outcome.value,
                    "attempts": attempt.attempt,
                    "check_in": check_in.model_dump(mode="json") if check_in else None,
                }
                event = CareEvent(
                    CHECK_IN_CONCLUDED, concluded.key, attempt.patient_id, concluded.at, facts
                )
                publish(conn, [event])
            return insert_once(conn, follow_up_calls, [row]) == 1

    def call_attempts(self, patient_id: str | None = None) -> list[CallAttempt]:
        """A patient's (or every patient's) call attempts, by due time and attempt: the last
        of a check-in tells how it ended."""
        stmt = select(follow_up_calls).order_by(
            follow_up_calls.c.due_at, follow_up_calls.c.attempt, follow_up_calls.c.id
        )
        if patient_id is not None:
            stmt = stmt.where(follow_up_calls.c.patient_id == patient_id)
        return [call_attempt_of(r) for r in self._read(stmt)]

    def telephony_call(
        self, reference: str, patient_id: str, dial: Callable[[], Answered]
    ) -> Answered:
        """The simulated provider's ledger, as a real provider would keep one: a call placed
        with a reference seen before returns the earlier answer, uncalled; otherwise `dial`
        places it and its answer is kept."""
        with self._transaction() as conn:
            row = conn.execute(
                select(telephony_ledger).where(telephony_ledger.c.reference == reference)
            ).first()
            if row is not None:
                answers = json.loads(row.answers_json) if row.answers_json else None
                return CallOutcome(row.outcome), CheckIn(**answers) if answers else None
            outcome, check_in = dial()
            insert_once(
                conn,
                telephony_ledger,
                [
                    {
                        "reference": reference,
                        "patient_id": patient_id,
                        "placed_at": utcnow(),
                        "outcome": outcome.value,
                        "answers_json": check_in.model_dump_json() if check_in else None,
                    }
                ],
            )
        return outcome, check_in
