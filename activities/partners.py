"""Partner services (medical, housing, parenting, employment, legal): the adapter interface
and the simulated partners used for demos and tests.

A real adapter posts a service request to the partner's system; the partner's answer comes
back later through the Referral workflow's `partner_response` update. The simulated partners
keep a ledger, as a real partner system would, so a retried send never refers twice."""

from __future__ import annotations

import hashlib
from typing import Protocol

from sqlalchemy import select

from infra.store import CareStore, partner_ledger, utcnow


class PartnerServices(Protocol):
    def send_request(self, reference: str, patient_id: str, need: str) -> str:
        """Send a service request; returns the partner's reference for it. A reference
        seen before is not sent again."""
        ...

    def send_reminder(self, reference: str, patient_id: str, need: str) -> None:
        """Remind the partner of a request it has not answered."""
        ...


class SimulatedPartners:
    def __init__(self, store: CareStore) -> None:
        self.store = store

    def send_request(self, reference: str, patient_id: str, need: str) -> str:
        self._once(reference, patient_id, need, "request")
        # Stable across retries and processes (unlike hash()).
        return f"SIM-{need.upper()}-{hashlib.sha256(reference.encode()).hexdigest()[:8]}"

    def send_reminder(self, reference: str, patient_id: str, need: str) -> None:
        self._once(reference, patient_id, need, "reminder")

    def _once(self, reference: str, patient_id: str, need: str, kind: str) -> bool:
        with self.store.transaction() as conn:
            seen = conn.execute(
                select(partner_ledger.c.reference).where(partner_ledger.c.reference == reference)
            ).first()
            if seen is not None:
                return False
            self.store.insert_once(
                conn,
                partner_ledger,
                [
                    {
                        "reference": reference,
                        "need": need,
                        "kind": kind,
                        "patient_id": patient_id,
                        "sent_at": utcnow(),
                    }
                ],
            )
        return True
