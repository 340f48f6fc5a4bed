"""Consents under 42 CFR Part 2 §2.31: a written consent carries every element the rule
requires, and CarePath discloses only under one that covers the recipient and the purpose
on the day; revoked or expired, it stops the disclosures it covered (a subscriber's events,
a referral to a partner, a family invitation, an export). Times are fixed: what is expired
expired years ago, whatever day the suite runs."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError

from activities.care_operations import CONSENT_MISSING
from activities.records import ReferralDispatch
from clinical.consents import (
    TPO,
    ConsentTerms,
    standard_terms,
    subscriber_kind,
    why_not_covered,
)
from clinical.family_contacts import FamilyContact
from infra.store import CareStore, ConsentEntry
from infra.store.audit import AuditFact
from services.subscribers import EventSender
from tests.support import OPEN_SITES, PROGRAMS, TEST_KEYS, TEST_KEYS_FILE, run_starter
from tests.test_store import intake_and_first_week, operations
from tests.test_subscribers import AT, Receiver, enrol, phase_change, receiver, store, subscribe

__all__ = ["receiver", "store"]  # fixtures shared with the subscriber tests

SIGNED = date(2026, 11, 1)


def terms(**given: Any) -> ConsentTerms:
    fields: dict[str, Any] = {
        "discloser": "the CarePath program at site north",
        "information": "phase changes, tasks, referral outcomes and check-in results",
        "recipient": "subscriber ehr-north",
        "purpose": "treatment",
        "expires_on": date(2026, 12, 1),
        "signed_on": SIGNED,
    }
    return ConsentTerms(**(fields | given))


def give(store: CareStore, pid: str, kind: str, written: ConsentTerms | None, at: datetime) -> None:
    key = f"{pid}/consent/{kind}/{at.isoformat()}"
    store.record_consent(
        ConsentEntry(key, pid, kind, True, "CM-01", at, written),
        AuditFact(key, pid, "CM-01", "consent_given", "consent", at),
    )


def revoke(store: CareStore, pid: str, kind: str, at: datetime) -> None:
    key = f"{pid}/consent/{kind}/revoked/{at.isoformat()}"
    store.record_consent(
        ConsentEntry(key, pid, kind, False, "CM-01", at),
        AuditFact(key, pid, "CM-01", "consent_withdrawn", "consent", at),
    )


def test_a_written_consent_has_every_element_and_covers_only_its_purpose_and_period() -> None:
    t = terms()
    assert why_not_covered(True, t, "treatment", date(2026, 11, 30)) is None
    assert "ended on 2026-12-01" in (why_not_covered(True, t, "treatment", date(2026, 12, 1)) or "")
    assert "not payment" in (why_not_covered(True, t, "payment", date(2026, 11, 5)) or "")
    assert "revoked" in (why_not_covered(False, t, "treatment", date(2026, 11, 5)) or "")
    tpo = terms(purpose=TPO, expires_on=None, expiry_event="the end of aftercare")
    assert all(
        why_not_covered(True, tpo, p, date(2030, 1, 1)) is None
        for p in ("treatment", "payment", "health_care_operations")
    )
    assert why_not_covered(True, tpo, "care_coordination", date(2027, 1, 1))
    assert "revoke" in t.revocation and t.signed_by == "patient"
    for fault, change in (
        ("ends on a date or at an event", {"expires_on": None}),
        ("not after the day it was signed", {"expires_on": SIGNED}),
        ("recipient", {"recipient": ""}),
        ("purpose", {"purpose": "marketing"}),
        ("signed_by", {"signed_by": "neighbour"}),
    ):
        with pytest.raises(ValidationError, match=fault):
            terms(**change)
    standard = standard_terms("disclosure:housing", "north", SIGNED)
    assert (standard.recipient, standard.purpose) == (
        "the housing partner service",
        "care_coordination",
    )


def test_an_expired_or_revoked_consent_stops_a_subscribers_events(
    store: CareStore, receiver: Receiver
) -> None:
    subscribe(store, "ehr-north", receiver.url)
    pid = enrol(store)
    give(store, pid, subscriber_kind("ehr-north"), terms(), AT)
    phase_change(store, pid, "intensive", AT)
    at = [datetime(2026, 11, 20, tzinfo=UTC)]
    events = EventSender(store, clock=lambda: at[0])
    assert events.send_all_due().sent == 1
    phase_change(store, pid, "step_down", AT + timedelta(days=30))
    at[0] = datetime(2026, 12, 2, tzinfo=UTC)  # the consent ended on 1 December
    assert events.send_all_due().withheld == 1
    (withheld,) = store.undelivered(("withheld",))
    assert "ended on 2026-12-01" in (withheld.last_error or "")
    # Renewed in writing, for a year: the operator sends what was withheld.
    give(store, pid, subscriber_kind("ehr-north"), terms(expires_on=date(2027, 12, 1)), at[0])
    assert store.requeue_delivery(withheld.key) and events.send_all_due().sent == 1
    revoke(store, pid, subscriber_kind("ehr-north"), at[0] + timedelta(hours=1))
    phase_change(store, pid, "aftercare", AT + timedelta(days=60))
    assert events.send_all_due().withheld == 1
    assert len(receiver.requests) == 2
    assert len(store.disclosures(pid, AT - timedelta(days=1))) == 2


def test_a_referral_is_sent_only_under_a_consent_in_force(store: CareStore) -> None:
    ops = operations(store)
    intake, _ = intake_and_first_week()
    ops.record_intake(intake)
    pid = intake.enrolment.patient_id
    kind = "disclosure:housing"
    dispatch = ReferralDispatch(
        key=f"{pid}/REF-housing-1", patient_id=pid, need="housing", consent_kind=kind, at=AT
    )

    def refused() -> str:
        with pytest.raises(ApplicationError) as caught:
            ops.send_referral(dispatch)
        assert caught.value.type == CONSENT_MISSING
        return str(caught.value)

    assert "no consent given" in refused()
    give(store, pid, kind, None, AT - timedelta(days=1))  # through the journey: standard form
    revoke(store, pid, kind, AT - timedelta(hours=1))
    assert "revoked" in refused()
    written = terms(recipient="the housing partner service", purpose="care_coordination",
                    expires_on=date(2026, 11, 2), signed_on=date(2026, 10, 1))  # fmt: skip
    give(store, pid, kind, written, AT - timedelta(minutes=30))
    assert "ended on 2026-11-02" in refused()  # AT is 2 November: the day it ended
    assert store.partner_contacts(pid) == []  # nothing reached the partner
    give(store, pid, kind, written.model_copy(update={"purpose": TPO}), AT - timedelta(minutes=1))
    assert "not care_coordination" in refused()
    give(store, pid, kind, None, AT)
    assert ops.send_referral(dispatch).startswith("SIM-HOUSING")
    assert [d.recipient for d in store.disclosures(pid, AT - timedelta(days=1))] == [
        "housing partner service"
    ]


def test_family_invitations_need_the_family_consent_in_force(store: CareStore) -> None:
    ops = operations(store)
    intake, booking = intake_and_first_week()
    pid = intake.enrolment.patient_id
    ops.record_intake(intake)  # family consent given at intake (the standard form)
    # Its written form said it would end in 2020: long past, whatever day this runs.
    lapsed = terms(recipient="the patient's family contact", expires_on=date(2020, 6, 1),
                   signed_on=date(2020, 1, 1))  # fmt: skip
    give(store, pid, "family_involvement", lapsed, AT)
    ops.book_sessions(booking)
    assert [m for m in store.outbox(pid) if m.channel == "family"] == []
    assert store.disclosures(pid, datetime(2020, 1, 1, tzinfo=UTC)) == []
    assert len(store.appointments(pid)) == len(booking.sessions)  # still booked


def test_family_invitations_go_out_under_the_consent_given_at_intake(store: CareStore) -> None:
    ops = operations(store)
    intake, booking = intake_and_first_week()
    pid = intake.enrolment.patient_id
    ops.record_intake(intake)
    ops.book_sessions(booking)
    invited = [m for m in store.outbox(pid) if m.channel == "family"]
    assert invited and len(store.disclosures(pid, datetime(2020, 1, 1, tzinfo=UTC))) == len(invited)


@pytest.mark.slow
def test_consents_and_exports_from_the_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'care.db'}"
    s = CareStore(url, keys=TEST_KEYS)
    s.migrate()
    pid = enrol(s)
    s.dispose()
    env = {
        "PATH": "/usr/bin:/bin",
        "CAREPATH_DATABASE_URL": url,
        "CAREPATH_KEYS_FILE": str(TEST_KEYS_FILE),
        "CAREPATH_DATA_DIR": str(tmp_path),
        "CAREPATH_PROGRAMS_DIR": str(PROGRAMS),
        "CAREPATH_SITES_FILE": str(OPEN_SITES),
    }
    out = str(tmp_path / "bundle.json")
    export = ("export", pid, "--fhir", "--out", out, "--recipient", "County EHR")
    refused = run_starter(env, *export)
    assert refused.returncode == 3 and "no consent given" in refused.stderr, refused.stderr
    unnamed = run_starter(env, "export", pid, "--fhir", "--out", out)
    assert unnamed.returncode == 2 and "name the --recipient" in unnamed.stderr
    given = run_starter(
        env, "consents", pid, "give", "--to", "County EHR", "--purpose", "treatment",
        "--information", "the journey as a FHIR bundle: phases, sessions, referrals",
        "--expires", "2099-12-31", "--signed-on", "2026-11-01", "--case-manager", "CM-01",
    )  # fmt: skip
    assert given.returncode == 0, given.stderr
    assert run_starter(env, *export).returncode == 0
    listed = run_starter(env, "consents", pid, "--json")
    (written,) = [c for c in json.loads(listed.stdout) if c["kind"].startswith("rec")]
    assert written["in_force"] and written["terms"]["recipient"] == "County EHR"
    assert (
        written["terms"]["expires_on"] == "2099-12-31"
        and "revoke" in written["terms"]["revocation"]
    )
    revoked = run_starter(
        env, "consents", pid, "revoke", "--to", "County EHR", "--case-manager", "CM-01"
    )
    assert revoked.returncode == 0, revoked.stderr
    again = run_starter(env, *export)
    assert again.returncode == 3 and "revoked" in again.stderr
    own = run_starter(env, "export", pid, "--fhir", "--out", out, "--purpose", "patient_request")
    assert own.returncode == 0, own.stderr
    family = ("family-contact", pid, "--case-manager", "CM-01")
    kin = run_starter(env, *family, "--email", "kin@example.org", "--relationship", "parent")
    assert kin.returncode == 0 and "kin@example.org" not in kin.stdout, kin.stderr
    check = CareStore(url, keys=TEST_KEYS)
    assert check.family_contact(pid) == FamilyContact(
        channel="email", address="kin@example.org", relationship="parent"
    )
    check.dispose()
    for extra, fault in ((("--phone", "call me"), "not a phone number"), ((), "one")):
        bad = run_starter(env, *family, *extra)
        assert bad.returncode == 2 and fault in bad.stderr, bad.stderr
    for args, fault in (
        (("give", "--to", "County EHR", "--case-manager", "CM-01", "--information", "all"),
         "ends on a date or at an event"),
        (("give", "--to", "subscriber:nobody", "--case-manager", "CM-01"), "no subscriber"),
        (("give", "--to", "family", "--case-manager", "CM-01", "--information", "sessions",
          "--expires", "2099-01-01"), "through the journey first"),
        (("revoke", "--to", "family", "--case-manager", "CM-01"), "family-consent"),
        (("give", "--to", "County EHR", "--case-manager", "CM-01", "--expires", "soon"),
         "--expires"),
        (("give", "--to", "County EHR"), "--case-manager"),
    ):  # fmt: skip
        bad = run_starter(env, "consents", pid, *args)
        assert bad.returncode in (2, 3) and fault in bad.stderr, (args, bad.stderr)
        assert len(bad.stderr.strip().splitlines()) == 1
