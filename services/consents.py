"""Whether CarePath may disclose a patient's information to a recipient for a purpose: only
under the patient's consent to that disclosure, in force (the latest recorded of its kind
grants it). 42 CFR Part 2 §2.31."""

from __future__ import annotations

from datetime import datetime

from infra.store import CareStore


def subscriber_consent_kind(subscriber: str) -> str:
    """The consent a subscriber's events about a patient need."""
    return f"events:{subscriber}"


def may_disclose(
    store: CareStore, patient_id: str, subscriber: str, purpose: str, at: datetime
) -> bool:
    return store.consent_in_force(patient_id, subscriber_consent_kind(subscriber))
