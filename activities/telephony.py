"""Telephony: the interface of the provider that places the check-in calls (the simulated
clinic's provider is simulation.telephony)."""

from __future__ import annotations

from typing import Protocol

from clinical.aftercare import CallOutcome, CheckIn


class Telephony(Protocol):
    def place_call(
        self, reference: str, patient_id: str, phone: str, instruments: tuple[str, ...] = ()
    ) -> tuple[CallOutcome, CheckIn | None]:
        """Place one call; a reached patient answers days of use and the instruments asked.
        A reference seen before returns the earlier result, uncalled."""
        ...
