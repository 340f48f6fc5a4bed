"""Partner services (medical, housing, parenting, employment, legal): the adapter interface
and the simulated partners used for demos and tests.

A real adapter posts a service request to the partner's system; the partner's answer comes
back later through the Referral workflow's `partner_response` update. The simulated partners
keep a ledger, as a real partner system would, so a retried send never refers twice."""

from __future__ import annotations

import hashlib
from typing import Protocol

from infra.store import CareStore


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
        self.store.contact_partner(reference, patient_id, need, "request")
        # Stable across retries and processes (unlike hash()).
        return f"SIM-{need.upper()}-{hashlib.sha256(reference.encode()).hexdigest()[:8]}"

    def send_reminder(self, reference: str, patient_id: str, need: str) -> None:
        self.store.contact_partner(reference, patient_id, need, "reminder")
