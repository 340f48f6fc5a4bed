"""The simulated clinic's partner services (activities.partners.PartnerServices): they keep a
ledger, as a real partner system would, so a retried send never refers twice. Their answers
come later, from the simulated case manager's side (simulation.case_manager)."""

from __future__ import annotations

import hashlib

from infra.store import CareStore


class SimulatedPartners:
    def __init__(self, store: CareStore) -> None:
        self.store = store

    def send_request(self, reference: str, patient_id: str, need: str) -> str:
        self.store.contact_partner(reference, patient_id, need, "request")
        # Stable across retries and processes (unlike hash()).
        return f"SIM-{need.upper()}-{hashlib.sha256(reference.encode()).hexdigest()[:8]}"

    def send_reminder(self, reference: str, patient_id: str, need: str) -> None:
        self.store.contact_partner(reference, patient_id, need, "reminder")
