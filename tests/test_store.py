"""The care-operations store, on SQLite and on PostgreSQL (the `database_url` fixture runs
each test on both): idempotent writes under concurrency, the migration from the previous
schema version, the audit trail and time zones."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, inspect, select, text

from activities.care_operations import CareOperations
from activities.records import ConsentRecord, IntakeRecord, SessionBooking, TaskResolution
from activities.telephony import SimulatedTelephony
from clinical.careplan import plan_care, week_sessions
from clinical.clock import ProgramClock
from clinical.phases import Phase
from clinical.placement import place_enrolment
from clinical.protocol import ProgramCatalog
from clinical.reminders import Reminder
from infra.store import (
    SCHEMA_VERSION,
    CareStore,
    StoreRefused,
    appointments,
    audit_events,
    follow_up_calls,
    notifications,
    patients,
    schema_migrations,
    tasks,
)
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
    return CareOperations(store, ProgramCatalog(PROGRAMS), SimulatedTelephony(store))


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
    assert len(store.rows(patients, patient_id=pid)) == 1
    booked = store.rows(appointments, patient_id=pid)
    assert sorted(r["session_id"] for r in booked) == sorted(s.session_id for s in booking.sessions)
    invites = store.rows(notifications, patient_id=pid, channel="family")
    assert invites, "family sessions invite the family, once each"
    disclosures = store.rows(audit_events, patient_id=pid, action="disclosed_to_family")
    assert len(disclosures) == len(invites)
    assert store.duplicate_counts() == dict.fromkeys(store.duplicate_counts(), 0)


def test_a_second_booking_of_a_session_under_another_key_is_refused(store: CareStore) -> None:
    ops = operations(store)
    intake, booking = intake_and_first_week()
    ops.record_intake(intake)
    ops.book_sessions(booking)
    (row,) = [
        r
        for r in store.rows(appointments, patient_id=booking.patient_id)
        if r["session_id"] == booking.sessions[0].session_id
    ]
    row.pop("id")
    row["idempotency_key"] = f"{row['idempotency_key']}/again"
    with pytest.raises(StoreRefused, match="IntegrityError"), store.transaction() as conn:
        store.insert_once(conn, appointments, [row])
    assert len(store.rows(appointments, patient_id=booking.patient_id)) == len(booking.sessions)


def test_migrating_from_the_previous_schema_version_keeps_every_row(database_url: str) -> None:
    """A database made by schema version 1 (before referrals, consents and reminders),
    with a patient's rows in it, upgraded in place by a worker starting."""
    old = CareStore(database_url)
    with old.engine.begin() as conn:
        from infra.store import _MIGRATIONS

        _MIGRATIONS[1](conn)
        # Version 1 had none of the columns version 2 added.
        for table, column in [
            ("tasks", "workflow_id"),
            ("follow_up_calls", "check_in_json"),
            ("notifications", "deliver_at"),
            ("notifications", "withdrawn_at"),
        ]:
            conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        schema_migrations.create(conn)
        conn.execute(schema_migrations.insert().values(version=1, applied_at=AT))
        conn.execute(
            tasks.insert().values(
                idempotency_key="P-7K2M9Q4D/task/1",
                patient_id="P-7K2M9Q4D",
                case_manager_id="CM-01",
                kind="schedule_conflict",
                status="open",
                detail="no schedule fits",
                created_at=AT,
            )
        )
        conn.execute(
            follow_up_calls.insert().values(
                idempotency_key="P-7K2M9Q4D/E1-FU-D007/1",
                patient_id="P-7K2M9Q4D",
                call_id="E1-FU-D007",
                attempt=1,
                due_at=AT,
                placed_at=AT,
                outcome="reached",
                days_of_use=0,
            )
        )
    old.dispose()

    # Two workers start at once on the old database: one migrates, the other waits.
    stores = [CareStore(database_url), CareStore(database_url)]
    assert all_at_once(2, lambda: stores.pop().migrate()) == [SCHEMA_VERSION] * 2
    store = CareStore(database_url)
    assert store.migrate() == SCHEMA_VERSION  # again: nothing to do
    with store.engine.connect() as conn:
        versions = conn.scalars(select(schema_migrations.c.version)).all()
        columns = {c["name"] for c in inspect(conn).get_columns("notifications")}
        tables = set(inspect(conn).get_table_names())
    assert sorted(versions) == list(range(1, SCHEMA_VERSION + 1))
    assert {"deliver_at", "withdrawn_at"} <= columns
    assert {"referrals", "consents", "partner_ledger"} <= tables
    (task,) = store.task_list(patient_id="P-7K2M9Q4D")
    assert (task["kind"], task["workflow_id"], task["created_at"]) == (
        "schedule_conflict",
        None,
        AT,
    )
    (call,) = store.rows(follow_up_calls, patient_id="P-7K2M9Q4D")
    assert (call["days_of_use"], call["check_in_json"]) == (0, None)
    # What version 2 writes now lands in the upgraded tables.
    with store.transaction() as conn:
        store.queue_reminders(conn, [reminder("P-7K2M9Q4D", "INT1-W01-S1")], AT)
    (sent,) = store.rows(notifications, patient_id="P-7K2M9Q4D")
    assert sent["deliver_at"] == AT + timedelta(hours=20)
    store.dispose()


def test_workers_starting_together_on_an_empty_database(database_url: str) -> None:
    stores = [CareStore(database_url) for _ in range(4)]
    assert all_at_once(4, lambda: stores.pop().migrate()) == [SCHEMA_VERSION] * 4
    store = CareStore(database_url)
    with store.engine.connect() as conn:
        versions = conn.scalars(select(schema_migrations.c.version)).all()
    assert sorted(versions) == list(range(1, SCHEMA_VERSION + 1))
    store.dispose()


def reminder(patient_id: str, session_id: str) -> Reminder:
    return Reminder(
        key=f"{patient_id}/reminder/{session_id}",
        patient_id=patient_id,
        channel="sms",
        kind="session_reminder",
        about=session_id,
        deliver_at=AT + timedelta(hours=20),
        body="Reminder: group therapy tomorrow at 10:00",
    )


def test_the_audit_trail_records_each_fact_once_in_order(store: CareStore) -> None:
    ops = operations(store)
    pid = "P-9SQ0ZCFN"
    facts: list[tuple[str, str, str, datetime, dict[str, Any]]] = [
        ("CM-01", "enrolled", "treatment", AT, {"level": "2.1"}),
        ("CM-01", "attendance_recorded", "treatment", AT + timedelta(days=2), {"n": 1}),
        ("engine", "disclosed_to_partner", "care_coordination", AT + timedelta(days=3), {}),
    ]
    for n, (actor, action, purpose, at, detail) in enumerate(facts):
        for _ in range(2):  # a retried activity writes the same fact again
            with store.transaction() as conn:
                store.audit(
                    conn,
                    key=f"{pid}/{n}",
                    patient_id=pid,
                    actor=actor,
                    action=action,
                    purpose=purpose,
                    at=at,
                    detail=detail,
                )
    consent = ConsentRecord(
        key=f"{pid}/consent/2", patient_id=pid, kind="family_involvement", granted=False,
        recorded_by="CM-02", at=AT + timedelta(days=4),
    )  # fmt: skip
    assert ops.record_consent(consent) is True
    assert ops.record_consent(consent) is False
    trail = sorted(store.rows(audit_events, patient_id=pid), key=lambda r: (r["at"], r["id"]))
    assert [(r["actor"], r["action"], r["purpose"], r["at"]) for r in trail] == [
        (actor, action, purpose, at) for actor, action, purpose, at, _ in facts
    ] + [("CM-02", "consent_withdrawn", "consent", AT + timedelta(days=4))]
    assert trail[0]["detail_json"] == '{"level": "2.1"}'
    with store.engine.connect() as conn:
        assert store.consent_in_force(conn, pid, "family_involvement") is False
    ids = [r["id"] for r in trail]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # assigned by the database


def test_tasks_open_and_close_once(store: CareStore) -> None:
    pid = "P-3XTRWRT4"
    rows = [
        {
            "idempotency_key": f"{pid}/task/{kind}",
            "patient_id": pid,
            "case_manager_id": "CM-07",
            "kind": kind,
            "status": "open",
            "detail": "…",
            "due_at": AT + timedelta(days=1),
            "created_at": AT + timedelta(minutes=i),
            "workflow_id": f"journey-{pid}",
        }
        for i, kind in enumerate(["unreachable_patient", "clinical_follow_up"])
    ]
    with store.transaction() as conn:
        assert store.insert_once(conn, tasks, rows) == 2
        assert store.insert_once(conn, tasks, rows) == 0
    first, second = (
        TaskResolution(key=r["idempotency_key"], by=by, at=AT + timedelta(days=2))
        for r, by in zip(rows, ["CM-07", "engine"], strict=True)
    )
    assert [t["kind"] for t in store.task_list("CM-07")] == [
        "unreachable_patient",
        "clinical_follow_up",
    ]
    assert all_at_once(4, lambda: _resolve(store, first)).count(1) == 1
    with store.transaction() as conn:
        assert store.resolve_tasks(conn, [first, second]) == 1
    done = store.task_list("CM-07", include_done=True)
    assert [(t["status"], t["completed_by"]) for t in done] == [
        ("done", "CM-07"),
        ("done", "engine"),
    ]
    assert store.task_list("CM-07") == []


def _resolve(store: CareStore, resolution: TaskResolution) -> int:
    with store.transaction() as conn:
        return store.resolve_tasks(conn, [resolution])


def test_times_come_back_as_the_same_instant_in_utc(store: CareStore) -> None:
    """Whatever zone a time was written in (a program's clinic calendar), the store hands
    back the same instant, in UTC."""
    pid = "P-804RVAKP"
    written = datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=-7)))
    with store.transaction() as conn:
        store.queue_reminders(conn, [reminder(pid, "INT1-W01-S2")], written)
        store.withdraw_reminders(conn, [f"{pid}/reminder/INT1-W01-S2"], written)
        store.withdraw_reminders(conn, [f"{pid}/reminder/INT1-W01-S2"], AT)  # already withdrawn
    (row,) = store.rows(notifications, patient_id=pid)
    assert row["created_at"] == written and row["created_at"].utcoffset() == timedelta(0)
    assert row["withdrawn_at"] == written
    with store.engine.connect() as conn:
        newest = conn.scalar(select(func.max(notifications.c.created_at)))
    assert newest is not None and newest.replace(tzinfo=None) == datetime(2026, 3, 29, 8, 30)
