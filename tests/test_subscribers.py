"""Events to subscribers, against a real HTTP receiver (started and stopped here), on SQLite
and PostgreSQL: a patient's phase changes arrive once per event ID even when the endpoint
failed twice (the retries carry the same ID), each signed so the receiver can check it with
the secret alone, only for the subscriber's own site and only under the patient's consent;
dead letters after the retry budget; a replay sends a period again; every sending is on the
patient's accounting of disclosures. Times are fixed: nothing depends on when the suite runs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import fhirkit
import pytest

from activities.records import CaseManagerTask, IntakeRecord, PhaseChangeRecord
from clinical.aftercare import CheckIn
from clinical.careplan import plan_care
from clinical.consents import subscriber_kind as subscriber_consent_kind
from clinical.instruments import BamAnswers, Phq9Answers
from clinical.placement import place_enrolment
from clinical.protocol import ProgramCatalog
from infra.store import CareStore, ConsentEntry, StoredEvent, Subscriber
from infra.store.audit import AuditFact
from infra.store.events import event_id
from infra.store.subscribers import SubscriberRefused
from operators.fhir_events import description, event_payload, event_resource
from services.delivery import DeliveryPolicy
from services.subscribers import EventSender
from tests.console_support import store_only_console
from tests.support import (
    OPEN_SITES,
    PROGRAMS,
    TEST_KEYS,
    TEST_KEYS_FILE,
    make_enrolment,
    run_starter,
)
from tests.test_store import operations
from web.api_security import API

AT = datetime(2026, 11, 3, 17, 0, tzinfo=UTC)


@dataclass
class Receiver:
    """A subscriber's endpoint: answers each POST with the next of `answers` (200 once they
    run out), keeps every request, and takes each event ID once, as a receiver should."""

    answers: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    taken: dict[str, dict[str, Any]] = field(default_factory=dict)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            status = state.answers.pop(0) if state.answers else 200
            if status == 200:
                state.taken.setdefault(self.headers["webhook-id"], json.loads(body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}/carepath/events"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def store(database_url: str) -> Iterator[CareStore]:
    s = CareStore(database_url, pool_size=10, keys=TEST_KEYS)
    s.migrate()
    yield s
    s.dispose()


def enrol(store: CareStore, site: str = "north", consent_to: str | None = None) -> str:
    enrolment = make_enrolment().model_copy(update={"site_id": site})
    protocol = ProgramCatalog(PROGRAMS).load(enrolment.program_id)
    placement = place_enrolment(enrolment, protocol)
    plan = plan_care(enrolment.assessment, placement, protocol)
    intake = IntakeRecord(enrolment=enrolment, placement=placement, plan=plan, risk="low", at=AT)
    operations(store).record_intake(intake)
    pid = enrolment.patient_id
    if consent_to is not None:
        consent(store, pid, consent_to, granted=True)
    return pid


def consent(store: CareStore, pid: str, subscriber: str, *, granted: bool) -> None:
    kind = subscriber_consent_kind(subscriber)
    key = f"{pid}/consent/{kind}/{granted}"
    store.record_consent(
        ConsentEntry(key, pid, kind, granted, "CM-01", AT),
        AuditFact(key, pid, "CM-01", "consent_recorded", "treatment", AT),
    )


def phase_change(store: CareStore, pid: str, phase: str, at: datetime = AT) -> None:
    change = PhaseChangeRecord(
        key=f"{pid}/phase/{phase}",
        patient_id=pid,
        case_manager_id="CM-01",
        phase=phase,
        level="2.1",
        risk="low",
        at=at,
        reason="the plan's weeks ended",
    )
    operations(store).record_phase_change(change)


def sender(store: CareStore, at: list[datetime], **policy: Any) -> EventSender:
    return EventSender(store, DeliveryPolicy(**policy), clock=lambda: at[0])


def subscribe(
    store: CareStore, name: str, url: str, site: str = "north", kinds: str | None = None
) -> Subscriber:
    return store.add_subscriber(
        name, url, site, purpose="treatment", kinds=kinds, by="cli:ops", at=AT
    )


def verified(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's own check, with the secret alone (Standard Webhooks' scheme)."""
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(digest).decode()
    return any(hmac.compare_digest(expected, s) for s in headers["webhook-signature"].split())


def test_phase_changes_arrive_once_per_event_id_through_two_failures(
    store: CareStore, receiver: Receiver
) -> None:
    sub = subscribe(store, "ehr-north", receiver.url)
    pid = enrol(store, consent_to="ehr-north")
    elsewhere = enrol(store, site="south", consent_to="ehr-north")  # another site's patient
    phase_change(store, pid, "intensive")
    phase_change(store, pid, "intensive")  # an activity retried: the same change, no new event
    phase_change(store, elsewhere, "intensive")
    receiver.answers = [500, 503]
    at = [AT]
    events = sender(store, at)
    assert events.send_due().retrying == 1
    at[0] += timedelta(minutes=1)
    assert events.send_due().retrying == 1
    at[0] += timedelta(minutes=1, seconds=59)
    assert events.send_due().claimed == 0  # the second pause is two minutes
    at[0] += timedelta(seconds=1)
    assert events.send_due().sent == 1
    assert events.send_due().claimed == 0  # sent: never again
    ids = [h["webhook-id"] for h, _ in receiver.requests]
    assert len(ids) == 3 and len(set(ids)) == 1  # the retries carry the same event ID
    (event,) = receiver.taken.values()
    assert event["patient_id"] == pid and event["type"] == "carepath.phase_changed"
    resource = event["resource"]
    assert resource["resourceType"] == "EpisodeOfCare" and resource["status"] == "active"
    codes = {label["code"] for label in resource["meta"]["security"]}
    assert codes == {"R", "42CFRPart2", "NORDSCLCD"}
    assert elsewhere not in {json.loads(b)["patient_id"] for _, b in receiver.requests}
    for headers, body in receiver.requests:
        assert verified(sub.secret, headers, body)
        assert not verified(sub.secret, headers, body.replace(b"intensive", b"aftercare"))
        assert not verified("whsec_another", headers, body)
    (disclosure,) = store.disclosures(pid, AT - timedelta(days=1))
    assert disclosure.recipient == "subscriber ehr-north" and disclosure.purpose == "treatment"
    assert "phase change to intensive" in disclosure.description


def test_no_consent_withholds_and_dead_letters_follow_the_retry_budget(
    store: CareStore, receiver: Receiver
) -> None:
    subscribe(store, "ehr-north", receiver.url)
    consenting, silent = enrol(store, consent_to="ehr-north"), enrol(store)
    phase_change(store, consenting, "intensive")
    phase_change(store, silent, "intensive")
    receiver.answers = [500] * 3
    at = [AT]
    events = sender(store, at, attempts=3)
    first = events.send_due()
    assert (first.retrying, first.withheld) == (1, 1)
    at[0] += timedelta(minutes=1)
    assert events.send_due().retrying == 1
    at[0] += timedelta(minutes=2)
    assert events.send_due().dead == 1
    (dead,) = store.undelivered()
    assert (dead.patient_id, dead.status, dead.attempts) == (consenting, "failed", 3)
    assert "500" in (dead.last_error or "")
    assert {json.loads(b)["patient_id"] for _, b in receiver.requests} == {consenting}
    assert store.disclosures(silent, AT - timedelta(days=1)) == []
    # The endpoint is back: the operator puts the dead letter back, and it arrives.
    assert store.requeue_delivery(dead.key)
    assert events.send_due().sent == 1 and list(receiver.taken) == [dead.event_id]
    # Consent withdrawn: what is not yet sent is withheld.
    consent(store, consenting, "ehr-north", granted=False)
    phase_change(store, consenting, "step_down")
    assert events.send_due().withheld == 1


def test_replay_sends_a_period_again_under_the_same_event_ids(
    store: CareStore, receiver: Receiver
) -> None:
    pid = enrol(store, consent_to="ehr-north")
    subscribe(store, "ehr-north", receiver.url)
    for n, phase in enumerate(("intensive", "step_down", "aftercare")):
        phase_change(store, pid, phase, AT + timedelta(days=30 * n))
    at = [AT + timedelta(days=90)]
    events = sender(store, at)
    assert events.send_all_due().sent == 3
    first = [h["webhook-id"] for h, _ in receiver.requests]
    # The receiver lost November: the operator replays it.
    queued = store.replay(AT + timedelta(days=1), AT + timedelta(days=45), "ehr-north")
    assert queued == 1
    assert events.send_all_due().sent == 1
    assert receiver.requests[-1][0]["webhook-id"] == first[1]
    assert len(receiver.taken) == 3  # a repeat the receiver drops
    assert len(store.disclosures(pid, AT - timedelta(days=1))) == 4  # each sending disclosed


def test_a_replay_while_a_sender_holds_the_delivery_is_sent_not_lost(
    store: CareStore, receiver: Receiver
) -> None:
    pid = enrol(store, consent_to="ehr-north")
    subscribe(store, "ehr-north", receiver.url)
    phase_change(store, pid, "intensive", AT)
    now = AT + timedelta(days=1)
    (held,) = store.claim_deliveries(now, lease=timedelta(minutes=5))
    # The operator replays the day while that sending is out; then the sending completes.
    assert store.replay(AT - timedelta(days=1), now, "ehr-north") == 1
    assert not store.delivery_sent(held, now, "phase change")
    (again,) = store.claim_deliveries(now, lease=timedelta(minutes=5))
    assert (again.event.event_id, again.generation) == (held.event.event_id, held.generation + 1)
    assert store.delivery_sent(again, now, "phase change")
    assert store.deliveries("ehr-north") == [(held.event.event_id, "sent", 1)]
    assert len(store.disclosures(pid, AT - timedelta(days=1))) == 2  # both sendings


def test_tasks_referrals_and_kinds(store: CareStore, receiver: Receiver) -> None:
    subscribe(store, "warehouse", receiver.url, kinds="task_opened,task_closed")
    pid = enrol(store, consent_to="warehouse")
    phase_change(store, pid, "intensive")  # not a kind it takes
    task = CaseManagerTask(
        key=f"{pid}/task/schedule", patient_id=pid, case_manager_id="CM-01",
        kind="schedule_conflict", detail="free text for the inbox",
    )  # fmt: skip
    operations(store).open_case_manager_task(task)
    operations(store).open_case_manager_task(task)
    assert events_sent(store) == 1
    (opened,) = receiver.taken.values()
    assert opened["resource"]["resourceType"] == "Task"
    assert opened["resource"]["status"] == "requested"
    assert "free text" not in json.dumps(opened)


def events_sent(store: CareStore) -> int:
    return EventSender(store, clock=lambda: AT).send_all_due().sent


@pytest.mark.parametrize(
    ("url", "fault"),
    [
        ("http://ehr.example.org/in", "https"),
        ("ftp://127.0.0.1/in", "https"),
        ("https://", "https"),
    ],
)
def test_a_subscription_refuses_bad_input_in_one_line(
    store: CareStore, url: str, fault: str
) -> None:
    with pytest.raises(SubscriberRefused, match=fault):
        subscribe(store, "ehr", url)
    with pytest.raises(SubscriberRefused, match="kinds"):
        subscribe(store, "ehr", "https://ehr.example.org/in", kinds="gossip")
    with pytest.raises(SubscriberRefused, match="name"):
        subscribe(store, "E H R", "https://ehr.example.org/in")
    subscribe(store, "ehr", "https://ehr.example.org/in")
    with pytest.raises(SubscriberRefused, match="exists"):
        subscribe(store, "ehr", "https://ehr.example.org/in")
    assert [s.name for s in store.subscribers()] == ["ehr"]


@pytest.mark.slow
def test_subscribers_from_the_command_line(tmp_path: Path, receiver: Receiver) -> None:
    url = f"sqlite:///{tmp_path / 'care.db'}"
    store = CareStore(url, keys=TEST_KEYS)
    store.migrate()
    pid = enrol(store, consent_to="ehr-north")
    store.dispose()
    env = {
        "PATH": "/usr/bin:/bin",
        "CAREPATH_DATABASE_URL": url,
        "CAREPATH_KEYS_FILE": str(TEST_KEYS_FILE),
        "CAREPATH_DATA_DIR": str(tmp_path),
        "CAREPATH_PROGRAMS_DIR": str(PROGRAMS),
        "CAREPATH_SITES_FILE": str(OPEN_SITES),
    }
    added = run_starter(
        env, "subscribers", "add", "ehr-north", "--url", receiver.url, "--site", "north"
    )
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip().splitlines()[-1]
    assert secret.startswith("whsec_")
    listed = run_starter(env, "subscribers", "list", "--json")
    (shown,) = json.loads(listed.stdout)
    assert shown["name"] == "ehr-north" and secret not in listed.stdout
    store = CareStore(url, keys=TEST_KEYS)
    phase_change(store, pid, "intensive")
    store.dispose()
    sent = run_starter(env, "deliver", "--once")
    assert sent.returncode == 0, sent.stderr
    assert "events: sent 1, retrying 0, dead letters 0" in sent.stdout
    ((headers, body),) = receiver.requests
    assert verified(secret, headers, body)
    assert secret not in sent.stdout + sent.stderr
    replay = run_starter(
        env, "subscribers", "replay", "--from", f"{AT:%Y-%m-%d}", "--to", f"{AT:%Y-%m-%d}"
    )
    assert replay.returncode == 0 and replay.stdout.startswith("1 event deliveries"), replay
    assert "events: sent 1," in run_starter(env, "deliver", "--once").stdout
    assert len(receiver.taken) == 1 and len(receiver.requests) == 2
    assert run_starter(env, "subscribers", "dead-letters").stdout.strip() == "no dead letters"
    assert run_starter(env, "subscribers", "disable", "ehr-north").returncode == 0
    for args, fault in (
        (("add", "xx", "--url", "http://ehr.example.org", "--site", "north"), "https"),
        (("add",), "give the subscriber's name"),
        (("replay", "--from", "2026-13-01", "--to", "2026-12-01"), "--from"),
        (("replay", "--from", "2026-12-02", "--to", "2026-12-01"), "before"),
        (("disable", "ehr-north"), "disabled already"),
        (("dead-letters", "--retry", "nope"), "no dead letter"),
    ):
        refused = run_starter(env, "subscribers", *args)
        assert refused.returncode == 2 and fault in refused.stderr, (args, refused.stderr)
        assert len(refused.stderr.strip().splitlines()) == 1


async def test_an_api_client_manages_its_own_sites_subscriptions(tmp_path: Path) -> None:
    async with store_only_console(tmp_path) as ui:
        store = ui.console.store
        store.add_subscriber(
            "south-feed", "https://south.example.org/in", "south", purpose="treatment",
            kinds=None, by="test", at=AT,
        )  # fmt: skip
        scopes = "subscribers:read,subscribers:write"
        _, token = ui.console.clients.add("ehr", scopes, "north", ui.clock())
        plain = {"Authorization": f"Bearer {token}"}
        auth = plain | {"Idempotency-Key": "sub-1"}
        body = {"name": "ehr-feed", "url": "https://ehr.example.org/in", "kinds": ["phase_changed"]}
        async with ui.signed_in(None) as http:
            made = await http.post(f"{API}/subscribers", json=body, headers=auth)
            again = await http.post(f"{API}/subscribers", json=body, headers=auth)
            listed = await http.get(f"{API}/subscribers", headers=auth)
            bad_body = body | {"name": "x2", "url": "http://a.org"}
            bad = await http.post(f"{API}/subscribers", json=bad_body, headers=plain)
            twice = await http.post(
                f"{API}/subscribers", json=body, headers={"Authorization": f"Bearer {token}"}
            )
            replayed = await http.post(
                f"{API}/subscribers/ehr-feed/replay",
                json={"from": "2026-11-01", "to": "2026-11-30"},
                headers={"Authorization": f"Bearer {token}"},
            )
            theirs = await http.post(
                f"{API}/subscribers/south-feed/disable",
                headers={"Authorization": f"Bearer {token}"},
            )
            off = await http.post(
                f"{API}/subscribers/ehr-feed/disable", headers={"Authorization": f"Bearer {token}"}
            )
    assert made.status_code == 201 and made.json()["secret"].startswith("whsec_")
    assert made.json()["secret"] == store.subscriber("ehr-feed").secret  # type: ignore[union-attr]
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["secret"] is None  # shown once
    assert [s["name"] for s in listed.json()] == ["ehr-feed"]  # its own site's only
    assert "secret" not in listed.text and "whsec_" not in listed.text
    assert bad.status_code == 422 and "https" in bad.json()["detail"]
    assert twice.status_code == 409 and "exists" in twice.json()["detail"]
    assert replayed.status_code == 200 and replayed.json()["queued"] == 0
    assert theirs.status_code == 404
    assert off.status_code == 200 and store.subscriber("ehr-feed").disabled_at  # type: ignore[union-attr]
    kept = " ".join(str(r) for r in ui.console.access.search())
    assert "whsec_" not in kept


def test_each_kind_of_event_is_a_labelled_resource_an_independent_validator_passes() -> None:
    pid = "P-7K2M9Q4D"
    answers = CheckIn(
        days_of_use=1,
        bam=BamAnswers(items=(1,) * 17),
        phq9=Phq9Answers(items=(0, 1, 0, 1, 0, 0, 0, 0, 0)),
    )
    facts: dict[str, dict[str, Any]] = {
        "phase_changed": {"phase": "step_down", "reason": "criteria met"},
        "task_opened": {"task_kind": "step_down_decision", "case_manager_id": "CM-01",
                        "due_at": AT.isoformat()},
        "task_closed": {"task_kind": "step_down_decision", "closed_by": "CM-01"},
        "referral_closed": {"need": "housing", "outcome": "completed", "referral_id": "REF-1"},
        "check_in_concluded": {"call_id": "FU-D030", "outcome": "reached", "attempts": 1,
                               "check_in": answers.model_dump(mode="json")},
    }  # fmt: skip
    types = set()
    for kind, f in facts.items():
        event = StoredEvent(
            event_id(kind, f"{pid}/{kind}"), kind, pid, "north", AT, f | {"key": f"{pid}/{kind}"}
        )
        payload = event_payload(event)
        resource = payload["resource"]
        assert fhirkit.validate(resource) == [], (kind, fhirkit.validate(resource))
        assert {s["code"] for s in resource["meta"]["security"]} == {"R", "42CFRPart2", "NORDSCLCD"}
        assert payload["id"] == event.event_id and payload["type"] == f"carepath.{kind}"
        assert description(event)
        types.add(resource["resourceType"])
    assert types == {"EpisodeOfCare", "Task", "Observation"}
    scores = {
        c["code"]["coding"][0]["code"]: c["valueInteger"]
        for c in event_resource(
            StoredEvent("x", "check_in_concluded", pid, "north", AT, facts["check_in_concluded"])
        )["component"]
    }
    assert scores == {"days-of-use": 1, "bam-use": 3, "bam-risk": 6, "bam-protective": 6,
                      "phq9-total": 2}  # fmt: skip
