"""The care-operations store, on SQLite and on PostgreSQL (the `database_url` fixture runs
each test on both): idempotent writes under concurrency, the migration from the previous
schema version, the audit trail, time zones and the reads a case manager's console makes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import TypeVar

import pytest
from sqlalchemy import DateTime, bindparam, inspect, text
from sqlalchemy.exc import IntegrityError

from activities.care_operations import CareOperations
from activities.records import ConsentRecord, IntakeRecord, SessionBooking
from clinical.aftercare import CheckIn
from clinical.attendance import SessionStatus
from clinical.careplan import plan_care, week_sessions
from clinical.clock import ProgramClock
from clinical.phases import Phase
from clinical.placement import place_enrolment
from clinical.protocol import ProgramCatalog
from clinical.reminders import Reminder
from infra.store import (
    SCHEMA_VERSION,
    AttendanceMark,
    AuditFact,
    CareEventFacts,
    CareStore,
    NewReferral,
    NewTask,
    PhaseChangeEntry,
    TaskClosing,
)
from simulation.partners import SimulatedPartners
from simulation.telephony import SimulatedTelephony
from tests.support import PROGRAMS, make_enrolment

T = TypeVar("T")
AT = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


@pytest.fixture
def store(database_url: str) -> Iterator[CareStore]:
    s = CareStore(database_url, pool_size=10)
    s.migrate()
    yield s
    s.dispose()


def all_at_once(n: int, work: Callable[[], T]) -> list[T]:
    """`work` on n threads released together, each on its own connection."""
    gate = threading.Barrier(n)

    def run() -> T:
        gate.wait(timeout=10)
        return work()

    with ThreadPoolExecutor(n) as pool:
        return [f.result(timeout=60) for f in [pool.submit(run) for _ in range(n)]]


def operations(store: CareStore) -> CareOperations:
    catalog = ProgramCatalog(PROGRAMS)
    return CareOperations(store, catalog, SimulatedTelephony(store), SimulatedPartners(store))


def intake_and_first_week() -> tuple[IntakeRecord, SessionBooking]:
    """A patient's intake and their first intensive week, family sessions included."""
    enrolment = make_enrolment(consents={"family_involvement": True})
    protocol = ProgramCatalog(PROGRAMS).load(enrolment.program_id)
    placement = place_enrolment(enrolment, protocol)
    plan = plan_care(enrolment.assessment, placement, protocol)
    clock = ProgramClock.starting_at(AT, protocol.clock.seconds_per_day)
    sessions = week_sessions(
        plan, Phase.intensive, 1, 1, 0, clock, protocol, family_of=enrolment.assessment
    )
    intake = IntakeRecord(enrolment=enrolment, placement=placement, plan=plan, risk="low", at=AT)
    return intake, SessionBooking(patient_id=enrolment.patient_id, sessions=sessions)


def test_a_booking_retried_on_many_workers_at_once_books_once(store: CareStore) -> None:
    ops = operations(store)
    intake, booking = intake_and_first_week()
    created = all_at_once(6, lambda: ops.record_intake(intake))
    assert created.count(True) == 1
    results = all_at_once(6, lambda: ops.book_sessions(booking))
    assert sum(r.booked for r in results) == len(booking.sessions)
    assert all(r.booked + r.already_booked == len(booking.sessions) for r in results)
    pid = booking.patient_id
    assert [p.patient_id for p in store.patients()] == [pid]
    booked = store.appointments(pid)
    assert sorted(r.session_id for r in booked) == sorted(s.session_id for s in booking.sessions)
    invites = store.outbox(pid, channel="family")
    assert invites, "family sessions invite the family, once each"
    disclosures = store.audit_trail(pid, actions=["disclosed_to_family"])
    assert len(disclosures) == len(invites)
    assert store.duplicate_counts() == dict.fromkeys(store.duplicate_counts(), 0)


def test_patients_among_given_ids_a_long_list_read_in_parts(
    store: CareStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infra.store.patients import AMONG_AT_MOST

    ops = operations(store)
    enrolled = []
    for _ in range(3):
        intake, _booking = intake_and_first_week()
        ops.record_intake(intake)
        enrolled.append(intake.enrolment.patient_id)
    enrolled.sort()
    first, second, third = enrolled
    found = store.patients(among=[third, "P-NOT-ENROLLED", first])
    assert [p.patient_id for p in found] == [first, third]
    assert store.patients(among=[]) == []
    # More IDs than one statement binds (SQLite 32,766, PostgreSQL 65,535): read in parts.
    many = [f"P-{n}" for n in range(7 * AMONG_AT_MOST)]
    assert [p.patient_id for p in store.patients(among=[*many, second, first])] == [first, second]
    # Read two at a time, the parts' answers come back in one order.
    monkeypatch.setattr("infra.store.patients.AMONG_AT_MOST", 2)
    found = store.patients(among=[third, "P-NOT-ENROLLED", second, first])
    assert [p.patient_id for p in found] == [first, second, third]


def test_a_second_booking_of_a_session_under_another_key_is_refused(store: CareStore) -> None:
    ops = operations(store)
    intake, booking = intake_and_first_week()
    ops.record_intake(intake)
    ops.book_sessions(booking)
    columns = (
        "patient_id, session_id, phase, week, level, starts_at, hours, session_type, modality, "
        "status, missed_by_grace, booked_at, updated_at"
    )
    again = text(
        f"INSERT INTO appointments (idempotency_key, {columns}) "
        f"SELECT idempotency_key || '/again', {columns} FROM appointments WHERE session_id = :sid"
    )
    with pytest.raises(IntegrityError, match=r"(?i)unique"), store.engine.begin() as conn:
        conn.execute(again, {"sid": booking.sessions[0].session_id})
    assert len(store.appointments(booking.patient_id)) == len(booking.sessions)


def test_migrating_from_the_previous_schema_version_keeps_every_row(database_url: str) -> None:
    """A database made by schema version 1 (before referrals, consents and reminders),
    with a patient's rows in it, upgraded in place by a worker starting."""
    old = CareStore(database_url)
    assert old.migrate(to=1) == 1
    with old.engine.begin() as conn:
        # Version 1 had none of the columns version 2 added.
        for table, column in [
            ("tasks", "workflow_id"),
            ("follow_up_calls", "check_in_json"),
            ("notifications", "deliver_at"),
            ("notifications", "withdrawn_at"),
        ]:
            conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        at = bindparam("at", type_=DateTime(timezone=True))
        conn.execute(
            text(
                "INSERT INTO tasks (idempotency_key, patient_id, case_manager_id, kind, status, "
                "detail, created_at) VALUES ('P-7K2M9Q4D/task/1', 'P-7K2M9Q4D', 'CM-01', "
                "'schedule_conflict', 'open', 'no schedule fits', :at)"
            ).bindparams(at),
            {"at": AT},
        )
        conn.execute(
            text(
                "INSERT INTO follow_up_calls (idempotency_key, patient_id, call_id, attempt, "
                "due_at, placed_at, outcome, days_of_use) VALUES ('P-7K2M9Q4D/E1-FU-D007/1', "
                "'P-7K2M9Q4D', 'E1-FU-D007', 1, :at, :at, 'reached', 0)"
            ).bindparams(at),
            {"at": AT},
        )
    old.dispose()

    # Two workers start at once on the old database: one migrates, the other waits.
    stores = [CareStore(database_url), CareStore(database_url)]
    assert all_at_once(2, lambda: stores.pop().migrate()) == [SCHEMA_VERSION] * 2
    store = CareStore(database_url)
    assert store.migrate() == SCHEMA_VERSION  # again: nothing to do
    with store.engine.connect() as conn:
        versions = conn.scalars(text("SELECT version FROM schema_migrations")).all()
        columns = {c["name"] for c in inspect(conn).get_columns("notifications")}
        tables = set(inspect(conn).get_table_names())
    assert sorted(versions) == list(range(1, SCHEMA_VERSION + 1))
    assert {"deliver_at", "withdrawn_at"} <= columns
    assert {"referrals", "consents", "partner_ledger"} <= tables
    (task,) = store.tasks(patient_id="P-7K2M9Q4D")
    assert (task.kind, task.workflow_id, task.created_at) == ("schedule_conflict", None, AT)
    (call,) = store.call_attempts("P-7K2M9Q4D")
    assert call.check_in == CheckIn(days_of_use=0)  # asked before instruments were
    # What version 2 writes now lands in the upgraded tables.
    assert store.queue_messages([reminder("P-7K2M9Q4D", "INT1-W01-S1")]) == 1
    (sent,) = store.outbox("P-7K2M9Q4D")
    assert sent.deliver_at == AT + timedelta(hours=20)
    store.dispose()


def test_workers_starting_together_on_an_empty_database(database_url: str) -> None:
    stores = [CareStore(database_url) for _ in range(4)]
    assert all_at_once(4, lambda: stores.pop().migrate()) == [SCHEMA_VERSION] * 4
    store = CareStore(database_url)
    assert store.schema_version() == SCHEMA_VERSION
    with store.engine.connect() as conn:
        versions = conn.scalars(text("SELECT version FROM schema_migrations")).all()
    assert sorted(versions) == list(range(1, SCHEMA_VERSION + 1))
    store.dispose()


def reminder(patient_id: str, session_id: str, deliver_at: datetime | None = None) -> Reminder:
    return Reminder(
        key=f"{patient_id}/reminder/{session_id}",
        patient_id=patient_id,
        channel="sms",
        kind="session_reminder",
        about=session_id,
        deliver_at=deliver_at or AT + timedelta(hours=20),
        body="Reminder: group therapy tomorrow at 10:00",
    )


def test_the_audit_trail_records_each_fact_once_in_order(store: CareStore) -> None:
    ops = operations(store)
    pid = "P-9SQ0ZCFN"
    facts = [
        AuditFact(f"{pid}/0", pid, "CM-01", "enrolled", "treatment", AT, {"level": "2.1"}),
        AuditFact(
            f"{pid}/1", pid, "CM-01", "attendance_recorded", "treatment", AT + timedelta(days=2),
            {"n": 1},
        ),
        AuditFact(
            f"{pid}/2", pid, "engine", "disclosed_to_partner", "care_coordination",
            AT + timedelta(days=3),
        ),
    ]  # fmt: skip
    for fact in facts:
        for _ in range(2):  # a retried activity writes the same fact again
            store.record_care_events(CareEventFacts(patient_id=pid, audit=[fact]))
    consent = ConsentRecord(
        key=f"{pid}/consent/2", patient_id=pid, kind="family_involvement", granted=False,
        recorded_by="CM-02", at=AT + timedelta(days=4),
    )  # fmt: skip
    assert ops.record_consent(consent) is True
    assert ops.record_consent(consent) is False
    trail = store.audit_trail(pid)
    assert trail[: len(facts)] == facts
    assert [(f.actor, f.action, f.purpose, f.at) for f in trail[len(facts) :]] == [
        ("CM-02", "consent_withdrawn", "consent", AT + timedelta(days=4))
    ]
    assert store.audit_trail(pid, actions=["enrolled"]) == facts[:1]
    assert store.consent_in_force(pid, "family_involvement") is False
    assert [c.granted for c in store.consents(pid)] == [False]


def test_tasks_open_and_close_once(store: CareStore) -> None:
    pid = "P-3XTRWRT4"
    opened = [
        NewTask(
            key=f"{pid}/task/{kind}",
            patient_id=pid,
            case_manager_id="CM-07",
            kind=kind,
            detail="…",
            due_at=AT + timedelta(days=1),
            workflow_id=f"journey-{pid}",
        )
        for kind in ["unreachable_patient", "clinical_follow_up"]
    ]
    assert [store.open_task(t) for t in opened] == [True, True]
    assert [store.open_task(t) for t in opened] == [False, False]
    assert [t.kind for t in store.tasks(case_manager_id="CM-07")] == [
        "unreachable_patient",
        "clinical_follow_up",
    ]
    first, second = (
        TaskClosing(key=t.key, by=by, at=AT + timedelta(days=2))
        for t, by in zip(opened, ["CM-07", "engine"], strict=True)
    )

    def complete(closing: TaskClosing) -> bool:
        done = AuditFact(f"{closing.key}/done", pid, closing.by, "task_completed", "treatment", AT)
        return store.complete_task(closing, done)

    assert all_at_once(4, lambda: complete(first)).count(True) == 1
    assert (complete(first), complete(second)) == (False, True)
    done = store.tasks(case_manager_id="CM-07", include_done=True)
    assert [(t.status, t.completed_by) for t in done] == [("done", "CM-07"), ("done", "engine")]
    assert store.tasks(case_manager_id="CM-07") == []
    assert len(store.audit_trail(pid, actions=["task_completed"])) == 2
    assert len(store.outbox(pid, channel="case_manager")) == 2  # a notice per task, once


def test_the_patients_with_open_work_are_those_with_an_open_task_or_referral(
    store: CareStore,
) -> None:
    def task(pid: str) -> NewTask:
        return NewTask(f"{pid}/task/outreach", pid, "CM-07", "unreachable_patient", "…", AT)

    def referral(pid: str) -> NewReferral:
        return NewReferral(f"{pid}/referral/housing", "REF-housing",
                           f"journey-{pid}-REF-housing", pid, "CM-07", "housing", AT)  # fmt: skip

    def fact(pid: str, key: str, action: str) -> AuditFact:
        return AuditFact(key, pid, "CM-07", action, "care_coordination", AT)

    assert store.patients_with_open_work() == set()
    store.open_task(task("P-TASKOPEN"))
    store.open_task(task("P-TASKDONE"))
    closing = TaskClosing(key="P-TASKDONE/task/outreach", by="CM-07", at=AT)
    store.complete_task(closing, fact("P-TASKDONE", "done", "task_completed"))
    for pid in ("P-REFOPEN1", "P-REFCLOSE"):
        store.open_referral(referral(pid), fact(pid, f"{pid}/asked", "referral_requested"))
    store.close_referral("P-REFCLOSE/referral/housing", "declined", AT,
                         fact("P-REFCLOSE", "closed", "referral_closed"))  # fmt: skip
    assert store.patients_with_open_work() == {"P-TASKOPEN", "P-REFOPEN1"}


def test_a_task_goes_to_the_case_manager_of_record(store: CareStore) -> None:
    """A referral that began before a reassignment still names the former case manager: its
    later task and notice go to whoever holds the patient's case now."""
    ops = operations(store)
    intake, _ = intake_and_first_week()
    ops.record_intake(intake)
    pid, former = intake.enrolment.patient_id, intake.enrolment.case_manager_id
    moved = AuditFact(
        f"{pid}/reassigned/1", pid, "SUP-01", "case_manager_reassigned", "treatment", AT
    )
    assert store.reassign_patient(pid, "CM-09", moved)
    late = NewTask(key=f"{pid}/referral/housing/task/referral_follow_up", patient_id=pid,
                   case_manager_id=former, kind="referral_follow_up", detail="…")  # fmt: skip
    assert store.open_task(late)
    assert [t.key for t in store.tasks(case_manager_id="CM-09")] == [late.key]
    assert store.tasks(case_manager_id=former) == []
    notices = store.outbox(pid, channel="case_manager")
    assert [n.recipient for n in notices if n.kind.endswith("referral_follow_up")] == ["CM-09"]


def test_times_come_back_as_the_same_instant_in_utc(store: CareStore) -> None:
    """Whatever zone a time was written in (a program's clinic calendar), the store hands
    back the same instant, in UTC."""
    pid = "P-804RVAKP"
    written = datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=-7)))
    store.queue_messages([reminder(pid, "INT1-W01-S2", deliver_at=written)])
    (row,) = store.outbox(pid)
    assert row.deliver_at == written and row.deliver_at.utcoffset() == timedelta(0)
    with store.engine.connect() as conn:
        stored = conn.scalar(
            text("SELECT deliver_at FROM notifications").columns(deliver_at=DateTime(timezone=True))
        )
    assert stored is not None and stored.replace(tzinfo=None) == datetime(2026, 3, 29, 8, 30)


def test_a_caseload_shows_phase_week_attendance_and_next_contact(store: CareStore) -> None:
    """What a case manager's console lists: each active patient of the caseload with their
    phase, week, attendance, open tasks and next contact, and the tasks of a site."""
    ops = operations(store)
    intake, booking = intake_and_first_week()
    ops.record_intake(intake)
    ops.book_sessions(booking)
    pid, cm = booking.patient_id, intake.enrolment.case_manager_id
    own = [s for s in booking.sessions if s.attendee == "patient"]
    first, second = sorted(own, key=lambda s: s.starts_at)[:2]
    marks = [
        AttendanceMark(first.session_id, SessionStatus.attended, recorded_by=cm),
        AttendanceMark(second.session_id, SessionStatus.missed, recorded_by=cm),
    ]
    store.record_care_events(CareEventFacts(patient_id=pid, session_changes=marks))
    due = second.starts_at + timedelta(days=2)
    task = NewTask(key=f"{pid}/task/outreach", patient_id=pid, case_manager_id=cm,
                   kind="outreach", detail="missed a session", due_at=due)  # fmt: skip
    store.open_task(task)
    as_of = second.starts_at + timedelta(minutes=1)

    (entry,) = store.caseload(as_of, case_manager_id=cm)
    assert (entry.patient.patient_id, entry.patient.phase, entry.week) == (pid, "intake", None)
    assert (entry.attended, entry.missed, entry.attendance_rate) == (1, 1, 0.5)
    assert entry.open_tasks == 1 and entry.next_task_due_at == due
    upcoming = [s.starts_at for s in booking.sessions if s.starts_at > as_of]
    assert entry.next_session_at == min(upcoming)
    assert entry.next_contact == min(due, *upcoming)
    assert store.caseload(as_of, case_manager_id="CM-99") == []
    site = intake.enrolment.site_id
    assert [t.key for t in store.tasks(site_id=site)] == [task.key]
    assert store.tasks(site_id="elsewhere") == []
    asked = NewReferral(f"{pid}/referral/housing", "REF-housing", f"journey-{pid}-REF-housing",
                        pid, cm, "housing", AT)  # fmt: skip
    store.open_referral(asked, AuditFact(f"{asked.key}/requested", pid, cm, "referral_requested",
                                         "care_coordination", AT))  # fmt: skip
    for found in (store.referrals(case_manager_id=cm), store.referrals(site_id=site)):
        assert [(r.need, r.status, r.outcome) for r in found] == [("housing", "requested", None)]
    assert store.referrals(case_manager_id="CM-99") == store.referrals(site_id="elsewhere") == []
    # In its phase, the week is the latest one begun.
    store.record_phase_change(
        PhaseChangeEntry(f"{pid}/phase/1", pid, Phase.intensive, AT, "intake done"),
        case_manager_id=cm, level="2.1", risk="low",
    )  # fmt: skip
    (entry,) = store.caseload(as_of, site_id=site)
    assert (entry.patient.phase, entry.week) == (Phase.intensive, first.week)
    assert [c.phase for c in store.phase_changes(pid)] == [Phase.intensive]
