"""Who may call the API: machine identities (an EHR, a partner portal, a script), each with a
bearer token, the scopes it was given and the one site it serves. Only a hash of the token
is kept (a copy of the database calls nothing); a client expires and can be revoked.

Also the API's idempotency keys: a POST's key is recorded before it acts and its answer
once it has, so a retried request gets the first answer.

A repository of the store (its tables are the store's, private to it); the console's
process and the command line reach it, the workers never do."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Connection, Engine, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from clinical.identifiers import SiteId
from infra.store._schema import api_clients as clients
from infra.store._schema import api_idempotency as idempotency

SCOPES = {
    "patients:read": "a patient's status, FHIR export, the caseload",
    "patients:write": (
        "enrol, discharge, reviews, relapse, family consent, check-ins, survey answers"
    ),
    "attendance:write": "attendance sheets",
    "referrals:write": "open and cancel referrals",
    "referrals:answer": "a partner's answer to a referral",
    "tasks:read": "the case managers' open tasks",
    "tasks:write": "mark a task done",
    "consents:read": "a patient's consents to disclose (42 CFR Part 2), with their terms",
    "consents:write": "record a patient's written consent to disclose, or its revocation",
    "reports:read": "the outcomes report",
    "subscribers:read": "the site's subscriptions to events, and their dead letters",
    "subscribers:write": "subscribe a system to the site's events, disable it, replay a period",
}
NAME = re.compile(r"[a-z][a-z0-9._-]{1,31}")
TOKEN_PREFIX = "cpk_"  # recognisable in a leaked file or a secret scanner
DEFAULT_DAYS = 90
MAX_DAYS = 366
KEY = re.compile(r"[A-Za-z0-9._:-]{1,64}")


@dataclass(frozen=True)
class ApiClient:
    name: str
    scopes: frozenset[str]
    site_id: str
    expires_at: datetime
    revoked_at: datetime | None = None


class ApiClientRefused(ValueError):
    """A refused change to the clients, in one line."""


def _token_hash(token: str) -> str:
    # The token is 256 random bits: a fast hash is enough (nothing to brute-force).
    return hashlib.sha256(token.encode()).hexdigest()


def check_scopes(text: str) -> frozenset[str]:
    scopes = frozenset(s.strip() for s in text.split(",") if s.strip())
    unknown = sorted(scopes - SCOPES.keys())
    if unknown or not scopes:
        raise ApiClientRefused(
            f"scopes: {', '.join(unknown) or 'none given'}; known: {', '.join(SCOPES)}"
        )
    return scopes


def _client(row: object) -> ApiClient:
    r = row._mapping  # type: ignore[attr-defined]
    return ApiClient(
        name=r["name"],
        scopes=frozenset(r["scopes"].split()),
        site_id=r["site_id"],
        expires_at=r["expires_at"],
        revoked_at=r["revoked_at"],
    )


@dataclass(frozen=True)
class Claimed:
    """The key is this request's now: act."""


@dataclass(frozen=True)
class Answered:
    """The key's request was answered before: give that answer again."""

    status_code: int
    body: str


@dataclass(frozen=True)
class Mismatch:
    """The key was used for another request."""


Claim = Claimed | Answered | Mismatch


# Every API call runs these: built once, so their cache keys and SQL are made once.
_HOLDER = select(clients).where(clients.c.token_hash == bindparam("token_hash"))
_CLAIM = insert(idempotency)
_KEY_ROW = select(idempotency).where(
    idempotency.c.client == bindparam("owner"), idempotency.c.key == bindparam("the_key")
)
_ANSWER = (
    update(idempotency)
    .where(idempotency.c.client == bindparam("owner"), idempotency.c.key == bindparam("the_key"))
    .values(status_code=bindparam("the_status"), body=bindparam("the_body"))
)


class ApiClients:
    def __init__(self, engine: Engine) -> None:
        """`engine`: the care store's (same database)."""
        self.engine = engine

    def add(
        self, name: str, scopes: str, site_id: str, at: datetime, days: int = DEFAULT_DAYS
    ) -> tuple[ApiClient, str]:
        """A new client and its token (shown once: only its hash is kept)."""
        if not NAME.fullmatch(name):
            raise ApiClientRefused(
                f"name {name[:40]!r}: 2-32 of a-z, 0-9, '.', '_', '-', starting with a letter"
            )
        try:
            TypeAdapter(SiteId).validate_python(site_id)
        except ValidationError:
            raise ApiClientRefused(f"site {site_id[:40]!r} is not a site (like north)") from None
        if not 1 <= days <= MAX_DAYS:
            raise ApiClientRefused(f"a client's token lasts 1 to {MAX_DAYS} days")
        client = ApiClient(name, check_scopes(scopes), site_id, at + timedelta(days=days))
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(clients).values(
                        name=name,
                        token_hash=_token_hash(token),
                        scopes=" ".join(sorted(client.scopes)),
                        site_id=site_id,
                        created_at=at,
                        expires_at=client.expires_at,
                    )
                )
        except IntegrityError:
            raise ApiClientRefused(f"client {name} exists already") from None
        return client, token

    def all(self) -> list[ApiClient]:
        with self.engine.connect() as conn:
            return [_client(r) for r in conn.execute(select(clients).order_by(clients.c.name))]

    def revoke(self, name: str, at: datetime) -> None:
        with self.engine.begin() as conn:
            if not conn.execute(
                update(clients)
                .where(clients.c.name == name, clients.c.revoked_at.is_(None))
                .values(revoked_at=at)
            ).rowcount:
                raise ApiClientRefused(f"no client {name} (or it is revoked already)")

    def holder(self, token: str, at: datetime) -> ApiClient | None:
        """The client this token belongs to, if it is neither revoked nor expired."""
        with self.engine.connect() as conn:
            row = conn.execute(_HOLDER, {"token_hash": _token_hash(token)}).first()
        if row is None:
            return None
        found = _client(row)
        if found.revoked_at is not None or found.expires_at <= at:
            return None
        return found

    # Idempotency keys -------------------------------------------------------------------
    def claim(self, client: str, key: str, fingerprint: str, at: datetime) -> Claim:
        """Record `key` before acting. A key recorded but never answered (its process
        died, or it failed to reach the engine) is claimed again: acting again is safe,
        since the workflows dedupe by the same key."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    _CLAIM,
                    {"client": client, "key": key, "fingerprint": fingerprint, "created_at": at},
                )
            return Claimed()
        except IntegrityError:
            pass
        with self.engine.connect() as conn:
            row = conn.execute(_KEY_ROW, {"owner": client, "the_key": key}).one()
        if row.fingerprint != fingerprint:
            return Mismatch()
        if row.status_code is None:
            return Claimed()
        return Answered(row.status_code, row.body)

    def release(self, client: str, key: str) -> None:
        """Forget a claim that was never answered (its request reached nothing): the
        retry is a new request, whatever it carries."""
        with self.engine.begin() as conn:
            conn.execute(
                delete(idempotency).where(
                    idempotency.c.client == client,
                    idempotency.c.key == key,
                    idempotency.c.status_code.is_(None),
                )
            )

    def answer(self, client: str, key: str, status_code: int, body: str) -> None:
        with self.engine.begin() as conn:
            self.answering(client, key, status_code, body)(conn)

    def answering(
        self, client: str, key: str, status_code: int, body: str
    ) -> Callable[[Connection], object]:
        """The write of a key's answer, for the caller's transaction (the access log's
        entry for the call: one commit for both)."""
        values = {"owner": client, "the_key": key, "the_status": status_code, "the_body": body}
        return lambda conn: conn.execute(_ANSWER, values)
