"""Referrals to partner services: requested, sent (with the patient's consent to that
disclosure), reminded, closed; and the simulated partners' own ledger of what they were
sent."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from clinical.referrals import ReferralOutcome
from infra.store._core import StoreCore, insert_once, utcnow
from infra.store._schema import partner_ledger, patients, referrals
from infra.store.audit import AuditFact, write_audit
from infra.store.events import REFERRAL_CLOSED, CareEvent, publish


@dataclass(frozen=True)
class NewReferral:
    key: str
    referral_id: str
    workflow_id: str
    patient_id: str
    case_manager_id: str
    need: str
    requested_at: datetime


@dataclass(frozen=True)
class ReferralEntry:
    key: str
    referral_id: str
    workflow_id: str
    patient_id: str
    case_manager_id: str
    need: str
    status: str
    """requested, sent or closed."""
    partner_reference: str | None
    reminders: int
    outcome: ReferralOutcome | None
    requested_at: datetime
    sent_at: datetime | None
    closed_at: datetime | None


@dataclass(frozen=True)
class PartnerContact:
    """A request or reminder the simulated partners received."""

    reference: str
    need: str
    kind: str
    """request or reminder."""
    patient_id: str
    sent_at: datetime


def referral_entry(row: Mapping[str, Any]) -> ReferralEntry:
    return ReferralEntry(
        key=row["idempotency_key"],
        referral_id=row["referral_id"],
        workflow_id=row["workflow_id"],
        patient_id=row["patient_id"],
        case_manager_id=row["case_manager_id"],
        need=row["need"],
        status=row["status"],
        partner_reference=row["partner_reference"],
        reminders=row["reminders"],
        outcome=ReferralOutcome(row["outcome"]) if row["outcome"] else None,
        requested_at=row["requested_at"],
        sent_at=row["sent_at"],
        closed_at=row["closed_at"],
    )


class ReferralRecords(StoreCore):
    def open_referral(self, referral: NewReferral, audit: AuditFact) -> bool:
        """The referral once, as requested, and who asked for it; False if it was open."""
        row = {
            "idempotency_key": referral.key,
            "referral_id": referral.referral_id,
            "workflow_id": referral.workflow_id,
            "patient_id": referral.patient_id,
            "case_manager_id": referral.case_manager_id,
            "need": referral.need,
            "status": "requested",
            "reminders": 0,
            "requested_at": referral.requested_at,
        }
        with self._transaction() as conn:
            created = insert_once(conn, referrals, [row])
            write_audit(conn, [audit])
        return created == 1

    def mark_referral_sent(
        self, key: str, partner_reference: str, at: datetime, disclosure: AuditFact
    ) -> None:
        """The partner has the request (the first sending stands) and the disclosure is on
        the audit trail."""
        with self._transaction() as conn:
            conn.execute(
                referrals.update()
                .where(referrals.c.idempotency_key == key, referrals.c.sent_at.is_(None))
                .values(status="sent", partner_reference=partner_reference, sent_at=at)
            )
            write_audit(conn, [disclosure])

    def count_partner_reminder(self, key: str, number: int) -> None:
        """The partner was reminded `number` times (a count never goes back)."""
        with self._transaction() as conn:
            conn.execute(
                referrals.update()
                .where(referrals.c.idempotency_key == key, referrals.c.reminders < number)
                .values(reminders=number)
            )

    def close_referral(self, key: str, outcome: str, at: datetime, audit: AuditFact) -> None:
        """The referral's end (the first closing stands), audited."""
        with self._transaction() as conn:
            found = conn.execute(
                referrals.update()
                .where(referrals.c.idempotency_key == key, referrals.c.closed_at.is_(None))
                .values(status="closed", outcome=outcome, closed_at=at)
                .returning(referrals.c.patient_id, referrals.c.need, referrals.c.referral_id)
            ).first()
            write_audit(conn, [audit])
            if found is not None:
                facts = {"need": found.need, "outcome": outcome, "referral_id": found.referral_id}
                publish(conn, [CareEvent(REFERRAL_CLOSED, key, found.patient_id, at, facts)])

    def referral_of(self, workflow_id: str) -> ReferralEntry | None:
        """The latest referral whose loop runs as `workflow_id` (a need referred again
        after its loop closed reuses the ID)."""
        stmt = (
            select(referrals)
            .where(referrals.c.workflow_id == workflow_id)
            .order_by(referrals.c.id.desc())
            .limit(1)
        )
        found = self._read(stmt)
        return referral_entry(found[0]) if found else None

    def referrals(
        self,
        *,
        patient_id: str | None = None,
        case_manager_id: str | None = None,
        site_id: str | None = None,
    ) -> list[ReferralEntry]:
        """Referrals matching every filter given, in the order they were requested."""
        stmt = select(referrals).order_by(referrals.c.id)
        if patient_id is not None:
            stmt = stmt.where(referrals.c.patient_id == patient_id)
        if case_manager_id is not None:
            stmt = stmt.where(referrals.c.case_manager_id == case_manager_id)
        if site_id is not None:
            at_site = select(patients.c.patient_id).where(patients.c.site_id == site_id)
            stmt = stmt.where(referrals.c.patient_id.in_(at_site))
        return [referral_entry(r) for r in self._read(stmt)]

    # --- the simulated partners' ledger ---------------------------------------------------

    def contact_partner(self, reference: str, patient_id: str, need: str, kind: str) -> bool:
        """A request or reminder sent once per reference; False if it was sent before."""
        row = {
            "reference": reference,
            "need": need,
            "kind": kind,
            "patient_id": patient_id,
            "sent_at": utcnow(),
        }
        with self._transaction() as conn:
            return insert_once(conn, partner_ledger, [row]) == 1

    def partner_contacts(self, patient_id: str) -> list[PartnerContact]:
        stmt = (
            select(partner_ledger)
            .where(partner_ledger.c.patient_id == patient_id)
            .order_by(partner_ledger.c.sent_at, partner_ledger.c.reference)
        )
        return [PartnerContact(**r) for r in self._read(stmt)]
