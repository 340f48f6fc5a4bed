"""Consents over time: each recorded once per key, with its §2.31 terms when it has a
written form of its own; the latest of a (patient, kind) is in force (none recorded: not
given). Whether one covers a disclosure is clinical.consents' rule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from clinical.consents import ConsentTerms, why_not_covered
from infra.store._core import StoreCore, insert_once
from infra.store._schema import consents
from infra.store.audit import AuditFact, write_audit


@dataclass(frozen=True)
class ConsentEntry:
    key: str
    patient_id: str
    kind: str
    """family_involvement, disclosure:<need> to a partner service, events:<subscriber>,
    api:<client>, or recipient:<a recipient named in words>."""
    granted: bool
    recorded_by: str
    recorded_at: datetime
    terms: ConsentTerms | None = None
    """What the written consent says (§2.31); None: the program's standard form."""


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
                "terms_json": c.terms.model_dump_json() if c.terms else None,
            }
            for c in entries
        ],
    )


def _entry(row: Mapping[str, Any]) -> ConsentEntry:
    terms = row["terms_json"]
    return ConsentEntry(
        key=row["idempotency_key"],
        patient_id=row["patient_id"],
        kind=row["kind"],
        granted=row["granted"],
        recorded_by=row["recorded_by"],
        recorded_at=row["recorded_at"],
        terms=ConsentTerms.model_validate_json(terms) if terms else None,
    )


def latest_consent(conn: Connection, patient_id: str, kind: str) -> ConsentEntry | None:
    """The consent of that kind in force (or revoked), as last recorded."""
    c = consents.c
    row = (
        conn.execute(
            select(consents)
            .where(c.patient_id == patient_id, c.kind == kind)
            .order_by(c.recorded_at.desc(), c.id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    return None if row is None else _entry(dict(row))


def why_not_consented(
    conn: Connection, patient_id: str, kind: str, purpose: str, at: datetime
) -> str | None:
    """None if the patient's consent of `kind` covers a disclosure for `purpose` at `at`;
    otherwise why not."""
    found = latest_consent(conn, patient_id, kind)
    if found is None:
        return "no consent given"
    return why_not_covered(found.granted, found.terms, purpose, at.date())


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

    def why_not_consented(
        self, patient_id: str, kind: str, purpose: str, at: datetime
    ) -> str | None:
        """None if a disclosure of this kind for `purpose` at `at` is consented; otherwise
        why not, in a few words (revoked, expired, another purpose, none given)."""
        with self.engine.connect() as conn:
            return why_not_consented(conn, patient_id, kind, purpose, at)
