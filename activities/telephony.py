"""Telephony: the interface of the provider that places the check-in calls.

Real providers place a call through their HTTP API and tell how it ended later, by webhook
(infra.telephony.HttpTelephony places; web.webhooks takes the callback to the call's
workflow). The simulated cohorts (the what-if, the cohort benchmark, workflow tests) use an
in-process provider instead (simulation.telephony), a deliberate choice for speed: it gives
its word on the call with the placing, and the workflow takes that word through the same
door as a callback (FollowUpCallWorkflow._take)."""

from __future__ import annotations

from typing import Protocol

from infra.telephony import CallPlaced, TelephonyRefused

__all__ = ["CallPlaced", "Telephony", "TelephonyRefused"]


class Telephony(Protocol):
    def place_call(
        self, reference: str, patient_id: str, phone: str, instruments: tuple[str, ...] = ()
    ) -> CallPlaced:
        """Place one call, asking the instruments of a patient who answers. A reference
        seen before is not placed again: the provider answers as it did the first time."""
        ...
