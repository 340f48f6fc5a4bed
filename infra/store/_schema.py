"""The store's tables and their migrations: private to infra.store (everything outside reads
and writes through `CareStore`'s methods).

One schema for SQLite and PostgreSQL. A new table goes here, with a migration that creates it
appended to MIGRATIONS (the schema's version is the number of migrations)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Connection,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    inspect,
    text,
)
from sqlalchemy.engine import Dialect

from clinical.assessment import EMAIL_MAX, NAME_MAX, PHONE_MAX
from infra.sealed import SealedText, sealed_length

metadata = MetaData()

GENESIS_HASH = "0" * 64
"""The access log's chain starts from this."""


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
    Column("track_id", String(32)),  # a group track's session (its sign-in sheet)
    UniqueConstraint("patient_id", "session_id", name="uq_appointment_session"),
    Index("ix_appointments_track", "track_id", "starts_at"),
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
    # Delivery (services.delivery): a sender claims a due row for a lease, so senders side by
    # side never take the same one; status None is waiting (or retrying, from
    # next_attempt_at), then sent, or a dead letter: failed (retries spent, or undeliverable)
    # or bounced (the server or provider refused it for good).
    Column("status", String(16)),
    Column("attempts", Integer, nullable=False, default=0, server_default=text("0")),
    _ts("next_attempt_at"),
    Column("claimed_by", String(48)),
    _ts("claimed_until"),
    Column("last_error", String(200)),
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
    # The §2.31 elements of a written consent (clinical.consents.ConsentTerms, as JSON);
    # None: the program's standard form for its kind.
    Column("terms_json", Text),
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

# Seats in programs' group tracks. The primary key is the guarantee that a seat is never sold
# twice: whoever inserts (program, track, seat) first holds it, on every database and worker.
# Seat numbers run 1..capacity (the program's, as it is when the seat is taken).
group_seats = Table(
    "group_seats",
    metadata,
    Column("program_id", String(48), primary_key=True),
    Column("track_id", String(32), primary_key=True),
    Column("seat", Integer, primary_key=True),
    Column("patient_id", String(16), nullable=False, index=True),
    _ts("taken_at", nullable=False),
    UniqueConstraint("program_id", "track_id", "patient_id", name="uq_group_seats_patient"),
    CheckConstraint("seat >= 1", name="ck_group_seats_seat"),
)

# Who waits for a full track, in the order they joined (id).
group_waitlist = Table(
    "group_waitlist",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("program_id", String(48), nullable=False),
    Column("track_id", String(32), nullable=False),
    Column("patient_id", String(16), nullable=False, index=True),
    _ts("joined_at", nullable=False),
    UniqueConstraint("program_id", "track_id", "patient_id", name="uq_group_waitlist_patient"),
)

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True),
    _ts("applied_at", nullable=False),
)


# The unique key an insert_once conflicts on, where it is not the idempotency key.
CONFLICT_KEYS = {
    "patients": "patient_id",
    "telephony_ledger": "reference",
    "call_placements": "reference",
    "partner_ledger": "reference",
    "care_events": "event_id",
}

# Tables with a unique constraint besides the conflict key (see insert_once).
SECOND_UNIQUE = frozenset({"appointments", "follow_up_calls"})

# Each idempotent table's business key: no two rows may share it either.
BUSINESS_KEYS: dict[Table, tuple[str, ...]] = {
    appointments: ("patient_id", "session_id"),
    follow_up_calls: ("patient_id", "call_id", "attempt"),
    notifications: ("idempotency_key",),
    tasks: ("idempotency_key",),
    audit_events: ("idempotency_key",),
    referrals: ("patient_id", "referral_id"),
    consents: ("idempotency_key",),
}

# What an operator's read (a cohort report, an export, a caseload) takes of a patient: no
# names, birth date, phone or answers.
PATIENT_COLUMNS_WITHOUT_CONTACT = (
    patients.c.patient_id,
    patients.c.case_manager_id,
    patients.c.site_id,
    patients.c.program_id,
    patients.c.enrolled_at,
    patients.c.phase,
    patients.c.level,
    patients.c.risk,
    patients.c.updated_at,
)

# The console's local accounts and their sessions (staff, not patients: no PHI).
console_users = Table(
    "console_users",
    metadata,
    Column("username", String(32), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("site_id", String(32)),
    Column("case_manager_id", String(16)),
    Column("password_hash", String(200), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("failed_attempts", Integer, nullable=False, default=0),
    _ts("locked_until"),
    _ts("created_at", nullable=False),
)

console_sessions = Table(
    "console_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("username", String(32), nullable=False, index=True),
    Column("address", String(64), nullable=False),
    _ts("opened_at", nullable=False),
    _ts("last_seen_at", nullable=False),
    _ts("ended_at"),
    Column("ended_why", String(16)),
)


access_log = Table(
    "access_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", UtcDateTime(), nullable=False, index=True),
    Column("actor", String(48), nullable=False, index=True),
    Column("role", String(16), nullable=False),
    Column("action", String(64), nullable=False),
    Column("patient_id", String(16), index=True),
    Column("outcome", String(16), nullable=False),
    Column("address", String(64), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

# One row: the last entry's number and hash. Appending updates it first, which takes the
# write lock on SQLite and a row lock on PostgreSQL: concurrent consoles append in turn and
# the chain never forks. It also shows a truncated tail.
access_log_head = Table(
    "access_log_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)


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


# The API's machine identities (only a hash of each token), and the keys of requests and
# events taken once (a POST's Idempotency-Key, a webhook's event ID).
api_clients = Table(
    "api_clients",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("scopes", String(400), nullable=False),  # space-separated, as in OAuth2
    Column("site_id", String(32), nullable=False),
    _ts("created_at", nullable=False),
    _ts("expires_at", nullable=False),
    _ts("revoked_at"),
)

api_idempotency = Table(
    "api_idempotency",
    metadata,
    # Who took the key: an API client (api:NAME) or a webhook sender (webhook:NAME).
    Column("client", String(48), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("fingerprint", String(64), nullable=False),  # method, path and body: one request
    _ts("created_at", nullable=False),
    Column("status_code", Integer),  # None while the request is being carried out
    Column("body", Text),
)


def _migration_5(conn: Connection) -> None:
    """The console's accounts and sessions, and the access log with its chain's head."""
    metadata.create_all(conn, tables=[console_users, console_sessions, access_log, access_log_head])
    conn.execute(access_log_head.insert().values(id=1, seq=0, hash=GENESIS_HASH))


def _migration_6(conn: Connection) -> None:
    """The API's clients and idempotency keys."""
    metadata.create_all(conn, tables=[api_clients, api_idempotency])


def _migration_7(conn: Connection) -> None:
    """Group tracks' seats and waitlists."""
    metadata.create_all(conn, tables=[group_seats, group_waitlist])


def _migration_8(conn: Connection) -> None:
    """The outbox's delivery columns: status, attempts, the next try and the sender's claim."""
    timestamp = "TIMESTAMP WITH TIME ZONE" if conn.dialect.name == "postgresql" else "DATETIME"
    added = [
        ("status", "VARCHAR(16)"),
        ("attempts", "INTEGER NOT NULL DEFAULT 0"),
        ("next_attempt_at", timestamp),
        ("claimed_by", "VARCHAR(48)"),
        ("claimed_until", timestamp),
        ("last_error", "VARCHAR(200)"),
    ]
    present = {c["name"] for c in inspect(conn).get_columns("notifications")}
    for column, sql_type in added:
        if column not in present:
            conn.execute(text(f"ALTER TABLE notifications ADD COLUMN {column} {sql_type}"))


# Systems that subscribe to CarePath's events (an EHR, a data warehouse): where to send, the
# secret each delivery is signed with (sealed at rest: it must be readable to sign), the one
# site whose patients it hears of, the purpose its disclosures serve and the kinds it takes.
subscribers = Table(
    "subscribers",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("url", String(400), nullable=False),
    Column("secret", SealedText(64), nullable=False),
    Column("site_id", String(32), nullable=False, index=True),
    Column("purpose", String(40), nullable=False),
    Column("kinds", String(200), nullable=False),  # space-separated
    Column("created_by", String(48), nullable=False),
    _ts("created_at", nullable=False),
    _ts("disabled_at"),
)

# What happened to a patient that subscribers hear of, written in the transaction of the
# change itself; the event ID is derived from the change's own key, so a retried write
# writes no second event. The facts may be clinical (a check-in's scores): sealed.
care_events = Table(
    "care_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("patient_id", String(16), nullable=False, index=True),
    Column("site_id", String(32), nullable=False),
    Column("kind", String(32), nullable=False),
    _ts("at", nullable=False),
    Column("facts_json", SealedText(), nullable=False),
    _ts("recorded_at", nullable=False),
)

# Each event for each subscriber of its site, sent as the outbox's messages are: claimed for
# a lease, then sent, retried or a dead letter (failed); withheld when no consent of the
# patient covers that subscriber. `generation` counts replays: each sending is a disclosure.
event_deliveries = Table(
    "event_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(80), nullable=False, unique=True),
    Column("subscriber", String(32), nullable=False, index=True),
    Column("event_id", String(36), nullable=False, index=True),
    Column("status", String(16)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("generation", Integer, nullable=False, default=0),
    _ts("next_attempt_at"),
    Column("claimed_by", String(48)),
    _ts("claimed_until"),
    Column("last_error", String(200)),
    _ts("sent_at"),
    _ts("created_at", nullable=False),
)


def _migration_9(conn: Connection) -> None:
    """Subscribers, the events they hear of, and each event's delivery to each."""
    metadata.create_all(conn, tables=[subscribers, care_events, event_deliveries])


# Whom a patient's family-session invitations go to: one contact a patient, its address
# sealed at rest (PHI), no name.
family_contacts = Table(
    "family_contacts",
    metadata,
    Column("patient_id", String(16), primary_key=True),
    Column("channel", String(8), nullable=False),
    Column("address", SealedText(max(EMAIL_MAX, PHONE_MAX)), nullable=False),
    Column("relationship", String(16), nullable=False),
    Column("recorded_by", String(16), nullable=False),
    _ts("recorded_at", nullable=False),
)


def _migration_10(conn: Connection) -> None:
    """Consents keep the §2.31 elements of their written form."""
    if "terms_json" not in {c["name"] for c in inspect(conn).get_columns("consents")}:
        conn.execute(text("ALTER TABLE consents ADD COLUMN terms_json TEXT"))


def _migration_11(conn: Connection) -> None:
    """Family contacts."""
    metadata.create_all(conn, tables=[family_contacts])


def _migration_12(conn: Connection) -> None:
    """Appointments name the group track whose session they are (the sign-in sheet)."""
    if "track_id" not in {c["name"] for c in inspect(conn).get_columns("appointments")}:
        conn.execute(text("ALTER TABLE appointments ADD COLUMN track_id VARCHAR(32)"))
    conn.execute(
        text(
            "CREATE INDEX IF NOT EXISTS ix_appointments_track ON appointments (track_id, starts_at)"
        )
    )


# The satisfaction and support questionnaire sent to a patient (one per occasion and
# episode: the idempotency key), found by its link's opaque token; answered once. Where the
# patient was (site, group track) when it was sent, for the report. No PHI: the answers are
# points on the program's scale.
surveys = Table(
    "surveys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(80), nullable=False, unique=True),
    Column("token", String(64), nullable=False, unique=True),
    Column("patient_id", String(16), nullable=False, index=True),
    Column("program_id", String(48), nullable=False),
    Column("site_id", String(32), nullable=False),
    Column("track_id", String(32)),
    Column("occasion", String(16), nullable=False),
    Column("episode", Integer, nullable=False),
    _ts("issued_at", nullable=False),
    _ts("expires_at", nullable=False),
    _ts("answered_at"),
    Column("answered_via", String(8)),
    Column("answers_json", Text),
)


# A counsellor's sessions: one row a booked session, numbered within the counsellor's
# site-local week (Monday) from 1 up to their weekly capacity, so the primary key refuses a
# booking past it; a counsellor has one session at a start, and a session one counsellor.
counsellor_sessions = Table(
    "counsellor_sessions",
    metadata,
    Column("counsellor_id", String(16), primary_key=True),  # a person, whatever the program
    Column("week", String(10), primary_key=True),  # the Monday, ISO date
    Column("number", Integer, primary_key=True),
    Column("patient_id", String(16), nullable=False, index=True),
    Column("session_id", String(32), nullable=False),
    _ts("starts_at", nullable=False),
    Column("hours", Float, nullable=False),
    Column("program_id", String(48), nullable=False),
    _ts("booked_at", nullable=False),
    UniqueConstraint("patient_id", "session_id", name="uq_counsellor_sessions_session"),
    UniqueConstraint("counsellor_id", "starts_at", name="uq_counsellor_sessions_start"),
    CheckConstraint("number >= 1", name="ck_counsellor_sessions_number"),
)


# Which workflow waits for the provider's word on a call it placed: the journey's own ID for
# journeys that call inside their run (patch check-in-in-journey), a FollowUpCall child's
# for journeys from before. Written before the call is placed, so a prompt callback finds
# it; a call placed before this table existed was a child's. Opaque IDs only.
call_placements = Table(
    "call_placements",
    metadata,
    Column("reference", String(96), primary_key=True),
    Column("patient_id", String(16), nullable=False, index=True),
    Column("workflow_id", String(96), nullable=False),
    _ts("placed_at", nullable=False),
)


def _migration_13(conn: Connection) -> None:
    """Satisfaction and support surveys."""
    metadata.create_all(conn, tables=[surveys])


def _migration_14(conn: Connection) -> None:
    """Counsellors' calendars."""
    metadata.create_all(conn, tables=[counsellor_sessions])


def _migration_15(conn: Connection) -> None:
    """Which workflow placed each check-in call."""
    metadata.create_all(conn, tables=[call_placements])


# Version n of the schema is what the first n migrations make.
MIGRATIONS: tuple[Callable[[Connection], None], ...] = (
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
    _migration_5,
    _migration_6,
    _migration_7,
    _migration_8,
    _migration_9,
    _migration_10,
    _migration_11,
    _migration_12,
    _migration_13,
    _migration_14,
    _migration_15,
)
SCHEMA_VERSION = len(MIGRATIONS)
