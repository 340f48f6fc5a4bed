"""Partner services (medical, housing, parenting, employment, legal): the adapter interface
(the simulated clinic's partners are simulation.partners).

A real adapter posts a service request to the partner's system; the partner's answer comes
back later through the Referral workflow's `partner_response` update."""

from __future__ import annotations

from typing import Protocol


class PartnerServices(Protocol):
    def send_request(self, reference: str, patient_id: str, need: str) -> str:
        """Send a service request; returns the partner's reference for it. A reference
        seen before is not sent again."""
        ...

    def send_reminder(self, reference: str, patient_id: str, need: str) -> None:
        """Remind the partner of a request it has not answered."""
        ...
