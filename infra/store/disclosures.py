"""The accounting of disclosures (42 CFR Part 2 §2.24): what left CarePath about a patient,
to whom, when, why and what it was. Each disclosure is an audit fact written in the
transaction of the disclosure itself (a referral sent, a family invitation posted, an
export made), so the accounting is read from the audit trail and cannot miss one or count
one twice."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from infra.store._core import StoreCore
from infra.store._schema import audit_events
from infra.store.audit import AuditFact, audit_fact, write_audit

DISCLOSED_TO_PARTNER = "disclosed_to_partner"
DISCLOSED_TO_FAMILY = "disclosed_to_family"
DISCLOSED_BY_EXPORT = "disclosed_by_export"
DISCLOSED_TO_SUBSCRIBER = "disclosed_to_subscriber"
DISCLOSURES = (
    DISCLOSED_TO_PARTNER,
    DISCLOSED_TO_FAMILY,
    DISCLOSED_BY_EXPORT,
    DISCLOSED_TO_SUBSCRIBER,
)


@dataclass(frozen=True)
class Disclosure:
    patient_id: str
    at: datetime
    recipient: str
    purpose: str
    description: str
    by: str
    """Who disclosed: a staff member, an operator's account, or CarePath itself."""

    def as_json(self) -> dict[str, str]:
        return {
            "at": self.at.isoformat(),
            "recipient": self.recipient,
            "purpose": self.purpose,
            "description": self.description,
            "by": self.by,
        }


def disclosure_of(fact: AuditFact) -> Disclosure:
    """An audit fact of a disclosure as the accounting lists it."""
    detail = fact.detail
    if fact.action == DISCLOSED_TO_PARTNER:
        recipient = f"{detail.get('partner')} partner service"
        description = (
            f"service request for a {detail.get('partner')} referral (partner reference "
            f"{detail.get('reference')}), under consent {detail.get('consent')}"
        )
    elif fact.action == DISCLOSED_TO_FAMILY:
        recipient = "the patient's family contact"
        description = f"invitation to family session {detail.get('session')}: its type and time"
    elif fact.action == DISCLOSED_TO_SUBSCRIBER:
        recipient = f"subscriber {detail.get('subscriber')}"
        description = f"{detail.get('description')} (event {detail.get('event_id')})"
    else:
        recipient = str(detail.get("recipient"))
        description = str(detail.get("description"))
    return Disclosure(
        patient_id=fact.patient_id,
        at=fact.at,
        recipient=recipient,
        purpose=fact.purpose,
        description=description,
        by=fact.actor,
    )


class DisclosureRecords(StoreCore):
    def record_export(
        self,
        *,
        patient_id: str,
        by: str,
        recipient: str,
        purpose: str,
        description: str,
        at: datetime,
    ) -> None:
        """An export of the patient's record made for `recipient`."""
        fact = AuditFact(
            key=f"{patient_id}/export/{at.isoformat()}/{by}",
            patient_id=patient_id,
            actor=by[:24],
            action=DISCLOSED_BY_EXPORT,
            purpose=purpose,
            at=at,
            detail={"recipient": recipient, "description": description},
        )
        with self._transaction() as conn:
            write_audit(conn, [fact])

    def disclosures(self, patient_id: str, since: datetime) -> list[Disclosure]:
        """The patient's disclosures made at or after `since`, oldest first."""
        a = audit_events.c
        stmt = (
            select(audit_events)
            .where(a.patient_id == patient_id, a.action.in_(DISCLOSURES), a.at >= since)
            .order_by(a.at, a.id)
        )
        return [disclosure_of(audit_fact(r)) for r in self._read(stmt)]
