"""The care-operations store: patients, appointments, follow-up calls, case-manager tasks,
the notifications outbox and the audit trail.

Every write that an activity makes carries an idempotency key with a unique constraint, so
a retried activity can never book, call, notify or audit twice: the database refuses it.
SQLite is the embedded default; the same code runs on PostgreSQL (SQLAlchemy Core)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DataError, IntegrityError

from clinical.assessment import EMAIL_MAX, NAME_MAX, PHONE_MAX
from clinical.phases import Phase
from clinical.sites import Closure
from infra.codec import KeyRing
from infra.files import private_file
from infra.sealed import SealedText, attach_keys, sealed_length

SCHEMA_VERSION = 4

metadata = MetaData()


class UtcDateTime(TypeDecorator[datetime]):
    """An instant, stored in UTC and read back as an aware UTC datetime on every database:
    SQLite keeps no offset (it would keep the wall-clock time of whatever zone was written),
    PostgreSQL answers in the session's zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else _in_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else _in_utc(value)


def _in_utc(value: datetime) -> datetime:
    # A naive time is one the store wrote: UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ts(name: str, nullable: bool = True) -> Column[datetime]:
    return Column(name, UtcDateTime(), nullable=nullable)


patients = Table(
    "patients",
    metadata,
    Column("patient_id", String(16), primary_key=True),
    Column("case_manager_id", String(16), nullable=False, index=True),
    Column("site_id", String(32), nullable=False, index=True),
    Column("program_id", String(48), nullable=False),
    _ts("enrolled_at", nullable=False),
    Column("phase", String(24), nullable=False),
    Column("level", String(16)),
    Column("risk", String(16)),
    # Protected health information: only here and in encrypted workflow payloads.
    # Sealed at rest (infra.sealed), each column sized for the sealed form of the longest
    # value the enrolment accepts: what the door accepts, the store holds.
    Column("given_name", SealedText(NAME_MAX), nullable=False),
    Column("family_name", SealedText(NAME_MAX), nullable=False),
    Column("date_of_birth", SealedText(10), nullable=False),
    Column("phone", SealedText(PHONE_MAX), nullable=False),
    Column("email", SealedText(EMAIL_MAX)),
    Column("assessment_json", SealedText(), nullable=False),
    Column("care_plan_json", Text, nullable=False),
    _ts("updated_at", nullable=False),
)

appointments = Table(
    "appointments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(96), nullable=False, unique=True),
    Column("patient_id", String(16), nullable=False, index=True),
    Column("session_id", String(32), nullable=False),
    Column("phase", String(24), nullable=False),
    Column("week", Integer, nullable=False),
    Column("level", String(16), nullable=False),
    _ts("starts_at", nullable=False),
    Column("hours", Float, nullable=False),
    Column("session_type", String(40), nullable=False),
    Column("modality", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("recorded_by", String(16)),
    Column("missed_by_grace", Boolean, nullable=False, default=False),
    _ts("booked_at", nullable=False),
    _ts("updated_at", nullable=False),
    UniqueConstraint("patient_id", "session_id", name="uq_appointment_session"),
)

follow_up_calls = Table(
    "follow_up_calls",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(96), nullable=False, unique=True),
    Column("patient_id", String(16), nullable=False, index=True),
    Column("call_id", String(24), nullable=False),
    Column("attempt", Integer, nullable=False),
    _ts("due_at", nullable=False),
    _ts("placed_at", nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("days_of_use", Integer),
    Column("check_in_json", SealedText()),  # the check-in's answers (instruments): PHI, sealed
    UniqueConstraint("patient_id", "call_id", "attempt", name="uq_call_attempt"),
)

# The simulated telephony provider's own ledger, as a real provider would keep one: a call
# placed with a reference it has seen before is not placed again.
telephony_ledger = Table(
    "telephony_ledger",
    metadata,
    Column("reference", String(96), primary_key=True),
    Column("patient_id", String(16), nullable=False),
    _ts("placed_at", nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("answers_json", Text),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(128), nullable=False, unique=True),
    Column("channel", String(16), nullable=False),
    Column("recipient", String(24), nullable=False, index=True),
    Column("patient_id", String(16), nullable=False, index=True),
    Column("kind", String(40), nullable=False),
    Column("body", Text, nullable=False),
    _ts("created_at", nullable=False),
    _ts("sent_at"),
    _ts("deliver_at"),  # not before (a reminder); None: at once
    _ts("withdrawn_at"),  # no longer to be sent (the session was cancelled, the call moved)
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(128), nullable=False, unique=True),
    Column("patient_id", String(16), nullable=False, index=True),
    Column("case_manager_id", String(16), nullable=False, index=True),
    Column("kind", String(40), nullable=False),
    Column("status", String(16), nullable=False),
    Column("detail", Text, nullable=False),
    _ts("due_at"),
    _ts("created_at", nullable=False),
    _ts("completed_at"),
    Column("completed_by", String(16)),
    # Where completing the task is delivered (the journey's or a referral's workflow).
    Column("workflow_id", String(96)),
)

referrals = Table(
    "referrals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(128), nullable=False, unique=True),
    Column("referral_id", String(40), nullable=False),
    Column("workflow_id", String(96), nullable=False, index=True),
    Column("patient_id", String(16), nullable=False, index=True),
    Column("case_manager_id", String(16), nullable=False, index=True),
    Column("need", String(16), nullable=False),
    Column("status", String(24), nullable=False),
    Column("partner_reference", String(64)),
    Column("reminders", Integer, nullable=False, default=0),
    Column("outcome", String(16)),
    _ts("requested_at", nullable=False),
    _ts("sent_at"),
    _ts("closed_at"),
)

# The simulated partner services' own ledger: a request or reminder with a reference seen
# before is not sent again.
partner_ledger = Table(
    "partner_ledger",
    metadata,
    Column("reference", String(128), primary_key=True),
    Column("need", String(16), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("patient_id", String(16), nullable=False),
    _ts("sent_at", nullable=False),
)

# Consents over time: the latest row of a (patient, kind) is in force.
consents = Table(
    "consents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(128), nullable=False, unique=True),
    Column("patient_id", String(16), nullable=False, index=True),
    Column("kind", String(40), nullable=False),
    Column("granted", Boolean, nullable=False),
    Column("recorded_by", String(16), nullable=False),
    _ts("recorded_at", nullable=False),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(128), nullable=False, unique=True),
    Column("patient_id", String(16), nullable=False, index=True),
    Column("actor", String(24), nullable=False),
    Column("action", String(40), nullable=False),
    Column("purpose", String(40), nullable=False),
    _ts("at", nullable=False),
    Column("detail_json", Text, nullable=False),
)

phase_changes = Table(
    "phase_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(96), nullable=False, unique=True),
    Column("patient_id", String(16), nullable=False, index=True),
    Column("phase", String(24), nullable=False),
    _ts("at", nullable=False),
    Column("reason", String(120), nullable=False),
)

# Days a site is closed that an operator announced (weather, an outage); yearly holidays are
# in the sites file. One row a site and date: announcing it again changes nothing.
site_closures = Table(
    "site_closures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(64), nullable=False, unique=True),
    Column("site_id", String(32), nullable=False, index=True),
    Column("date", String(10), nullable=False),
    Column("reason", String(80), nullable=False),
    Column("announced_by", String(32), nullable=False),
    _ts("announced_at", nullable=False),
)

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True),
    _ts("applied_at", nullable=False),
)

# Tables with a unique constraint besides the conflict key (see insert_once).
_SECOND_UNIQUE = frozenset({"appointments", "follow_up_calls"})

# The unique key an insert_once conflicts on, where it is not the idempotency key.
_CONFLICT_KEYS = {
    "patients": "patient_id",
    "telephony_ledger": "reference",
    "partner_ledger": "reference",
}

IDEMPOTENT_TABLES = (
    appointments,
    follow_up_calls,
    notifications,
    tasks,
    audit_events,
    referrals,
    consents,
)


PATIENT_COLUMNS_WITHOUT_CONTACT = (
    "patient_id",
    "case_manager_id",
    "site_id",
    "program_id",
    "enrolled_at",
    "phase",
    "level",
    "risk",
)
"""What an operator's read (a cohort report, an export) takes of a patient: no names, birth
date, phone or answers."""


@dataclass(frozen=True)
class CohortRows:
    """A cohort's rows, table by table (see `CareStore.cohort_rows`)."""

    patients: list[dict[str, Any]]
    appointments: list[dict[str, Any]]
    phase_changes: list[dict[str, Any]]
    follow_up_calls: list[dict[str, Any]]
    referrals: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    audit_events: list[dict[str, Any]]


def utcnow() -> datetime:
    return datetime.now(UTC)


# Any constant shared by every CarePath process: the key of the lock migrations hold.
_MIGRATION_LOCK = 0x43415245


class CareStore:
    def __init__(self, url: str, pool_size: int = 5, keys: KeyRing | None = None) -> None:
        """`pool_size`: connections kept open to a database server (a worker's activity
        threads each hold one while they write); `keys`: the ring that seals the contact,
        assessment and check-in columns (None: they are written in the clear)."""
        if url.startswith("sqlite:///"):
            private_file(Path(url.removeprefix("sqlite:///")))
            self.engine: Engine = create_engine(
                url,
                connect_args={"check_same_thread": False, "timeout": 30},
                hide_parameters=True,
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:  # PostgreSQL (settings allow nothing else)
            self.engine = create_engine(
                url,
                pool_pre_ping=True,
                pool_size=pool_size,
                max_overflow=2,
                # A failed statement's message names its SQL, never its values: rows hold
                # names, birth dates and phone numbers, and messages reach logs.
                hide_parameters=True,
                # Timestamps come back in UTC whatever the server's own time zone is.
                connect_args={"options": "-c timezone=UTC"},
            )

        attach_keys(self.engine, keys)

    # --- schema -------------------------------------------------------------------------

    def migrate(self) -> int:
        """Create or upgrade the schema to SCHEMA_VERSION; returns the version. Workers
        starting together take turns: the first migrates, the others find it done."""
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
            else:  # SQLite: take the write lock now, not at the first write
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            metadata.create_all(conn, tables=[schema_migrations])
            current = conn.scalar(select(func.max(schema_migrations.c.version))) or 0
            for version in range(current + 1, SCHEMA_VERSION + 1):
                _MIGRATIONS[version](conn)
                conn.execute(insert(schema_migrations).values(version=version, applied_at=utcnow()))
        return SCHEMA_VERSION

    def schema_version(self) -> int:
        """The schema version the database holds (0: no CarePath store there)."""
        with self.engine.connect() as conn:
            if not inspect(conn).has_table(schema_migrations.name):
                return 0
            return int(conn.scalar(select(func.max(schema_migrations.c.version))) or 0)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction; a write the database refuses (a value it cannot hold, a broken
        constraint) is StoreRefused: permanent, so no activity retries it forever."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except (DataError, IntegrityError) as exc:
            raise StoreRefused(refusal(exc)) from None

    def dispose(self) -> None:
        self.engine.dispose()

    # --- idempotent writes --------------------------------------------------------------

    def insert_once(self, conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> int:
        """Insert rows whose idempotency key is new; returns how many were new."""
        if not rows:
            return 0
        key = _CONFLICT_KEYS.get(table.name, "idempotency_key")
        dialect = conn.dialect.name
        stmt: Any
        if dialect == "sqlite":
            stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=[key])
        elif dialect == "postgresql":
            stmt = postgresql.insert(table).on_conflict_do_nothing(index_elements=[key])
        else:  # pragma: no cover - only SQLite and PostgreSQL are supported
            raise RuntimeError(f"unsupported database {dialect}")
        # The keys of the rows actually inserted: rowcount of a multi-row insert is -1 on
        # PostgreSQL's driver. Rows go as parameters (SQLAlchemy batches them into one
        # multi-row INSERT), not into the statement: a statement holding its rows is
        # compiled afresh each time, which cost the worker ~7% of its CPU in a cohort.
        stmt = stmt.returning(table.c[key])
        if dialect != "postgresql" or table.name not in _SECOND_UNIQUE:
            return len(conn.execute(stmt, list(rows)).all())
        # Two workers inserting the same rows at once on PostgreSQL: the loser can fail on
        # the table's other unique constraint (not the conflict target) while the winner
        # commits. Once more in a savepoint, the winner's rows are there and it does
        # nothing; a row that repeats another under a different key still fails.
        for attempt in (1, 2):
            try:
                with conn.begin_nested():
                    return len(conn.execute(stmt, list(rows)).all())
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def record_closure(self, closure: Closure, at: datetime) -> bool:
        """An unplanned closure, once a site and date; False if it was announced before."""
        row = {
            "idempotency_key": f"{closure.site_id}/{closure.date.isoformat()}",
            "site_id": closure.site_id,
            "date": closure.date.isoformat(),
            "reason": closure.reason,
            "announced_by": closure.announced_by,
            "announced_at": at,
        }
        with self.transaction() as conn:
            return self.insert_once(conn, site_closures, [row]) == 1

    def closures(self, site_id: str, since: date | None = None) -> list[Closure]:
        """A site's announced closures (from `since` on), by date."""
        query = select(site_closures).where(site_closures.c.site_id == site_id)
        if since is not None:
            query = query.where(site_closures.c.date >= since.isoformat())
        with self.engine.connect() as conn:
            found = conn.execute(query.order_by(site_closures.c.date)).mappings().all()
        return [
            Closure(
                site_id=r["site_id"],
                date=date.fromisoformat(r["date"]),
                reason=r["reason"],
                announced_by=r["announced_by"],
            )
            for r in found
        ]

    def active_patients_at(self, site_id: str) -> list[str]:
        """The patients of a site whose journey has not ended (as the store last heard)."""
        ended = [p.value for p in Phase if p.is_terminal]
        query = select(patients.c.patient_id).where(
            patients.c.site_id == site_id, patients.c.phase.not_in(ended)
        )
        with self.engine.connect() as conn:
            return sorted(conn.scalars(query.order_by(patients.c.patient_id)).all())

    def upsert_patient(self, conn: Connection, row: dict[str, Any]) -> bool:
        """Insert the patient once; a repeat (retried intake, even one running at the same
        time on another worker) changes nothing."""
        return self.insert_once(conn, patients, [row]) == 1

    def set_patient_phase(
        self, conn: Connection, patient_id: str, phase: str, level: str | None, risk: str
    ) -> None:
        conn.execute(
            update(patients)
            .where(patients.c.patient_id == patient_id)
            .values(phase=phase, level=level, risk=risk, updated_at=utcnow())
        )

    def audit(
        self,
        conn: Connection,
        *,
        key: str,
        patient_id: str,
        actor: str,
        action: str,
        purpose: str,
        at: datetime,
        detail: dict[str, Any],
    ) -> int:
        """One fact for the audit trail, once per key."""
        return self.insert_once(
            conn,
            audit_events,
            [
                {
                    "idempotency_key": key,
                    "patient_id": patient_id,
                    "actor": actor,
                    "action": action,
                    "purpose": purpose,
                    "at": at,
                    "detail_json": to_json(detail),
                }
            ],
        )

    def consent_in_force(self, conn: Connection, patient_id: str, kind: str) -> bool:
        """The latest recorded consent of that kind (none recorded: not given)."""
        latest = conn.execute(
            select(consents.c.granted)
            .where(consents.c.patient_id == patient_id, consents.c.kind == kind)
            .order_by(consents.c.recorded_at.desc(), consents.c.id.desc())
            .limit(1)
        ).first()
        return bool(latest and latest.granted)

    def queue_reminders(self, conn: Connection, reminders: Iterable[Any], now: datetime) -> int:
        return self.insert_once(
            conn,
            notifications,
            [
                {
                    "idempotency_key": r.key,
                    "channel": r.channel,
                    "recipient": f"patient:{r.patient_id}",
                    "patient_id": r.patient_id,
                    "kind": r.kind,
                    "body": r.body,
                    "created_at": now,
                    "deliver_at": r.deliver_at,
                }
                for r in reminders
            ],
        )

    def withdraw_reminders(self, conn: Connection, keys: Iterable[str], at: datetime) -> int:
        """Reminders not yet sent that no longer apply."""
        keys = list(keys)
        if not keys:
            return 0
        result = conn.execute(
            update(notifications)
            .where(
                notifications.c.idempotency_key.in_(keys),
                notifications.c.sent_at.is_(None),
                notifications.c.withdrawn_at.is_(None),
            )
            .values(withdrawn_at=at)
        )
        return int(result.rowcount or 0)

    def resolve_tasks(self, conn: Connection, resolutions: Iterable[Any]) -> int:
        """Close open tasks whose cause is gone (a resolution has key, by and at);
        a task already closed keeps its first closing."""
        closed = 0
        for r in resolutions:
            result = conn.execute(
                update(tasks)
                .where(tasks.c.idempotency_key == r.key, tasks.c.status == "open")
                .values(status="done", completed_at=r.at, completed_by=r.by)
            )
            closed += result.rowcount or 0
        return closed

    def set_session_statuses(
        self, conn: Connection, patient_id: str, changes: Iterable[dict[str, Any]]
    ) -> int:
        changed = 0
        for change in changes:
            result = conn.execute(
                update(appointments)
                .where(
                    appointments.c.patient_id == patient_id,
                    appointments.c.session_id == change["session_id"],
                )
                .values(
                    status=change["status"],
                    recorded_by=change.get("recorded_by"),
                    missed_by_grace=change.get("missed_by_grace", False),
                    updated_at=utcnow(),
                )
            )
            changed += int(result.rowcount or 0)
        return changed

    # --- reads --------------------------------------------------------------------------

    def rows(
        self, table: Table, *, columns: Sequence[str] | None = None, **where: Any
    ) -> list[dict[str, Any]]:
        """Rows matching `where`; only `columns` of them if given (a reader that must not
        see a patient's contact details names the columns it needs)."""
        stmt = select(*(table.c[c] for c in columns)) if columns else select(table)
        for column, value in where.items():
            stmt = stmt.where(table.c[column] == value)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def task_list(
        self,
        case_manager_id: str | None = None,
        patient_id: str | None = None,
        include_done: bool = False,
    ) -> list[dict[str, Any]]:
        """A case manager's inbox: tasks oldest first (open ones only unless asked)."""
        stmt = select(tasks).order_by(tasks.c.created_at, tasks.c.id)
        if case_manager_id is not None:
            stmt = stmt.where(tasks.c.case_manager_id == case_manager_id)
        if patient_id is not None:
            stmt = stmt.where(tasks.c.patient_id == patient_id)
        if not include_done:
            stmt = stmt.where(tasks.c.status == "open")
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def census(self) -> dict[str, dict[str, int]]:
        """What the clinic looks like now, in counts with no patient in them: patients by
        phase, aftercare check-ins by the outcome of their latest call attempt, open tasks
        by kind."""
        latest = (
            select(
                follow_up_calls.c.patient_id,
                follow_up_calls.c.call_id,
                func.max(follow_up_calls.c.attempt).label("attempt"),
            )
            .group_by(follow_up_calls.c.patient_id, follow_up_calls.c.call_id)
            .subquery()
        )
        queries = {
            "patients": select(patients.c.phase, func.count()).group_by(patients.c.phase),
            "check_ins": select(follow_up_calls.c.outcome, func.count())
            .join(
                latest,
                (follow_up_calls.c.patient_id == latest.c.patient_id)
                & (follow_up_calls.c.call_id == latest.c.call_id)
                & (follow_up_calls.c.attempt == latest.c.attempt),
            )
            .group_by(follow_up_calls.c.outcome),
            "open_tasks": select(tasks.c.kind, func.count())
            .where(tasks.c.status == "open")
            .group_by(tasks.c.kind),
        }
        with self.engine.connect() as conn:
            return {
                name: {str(label): int(n) for label, n in conn.execute(query)}
                for name, query in queries.items()
            }

    def cohort_rows(
        self,
        *,
        site_id: str | None = None,
        case_manager_id: str | None = None,
        program_id: str | None = None,
        enrolled_from: datetime | None = None,
        enrolled_to: datetime | None = None,
        audit_actions: Sequence[str] = (),
    ) -> CohortRows:
        """Read only: the patients matching every filter given (enrolled in [from, to)) and
        their sessions, phase changes, check-in call attempts, referrals, tasks and the audit
        facts of the actions asked for. Patients come without their contact columns."""
        chosen = select(patients.c.patient_id)
        for column, value in (
            (patients.c.site_id, site_id),
            (patients.c.case_manager_id, case_manager_id),
            (patients.c.program_id, program_id),
        ):
            if value is not None:
                chosen = chosen.where(column == value)
        if enrolled_from is not None:
            chosen = chosen.where(patients.c.enrolled_at >= enrolled_from)
        if enrolled_to is not None:
            chosen = chosen.where(patients.c.enrolled_at < enrolled_to)
        without_contact = [patients.c[name] for name in PATIENT_COLUMNS_WITHOUT_CONTACT]

        def of_cohort(table: Table, *columns: Any) -> Any:
            return select(*(columns or (table,))).where(table.c.patient_id.in_(chosen))

        with self.engine.connect() as conn:

            def read(stmt: Any) -> list[dict[str, Any]]:
                return [dict(r._mapping) for r in conn.execute(stmt)]

            return CohortRows(
                patients=read(of_cohort(patients, *without_contact)),
                appointments=read(of_cohort(appointments)),
                phase_changes=read(of_cohort(phase_changes).order_by(phase_changes.c.id)),
                follow_up_calls=read(of_cohort(follow_up_calls)),
                referrals=read(of_cohort(referrals)),
                tasks=read(of_cohort(tasks)),
                audit_events=read(
                    of_cohort(audit_events).where(audit_events.c.action.in_(audit_actions))
                ),
            )

    def duplicate_counts(self) -> dict[str, int]:
        """Rows sharing an idempotency key or business key, per table (should all be 0)."""
        business_keys: dict[str, tuple[str, ...]] = {
            "appointments": ("patient_id", "session_id"),
            "follow_up_calls": ("patient_id", "call_id", "attempt"),
            "notifications": ("idempotency_key",),
            "tasks": ("idempotency_key",),
            "audit_events": ("idempotency_key",),
            "referrals": ("patient_id", "referral_id"),
            "consents": ("idempotency_key",),
        }
        counts: dict[str, int] = {}
        with self.engine.connect() as conn:
            for table in IDEMPOTENT_TABLES:
                key_cols = [table.c[c] for c in business_keys[table.name]]
                dupes = 0
                for cols in ([table.c.idempotency_key], key_cols):
                    grouped = (
                        select(func.count().label("n")).select_from(table).group_by(*cols)
                    ).subquery()
                    dupes += int(
                        conn.scalar(select(func.coalesce(func.sum(grouped.c.n - 1), 0))) or 0
                    )
                counts[table.name] = dupes
        return counts


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # busy_timeout rides out short write locks; WAL lets the CLI read while workers write.
    cursor.execute("PRAGMA busy_timeout=30000")
    # Switching a new database to WAL does not wait on the busy handler: workers opening it
    # together see "database is locked" and try again.
    for attempt in range(100):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError:
            if attempt == 99:
                raise
            time.sleep(0.05)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


_V1_TABLES = (
    "patients",
    "appointments",
    "follow_up_calls",
    "telephony_ledger",
    "notifications",
    "tasks",
    "audit_events",
    "phase_changes",
)


def _migration_1(conn: Connection) -> None:
    # Today's definitions of the tables version 1 had; later migrations add what is missing.
    metadata.create_all(conn, tables=[metadata.tables[name] for name in _V1_TABLES])


def _migration_2(conn: Connection) -> None:
    """Referrals, the partner ledger and consents; tasks know their workflow; check-ins
    keep their structured answers."""
    metadata.create_all(conn, tables=[referrals, partner_ledger, consents])
    timestamp = "TIMESTAMP WITH TIME ZONE" if conn.dialect.name == "postgresql" else "DATETIME"
    added = [
        ("tasks", "workflow_id", "VARCHAR(96)"),
        ("follow_up_calls", "check_in_json", "TEXT"),
        ("notifications", "deliver_at", timestamp),
        ("notifications", "withdrawn_at", timestamp),
    ]
    for table, column, sql_type in added:
        if column not in {c["name"] for c in inspect(conn).get_columns(table)}:
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}"))


def _migration_3(conn: Connection) -> None:
    """Sites' unplanned closures."""
    metadata.create_all(conn, tables=[site_closures])


def _migration_4(conn: Connection) -> None:
    """Contact columns hold their sealed form (SQLite's columns take any length)."""
    if conn.dialect.name != "postgresql":
        return
    for column in ("given_name", "family_name", "date_of_birth", "phone", "email"):
        sealed = patients.c[column].type
        assert isinstance(sealed, SealedText) and sealed.clear_length is not None
        length = sealed_length(sealed.clear_length)
        conn.execute(text(f"ALTER TABLE patients ALTER COLUMN {column} TYPE VARCHAR({length})"))


_MIGRATIONS = {1: _migration_1, 2: _migration_2, 3: _migration_3, 4: _migration_4}


class StoreRefused(ValueError):
    """The database refused a write as it stands (not an outage): retrying cannot help."""


def refusal(exc: Exception) -> str:
    """One line for a refused write: the database's reason, never the row's values (the
    engine hides parameters; the database's own message names a column or constraint)."""
    reason = str(getattr(exc, "orig", exc)).strip().splitlines()
    return f"the store refused the write: {type(exc).__name__}: {reason[0] if reason else ''}"


def store_unreachable(exc: Exception) -> str:
    """One line for a database that does not answer (the URL, with its password, left out)."""
    reason = str(getattr(exc, "orig", exc)).strip().splitlines()
    return f"the care-operations store does not answer ({reason[0] if reason else 'no reason'})"


def to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
