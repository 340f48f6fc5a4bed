"""The notifications outbox: reminders and notices to patients, their family contact and
case managers, which the notification adapter delivers from. Once per key; a message not yet
sent can be withdrawn."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from clinical.reminders import Reminder
from infra.store._core import StoreCore, insert_once, utcnow
from infra.store._schema import notifications


@dataclass(frozen=True)
class OutboxMessage:
    key: str
    channel: str
    """sms, email, family or case_manager."""
    recipient: str
    patient_id: str
    kind: str
    body: str
    created_at: datetime
    deliver_at: datetime | None = None
    """Not before (a reminder); None: at once."""
    sent_at: datetime | None = None
    withdrawn_at: datetime | None = None
    """No longer to be sent (the session was cancelled, the call moved)."""
    status: str | None = None
    """None while waiting; sent, or a dead letter (failed, bounced): see infra.store.delivery."""
    attempts: int = 0


def post(conn: Connection, messages: Sequence[OutboxMessage]) -> int:
    """Messages whose key is new into the outbox; returns how many were."""
    return insert_once(
        conn,
        notifications,
        [
            {
                "idempotency_key": m.key,
                "channel": m.channel,
                "recipient": m.recipient,
                "patient_id": m.patient_id,
                "kind": m.kind,
                "body": m.body,
                "created_at": m.created_at,
                "deliver_at": m.deliver_at,
            }
            for m in messages
        ],
    )


def queue_reminders(conn: Connection, reminders: Iterable[Reminder], at: datetime) -> int:
    return post(
        conn,
        [
            OutboxMessage(
                key=r.key,
                channel=r.channel,
                recipient=f"patient:{r.patient_id}",
                patient_id=r.patient_id,
                kind=r.kind,
                body=r.body,
                created_at=at,
                deliver_at=r.deliver_at,
            )
            for r in reminders
        ],
    )


def notify_case_manager(
    conn: Connection, *, key: str, case_manager_id: str, patient_id: str, kind: str, body: str
) -> int:
    message = OutboxMessage(
        key=key,
        channel="case_manager",
        recipient=case_manager_id,
        patient_id=patient_id,
        kind=kind,
        body=body,
        created_at=utcnow(),
    )
    return post(conn, [message])


def withdraw_reminders(conn: Connection, keys: Iterable[str], at: datetime) -> int:
    """Reminders not yet sent that no longer apply."""
    keys = list(keys)
    if not keys:
        return 0
    result = conn.execute(
        update(notifications)
        .where(
            notifications.c.idempotency_key.in_(keys),
            notifications.c.sent_at.is_(None),
            notifications.c.withdrawn_at.is_(None),
        )
        .values(withdrawn_at=at)
    )
    return int(result.rowcount or 0)


def _message(row: Mapping[str, Any]) -> OutboxMessage:
    return OutboxMessage(
        key=row["idempotency_key"],
        channel=row["channel"],
        recipient=row["recipient"],
        patient_id=row["patient_id"],
        kind=row["kind"],
        body=row["body"],
        created_at=row["created_at"],
        deliver_at=row["deliver_at"],
        sent_at=row["sent_at"],
        withdrawn_at=row["withdrawn_at"],
        status=row["status"],
        attempts=row["attempts"],
    )


class Outbox(StoreCore):
    def queue_messages(self, reminders: Sequence[Reminder]) -> int:
        """Messages for patients into the outbox (once per key); returns how many were new."""
        with self._transaction() as conn:
            return queue_reminders(conn, reminders, utcnow())

    def outbox(self, patient_id: str, channel: str | None = None) -> list[OutboxMessage]:
        """What the outbox holds about a patient (on one channel, if named), oldest first."""
        stmt = select(notifications).where(notifications.c.patient_id == patient_id)
        if channel is not None:
            stmt = stmt.where(notifications.c.channel == channel)
        return [_message(r) for r in self._read(stmt.order_by(notifications.c.id))]
