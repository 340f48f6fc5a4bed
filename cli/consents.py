"""A patient's consents to disclose (42 CFR Part 2 §2.31) from the command line: list them,
record one given in writing with every element the rule requires, or its revocation
(services.consents, as the API does).

`--to` names the recipient: `subscriber:NAME` (a subscribing system's events), `api:NAME`
(an API client's copy of the record), `partner:NEED` (a referral's partner service), `family`
(the family contact), or any other recipient in words ("County EHR"), which an export's
`--recipient` then names. Family consent is the journey's (it books family sessions): it is
given and withdrawn with `family-consent`; here its written form is recorded once given."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from pydantic import ValidationError

from cli.common import EXIT_BAD_INPUT, CliError, care_store, console, validated
from clinical.family_contacts import FamilyContact
from clinical.identifiers import CaseManagerId, PatientId
from clinical.protocol import describe_validation_error
from infra.settings import Settings
from infra.store import CareStore
from services.consents import ConsentRefused, WrittenForm, consent_rows, record


def cmd_consents(args: argparse.Namespace, settings: Settings) -> int:
    patient_id = validated(PatientId, args.patient, "patient")
    store = care_store(settings)
    try:
        patient = store.patient(patient_id)
        if patient is None:
            raise CliError(f"no patient {patient_id} in the care store")
        if args.action == "list":
            return _list(store, patient_id, patient.site_id, args.json)
        if not args.to or not args.case_manager:
            raise CliError(f"consents {args.action}: give --to and --case-manager")
        case_manager = validated(CaseManagerId, args.case_manager, "case manager")
        form = WrittenForm(
            information=args.information,
            purpose=args.purpose,
            expires=args.expires,
            until_event=args.until_event,
            signed_on=args.signed_on,
            signed_by=args.signed_by,
        )
        try:
            said = record(
                store, patient_id, args.action == "give", args.to, case_manager,
                datetime.now(UTC), form,
            )  # fmt: skip
        except ConsentRefused as exc:
            raise CliError(str(exc), EXIT_BAD_INPUT if exc.bad_input else 3) from None
    finally:
        store.dispose()
    console.print(said)
    return 0


def _list(store: CareStore, patient_id: str, site_id: str, as_json: bool) -> int:
    rows = consent_rows(store, patient_id, site_id)
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
