"""Signed webhooks in (in-process, on the test's event loop): an EHR's Appointment updates
and a partner portal's answers are accepted (202, a signal the server stored) and reach the
journeys shortly after; a bad signature, a stale timestamp, a replayed event ID, an unknown
patient, session or sender are 4xx; a duplicate callback acts once, and so does an event
signalled twice; a refusal by the journey's rules becomes a task; a signal Temporal did not
take frees the event ID for the sender's retry."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from temporalio.testing import WorkflowEnvironment

from clinical.assessment import Enrolment
from clinical.identifiers import new_patient_id
from clinical.inbound import AttendanceEvent, PartnerAnswerEvent
from clinical.requests import TaskDone
from clinical.status import JourneyStatus
from infra.webhooks import EventKind, WebhookRefused, WebhookSender, add_sender, signature
from operators.fhir import RECORD_KEY_SYSTEM
from services.journeys import RequestFailed, Why, send_event
from tests.console_support import make_console
from tests.support import clinic, drive_journey, enrolment_data
from web.api_security import API, PROBLEM
from workflows.patient_journey import PatientJourneyWorkflow
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


T = TypeVar("T")


async def until(read: Callable[[], Awaitable[T]], holds: Callable[[T], bool]) -> T:
    """What `read` gives once `holds` (a signal is applied after its 202: wait for it)."""
    for _ in range(200):
        found = await read()
        if holds(found):
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"never held; last read: {found!r}")


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
            # The console's clock is the journey's (the test server's runs ahead of ours).
            ui.clock.at = now = status.clock.instant(status.program_day)
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
                nowhere = appointment(pid, "ZZZZ-NONE", "noshow")
                await post("unknown_session", url, nowhere, signed(EHR, nowhere, "evt-7", now))
                ahead = next(x for x in status.sessions if x.day > status.program_day + 1)
                early = appointment(pid, ahead.session_id, "fulfilled")
                await post("not_yet_held", url, early, signed(EHR, early, "evt-8", now))
                after = await until(
                    lambda: handle.query(PatientJourneyWorkflow.status),
                    lambda s: s.attendance.attended == 1,
                )
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
                await until(
                    lambda: referral.query(ReferralWorkflow.status),
                    lambda s: s.stage == "accepted",
                )
                # Accepted again under a new ID: the store cannot tell (the referral is sent
                # either way), the referral's rule refuses it, and the case manager is told.
                await post("accepted_again", partner_url, raw, signed(PARTNER, raw, "p-3", now))

                async def refusals() -> list[Any]:
                    return c.store.tasks(patient_id=pid, kind="event_refused")

                (refused,) = await until(refusals, bool)

    def problem(name: str, status: int) -> str:
        answer = answers[name]
        assert answer.status_code == status, (name, answer.text)
        assert answer.headers["content-type"] == PROBLEM
        return str(answer.json()["detail"])

    assert answers["taken"].status_code == 202, answers["taken"].text
    assert answers["taken"].json()["message"].startswith(f"accepted: session {session} attended")
    assert answers["duplicate"].status_code == 202
    assert answers["duplicate"].headers["webhook-duplicate"] == "true"
    assert answers["duplicate"].content == answers["taken"].content
    recorded = {s.session_id: s for s in after.sessions}
    assert recorded[session].status == "attended" and after.attendance.attended == 1
    assert "another request" in problem("replayed_id", 422)
    assert "does not match" in problem("bad_signature", 401)
    assert "a replay" in problem("stale", 401)
    assert problem("unknown_patient", 404).startswith("no patient P-")
    assert problem("other_site", 404) == f"no patient {pid} at site south"
    assert problem("unknown_sender", 401) == "no such webhook sender"
    assert "is not fulfilled or noshow" in problem("not_attendance", 422)
    assert (
        problem("unknown_session", 409) == "refused: unknown session 'ZZZZ-NONE' for this patient"
    )
    assert problem("not_yet_held", 409).endswith("has not happened yet")
    assert problem("too_early", 409) == "refused: the referral has not been sent yet (requested)"
    assert answers["partner"].status_code == 202, answers["partner"].text
    assert answers["partner_again"].content == answers["partner"].content
    assert answers["accepted_again"].status_code == 202
    assert refused.workflow_id == task.workflow_id and refused.key.endswith(
        "/task/event_refused/"
        + PartnerAnswerEvent(event_id="p-3", sender=PARTNER.name, answer="accepted").ref
    )
    assert refused.detail.startswith("housing-portal event p-3 was not applied: a referral that")
    log = ui.console.access.search()
    outcomes = {(e.actor, e.outcome) for e in log}
    assert {("webhook:ehr-north", "allowed"), ("webhook:ehr-north", "denied")} <= outcomes
    assert ("webhook:ehr-north", "refused") in outcomes and ("-", "denied") in outcomes
    assert "Quinlan" not in str(log) and "Avery" not in str(log)


async def first_week_held(
    env: WorkflowEnvironment, c: Any
) -> tuple[Enrolment, Any, JourneyStatus, list[str]]:
    """A patient enrolled and driven until their first treatment week's sessions have all
    happened: the enrolment, the journey's handle and status, and that week's sessions."""
    enrolment = Enrolment.model_validate(enrolment_data())
    handle = await c.enrol(enrolment)
    status, _ = await drive_journey(
        env,
        handle,
        until=lambda s: (
            s.week >= 1 and all(x.day <= s.program_day for x in s.sessions if x.week == 1)
        ),
        choose=lambda n: "none",
    )
    return enrolment, handle, status, [x.session_id for x in status.sessions if x.week == 1]


async def test_an_ehr_posts_a_week_of_attendance_and_the_journey_shows_it(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            enrolment, handle, status, week = await first_week_held(env, c)
            marks = {sid: "noshow" if n == 1 else "fulfilled" for n, sid in enumerate(week)}
            ui = make_console(c.settings, c.store, c.client)
            ui.console.senders = {EHR.name: EHR}
            ui.clock.at = now = status.clock.instant(status.program_day)
            async with ui.signed_in(None) as http:
                for n, (sid, mark) in enumerate(marks.items()):
                    body = appointment(enrolment.patient_id, sid, mark)
                    headers = signed(EHR, body, f"week-1-{n}", now)
                    answer = await http.post(
                        f"{API}/webhooks/{EHR.name}", content=body, headers=headers
                    )
                    assert answer.status_code == 202, answer.text
            after = await until(
                lambda: handle.query(PatientJourneyWorkflow.status),
                lambda s: all(x.status != "scheduled" for x in s.sessions if x.week == 1),
            )
    shown = {x.session_id: x.status for x in after.sessions if x.week == 1}
    assert len(week) >= 3
    assert shown == {sid: "missed" if m == "noshow" else "attended" for sid, m in marks.items()}


def bundle(*resources: dict[str, Any], kind: str = "subscription-notification") -> bytes:
    """A FHIR R5 subscription notification: its status entry first, then the resources."""
    status = {
        "resourceType": "SubscriptionStatus",
        "status": "active",
        "type": "event-notification",
    }
    entries = [{"resource": r} for r in (status, *resources)]
    return json.dumps({"resourceType": "Bundle", "type": kind, "entry": entries}).encode()


async def test_an_ehr_sends_a_week_of_attendance_in_one_notification(
    env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            enrolment, handle, status, week = await first_week_held(env, c)
            pid = enrolment.patient_id
            marks = {sid: "noshow" if n == 1 else "fulfilled" for n, sid in enumerate(week)}
            ui = make_console(c.settings, c.store, c.client)
            ui.console.senders = {EHR.name: EHR}
            ui.clock.at = now = status.clock.instant(status.program_day)
            url = f"{API}/webhooks/{EHR.name}"

            def resource(patient_id: str, session_id: str, mark: str) -> dict[str, Any]:
                return dict(json.loads(appointment(patient_id, session_id, mark)))

            week_marks = [resource(pid, sid, mark) for sid, mark in marks.items()]
            refused = [
                resource(pid, "ZZZZ-NONE", "fulfilled"),
                {"resourceType": "Patient"},
                resource(new_patient_id(), week[0], "noshow"),
            ]
            body = bundle(*week_marks, *refused)
            shapes = {
                "transaction": bundle(*week_marks, kind="transaction"),
                "no_list": json.dumps({"resourceType": "Bundle", "type": "batch"}).encode(),
                "status_only": bundle(),
                "too_many": bundle(*[week_marks[0]] * 101, kind="batch"),
            }

            async def down(*args: Any) -> None:
                raise RequestFailed(
                    "the Temporal server did not take the event: down", Why.unreachable
                )

            async with ui.signed_in(None) as http:
                monkeypatch.setattr("web.api.send_event", down)
                failed = await http.post(url, content=body, headers=signed(EHR, body, "n-1", now))
                monkeypatch.setattr("web.api.send_event", send_event)
                taken = await http.post(url, content=body, headers=signed(EHR, body, "n-1", now))
                again = await http.post(url, content=body, headers=signed(EHR, body, "n-1", now))
                bad = {
                    name: await http.post(url, content=raw, headers=signed(EHR, raw, name, now))
                    for name, raw in shapes.items()
                }
            after = await until(
                lambda: handle.query(PatientJourneyWorkflow.status),
                lambda s: all(x.status != "scheduled" for x in s.sessions if x.week == 1),
            )
    assert failed.status_code == 503 and "did not take" in failed.json()["detail"]
    assert taken.status_code == 202, taken.text
    n = len(week)
    assert (
        taken.json()["message"] == f"accepted {n} of {n + 3} events; 3 refused (see result.entries)"
    )
    entries = taken.json()["result"]["entries"]
    assert [e["entry"] for e in entries] == list(range(1, n + 4))  # the status entry skipped
    assert [e["status"] for e in entries] == [202] * n + [409, 422, 404]
    assert entries[n]["detail"] == "refused: unknown session 'ZZZZ-NONE' for this patient"
    assert entries[n + 1]["detail"] == "resourceType: an Appointment"
    assert again.headers["webhook-duplicate"] == "true" and again.content == taken.content
    shown = {x.session_id: x.status for x in after.sessions if x.week == 1}
    assert shown == {sid: "missed" if m == "noshow" else "attended" for sid, m in marks.items()}
    assert after.attendance.attended + after.attendance.missed == n
    assert {name: a.status_code for name, a in bad.items()} == dict.fromkeys(shapes, 422)
    assert "of type history" in bad["transaction"].json()["detail"]
    assert (
        bad["too_many"].json()["detail"]
        == "entry: at most 100 Appointments in one Bundle (101 sent)"
    )
    # The access log: an entry for each event the notification carried, in one call.
    log = [e for e in ui.console.access.search() if e.actor == f"webhook:{EHR.name}"]
    taken_entries = [(e.patient_id, e.outcome) for e in log if e.action.endswith("{sender}")]
    assert taken_entries.count((pid, "allowed")) == n
    assert taken_entries.count((None, "refused")) == 3 + len(shapes)
    assert taken_entries.count((None, "failed")) == 1  # the 503
    assert ui.console.access.verify().intact


async def test_an_event_signalled_twice_is_applied_once_and_a_refusal_is_a_task(
    env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            enrolment = Enrolment.model_validate(enrolment_data())
            handle = await c.enrol(enrolment)
            pid = enrolment.patient_id
            status, _ = await drive_journey(
                env,
                handle,
                until=lambda s: sum(x.day <= s.program_day for x in s.sessions) >= 2,
                choose=lambda n: "none",
            )
            held = [x.session_id for x in status.sessions if x.day <= status.program_day]
            first, second = held[:2]

            def event(event_id: str, session_id: str, status: str) -> AttendanceEvent:
                return AttendanceEvent.model_validate(
                    {
                        "event_id": event_id,
                        "sender": EHR.name,
                        "session_id": session_id,
                        "status": status,
                    }
                )

            # Straight to the journey, as the webhook signals: the EHR's first event comes
            # again after a correction (its sender retried it), and is dropped.
            signal = PatientJourneyWorkflow.attendance_event
            await handle.signal(signal, event("evt-a", first, "attended"))
            await handle.signal(signal, event("evt-b", first, "missed"))
            await handle.signal(signal, event("evt-a", first, "attended"))
            await handle.signal(signal, event("evt-c", "ZZZZ-NONE", "attended"))

            async def refusals() -> list[Any]:
                return c.store.tasks(patient_id=pid, kind="event_refused")

            # Signals are applied in order: once the last one's task is open, all were.
            (task,) = await until(refusals, bool)
            after = await handle.query(PatientJourneyWorkflow.status)
            marks = {x.session_id: x.status for x in after.sessions}
            assert marks[first] == "missed"
            assert (after.attendance.attended, after.attendance.missed) == (0, 1)
            assert task.detail == (
                "ehr-north event evt-c was not applied: unknown session 'ZZZZ-NONE' for this "
                "patient. Check it with the sender"
            )
            assert task.workflow_id is None and task.case_manager_id == enrolment.case_manager_id

            # Through the door: Temporal does not take the first try (503) and the event ID is
            # freed, so the sender's retry is taken, even with a body corrected meanwhile.
            ui = make_console(c.settings, c.store, c.client)
            ui.console.senders = {EHR.name: EHR}
            ui.clock.at = now = status.clock.instant(status.program_day)
            url = f"{API}/webhooks/{EHR.name}"

            async def down(*args: Any) -> None:
                raise RequestFailed(
                    "the Temporal server did not take the event: down", Why.unreachable
                )

            monkeypatch.setattr("web.api.send_event", down)
            async with ui.signed_in(None) as http:
                body = appointment(pid, second, "noshow")
                failed = await http.post(url, content=body, headers=signed(EHR, body, "evt-d", now))
                monkeypatch.setattr("web.api.send_event", send_event)
                body = appointment(pid, second, "fulfilled")
                retried = await http.post(
                    url, content=body, headers=signed(EHR, body, "evt-d", now)
                )
            assert failed.status_code == 503 and "did not take" in failed.json()["detail"]
            assert retried.status_code == 202, retried.text
            await until(
                lambda: handle.query(PatientJourneyWorkflow.status),
                lambda s: any(
                    x.session_id == second and x.status == "attended" for x in s.sessions
                ),
            )


def test_a_sender_is_added_once_with_a_secret_only_its_owner_reads(tmp_path: Path) -> None:
    path = tmp_path / "senders.json"
    sender = add_sender(path, "ehr-north", "ehr-appointments", "north")
    assert sender.secret.startswith("whsec_") and path.stat().st_mode & 0o077 == 0
    with pytest.raises(WebhookRefused, match="exists already"):
        add_sender(path, "ehr-north", "ehr-appointments", "north")
    with pytest.raises(WebhookRefused, match="sends one of"):
        add_sender(path, "other", "telepathy", "north")
