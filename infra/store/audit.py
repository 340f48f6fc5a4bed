"""The audit trail: who did what, to which patient, when and why. Every audit row of the
store is written by `write_audit`, once per key, in the transaction of the write it audits."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from infra.store._core import StoreCore, insert_once, to_json
from infra.store._schema import audit_events

# What an audit fact's detail holds: JSON.
JsonValue = str | int | float | bool | None | Sequence["JsonValue"] | Mapping[str, "JsonValue"]
Detail = Mapping[str, JsonValue]


@dataclass(frozen=True)
class AuditFact:
    """One fact for the audit trail; its key makes writing it again a no-op."""

    key: str
    patient_id: str
    actor: str
    action: str
    purpose: str
    at: datetime
    detail: Detail = field(default_factory=dict)


def write_audit(conn: Connection, facts: Sequence[AuditFact]) -> int:
    """The facts whose key is new; returns how many were."""
    return insert_once(
        conn,
        audit_events,
        [
            {
                "idempotency_key": f.key,
                "patient_id": f.patient_id,
                "actor": f.actor,
                "action": f.action,
                "purpose": f.purpose,
                "at": f.at,
                "detail_json": to_json(dict(f.detail)),
            }
            for f in facts
        ],
    )


def audit_fact(row: Mapping[str, Any]) -> AuditFact:
    detail = json.loads(str(row["detail_json"] or "{}"))
    return AuditFact(
        key=str(row["idempotency_key"]),
        patient_id=str(row["patient_id"]),
        actor=str(row["actor"]),
        action=str(row["action"]),
        purpose=str(row["purpose"]),
        at=row["at"],
        detail=detail,
    )


class AuditTrail(StoreCore):
    def audit_trail(
        self, patient_id: str | None = None, actions: Sequence[str] = ()
    ) -> list[AuditFact]:
        """A patient's (or every patient's) audit facts, oldest first; only the `actions`
        named, if any are."""
        stmt = select(audit_events).order_by(audit_events.c.at, audit_events.c.id)
        if patient_id is not None:
            stmt = stmt.where(audit_events.c.patient_id == patient_id)
        if actions:
            stmt = stmt.where(audit_events.c.action.in_(actions))
        return [audit_fact(r) for r in self._read(stmt)]
