"""The accounting of disclosures (42 CFR Part 2): family invitations, referrals sent to a
partner and exports, each with recipient, date, purpose and what was sent; the past three
years on the command line and the console's chart. Times are fixed."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from activities.records import SessionBooking
from clinical.disclosures import accounting_since
from infra.settings import load_settings
from infra.store import DISCLOSED_TO_PARTNER, AuditFact, CareStore, NewReferral
from tests.console_support import make_console
from tests.support import OPEN_SITES, PROGRAMS, TEST_KEYS, TEST_KEYS_FILE, run_starter
from tests.test_store import intake_and_first_week, operations

AT = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


def test_the_accounting_period_is_three_years() -> None:
    assert accounting_since(AT) == datetime(2023, 11, 2, 9, 30, tzinfo=UTC)
    leap = datetime(2028, 2, 29, 12, tzinfo=UTC)
    assert accounting_since(leap) == datetime(2025, 2, 28, 12, tzinfo=UTC)


def _disclosing_patient(store: CareStore) -> tuple[str, SessionBooking]:
    """A patient with family sessions booked (each an invitation to the family), a housing
    referral sent, an export, and an export older than three years."""
    ops = operations(store)
    intake, booking = intake_and_first_week()
    ops.record_intake(intake)
    ops.book_sessions(booking)
    pid = booking.patient_id
    key = f"{pid}/referral/housing-1"
    store.open_referral(
        NewReferral(key, "housing-1", f"referral-{pid}-housing-1", pid, "CM-01", "housing", AT),
        AuditFact(f"{key}/opened", pid, "CM-01", "referral_opened", "care_coordination", AT),
    )
    sent = AT + timedelta(hours=1)
    detail = {"partner": "housing", "consent": "disclosure:housing", "reference": "HOUSING-1"}
    disclosed = AuditFact(
        f"{key}/disclosed", pid, "carepath", DISCLOSED_TO_PARTNER, "care_coordination", sent, detail
    )
    store.mark_referral_sent(key, "HOUSING-1", sent, disclosed)
    closed = AuditFact(f"{key}/closed", pid, "carepath", "referral_closed", "care_coordination", AT)
    store.close_referral(key, "completed", sent + timedelta(days=3), closed)
    for recipient, purpose, at in (
        ("County EHR", "treatment", AT + timedelta(hours=2)),
        ("Old registry", "audit", AT - timedelta(days=3 * 366)),
    ):
        store.record_export(
            patient_id=pid,
            by="cli:ops",
            recipient=recipient,
            purpose=purpose,
            description="the journey as a FHIR R4 Bundle",
            at=at,
        )
    return pid, booking


def test_each_disclosure_is_accounted_for_once(database_url: str) -> None:
    store = CareStore(database_url)
    store.migrate()
    try:
        pid, booking = _disclosing_patient(store)
        operations(store).book_sessions(booking)  # a retried booking discloses nothing new
        found = store.disclosures(pid, accounting_since(AT + timedelta(days=1)))
    finally:
        store.dispose()
    family = [d for d in found if d.recipient == "the patient's family contact"]
    assert family and all(d.purpose == "family_involvement" for d in family)
    assert all(d.description.startswith("invitation to family session") for d in family)
    assert len(family) == len({d.description for d in family})  # once per session
    (partner,) = [d for d in found if d.recipient == "housing partner service"]
    assert (partner.purpose, partner.at) == ("care_coordination", AT + timedelta(hours=1))
    assert "HOUSING-1" in partner.description and "disclosure:housing" in partner.description
    (export,) = [d for d in found if d.recipient == "County EHR"]
    assert (export.purpose, export.by) == ("treatment", "cli:ops")
    assert len(found) == len(family) + 2  # the old export is over three years ago
    assert [d.at for d in found] == sorted(d.at for d in found)


def test_disclosures_on_the_command_line_and_the_chart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'care.db'}"
    store = CareStore(url, keys=TEST_KEYS)
    store.migrate()
    pid, _ = _disclosing_patient(store)
    env = {
        "PATH": "/usr/bin:/bin",
        "CAREPATH_DATABASE_URL": url,
        "CAREPATH_KEYS_FILE": str(TEST_KEYS_FILE),
        "CAREPATH_DATA_DIR": str(tmp_path),
        "CAREPATH_PROGRAMS_DIR": str(PROGRAMS),
        "CAREPATH_SITES_FILE": str(OPEN_SITES),
    }
    out = tmp_path / "bundle.json"
    given = run_starter(
        env, "consents", pid, "give", "--to", "State registry", "--purpose",
        "health_care_operations", "--information", "the journey as a FHIR bundle",
        "--until-event", "the end of the patient's care", "--case-manager", "CM-01",
    )  # fmt: skip
    assert given.returncode == 0, given.stderr
    export = run_starter(
        env, "export", pid, "--fhir", "--out", str(out), "--recipient", "State registry",
        "--purpose", "health_care_operations",
    )  # fmt: skip
    assert export.returncode == 0, export.stderr
    listed = run_starter(env, "disclosures", pid, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {r["recipient"] for r in rows} >= {
        "County EHR",
        "State registry",
        "housing partner service",
    }
    (made,) = [r for r in rows if r["recipient"] == "State registry"]
    assert made["purpose"] == "health_care_operations" and made["by"].startswith("cli:")
    assert "FHIR R4 Bundle" in made["description"]
    table = run_starter(env, "disclosures", pid)
    assert table.returncode == 0 and "State registry" in table.stdout
    unknown = run_starter(env, "disclosures", "P-7K2M9Q4D")
    assert unknown.returncode == 2 and "no patient" in unknown.stderr
    # The chart shows them (the store's view: no engine in this test).
    settings = dataclasses.replace(load_settings(), database_url=url, sites_path=OPEN_SITES)
    ui = make_console(settings, store)

    async def chart() -> str:
        async with ui.signed_in("cm1") as http:
            answer = await http.get(f"/patients/{pid}")
            assert answer.status_code == 200
            return answer.text

    page = asyncio.run(chart())
    store.dispose()
    assert "Disclosures (past three years)" in page
    assert "State registry" in page and "housing partner service" in page
