"""Delivering the outbox: e-mail through a real SMTP server (aiosmtpd, on a port of the
test's own), texts through a stand-in of an SMS provider's HTTP API, on SQLite and on
PostgreSQL. Each message once, even with two senders at once; retries with backoff, bounces
and dead letters; only on the patient's channel, inside their contact window, in words that
name no session type or program. Times are fixed: nothing depends on when the suite runs."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from activities.records import IntakeRecord, SurveyIssue
from clinical.careplan import plan_care
from clinical.clock import ProgramClock, zone
from clinical.family_contacts import FamilyContact
from clinical.messages import channel_chosen, patient_text, sending_time, too_late
from clinical.phases import Phase
from clinical.placement import place_enrolment
from clinical.protocol import ProgramCatalog, ReminderConfig
from clinical.reminders import Reminder, reminder
from clinical.sites import SiteDirectory
from clinical.surveys import survey_key
from infra.channels import SUBJECT, Channel, SmsProviderChannel, SmtpChannel, reference_of
from infra.store import CareEventFacts, CareStore, ConsentEntry, PhaseChangeEntry
from infra.store.audit import AuditFact
from services.delivery import Deliverer, DeliveryPolicy
from tests.support import (
    DAY,
    OPEN_SITES,
    PROGRAMS,
    TEST_KEYS,
    TEST_KEYS_FILE,
    make_enrolment,
    run_starter,
)
from tests.test_store import intake_and_first_week, operations

NEW_YORK = zone("America/New_York")
# Noon in New York on a Tuesday: inside the default window (10:00-18:00).
NOON = datetime(2026, 11, 3, 12, 0, tzinfo=NEW_YORK).astimezone(UTC)
EMAIL = "avery.q@example.org"
PROGRAM_WORDS = ("therapy", "relapse", "addiction", "education", "alumni", "iop", "substance")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mailbox:
    """What the SMTP server accepted; `refuse` maps a recipient to the reply its RCPT gets."""

    def __init__(self) -> None:
        self.mail: list[tuple[list[str], Message]] = []
        self.refuse: dict[str, str] = {}
        self.lock = threading.Lock()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        with self.lock:
            self.mail.append((list(envelope.rcpt_tos), message_from_bytes(content)))
        return "250 Message accepted for delivery"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


class Provider:
    """A stand-in of an SMS provider's API: answers each POST with the next status of
    `answers` (202 once they run out) and keeps what it was sent."""

    def __init__(self) -> None:
        self.answers: list[int] = []
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []


@pytest.fixture
def provider() -> Iterator[tuple[Provider, str]]:
    state = Provider()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.received.append((dict(self.headers), body))
            status = state.answers.pop(0) if state.answers else 202
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_port}/v1/messages"
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


def enrol(
    store: CareStore, *, reminders: str, email: str | None = EMAIL, program: str = "default-iop"
) -> str:
    """A patient in the store (contacts sealed), taking reminders on `reminders`."""
    enrolment = make_enrolment(
        contact_window={"start": "10:00", "end": "18:00", "reminders": reminders}
    )
    contact = enrolment.contact.model_copy(update={"email": email})
    enrolment = enrolment.model_copy(update={"contact": contact, "program_id": program})
    catalog = ProgramCatalog(PROGRAMS)
    protocol = catalog.load(enrolment.program_id)
    placement = place_enrolment(enrolment, protocol)
    plan = plan_care(enrolment.assessment, placement, protocol)
    intake = IntakeRecord(enrolment=enrolment, placement=placement, plan=plan, risk="low", at=NOON)
    operations(store).record_intake(intake)
    return enrolment.patient_id


def session_reminder(patient_id: str, n: int, channel: str = "email") -> Reminder:
    """A reminder as the journey writes one (the clinic's wording names the session type),
    for a session tomorrow, due before NOON."""
    clock = ProgramClock.starting_at(NOON - timedelta(days=3), 86400, "America/New_York")
    found = reminder(
        patient_id=patient_id,
        key=f"{patient_id}/remind/S{n}",
        kind="session_reminder",
        about=f"S{n}",
        event=(NOON + timedelta(hours=22, minutes=n)).astimezone(NEW_YORK),
        text="relapse prevention (in person)",
        window=make_enrolment().assessment.contact_window.model_copy(update={"reminders": channel}),
        hours_before=24,
        clock=clock,
    )
    assert found is not None and found.deliver_at <= NOON
    return found


def deliverer(
    store: CareStore, channels: dict[str, Channel], at: list[datetime], **policy: Any
) -> Deliverer:
    """A sender whose clock reads `at[0]` (a test moves it)."""
    return Deliverer(
        store,
        channels,
        SiteDirectory.load(OPEN_SITES),
        ProgramCatalog(PROGRAMS),
        DeliveryPolicy(**policy),
        clock=lambda: at[0],
    )


def smtp(port: int) -> SmtpChannel:
    return SmtpChannel("127.0.0.1", port, "care-team@clinic.example", timeout=5)


def test_a_reminder_arrives_in_the_mailbox_once_in_plain_words(
    store: CareStore, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    pid = enrol(store, reminders="email")
    store.queue_messages([session_reminder(pid, 1)])
    sender = deliverer(store, {"email": smtp(port)}, [NOON])
    assert sender.deliver_due().sent == 1
    assert sender.deliver_due().claimed == 0  # sent: never claimed again
    ((to, mail),) = box.mail
    assert to == [EMAIL] and mail["Subject"] == SUBJECT
    assert mail["Message-ID"] == f"<{reference_of(f'{pid}/remind/S1')}@clinic.example>"
    text = str(mail.get_payload()).strip()
    assert text.startswith("Reminder: you have an appointment with your care team on Wed 04 Nov")
    assert not any(word in text.lower() for word in PROGRAM_WORDS)
    (row,) = store.outbox(pid)
    assert (row.status, row.attempts, row.sent_at) == ("sent", 1, NOON)


def test_two_senders_at_once_send_each_message_once(
    store: CareStore, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    pids = [enrol(store, reminders="email") for _ in range(3)]
    store.queue_messages([session_reminder(p, n) for p in pids for n in range(10)])
    senders = [deliverer(store, {"email": smtp(port)}, [NOON], batch=4) for _ in range(2)]
    gate = threading.Barrier(2)
    sent = [0, 0]

    def run(i: int) -> None:
        gate.wait(timeout=10)
        while (result := senders[i].deliver_due()).claimed:
            sent[i] += result.sent

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sum(sent) == 30 and all(sent), sent  # both worked, and 30 were sent in all
    ids = [mail["Message-ID"] for _, mail in box.mail]
    assert len(ids) == len(set(ids)) == 30
    assert all(m.status == "sent" for p in pids for m in store.outbox(p))


def test_a_busy_server_is_retried_with_backoff_and_a_refusal_bounces(
    store: CareStore, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    busy, gone = (
        enrol(store, reminders="email"),
        enrol(store, reminders="email", email="x@gone.org"),
    )
    box.refuse = {EMAIL: "451 4.3.0 try again later", "x@gone.org": "550 5.1.1 no such user"}
    store.queue_messages([session_reminder(busy, 1), session_reminder(gone, 1)])
    at = [NOON]
    sender = deliverer(store, {"email": smtp(port)}, at, attempts=3)
    result = sender.deliver_due()
    assert (result.retrying, result.dead) == (1, 1)
    at[0] = NOON + timedelta(seconds=59)  # the first pause is a minute
    assert sender.deliver_due().claimed == 0
    at[0] = NOON + timedelta(minutes=1)
    assert sender.deliver_due().retrying == 1
    at[0] += timedelta(minutes=1, seconds=59)  # then two
    assert sender.deliver_due().claimed == 0
    at[0] += timedelta(seconds=1)
    assert sender.deliver_due().dead == 1  # the third try was the last
    letters = {d.patient_id: d for d in store.dead_letters()}
    assert (letters[gone].status, letters[gone].attempts) == ("bounced", 1)
    assert (letters[busy].status, letters[busy].attempts) == ("failed", 3)
    assert "451" in (letters[busy].last_error or "") and "550" in (letters[gone].last_error or "")
    assert not any("@" in (d.last_error or "") for d in letters.values())  # no address
    assert box.mail == []
    # The server takes mail again: an operator puts the dead letter back.
    box.refuse = {}
    assert store.requeue(f"{busy}/remind/S1") and not store.requeue("no/such/key")
    assert sender.deliver_due().sent == 1 and len(box.mail) == 1


def test_texts_go_through_the_provider_once_after_it_failed_twice(
    store: CareStore, provider: tuple[Provider, str]
) -> None:
    state, url = provider
    pid, refused = enrol(store, reminders="sms"), enrol(store, reminders="sms")
    store.queue_messages([session_reminder(pid, 1, "sms")])
    state.answers = [503, 429]
    at = [NOON]
    sender = deliverer(store, {"sms": SmsProviderChannel(url, "CLINIC", "s3cret", timeout=5)}, at)
    assert sender.deliver_due().retrying == 1
    at[0] += timedelta(minutes=1)
    assert sender.deliver_due().retrying == 1
    at[0] += timedelta(minutes=2)
    assert sender.deliver_due().sent == 1
    assert len(state.received) == 3
    keys = {headers["Idempotency-Key"] for headers, _ in state.received}
    assert keys == {reference_of(f"{pid}/remind/S1")}  # one message, tried three times
    headers, body = state.received[-1]
    assert headers["Authorization"] == "Bearer s3cret"
    assert (body["to"], body["from"]) == ("+1 555 010 2030", "CLINIC")
    assert not any(word in body["text"].lower() for word in PROGRAM_WORDS)
    assert [m.status for m in store.outbox(pid)] == ["sent"]
    # A number the provider will not text: bounced at once.
    state.answers = [400]
    store.queue_messages([session_reminder(refused, 1, "sms")])
    assert sender.deliver_due().dead == 1
    assert [(d.patient_id, d.status) for d in store.dead_letters()] == [(refused, "bounced")]


def test_messages_wait_for_the_patients_contact_window(
    store: CareStore, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    pid = enrol(store, reminders="email")
    store.queue_messages([session_reminder(pid, 1)])
    night = datetime(2026, 11, 4, 3, 0, tzinfo=NEW_YORK).astimezone(UTC)
    at = [night]
    sender = deliverer(store, {"email": smtp(port)}, at)
    assert sender.deliver_due().waiting == 1
    opens = datetime(2026, 11, 4, 10, 0, tzinfo=NEW_YORK).astimezone(UTC)
    at[0] = opens - timedelta(seconds=1)
    assert sender.deliver_due().claimed == 0 and box.mail == []
    at[0] = opens
    assert sender.deliver_due().sent == 1
    (row,) = store.outbox(pid)
    assert (row.attempts, row.sent_at) == (1, opens)  # waiting was no try
    # A sender down for a day: a reminder as late as it was meant to be early is not sent.
    stale = session_reminder(pid, 2)
    store.queue_messages([stale])
    at[0] = stale.deliver_at + timedelta(hours=24)
    assert sender.deliver_due().dead == 1 and len(box.mail) == 1
    (letter,) = store.dead_letters()
    assert (letter.key, letter.last_error) == (stale.key, "too late: its event may be over")


def test_only_the_patients_channel_and_only_what_is_due(
    store: CareStore, mailbox: tuple[Mailbox, int], provider: tuple[Provider, str]
) -> None:
    (box, port), (state, url) = mailbox, provider
    texts, no_email = enrol(store, reminders="sms"), enrol(store, reminders="email", email=None)
    later = session_reminder(texts, 2, "sms").model_copy(update={"deliver_at": NOON + DAY})
    withdrawn = session_reminder(texts, 3, "sms")
    store.queue_messages(
        [session_reminder(texts, 1), session_reminder(no_email, 1), later, withdrawn]
    )
    store.record_care_events(CareEventFacts(texts, reminders_withdrawn=[withdrawn.key]))
    # A notice to the case manager is theirs (the console's inbox), not a patient's.
    store.record_phase_change(
        PhaseChangeEntry(f"{texts}/phase/1", texts, Phase.intensive, NOON, "placed"),
        case_manager_id="CM-01",
        level="2.1",
        risk="low",
    )
    channels: dict[str, Channel] = {
        "email": smtp(port),
        "sms": SmsProviderChannel(url, "CLINIC", "t", timeout=5),
    }
    at = [NOON]
    sender = deliverer(store, channels, at)
    assert sender.deliver_due().dead == 2
    letters = {d.patient_id: d.last_error for d in store.dead_letters()}
    assert letters == {
        texts: "not a channel the patient chose",
        no_email: "no email address on file",
    }
    assert box.mail == [] and state.received == []
    at[0] = NOON + DAY
    assert sender.deliver_due().sent == 1  # the later one, when it fell due
    (sent,) = [m for m in store.outbox(texts) if m.status == "sent"]
    assert sent.key == later.key and len(state.received) == 1
    notices = store.outbox(texts, channel="case_manager")
    assert notices and all(n.status is None for n in notices)


def test_patient_wording_names_no_session_type_or_program() -> None:
    window = make_enrolment().assessment.contact_window
    for protocol in (ProgramCatalog(PROGRAMS).load(p) for p in ("default-iop", "demo-iop")):
        types = protocol.schedule.group_session_types
        for session_type in [*types, "family_education", "individual_therapy"]:
            found = reminder(
                patient_id="P-7K2M9Q4D",
                key="k",
                kind="session_reminder",
                about="S1",
                event=datetime(2026, 11, 4, 9, 30, tzinfo=NEW_YORK),
                text=f"{session_type.replace('_', ' ')} (telehealth)",
                window=window,
                hours_before=24,
                clock=ProgramClock.starting_at(NOON, 86400, "America/New_York"),
            )
            assert found is not None
            text = patient_text(found.kind, found.body)
            assert text == (
                "Reminder: you have an appointment with your care team on Wed 04 Nov at 09:30 "
                "(by video)."
            )
    assert patient_text("session_reminder", "relapse prevention tomorrow") is None
    assert patient_text("invite_family_education", "Invitation: family education") is None


def test_channels_and_windows_by_the_rules() -> None:
    window = make_enrolment().assessment.contact_window  # sms, 10:00-18:00
    none = window.model_copy(update={"reminders": "none"})
    assert channel_chosen("session_reminder", "sms", window)
    assert not channel_chosen("session_reminder", "email", window)
    assert not channel_chosen("session_reminder", "sms", none)
    assert channel_chosen("closure_notice", "sms", none)
    assert channel_chosen("check_in_sms", "sms", window.model_copy(update={"reminders": "email"}))
    evening = datetime(2026, 11, 3, 19, 0, tzinfo=NEW_YORK)
    tomorrow = datetime(2026, 11, 4, 10, 0, tzinfo=NEW_YORK)
    assert sending_time(evening, window, "America/New_York") == tomorrow
    assert sending_time(tomorrow, window, "America/New_York") == tomorrow
    chicago = window.model_copy(update={"zone": "America/Chicago"})
    assert sending_time(tomorrow, chicago, "America/New_York") == tomorrow + timedelta(hours=1)
    config = ReminderConfig(session_hours_before=24, call_hours_before=2)
    assert not too_late("session_reminder", evening, evening + timedelta(hours=23), config)
    assert too_late("session_reminder", evening, evening + timedelta(hours=24), config)
    assert too_late("call_reminder", evening, evening + timedelta(hours=2), config)
    assert not too_late("closure_notice", evening, evening + DAY * 3, config)
    assert not too_late("check_in_sms", None, evening, config)


def test_deliver_and_dead_letters_from_the_command_line(
    tmp_path: Path, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    url = f"sqlite:///{tmp_path / 'care.db'}"
    keys = TEST_KEYS_FILE
    store = CareStore(url, keys=TEST_KEYS)
    store.migrate()
    # On the demo's clock: the reminders were placed in its calendar's windows, so they go
    # out whatever hour the suite runs.
    pid = enrol(store, reminders="email", program="demo-iop")
    gone = enrol(store, reminders="email", email="x@gone.org", program="demo-iop")
    box.refuse = {"x@gone.org": "550 5.1.1 no such user"}
    store.queue_messages([session_reminder(pid, 1), session_reminder(gone, 1)])
    store.dispose()
    env = {
        "PATH": "/usr/bin:/bin",
        "CAREPATH_DATABASE_URL": url,
        "CAREPATH_KEYS_FILE": str(keys),
        "CAREPATH_DATA_DIR": str(tmp_path),
        "CAREPATH_PROGRAMS_DIR": str(PROGRAMS),
        "CAREPATH_SITES_FILE": str(OPEN_SITES),
        "CAREPATH_SMTP_HOST": "127.0.0.1",
        "CAREPATH_SMTP_PORT": str(port),
    }
    done = run_starter(env, "deliver", "--once")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("sent 1, retrying 0, dead letters 1,"), done.stdout
    ((to, _),) = box.mail
    assert to == [EMAIL]
    assert EMAIL not in done.stdout + done.stderr and "x@gone.org" not in done.stderr
    letters = run_starter(env, "dead-letters", "--json")
    assert letters.returncode == 0, letters.stderr
    ((letter),) = json.loads(letters.stdout)
    assert (letter["patient_id"], letter["status"]) == (gone, "bounced")
    again = run_starter(env, "dead-letters", "--retry", letter["key"])
    assert again.returncode == 0 and "back in the outbox" in again.stdout
    assert run_starter(env, "dead-letters").stdout.strip() == "no dead letters"


def test_family_invitations_reach_the_family_contact_under_family_consent(
    store: CareStore, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    ops = operations(store)
    (kept, i_kept), (revoked, i_revoked) = [intake_and_first_week() for _ in range(2)]
    for intake, booking in ((kept, i_kept), (revoked, i_revoked)):
        ops.record_intake(intake)  # family consent given at intake
        ops.book_sessions(booking)  # family sessions booked, their invitations posted
    pid, other = kept.enrolment.patient_id, revoked.enrolment.patient_id
    sender = deliverer(store, {"email": smtp(port)}, [NOON])
    sender.deliver_all_due()
    assert box.mail == []  # no family contact on file yet: the invitations wait
    invited = [m for m in store.outbox(pid, "family")]
    assert invited and all(m.status is None for m in invited)
    store.record_consent(
        ConsentEntry(f"{other}/consent/off", other, "family_involvement", False, "CM-01", NOON),
        AuditFact(f"{other}/consent/off", other, "CM-01", "consent_withdrawn", "consent", NOON),
    )
    for p, address in ((pid, "kin@example.org"), (other, "aunt@example.org")):
        contact = FamilyContact(channel="email", address=address, relationship="parent")
        store.record_family_contact(p, contact, "CM-01", NOON)
    result = sender.deliver_all_due()
    assert result.sent == len(invited)
    assert {tuple(to) for to, _ in box.mail} == {("kin@example.org",)}
    for _, mail in box.mail:
        text = str(mail.get_payload()).strip()
        assert text.startswith("Invitation: you are invited to a session with the care team")
        assert pid not in text and not any(w in text.lower() for w in PROGRAM_WORDS)
    withheld = [d for d in store.dead_letters() if d.patient_id == other]
    assert withheld and all("family consent" in (d.last_error or "") for d in withheld)
    assert "kin@example.org" not in repr(store.family_contact(pid))


def test_a_questionnaires_link_reaches_the_patients_mailbox_with_no_program_words(
    store: CareStore, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    pid = enrol(store, reminders="email")
    issue = SurveyIssue(
        key=survey_key(pid, 1, "end"),
        patient_id=pid,
        program_id="default-iop",
        site_id="north",
        track_id=None,
        occasion="end",
        episode=1,
        at=NOON,
        link_days=14,
        channel="email",
    )
    assert operations(store).issue_survey(issue)
    assert deliverer(store, {"email": smtp(port)}, [NOON]).deliver_due().sent == 1
    ((to, mail),) = box.mail
    text = str(mail.get_payload()).strip()
    (survey,) = store.surveys(pid)
    assert to == [EMAIL] and f"/survey/{survey.token}." in text
    assert text.startswith("A few short questions on how things are going for you")
    unsaid = (*PROGRAM_WORDS, "care", "program", pid.lower())
    assert not any(word in text.lower() for word in unsaid)
