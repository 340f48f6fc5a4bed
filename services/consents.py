"""A patient's consents to disclose (42 CFR Part 2 §2.31) as the command line and the API
record and list them: one way to name a recipient, to check a written consent's elements,
to record one given or revoked (with its audit fact), and to list them with their terms.

The recipient (`to`) is `subscriber:NAME` (a subscribing system's events), `api:NAME` (an
API client's copy of the record), `partner:NEED` (a referral's partner service), `family`
(the family contact), or any other recipient in words ("County EHR"), which an export's
recipient then names. Family consent is the journey's (it books family sessions): it is
given and withdrawn through the journey; here its written form is recorded once given."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pydantic import ValidationError

from clinical.assessment import SocialNeed
from clinical.consents import (
    FAMILY,
    ConsentTerms,
    api_client_kind,
    recipient_kind,
    standard_terms,
    subscriber_kind,
)
from clinical.protocol import describe_validation_error
from infra.store import CareStore, ConsentEntry
from infra.store.api_clients import ApiClients
from infra.store.audit import AuditFact


class ConsentRefused(Exception):
    """A consent not recorded: bad input (`bad_input`), or refused by a rule; the message
    is the one line both the command line and the API answer."""

    def __init__(self, message: str, bad_input: bool = True) -> None:
        super().__init__(message)
        self.bad_input = bad_input


@dataclass(frozen=True)
class WrittenForm:
    """A consent given in writing, as typed (days as YYYY-MM-DD): checked by `record`."""

    information: str | None = None
    purpose: str = "treatment"
    expires: str | None = None
    until_event: str | None = None
    signed_on: str | None = None
    signed_by: str = "patient"


def consent_kind(store: CareStore, to: str, flag: str = "--to") -> tuple[str, str]:
    """The consent kind of a recipient named by `to`, and the recipient in words."""
    prefix, _, name = to.partition(":")
    if prefix == "subscriber":
        if store.subscriber(name) is None:
            raise ConsentRefused(f"{flag} {to[:50]}: no subscriber {name[:32]}")
        return subscriber_kind(name), f"subscriber {name}"
    if prefix == "api":
        if name not in {c.name for c in ApiClients(store.engine).all()}:
            raise ConsentRefused(f"{flag} {to[:50]}: no API client {name[:32]}")
        return api_client_kind(name), f"API client {name}"
    if prefix == "partner":
        if name not in {n.value for n in SocialNeed}:
            raise ConsentRefused(f"{flag} {to[:50]}: a partner for one of {', '.join(SocialNeed)}")
        return f"disclosure:{name}", f"the {name} partner service"
    if to == "family":
        return FAMILY, "the patient's family contact"
    kind = recipient_kind(to)
    if len(to) > 80 or kind == "recipient:" or "\n" in to:
        raise ConsentRefused(
            f"{flag}: a recipient in words (up to 80 characters), or subscriber:NAME"
        )
    return kind, to


def _day(text: str | None, flag: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConsentRefused(f"{flag} {text[:20]!r}: a day, YYYY-MM-DD") from None


def written_terms(
    form: WrittenForm, recipient: str, site_id: str, now: datetime, prefix: str = "--"
) -> ConsentTerms:
    """The §2.31 terms of a consent given in writing, or why they fall short (one line)."""
    try:
        return ConsentTerms(
            discloser=f"the CarePath program at site {site_id}",
            information=form.information or "",
            recipient=recipient,
            purpose=form.purpose,  # checked by the model
            expires_on=_day(form.expires, f"{prefix}expires"),
            expiry_event=form.until_event,
            signed_by=form.signed_by,  # checked by the model
            signed_on=_day(form.signed_on, f"{prefix}signed{'-' if prefix else '_'}on")
            or now.date(),
        )
    except ValidationError as exc:
        raise ConsentRefused(describe_validation_error(exc)) from None


def record(
    store: CareStore,
    patient_id: str,
    give: bool,
    to: str,
    case_manager: str,
    now: datetime,
    form: WrittenForm | None = None,
    key: str | None = None,
    prefix: str = "--",
) -> str:
    """Record the patient's consent to disclose to `to` given (with its written `form`) or
    revoked, with its audit fact; the one line that says so. `key` (default: the moment)
    makes a retry record it once; `prefix` is how the caller names its fields in a refusal
    (`--expires` on the command line, `expires` in the API). Raises ConsentRefused."""
    patient = store.patient(patient_id)
    if patient is None:
        raise ConsentRefused(f"no patient {patient_id} in the care store")
    kind, recipient = consent_kind(store, to, f"{prefix}to" if prefix else "to")
    terms: ConsentTerms | None = None
    if give:
        terms = written_terms(form or WrittenForm(), recipient, patient.site_id, now, prefix)
        journeys = kind == FAMILY or kind.startswith("disclosure:")
        # The journey's own consent: its written form, once the journey has it.
        if journeys and not store.consent_in_force(patient_id, kind):
            raise ConsentRefused(
                "refused: give it through the journey first (family-consent give, "
                "or the referral's consent task), then record its written form",
                bad_input=False,
            )
    elif kind == FAMILY:
        raise ConsentRefused("family consent is withdrawn with `family-consent ... withdraw`")
    key = f"{patient_id}/consent/{kind}/{key or now.isoformat()}"
    detail: dict[str, str | None] = {"kind": kind, "recipient": recipient}
    if terms is not None:
        detail |= {"purpose": terms.purpose, "expires_on": str(terms.expires_on)}
    store.record_consent(
        ConsentEntry(key, patient_id, kind, give, case_manager, now, terms),
        AuditFact(
            key,
            patient_id,
            case_manager,
            "consent_given" if give else "consent_withdrawn",
            "consent",
            now,
            detail,
        ),
    )
    what = "given" if give else "revoked: nothing more is disclosed under it"
    return f"{patient_id}: consent to disclose to {recipient} {what}"


def consent_rows(store: CareStore, patient_id: str, site_id: str) -> list[dict[str, Any]]:
    """The patient's consents as recorded, oldest first: each with its terms (the standard
    form's where it has none of its own) and whether it is the one in force."""
    recorded = store.consents(patient_id)
    rows: list[dict[str, Any]] = []
    for c in recorded:
        terms = c.terms or standard_terms(c.kind, site_id, c.recorded_at.date())
        rows.append(
            {
                "kind": c.kind,
                "granted": c.granted,
                "recorded_at": c.recorded_at.isoformat(),
                "recorded_by": c.recorded_by,
                "standard_form": c.terms is None,
                "terms": terms.model_dump(mode="json") if c.granted else None,
                "in_force": c is [r for r in recorded if r.kind == c.kind][-1] and c.granted,
            }
        )
    return rows
