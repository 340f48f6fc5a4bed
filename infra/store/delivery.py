"""Delivering the outbox: senders claim due messages for a lease (one sender per message,
however many run side by side), send them and settle each: sent, retried later, or a dead
letter (failed or bounced). The recipient's address is read from the sealed contact columns
at the moment of sending and goes nowhere else."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, false, or_, select, update

from clinical.assessment import Assessment, ContactWindow
from infra.store._core import StoreCore, claim_rows
from infra.store._schema import family_contacts, notifications, patients

DEAD = ("failed", "bounced")
"""The statuses of a dead letter: no sender takes it again unless an operator requeues it."""


@dataclass(frozen=True)
class DueMessage:
    """A message a sender has claimed: only it may settle the message while its lease runs."""

    key: str
    claim: str
    channel: str
    patient_id: str
    kind: str
    body: str
    deliver_at: datetime | None
    attempts: int
    """Tries before this one."""


@dataclass(frozen=True)
class DeliveryContact:
    """Where and when a patient may be reached. The addresses are PHI: kept out of repr, so
    a log line or a traceback that shows the contact shows no number or address."""

    patient_id: str
    site_id: str
    program_id: str
    window: ContactWindow
    phone: str = field(repr=False)
    email: str | None = field(repr=False)


@dataclass(frozen=True)
class DeadLetter:
    key: str
    patient_id: str
    channel: str
    kind: str
    status: str
    attempts: int
    last_error: str | None
    created_at: datetime


def _dead_letter(row: Mapping[str, Any]) -> DeadLetter:
    return DeadLetter(
        key=row["idempotency_key"],
        patient_id=row["patient_id"],
        channel=row["channel"],
        kind=row["kind"],
        status=row["status"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        created_at=row["created_at"],
    )


class DeliveryQueue(StoreCore):
    def claim_due(
        self,
        channels: Collection[str],
        now: datetime,
        *,
        lease: timedelta,
        limit: int = 50,
    ) -> list[DueMessage]:
        """Up to `limit` messages on these channels that are due at `now` (not sent, not
        withdrawn, not a dead letter, past their deliver-at and next try, and claimed by no
        one whose lease still runs), claimed for `lease`: oldest first."""
        n = notifications.c
        # A family invitation waits until the patient has a family contact on file.
        with_contact = select(family_contacts.c.patient_id)
        ready = and_(
            or_(
                n.channel.in_([c for c in channels if c != "family"]),
                and_(n.channel == "family", n.patient_id.in_(with_contact))
                if "family" in channels
                else false(),
            ),
            n.sent_at.is_(None),
            n.withdrawn_at.is_(None),
            n.status.is_(None),
            or_(n.deliver_at.is_(None), n.deliver_at <= now),
            or_(n.next_attempt_at.is_(None), n.next_attempt_at <= now),
            or_(n.claimed_until.is_(None), n.claimed_until <= now),
        )
        with self._transaction() as conn:
            claim = claim_rows(conn, notifications, ready, now, lease, limit)
            if claim is None:
                return []
            rows = conn.execute(
                select(notifications).where(n.claimed_by == claim).order_by(n.id)
            ).mappings()
            return [
                DueMessage(
                    key=r["idempotency_key"],
                    claim=claim,
                    channel=r["channel"],
                    patient_id=r["patient_id"],
                    kind=r["kind"],
                    body=r["body"],
                    deliver_at=r["deliver_at"],
                    attempts=r["attempts"],
                )
                for r in rows
            ]

    def delivery_contact(self, patient_id: str) -> DeliveryContact | None:
        """The patient's site, program, contact window and addresses (None: no such patient)."""
        p = patients.c
        stmt = select(p.site_id, p.program_id, p.phone, p.email, p.assessment_json)
        found = self._read(stmt.where(p.patient_id == patient_id))
        if not found:
            return None
        row = found[0]
        assessment = Assessment.model_validate_json(row["assessment_json"])
        return DeliveryContact(
            patient_id=patient_id,
            site_id=row["site_id"],
            program_id=row["program_id"],
            window=assessment.contact_window,
            phone=str(row["phone"]),
            email=None if row["email"] is None else str(row["email"]),
        )

    def mark_sent(self, message: DueMessage, at: datetime) -> bool:
        """Sent (the server or provider accepted it); False if the claim had lapsed."""
        return self._settle(message, status="sent", sent_at=at, attempts=message.attempts + 1)

    def retry_later(self, message: DueMessage, error: str, at: datetime) -> bool:
        """A try that failed for now: the next one not before `at`."""
        return self._settle(
            message, attempts=message.attempts + 1, next_attempt_at=at, last_error=error[:200]
        )

    def postpone(self, message: DueMessage, until: datetime) -> bool:
        """Not tried (outside the patient's contact window): taken again from `until`."""
        return self._settle(message, next_attempt_at=until)

    def give_up(self, message: DueMessage, status: str, error: str) -> bool:
        """A dead letter: failed (retries spent, or nowhere to send it) or bounced."""
        assert status in DEAD, status
        return self._settle(
            message, status=status, attempts=message.attempts + 1, last_error=error[:200]
        )

    def _settle(self, message: DueMessage, **values: Any) -> bool:
        n = notifications.c
        with self._transaction() as conn:
            result = conn.execute(
                update(notifications)
                .where(n.idempotency_key == message.key, n.claimed_by == message.claim)
                .values(claimed_by=None, claimed_until=None, **values)
            )
        return int(result.rowcount or 0) == 1

    def dead_letters(self) -> list[DeadLetter]:
        """Messages given up on, oldest first."""
        n = notifications.c
        stmt = select(notifications).where(n.status.in_(DEAD)).order_by(n.id)
        return [_dead_letter(r) for r in self._read(stmt)]

    def requeue(self, key: str) -> bool:
        """A dead letter back to the senders with its tries counted afresh (the address was
        corrected, the provider is back); False if no dead letter has that key."""
        n = notifications.c
        with self._transaction() as conn:
            result = conn.execute(
                update(notifications)
                .where(n.idempotency_key == key, n.status.in_(DEAD))
                .values(status=None, attempts=0, next_attempt_at=None, last_error=None)
            )
        return int(result.rowcount or 0) == 1
