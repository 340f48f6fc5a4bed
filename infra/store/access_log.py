"""Who saw or did what to which patient, when and from where: append-only, each entry
chained to the one before by a SHA-256 hash, so an edited, deleted or truncated entry is
found by `verify` (HIPAA §164.312(b); ONC §170.315(d)(2), (d)(3)).

An entry names patients by ID only and says what was done in words from a fixed vocabulary
(the route or command), never what was written: no PHI here."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import Connection, Engine, bindparam, insert, select, update

from infra.store._schema import GENESIS_HASH, access_log, access_log_head

OUTCOMES = ("allowed", "denied", "refused", "failed")


class AccessEntry(BaseModel):
    seq: int
    at: datetime
    actor: str
    role: str
    action: str
    patient_id: str | None
    outcome: str
    address: str
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class ChainCheck:
    entries: int
    broken_at: int | None  # the first entry whose hash or link does not hold
    why: str | None

    @property
    def intact(self) -> bool:
        return self.broken_at is None


def entry_hash(prev_hash: str, fields: dict[str, object]) -> str:
    body = json.dumps(fields, sort_keys=True, default=_isoformat, separators=(",", ":"))
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def _isoformat(value: object) -> str:
    assert isinstance(value, datetime), value
    return value.isoformat()


def _hashed_fields(
    seq: int,
    at: datetime,
    actor: str,
    role: str,
    action: str,
    patient_id: str | None,
    outcome: str,
    address: str,
) -> dict[str, object]:
    return {
        "seq": seq,
        "at": at,
        "actor": actor,
        "role": role,
        "action": action,
        "patient_id": patient_id,
        "outcome": outcome,
        "address": address,
    }


# Built once: every call (an API request appends one) then reuses their cached cache keys
# and compiled SQL. The head is moved on first, by as many entries as are added, which
# takes its row lock (serialising appenders), and gives back the last new number with the
# hash of the entry before the first.
_BUMP_HEAD = (
    update(access_log_head)
    .where(access_log_head.c.id == 1)
    .values(seq=access_log_head.c.seq + bindparam("added"))
    .returning(access_log_head.c.seq, access_log_head.c.hash)
)
_ADD_ENTRY = insert(access_log)
_SET_HEAD_HASH = (
    update(access_log_head).where(access_log_head.c.id == 1).values(hash=bindparam("head_hash"))
)


@dataclass(frozen=True)
class Touch:
    """One patient (or none) a call touched, and how it went for them."""

    patient_id: str | None = None
    outcome: str = "allowed"


class AccessLog:
    def __init__(self, engine: Engine) -> None:
        """`engine`: the care store's (the same database)."""
        self.engine = engine

    def append(
        self,
        at: datetime,
        actor: str,
        role: str,
        action: str,
        patient_id: str | None = None,
        outcome: str = "allowed",
        address: str = "-",
        along: Callable[[Connection], object] | None = None,
    ) -> AccessEntry:
        """The entry, chained to the last. `along`: another write committed with it, in
        one transaction (an API call's idempotency answer: one commit, not two)."""
        (entry,) = self.append_many(
            at, actor, role, action, [Touch(patient_id, outcome)], address, along
        )
        return entry

    def append_many(
        self,
        at: datetime,
        actor: str,
        role: str,
        action: str,
        touched: Sequence[Touch],
        address: str = "-",
        along: Callable[[Connection], object] | None = None,
    ) -> list[AccessEntry]:
        """An entry for each patient one call touched (a webhook's bundle of events),
        chained in order, in one transaction with `along`."""
        assert touched and all(t.outcome in OUTCOMES for t in touched), touched
        # Microseconds dropped: every database gives the same time back, and so the same hash.
        at = at.replace(microsecond=0)
        entries: list[AccessEntry] = []
        with self.engine.begin() as conn:
            if along is not None:
                along(conn)
            last, prev = conn.execute(_BUMP_HEAD, {"added": len(touched)}).one()
            for seq, touch in enumerate(touched, start=last - len(touched) + 1):
                fields = _hashed_fields(
                    seq,
                    at,
                    actor[:48],
                    role,
                    action[:64],
                    touch.patient_id,
                    touch.outcome,
                    address[:64],
                )
                entry = AccessEntry(**fields, prev_hash=prev, hash=entry_hash(prev, fields))
                entries.append(entry)
                prev = entry.hash
            rows = [e.model_dump() for e in entries]
            conn.execute(_ADD_ENTRY, rows[0] if len(rows) == 1 else rows)
            conn.execute(_SET_HEAD_HASH, {"head_hash": prev})
        return entries

    def search(
        self,
        actor: str | None = None,
        patient_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 500,
    ) -> list[AccessEntry]:
        """Newest first."""
        stmt = select(access_log).order_by(access_log.c.seq.desc()).limit(limit)
        if actor:
            stmt = stmt.where(access_log.c.actor == actor)
        if patient_id:
            stmt = stmt.where(access_log.c.patient_id == patient_id)
        if since:
            stmt = stmt.where(access_log.c.at >= since)
        if until:
            stmt = stmt.where(access_log.c.at < until)
        with self.engine.connect() as conn:
            return [AccessEntry(**r._mapping) for r in conn.execute(stmt)]

    def verify(self) -> ChainCheck:
        """Walk the chain from the first entry: each hash recomputed, each link checked,
        numbers without gaps, and the head pointing at the last one."""
        prev, expected, count = GENESIS_HASH, 1, 0
        with self.engine.connect() as conn:
            for r in conn.execute(select(access_log).order_by(access_log.c.seq)):
                count += 1
                if r.seq != expected:
                    return ChainCheck(count, expected, f"entry {expected} is missing")
                if r.prev_hash != prev:
                    return ChainCheck(count, r.seq, "its link to the entry before does not hold")
                fields = _hashed_fields(
                    r.seq, r.at, r.actor, r.role, r.action, r.patient_id, r.outcome, r.address
                )
                if entry_hash(prev, fields) != r.hash:
                    return ChainCheck(count, r.seq, "its content was changed")
                prev, expected = r.hash, expected + 1
            last = conn.execute(
                select(access_log_head.c.seq, access_log_head.c.hash).where(
                    access_log_head.c.id == 1
                )
            ).first()
        if last is not None and (last.seq != expected - 1 or last.hash != prev):
            return ChainCheck(count, expected, f"entries after {expected - 1} were removed")
        return ChainCheck(count, None, None)
