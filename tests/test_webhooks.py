"""Signed webhooks in (in-process, on the test's event loop): an EHR's Appointment updates
and a partner portal's answers reach the journeys; a bad signature, a stale timestamp, a
replayed event ID, an unknown patient or sender are 4xx; a duplicate callback acts once."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from clinical.assessment import Enrolment
from clinical.identifiers import new_patient_id
from clinical.requests import TaskDone
from infra.webhooks import EventKind, WebhookRefused, WebhookSender, add_sender, signature
from operators.fhir import RECORD_KEY_SYSTEM
from tests.console_support import make_console
from tests.support import clinic, drive_journey, enrolment_data
from web.api_security import API, PROBLEM
from workflows.referral import ReferralWorkflow

EHR = WebhookSender("ehr-north", EventKind.ehr_appointments, "north", "whsec_ehr-secret")
PARTNER = WebhookSender("housing-portal", EventKind.partner_referrals, "north", "whsec_p")
SOUTH = WebhookSender("ehr-south", EventKind.ehr_appointments, "south", "whsec_south")


def signed(
    sender: WebhookSender, body: bytes, event_id: str, at: datetime, secret: str | None = None
) -> dict[str, str]:
    ts = str(int(at.timestamp()))
    return {
        "webhook-id": event_id,
        "webhook-timestamp": ts,
        "webhook-signature": signature(secret or sender.secret, event_id, ts, body),
        "content-type": "application/fhir+json",
    }


def appointment(patient_id: str, session_id: str, status: str) -> bytes:
    return json.dumps(
        {
            "resourceType": "Appointment",
            "status": status,
            "identifier": [{"system": RECORD_KEY_SYSTEM, "value": f"{patient_id}/{session_id}"}],
        }
    ).encode()


async def test_signed_events_reach_the_journeys_once_and_bad_ones_are_refused(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            enrolment = Enrolment.model_validate(enrolment_data(social_needs=["housing"]))
            handle = await c.enrol(enrolment)
            pid = enrolment.patient_id
            status, _ = await drive_journey(
                env,
                handle,
                until=lambda s: any(x.day <= s.program_day for x in s.sessions),
                choose=lambda n: "none",
            )
            session = next(x.session_id for x in status.sessions if x.day <= status.program_day)
            ui = make_console(c.settings, c.store, c.client)
            ui.console.senders = {s.name: s for s in (EHR, PARTNER, SOUTH)}
            now = ui.clock()
            url = f"{API}/webhooks/{EHR.name}"
            body = appointment(pid, session, "fulfilled")
            answers: dict[str, Any] = {}
            async with ui.signed_in(None) as http:

                async def post(name: str, to: str, content: bytes, headers: dict[str, str]) -> None:
                    answers[name] = await http.post(to, content=content, headers=headers)

                await post("taken", url, body, signed(EHR, body, "evt-1", now))
                await post("duplicate", url, body, signed(EHR, body, "evt-1", now))
                other = appointment(pid, session, "noshow")
                await post("replayed_id", url, other, signed(EHR, other, "evt-1", now))
                await post("bad_signature", url, other, signed(EHR, other, "evt-2", now, "whsec_x"))
                await post(
                    "stale", url, other, signed(EHR, other, "evt-3", now - timedelta(minutes=6))
                )
                stranger = appointment(new_patient_id(), session, "noshow")
                await post("unknown_patient", url, stranger, signed(EHR, stranger, "evt-4", now))
                await post(
                    "other_site",
                    f"{API}/webhooks/{SOUTH.name}",
                    other,
                    signed(SOUTH, other, "evt-5", now),
                )
                await post(
                    "unknown_sender", f"{API}/webhooks/nobody", body, signed(EHR, body, "e", now)
                )
                booked = appointment(pid, session, "booked")
                await post("not_attendance", url, booked, signed(EHR, booked, "evt-6", now))
                after = await handle.query("status")
                # The partner's answer: refused while the patient's consent is missing, taken
                # once it is given (the consent task done) and the referral sent.
                answer = json.dumps({"patient_id": pid, "need": "housing", "answer": "accepted"})
                partner_url = f"{API}/webhooks/{PARTNER.name}"
                raw = answer.encode()
                await post("too_early", partner_url, raw, signed(PARTNER, raw, "p-1", now))
                (task,) = c.store.tasks(patient_id=pid)
                assert task.workflow_id is not None
                referral = c.client.get_workflow_handle(task.workflow_id)
                await referral.execute_update(
                    ReferralWorkflow.complete_task,
                    TaskDone(case_manager_id="CM-01", task_key=task.key),
                )
                for _ in range(100):  # the referral goes out in an activity of its own
                    if (await referral.query(ReferralWorkflow.status)).stage != "awaiting_consent":
                        break
                    await asyncio.sleep(0.05)
                await post("partner", partner_url, raw, signed(PARTNER, raw, "p-2", now))
                await post("partner_again", partner_url, raw, signed(PARTNER, raw, "p-2", now))

    def problem(name: str, status: int) -> str:
        answer = answers[name]
        assert answer.status_code == status, (name, answer.text)
        assert answer.headers["content-type"] == PROBLEM
        return str(answer.json()["detail"])

    assert answers["taken"].status_code == 200, answers["taken"].text
    assert answers["taken"].json()["message"].startswith("recorded (attended 1,")
    assert answers["duplicate"].headers["webhook-duplicate"] == "true"
    assert answers["duplicate"].content == answers["taken"].content
    recorded = {s["session_id"]: s for s in after["sessions"]}
    assert recorded[session]["status"] == "attended" and after["attendance"]["attended"] == 1
    assert "another request" in problem("replayed_id", 422)
    assert "does not match" in problem("bad_signature", 401)
    assert "a replay" in problem("stale", 401)
    assert problem("unknown_patient", 404).startswith("no patient P-")
    assert problem("other_site", 404) == f"no patient {pid} at site south"
    assert problem("unknown_sender", 401) == "no such webhook sender"
    assert "is not fulfilled or noshow" in problem("not_attendance", 422)
    assert problem("too_early", 409).startswith("refused:")
    assert answers["partner"].status_code == 200, answers["partner"].text
    assert answers["partner_again"].content == answers["partner"].content
    log = ui.console.access.search()
    outcomes = {(e.actor, e.outcome) for e in log}
    assert {("webhook:ehr-north", "allowed"), ("webhook:ehr-north", "denied")} <= outcomes
    assert ("webhook:ehr-north", "refused") in outcomes and ("-", "denied") in outcomes
    assert "Quinlan" not in str(log) and "Avery" not in str(log)


def test_a_sender_is_added_once_with_a_secret_only_its_owner_reads(tmp_path: Path) -> None:
    path = tmp_path / "senders.json"
    sender = add_sender(path, "ehr-north", "ehr-appointments", "north")
    assert sender.secret.startswith("whsec_") and path.stat().st_mode & 0o077 == 0
    with pytest.raises(WebhookRefused, match="exists already"):
        add_sender(path, "ehr-north", "ehr-appointments", "north")
    with pytest.raises(WebhookRefused, match="sends one of"):
        add_sender(path, "other", "telepathy", "north")
