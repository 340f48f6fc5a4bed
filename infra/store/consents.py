"""Consents over time: each recorded once per key; the latest of a (patient, kind) is in
force (none recorded: not given)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from infra.store._core import StoreCore, insert_once
from infra.store._schema import consents
from infra.store.audit import AuditFact, write_audit


@dataclass(frozen=True)
class ConsentEntry:
    key: str
    patient_id: str
    kind: str
    """family_involvement, or disclosure:<need> to a partner service."""
    granted: bool
    recorded_by: str
    recorded_at: datetime


def record_consents(conn: Connection, entries: Sequence[ConsentEntry]) -> int:
    return insert_once(
        conn,
        consents,
        [
            {
                "idempotency_key": c.key,
                "patient_id": c.patient_id,
                "kind": c.kind,
                "granted": c.granted,
                "recorded_by": c.recorded_by,
                "recorded_at": c.recorded_at,
            }
            for c in entries
        ],
    )


def _entry(row: Mapping[str, Any]) -> ConsentEntry:
    return ConsentEntry(
        key=row["idempotency_key"],
        patient_id=row["patient_id"],
        kind=row["kind"],
        granted=row["granted"],
        recorded_by=row["recorded_by"],
        recorded_at=row["recorded_at"],
    )


class ConsentRecords(StoreCore):
    def record_consent(self, consent: ConsentEntry, audit: AuditFact) -> bool:
        """The consent (given or withdrawn) and its audit fact; False if recorded before."""
        with self._transaction() as conn:
            created = record_consents(conn, [consent])
            write_audit(conn, [audit])
        return created == 1

    def consents(self, patient_id: str, kind: str | None = None) -> list[ConsentEntry]:
        """A patient's consents (of one kind, if named) as recorded, oldest first."""
        stmt = select(consents).where(consents.c.patient_id == patient_id)
        if kind is not None:
            stmt = stmt.where(consents.c.kind == kind)
        return [_entry(r) for r in self._read(stmt.order_by(consents.c.recorded_at, consents.c.id))]

    def consent_in_force(self, patient_id: str, kind: str) -> bool:
        """The latest recorded consent of that kind (none recorded: not given)."""
        recorded = self.consents(patient_id, kind)
        return recorded[-1].granted if recorded else False
