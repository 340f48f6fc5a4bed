"""A patient's consents to disclose (42 CFR Part 2 §2.31) from the command line: list them,
record one given in writing with every element the rule requires, or its revocation.

`--to` names the recipient: `subscriber:NAME` (a subscribing system's events), `api:NAME`
(an API client's copy of the record), `partner:NEED` (a referral's partner service), `family`
(the family contact), or any other recipient in words ("County EHR"), which an export's
`--recipient` then names. Family consent is the journey's (it books family sessions): it is
given and withdrawn with `family-consent`; here its written form is recorded once given."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, date, datetime
from typing import Any

from pydantic import ValidationError

from cli.common import CliError, care_store, console, validated
from clinical.assessment import SocialNeed
from clinical.consents import (
    FAMILY,
    ConsentTerms,
    api_client_kind,
    recipient_kind,
    standard_terms,
    subscriber_kind,
)
from clinical.family_contacts import FamilyContact
from clinical.identifiers import CaseManagerId, PatientId
from clinical.protocol import describe_validation_error
from infra.settings import Settings
from infra.store import CareStore, ConsentEntry
from infra.store.api_clients import ApiClients
from infra.store.audit import AuditFact


def _kind(store: CareStore, to: str) -> tuple[str, str]:
    """The consent kind of a recipient named by `--to`, and the recipient in words."""
    prefix, _, name = to.partition(":")
    if prefix == "subscriber":
        if store.subscriber(name) is None:
            raise CliError(f"--to {to[:50]}: no subscriber {name[:32]}")
        return subscriber_kind(name), f"subscriber {name}"
    if prefix == "api":
        if name not in {c.name for c in ApiClients(store.engine).all()}:
            raise CliError(f"--to {to[:50]}: no API client {name[:32]}")
        return api_client_kind(name), f"API client {name}"
    if prefix == "partner":
        if name not in {n.value for n in SocialNeed}:
            raise CliError(f"--to {to[:50]}: a partner for one of {', '.join(SocialNeed)}")
        return f"disclosure:{name}", f"the {name} partner service"
    if to == "family":
        return FAMILY, "the patient's family contact"
    kind = recipient_kind(to)
    if len(to) > 80 or kind == "recipient:" or "\n" in to:
        raise CliError("--to: a recipient in words (up to 80 characters), or subscriber:NAME")
    return kind, to


def _day(text: str | None, flag: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CliError(f"{flag} {text[:20]!r}: a day, YYYY-MM-DD") from None


def cmd_consents(args: argparse.Namespace, settings: Settings) -> int:
    patient_id = validated(PatientId, args.patient, "patient")
    store = care_store(settings)
    try:
        patient = store.patient(patient_id)
        if patient is None:
            raise CliError(f"no patient {patient_id} in the care store")
        if args.action == "list":
            return _list(store, patient_id, args.json)
        if not args.to or not args.case_manager:
            raise CliError(f"consents {args.action}: give --to and --case-manager")
        case_manager = validated(CaseManagerId, args.case_manager, "case manager")
        kind, recipient = _kind(store, args.to)
        now = datetime.now(UTC)
        if args.action == "give":
            terms = _terms(args, recipient, patient.site_id, now)
            journeys = kind == FAMILY or kind.startswith("disclosure:")
            # The journey's own consent: its written form, once the journey has it.
            if journeys and not store.consent_in_force(patient_id, kind):
                raise CliError(
                    "refused: give it through the journey first (family-consent give, "
                    "or the referral's consent task), then record its written form",
                    3,
                )
        elif kind == FAMILY:
            raise CliError("family consent is withdrawn with `family-consent ... withdraw`")
        else:
            terms = None
        granted = args.action == "give"
        key = f"{patient_id}/consent/{kind}/{now.isoformat()}"
        detail: dict[str, str | None] = {"kind": kind, "recipient": recipient}
        if terms is not None:
            detail |= {"purpose": terms.purpose, "expires_on": str(terms.expires_on)}
        store.record_consent(
            ConsentEntry(key, patient_id, kind, granted, case_manager, now, terms),
            AuditFact(
                key,
                patient_id,
                case_manager,
                "consent_given" if granted else "consent_withdrawn",
                "consent",
                now,
                detail,
            ),
        )
    finally:
        store.dispose()
    what = "given" if granted else "revoked: nothing more is disclosed under it"
    console.print(f"{patient_id}: consent to disclose to {recipient} {what}")
    return 0


def _terms(args: argparse.Namespace, recipient: str, site_id: str, now: datetime) -> ConsentTerms:
    try:
        return ConsentTerms(
            discloser=f"the CarePath program at site {site_id}",
            information=args.information or "",
            recipient=recipient,
            purpose=args.purpose,
            expires_on=_day(args.expires, "--expires"),
            expiry_event=args.until_event,
            signed_by=args.signed_by,
            signed_on=_day(args.signed_on, "--signed-on") or now.date(),
        )
    except ValidationError as exc:
        raise CliError(describe_validation_error(exc)) from None


def _list(store: CareStore, patient_id: str, as_json: bool) -> int:
    patient = store.patient(patient_id)
    assert patient is not None
    recorded = store.consents(patient_id)
    rows: list[dict[str, Any]] = []
    for c in recorded:
        terms = c.terms or standard_terms(c.kind, patient.site_id, c.recorded_at.date())
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
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        console.print(f"{patient_id}: no consents recorded")
    for r in rows:
        state = "in force" if r["in_force"] else ("given" if r["granted"] else "revoked")
        line = f"{r['recorded_at'][:10]}  {r['kind']}  {state}"
        if r["terms"]:
            t = r["terms"]
            until = t["expires_on"] or t["expiry_event"]
            line += f"  to {t['recipient']} for {t['purpose']} until {until}"
        print(line)
    return 0


def add_arguments(p: argparse.ArgumentParser, purposes: tuple[str, ...]) -> None:
    p.add_argument("patient")
    p.add_argument("action", nargs="?", default="list", choices=["list", "give", "revoke"])
    p.add_argument("--to", help="subscriber:NAME, api:NAME, partner:NEED, family, or a name")
    p.add_argument("--purpose", default="treatment", choices=purposes)
    p.add_argument("--information", help="give: a specific description of what may be disclosed")
    p.add_argument("--expires", help="give: the day it ends, YYYY-MM-DD")
    p.add_argument("--until-event", help="give: the event that ends it, where no day does")
    p.add_argument("--signed-on", help="give: the day the patient signed (default: today)")
    p.add_argument(
        "--signed-by", default="patient", choices=["patient", "guardian", "representative"]
    )
    p.add_argument("--case-manager", help="who records it, e.g. CM-01")
    p.add_argument("--json", action="store_true")


def cmd_family_contact(args: argparse.Namespace, settings: Settings) -> int:
    """Whom the patient's family-session invitations go to (replacing any before)."""
    patient_id = validated(PatientId, args.patient, "patient")
    case_manager = validated(CaseManagerId, args.case_manager, "case manager")
    if (args.email is None) == (args.phone is None):
        raise CliError("family-contact: give --email or --phone (one)")
    try:
        contact = FamilyContact(
            channel="email" if args.email else "sms",
            address=args.email or args.phone,
            relationship=args.relationship,
        )
    except ValidationError as exc:
        raise CliError(describe_validation_error(exc)) from None
    store = care_store(settings)
    try:
        if store.patient(patient_id) is None:
            raise CliError(f"no patient {patient_id} in the care store")
        store.record_family_contact(patient_id, contact, case_manager, datetime.now(UTC))
    finally:
        store.dispose()
    console.print(
        f"{patient_id}: family contact ({contact.relationship}) on file; invitations go by "
        f"{contact.channel} while family consent is in force"
    )
    return 0
