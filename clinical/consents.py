"""Consent to disclose under 42 CFR Part 2 §2.31: what a written consent must say, and
whether one covers a disclosure.

A consent names who may disclose, a specific description of the information, to whom, for
what purpose, until when (a date or an event), how the patient may revoke it, and the
patient's (or their representative's) signature and date. CarePath discloses only under a
consent in force that covers the recipient and the purpose on the day of the disclosure.

Consents recorded through the journey's own forms (family involvement, a referral's
disclosure to a partner service, given at intake or through a case manager's task) carry no
terms of their own: they are the program's standard consent form for that kind (see
`standard_terms`), in force until revoked."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints, model_validator

FAMILY = "family_involvement"
PURPOSES = ("treatment", "payment", "health_care_operations", "care_coordination")
TPO = "treatment_payment_operations"
"""A single consent for future treatment, payment and health care operations (§2.33(b))."""
REVOCATION = (
    "The patient may revoke this consent at any time, orally or in writing, to their case "
    "manager, except to the extent that the program has already acted on it."
)
UNTIL_REVOKED = "the end of the patient's care at the program, unless revoked before"

Line = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=200)]


class ConsentTerms(BaseModel):
    """The elements §2.31(a) requires of a written consent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    discloser: Line
    """Who may disclose: the program (and site)."""
    information: Line
    """How much and what kind of information, specifically."""
    recipient: Line
    """To whom: a named recipient (a subscribing system, a partner service, a person)."""
    purpose: Literal[
        "treatment", "payment", "health_care_operations", "care_coordination",
        "treatment_payment_operations",
    ]  # fmt: skip
    expires_on: date | None = None
    expiry_event: Line | None = None
    """An event that ends the consent, where no date does."""
    revocation: Line = REVOCATION
    signed_by: Literal["patient", "guardian", "representative"] = "patient"
    signed_on: date

    @model_validator(mode="after")
    def _complete(self) -> ConsentTerms:
        if self.expires_on is None and self.expiry_event is None:
            raise ValueError("a consent ends on a date or at an event: give one")
        if self.expires_on is not None and self.expires_on <= self.signed_on:
            raise ValueError("expires_on: not after the day it was signed")
        return self

    def purpose_covers(self, purpose: str) -> bool:
        if self.purpose == TPO:
            return purpose in ("treatment", "payment", "health_care_operations")
        return purpose == self.purpose

    def in_force_on(self, day: date) -> bool:
        return day >= self.signed_on and (self.expires_on is None or day < self.expires_on)


def why_not_covered(
    granted: bool, terms: ConsentTerms | None, purpose: str, day: date
) -> str | None:
    """None if a consent (the latest of its kind: given or not, with its terms) covers a
    disclosure for `purpose` on `day`; otherwise why not, in a few words."""
    if not granted:
        return "no consent given, or it was revoked"
    if terms is None:  # the program's standard form: in force until revoked
        return None
    if not terms.purpose_covers(purpose):
        return f"the consent is for {terms.purpose.replace('_', ' ')}, not {purpose}"
    if not terms.in_force_on(day):
        return f"the consent ended on {terms.expires_on}" if terms.expires_on else "not yet signed"
    return None


def standard_terms(kind: str, site_id: str, signed_on: date) -> ConsentTerms:
    """What the program's standard form for a kind of consent says (consents recorded
    through the journey's forms)."""
    if kind == FAMILY:
        recipient, purpose = "the patient's family contact", "treatment"
        information = "family sessions' type, day and time, and the patient's participation"
    elif kind.startswith("disclosure:"):
        need = kind.removeprefix("disclosure:")
        recipient, purpose = f"the {need} partner service", "care_coordination"
        information = f"a referral for {need} support: the need and how to reach the patient"
    else:
        recipient, purpose, information = kind, "treatment", "as the consent names"
    return ConsentTerms(
        discloser=f"the CarePath program at site {site_id}",
        information=information,
        recipient=recipient,
        purpose=purpose,
        expiry_event=UNTIL_REVOKED,
        signed_on=signed_on,
    )


def subscriber_kind(subscriber: str) -> str:
    """The consent a subscriber's events about a patient need."""
    return f"events:{subscriber}"


def api_client_kind(client: str) -> str:
    """The consent an API client's export of a patient's record needs."""
    return f"api:{client}"


def recipient_kind(recipient: str) -> str:
    """The consent an export to a recipient named in words needs ("County EHR")."""
    slug = re.sub(r"[^a-z0-9]+", "-", recipient.lower()).strip("-")[:30]
    return f"recipient:{slug}"


NOT_NAMED = "not named"
"""An export's recipient when none is named: only for a purpose that needs no consent."""
NO_CONSENT_NEEDED = ("patient_request", "audit")
"""Export purposes that need no consent: the patient's own copy; an audit or evaluation
(§2.53), whose auditors are bound by Part 2 themselves."""
