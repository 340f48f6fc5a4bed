"""The store's engine, transactions and idempotent insert: what every part of the store
shares. A write the database refuses is StoreRefused; a repeated key changes nothing."""

from __future__ import annotations

import functools
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, IntegrityError

from infra.codec import KeyRing
from infra.files import private_file
from infra.sealed import attach_keys
from infra.store._schema import (
    CONFLICT_KEYS,
    MIGRATIONS,
    SCHEMA_VERSION,
    SECOND_UNIQUE,
    metadata,
    schema_migrations,
)

# Any constant shared by every CarePath process: the key of the lock migrations hold.
_MIGRATION_LOCK = 0x43415245


class StoreRefused(ValueError):
    """The database refused a write as it stands (not an outage): retrying cannot help."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class StoreCore:
    """The engine and the ways to it; the repositories (infra.store's other modules) add
    the clinic's writes and reads on top."""

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

    def migrate(self, to: int = SCHEMA_VERSION) -> int:
        """Create or upgrade the schema to version `to` (an earlier one only to make an old
        database, as tests of an upgrade do); returns the version. Workers starting together
        take turns: the first migrates, the others find it done."""
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
            else:  # SQLite: take the write lock now, not at the first write
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            metadata.create_all(conn, tables=[schema_migrations])
            current = conn.scalar(select(func.max(schema_migrations.c.version))) or 0
            for version in range(current + 1, to + 1):
                MIGRATIONS[version - 1](conn)
                conn.execute(insert(schema_migrations).values(version=version, applied_at=utcnow()))
        return to

    def schema_version(self) -> int:
        """The schema version the database holds (0: no CarePath store there)."""
        with self.engine.connect() as conn:
            if not inspect(conn).has_table(schema_migrations.name):
                return 0
            return int(conn.scalar(select(func.max(schema_migrations.c.version))) or 0)

    def dispose(self) -> None:
        self.engine.dispose()

    # --- for the repositories -----------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One write's transaction; a write the database refuses (a value it cannot hold, a
        broken constraint) is StoreRefused: permanent, so no activity retries it forever."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except (DataError, IntegrityError) as exc:
            raise StoreRefused(refusal(exc)) from None

    def _read(self, stmt: Any, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """A read's rows, each a mapping of column to value (`params`: a statement's
        bound parameters)."""
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt, params).mappings()]


def claim_rows(
    conn: Connection, table: Table, ready: Any, now: datetime, lease: timedelta, limit: int
) -> str | None:
    """Claim up to `limit` of `table`'s `ready` rows, oldest first, for `lease`: senders
    side by side never take the same row. Returns the claim (None: nothing was ready)."""
    c = table.c
    pick = select(c.id).where(ready).order_by(c.id).limit(limit)
    if conn.dialect.name == "postgresql":
        # The rows stay locked until the claim commits; senders side by side pick past
        # each other's instead of queueing.
        pick = pick.with_for_update(skip_locked=True)
    else:  # SQLite: the write lock now, so no two senders read the same free rows
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    # Picked first, then claimed: PostgreSQL may run a LIMIT in an UPDATE's subquery more
    # than once, claiming more than the limit.
    ids = list(conn.scalars(pick))
    if not ids:
        return None
    claim = uuid.uuid4().hex
    conn.execute(
        update(table).where(c.id.in_(ids)).values(claimed_by=claim, claimed_until=now + lease)
    )
    return claim


def insert_once(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> int:
    """Insert rows whose idempotency key is new; returns how many were new."""
    if not rows:
        return 0
    dialect = conn.dialect.name
    stmt = _insert_once_statement(dialect, table)
    if dialect != "postgresql" or table.name not in SECOND_UNIQUE:
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


@functools.cache
def _insert_once_statement(dialect: str, table: Table) -> Any:
    """The table's insert-unless-its-key-is-there, built once: a statement built for each
    write was a fifth of a one-row write's CPU (building it, then walking it for the
    compiled-statement cache's key; BENCHMARKS.md, fifth what-if session)."""
    key = CONFLICT_KEYS.get(table.name, "idempotency_key")
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
    return stmt.returning(table.c[key])


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


def insert_or_nothing(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An insert that does nothing when it would break any unique constraint of the table:
    on PostgreSQL it waits for a concurrent insert of the same key to commit, then yields."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()
