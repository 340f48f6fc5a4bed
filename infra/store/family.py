"""The patient's family contact, kept sealed: whom family-session invitations are sent to.
Recording one (or replacing it) is audited; reading it is for the sender alone."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, insert, select

from clinical.family_contacts import FamilyContact
from infra.store._core import StoreCore
from infra.store._schema import family_contacts
from infra.store.audit import AuditFact, write_audit


class FamilyContactRecords(StoreCore):
    def record_family_contact(
        self, patient_id: str, contact: FamilyContact, by: str, at: datetime
    ) -> None:
        """The patient's family contact from now on (any earlier one replaced), audited."""
        fact = AuditFact(
            key=f"{patient_id}/family-contact/{at.isoformat()}",
            patient_id=patient_id,
            actor=by,
            action="family_contact_recorded",
            purpose="family_involvement",
            at=at,
            detail={"channel": contact.channel, "relationship": contact.relationship},
        )
        with self._transaction() as conn:
            conn.execute(delete(family_contacts).where(family_contacts.c.patient_id == patient_id))
            conn.execute(
                insert(family_contacts).values(
                    patient_id=patient_id,
                    channel=contact.channel,
                    address=contact.address,
                    relationship=contact.relationship,
                    recorded_by=by,
                    recorded_at=at,
                )
            )
            write_audit(conn, [fact])

    def family_contact(self, patient_id: str) -> FamilyContact | None:
        c = family_contacts.c
        found = self._read(
            select(c.channel, c.address, c.relationship).where(c.patient_id == patient_id)
        )
        if not found:
            return None
        row = found[0]
        return FamilyContact(
            channel=row["channel"], address=str(row["address"]), relationship=row["relationship"]
        )
