"""Who may sign in to the console: local accounts (argon2 hashes, lock-out after repeated
failures) and their server-side sessions (only a hash of the session's token is kept, so a
copy of the database signs nobody in). Staff, not patients: nothing here is PHI.

A repository of the store (its tables are the store's, private to it); the console, the
command line and the codec server reach it, the workers never do."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from sqlalchemy import (
    Engine,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from clinical.identifiers import CaseManagerId, SiteId
from infra.store._schema import console_sessions, console_users

USERNAME = re.compile(r"[a-z][a-z0-9._-]{1,31}")
PASSWORD_MIN = 12
PASSWORD_MAX = 256  # argon2 takes anything; a megabyte "password" is an attack on the CPU
NO_PASSWORD = "!"  # no hash of anything: a password never verifies against it
TOUCH_EVERY = timedelta(seconds=30)
LOCK_AFTER = 5
LOCKED_FOR = timedelta(minutes=15)
SIGN_IN_REFUSED = "wrong username or password"  # the same words for both: no account probing


class Role(StrEnum):
    case_manager = "case_manager"
    supervisor = "supervisor"
    operator = "operator"
    auditor = "auditor"
    facilitator = "facilitator"
    """Leads group sessions: sees the sign-in sheets of the tracks that name their staff ID
    (program TOML `facilitator_ids`) at their site, and no patient's chart or caseload."""


class User(BaseModel):
    model_config = ConfigDict(frozen=True)

    username: str
    role: Role
    site_id: str | None = None
    case_manager_id: str | None = None


class IdentityRefused(ValueError):
    """A refused account change or sign-in, in one line."""


def check_new_user(
    username: str, role: str, site_id: str | None, case_manager_id: str | None
) -> User:
    if not USERNAME.fullmatch(username):
        raise IdentityRefused(
            f"username {username[:40]!r}: 2-32 of a-z, 0-9, '.', '_', '-', starting with a letter"
        )
    try:
        as_role = Role(role)
    except ValueError:
        raise IdentityRefused(
            f"role {role[:40]!r}: one of {', '.join(r.value for r in Role)}"
        ) from None
    if as_role is Role.case_manager and not _valid(CaseManagerId, case_manager_id):
        raise IdentityRefused("a case manager needs their case-manager ID (like CM-01)")
    if as_role is Role.facilitator and not _valid(CaseManagerId, case_manager_id):
        raise IdentityRefused(
            "a facilitator needs their staff ID (like CM-F01), as the program's group tracks "
            "name it in facilitator_ids"
        )
    staffed = (Role.case_manager, Role.supervisor, Role.facilitator)
    if as_role in staffed and not _valid(SiteId, site_id):
        raise IdentityRefused(f"a {as_role.value.replace('_', ' ')} needs a site (like north)")
    if as_role is Role.supervisor and case_manager_id is not None:
        if not _valid(CaseManagerId, case_manager_id):
            raise IdentityRefused("a supervisor's staff ID is like CM-SUP1")
    elif as_role not in staffed and case_manager_id:
        raise IdentityRefused(
            "only case managers, supervisors and facilitators act under a staff ID"
        )
    return User(username=username, role=as_role, site_id=site_id, case_manager_id=case_manager_id)


def _valid(kind: Any, value: str | None) -> bool:
    try:
        TypeAdapter(kind).validate_python(value)
    except ValidationError:
        return False
    return value is not None


def check_password(password: str) -> None:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise IdentityRefused(f"a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class IdentityStore:
    def __init__(self, engine: Engine, hasher: PasswordHasher | None = None) -> None:
        """`engine`: the care store's (same database, its pragmas and pool)."""
        self.engine = engine
        self.hasher = hasher or PasswordHasher()
        # Verified against when the username is unknown, so that both answers take as long.
        self._decoy = self.hasher.hash(secrets.token_urlsafe(16))

    # Accounts -------------------------------------------------------------------------
    def add_user(
        self,
        username: str,
        role: str,
        password: str | None,
        at: datetime,
        site_id: str | None = None,
        case_manager_id: str | None = None,
    ) -> User:
        """`password` None: the account signs in through the identity provider only."""
        user = check_new_user(username, role, site_id, case_manager_id)
        if password is not None:
            check_password(password)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(console_users).values(
                        username=user.username,
                        role=user.role.value,
                        site_id=user.site_id,
                        case_manager_id=user.case_manager_id,
                        password_hash=NO_PASSWORD
                        if password is None
                        else self.hasher.hash(password),
                        disabled=False,
                        failed_attempts=0,
                        created_at=at,
                    )
                )
        except IntegrityError:
            raise IdentityRefused(f"user {username} exists already") from None
        return user

    def user(self, username: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(console_users).where(console_users.c.username == username)
            ).first()
        if row is None or row.disabled:
            return None
        return User(
            username=row.username,
            role=Role(row.role),
            site_id=row.site_id,
            case_manager_id=row.case_manager_id,
        )

    def users(self) -> list[tuple[User, bool]]:
        """Every account with whether it is disabled (for `users list`)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(console_users).order_by(console_users.c.username)).all()
        return [
            (
                User(
                    username=r.username,
                    role=Role(r.role),
                    site_id=r.site_id,
                    case_manager_id=r.case_manager_id,
                ),
                bool(r.disabled),
            )
            for r in rows
        ]

    def disable(self, username: str, at: datetime) -> None:
        """The account signs in no more, and its open sessions end now."""
        with self.engine.begin() as conn:
            if not conn.execute(
                update(console_users)
                .where(console_users.c.username == username)
                .values(disabled=True)
            ).rowcount:
                raise IdentityRefused(f"no user {username}")
            conn.execute(
                update(console_sessions)
                .where(
                    console_sessions.c.username == username, console_sessions.c.ended_at.is_(None)
                )
                .values(ended_at=at, ended_why="disabled")
            )

    def reset_password(self, username: str, password: str) -> None:
        """A new password, which also lifts a lock-out."""
        check_password(password)
        with self.engine.begin() as conn:
            if not conn.execute(
                update(console_users)
                .where(console_users.c.username == username)
                .values(
                    password_hash=self.hasher.hash(password),
                    failed_attempts=0,
                    locked_until=None,
                )
            ).rowcount:
                raise IdentityRefused(f"no user {username}")

    # Signing in -----------------------------------------------------------------------
    def sign_in(self, username: str, password: str, at: datetime) -> User:
        """The user, or IdentityRefused: the same words for an unknown user and a wrong
        password; a lock-out says until when."""
        refusal: str | None = None
        # The refusal is raised after the transaction: raising inside it would roll back
        # the failed attempt it counts.
        with self.engine.begin() as conn:
            row = conn.execute(
                select(console_users).where(console_users.c.username == username)
            ).first()
            if row is None or row.disabled or len(password) > PASSWORD_MAX:
                self._verify(self._decoy, password[:PASSWORD_MAX])
                refusal = SIGN_IN_REFUSED
            elif row.locked_until is not None and row.locked_until > at:
                refusal = f"too many failed sign-ins: locked until {row.locked_until:%H:%M} UTC"
            elif not self._verify(row.password_hash, password):
                failed = row.failed_attempts + 1
                conn.execute(
                    update(console_users)
                    .where(console_users.c.username == username)
                    .values(
                        failed_attempts=0 if failed >= LOCK_AFTER else failed,
                        locked_until=at + LOCKED_FOR if failed >= LOCK_AFTER else None,
                    )
                )
                refusal = SIGN_IN_REFUSED
            else:
                conn.execute(
                    update(console_users)
                    .where(console_users.c.username == username)
                    .values(failed_attempts=0, locked_until=None)
                )
        if refusal is not None:
            raise IdentityRefused(refusal)
        user = self.user(username)
        assert user is not None
        return user

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    # Sessions -------------------------------------------------------------------------
    def open_session(self, username: str, address: str, at: datetime) -> str:
        """A new session's token: only its hash is stored."""
        token = secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(
                insert(console_sessions).values(
                    token_hash=_token_hash(token),
                    username=username,
                    address=address[:64],
                    opened_at=at,
                    last_seen_at=at,
                )
            )
        return token

    def session_user(
        self, token: str, at: datetime, idle: timedelta, touch: bool = True
    ) -> User | None:
        """The session's user if it is open and was used within `idle`; an idle session
        ends here (and stays ended). `touch`: this use counts as activity."""
        key = _token_hash(token)
        with self.engine.begin() as conn:
            row = conn.execute(
                select(console_sessions).where(console_sessions.c.token_hash == key)
            ).first()
            if row is None or row.ended_at is not None:
                return None
            if at - row.last_seen_at > idle:
                conn.execute(
                    update(console_sessions)
                    .where(console_sessions.c.token_hash == key)
                    .values(ended_at=at, ended_why="idle")
                )
                return None
            # Written at most every TOUCH_EVERY: a page's every request need not write (the
            # idle limit is minutes; a write per request cost the console's sheet half its time).
            if touch and at - row.last_seen_at >= TOUCH_EVERY:
                conn.execute(
                    update(console_sessions)
                    .where(console_sessions.c.token_hash == key)
                    .values(last_seen_at=at)
                )
        return self.user(row.username)

    def end_session(self, token: str, at: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(console_sessions)
                .where(
                    console_sessions.c.token_hash == _token_hash(token),
                    console_sessions.c.ended_at.is_(None),
                )
                .values(ended_at=at, ended_why="signed out")
            )
