"""Subscribers and the deliveries of events to them: who subscribes (a URL, a secret sealed at
rest, one site, a purpose, the kinds it takes), senders claiming due deliveries for a lease
(one sender a delivery, however many run side by side, as the outbox's senders do), and
each delivery settled: sent (a disclosure on the patient's accounting, in the same
transaction), retried later, a dead letter (failed), or withheld (no consent covers it).
A replay sends a period's events again, under the same event IDs."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from clinical.actors import ENGINE
from clinical.consents import PURPOSES
from clinical.identifiers import SiteId
from infra.store._core import StoreCore, claim_rows, insert_once, utcnow
from infra.store._schema import care_events, event_deliveries, subscribers
from infra.store.audit import AuditFact, write_audit
from infra.store.disclosures import DISCLOSED_TO_SUBSCRIBER
from infra.store.events import EVENT_KINDS, StoredEvent, delivery_key, stored_event

NAME = re.compile(r"[a-z][a-z0-9._-]{1,31}")
SECRET_PREFIX = "whsec_"  # as the webhook senders' secrets: both directions sign alike
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class SubscriberRefused(ValueError):
    """A refused change to the subscribers, in one line."""


@dataclass(frozen=True)
class Subscriber:
    name: str
    url: str
    site_id: str
    purpose: str
    kinds: tuple[str, ...]
    created_by: str
    created_at: datetime
    disabled_at: datetime | None = None
    secret: str = field(default="", repr=False)

    def as_json(self) -> dict[str, Any]:
        """What an operator or the API may see of it: never the secret."""
        return {
            "name": self.name,
            "url": self.url,
            "site_id": self.site_id,
            "purpose": self.purpose,
            "kinds": list(self.kinds),
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "disabled_at": self.disabled_at.isoformat() if self.disabled_at else None,
        }


@dataclass(frozen=True)
class DueDelivery:
    """A delivery a sender has claimed: only it may settle it while its lease runs."""

    key: str
    claim: str
    subscriber: Subscriber
    event: StoredEvent
    attempts: int
    generation: int


@dataclass(frozen=True)
class FailedDelivery:
    key: str
    subscriber: str
    event_id: str
    patient_id: str
    kind: str
    status: str
    attempts: int
    last_error: str | None
    at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "subscriber": self.subscriber,
            "event_id": self.event_id,
            "patient_id": self.patient_id,
            "kind": self.kind,
            "status": self.status,
            "attempts": self.attempts,
            "error": self.last_error,
            "at": self.at.isoformat(),
        }


def check_url(url: str) -> str:
    """HTTPS, or plain HTTP to this machine (a local receiver): an event is PHI in transit."""
    parts = urlsplit(url)
    local = parts.scheme == "http" and parts.hostname in LOOPBACK
    if len(url) > 400 or not parts.hostname or not (parts.scheme == "https" or local):
        raise SubscriberRefused(
            f"url {url[:60]!r}: https://..., or http:// to 127.0.0.1 or localhost only"
        )
    return url


def check_kinds(text: str | None) -> tuple[str, ...]:
    if text is None:
        return EVENT_KINDS
    kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in EVENT_KINDS]
    if unknown or not kinds:
        raise SubscriberRefused(
            f"kinds: {', '.join(unknown) or 'none given'}; known: {', '.join(EVENT_KINDS)}"
        )
    return kinds


def _subscriber(row: Mapping[str, Any]) -> Subscriber:
    return Subscriber(
        name=row["name"],
        url=row["url"],
        site_id=row["site_id"],
        purpose=row["purpose"],
        kinds=tuple(row["kinds"].split()),
        created_by=row["created_by"],
        created_at=row["created_at"],
        disabled_at=row["disabled_at"],
        secret=str(row["secret"]),
    )


class SubscriberRecords(StoreCore):
    # --- subscriptions ------------------------------------------------------------------

    def add_subscriber(
        self,
        name: str,
        url: str,
        site_id: str,
        *,
        purpose: str,
        kinds: str | None,
        by: str,
        at: datetime,
    ) -> Subscriber:
        """A new subscriber with a new secret (returned: its only showing)."""
        if not NAME.fullmatch(name):
            raise SubscriberRefused(
                f"name {name[:40]!r}: 2-32 of a-z, 0-9, '.', '_', '-', starting with a letter"
            )
        try:
            TypeAdapter(SiteId).validate_python(site_id)
        except ValidationError:
            raise SubscriberRefused(f"site {site_id[:40]!r} is not a site (like north)") from None
        if purpose not in PURPOSES:
            raise SubscriberRefused(f"purpose {purpose[:40]!r}: one of {', '.join(PURPOSES)}")
        found = Subscriber(
            name,
            check_url(url),
            site_id,
            purpose,
            check_kinds(kinds),
            by[:48],
            at,
            secret=SECRET_PREFIX + secrets.token_urlsafe(32),
        )
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    subscribers.insert().values(
                        name=name,
                        url=found.url,
                        secret=found.secret,
                        site_id=site_id,
                        purpose=purpose,
                        kinds=" ".join(found.kinds),
                        created_by=found.created_by,
                        created_at=at,
                    )
                )
        except IntegrityError:
            raise SubscriberRefused(f"subscriber {name} exists already") from None
        return found

    def subscribers(self, site_id: str | None = None) -> list[Subscriber]:
        stmt = select(subscribers).order_by(subscribers.c.name)
        if site_id is not None:
            stmt = stmt.where(subscribers.c.site_id == site_id)
        return [_subscriber(r) for r in self._read(stmt)]

    def subscriber(self, name: str) -> Subscriber | None:
        found = self._read(select(subscribers).where(subscribers.c.name == name))
        return _subscriber(found[0]) if found else None

    def disable_subscriber(self, name: str, at: datetime) -> None:
        """No more deliveries to it (those waiting stay, unsent)."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(subscribers)
                .where(subscribers.c.name == name, subscribers.c.disabled_at.is_(None))
                .values(disabled_at=at)
            ).rowcount
        if not done:
            raise SubscriberRefused(f"no subscriber {name} (or it is disabled already)")

    # --- deliveries -----------------------------------------------------------------------

    def claim_deliveries(
        self, now: datetime, *, lease: timedelta, limit: int = 50
    ) -> list[DueDelivery]:
        """Up to `limit` deliveries due at `now` to enabled subscribers (waiting, past their
        next try, claimed by no one whose lease runs), claimed for `lease`: oldest first."""
        d, s = event_deliveries.c, subscribers.c
        enabled = select(s.name).where(s.disabled_at.is_(None))
        ready = and_(
            d.status.is_(None),
            d.subscriber.in_(enabled),
            or_(d.next_attempt_at.is_(None), d.next_attempt_at <= now),
            or_(d.claimed_until.is_(None), d.claimed_until <= now),
        )
        with self._transaction() as conn:
            claim = claim_rows(conn, event_deliveries, ready, now, lease, limit)
            if claim is None:
                return []
            e = care_events.c
            rows = conn.execute(
                select(
                    d.idempotency_key,
                    d.attempts,
                    d.generation,
                    e.event_id,
                    e.kind,
                    e.patient_id,
                    e.site_id,
                    e.at,
                    e.facts_json,
                    s.name,
                    s.url,
                    s.secret,
                    s.purpose,
                    s.kinds,
                    s.created_by,
                    s.created_at,
                    s.disabled_at,
                    s.site_id.label("subscriber_site"),
                )
                .join(care_events, e.event_id == d.event_id)
                .join(subscribers, s.name == d.subscriber)
                .where(d.claimed_by == claim)
                .order_by(d.id)
            ).mappings()
            return [
                DueDelivery(
                    key=r["idempotency_key"],
                    claim=claim,
                    subscriber=_subscriber({**r, "site_id": r["subscriber_site"]}),
                    event=stored_event(dict(r)),
                    attempts=r["attempts"],
                    generation=r["generation"],
                )
                for r in rows
            ]

    def delivery_sent(self, due: DueDelivery, at: datetime, description: str) -> bool:
        """Sent (the subscriber answered 2xx), and on the patient's accounting of
        disclosures in the same transaction; False if the claim had lapsed."""
        event, sub = due.event, due.subscriber
        disclosure = AuditFact(
            key=f"{due.key}/{due.generation}/disclosed",
            patient_id=event.patient_id,
            actor=ENGINE,
            action=DISCLOSED_TO_SUBSCRIBER,
            purpose=sub.purpose,
            at=at,
            detail={
                "subscriber": sub.name,
                "event_id": event.event_id,
                "kind": event.kind,
                "description": description,
            },
        )
        with self._transaction() as conn:
            settled = self._settle_delivery(
                conn, due, status="sent", sent_at=at, attempts=due.attempts + 1
            )
            # Sent is sent: on the accounting even when the claim lapsed or a replay
            # asked for the delivery again meanwhile (which then goes out once more).
            write_audit(conn, [disclosure])
        return settled

    def delivery_retry_later(self, due: DueDelivery, error: str, at: datetime) -> bool:
        with self._transaction() as conn:
            return self._settle_delivery(
                conn, due, attempts=due.attempts + 1, next_attempt_at=at, last_error=error[:200]
            )

    def delivery_given_up(self, due: DueDelivery, status: str, error: str) -> bool:
        """A dead letter (failed: retries spent, or refused), or withheld (no consent)."""
        assert status in ("failed", "withheld"), status
        attempts = due.attempts + (status == "failed")
        with self._transaction() as conn:
            return self._settle_delivery(
                conn, due, status=status, attempts=attempts, last_error=error[:200]
            )

    @staticmethod
    def _settle_delivery(conn: Any, due: DueDelivery, **values: Any) -> bool:
        """Settle a claimed delivery, unless its claim lapsed or a replay (a new generation)
        asked for it again while it was out: then only the claim is let go, so the replay
        is sent, not lost to the sending it overtook."""
        d = event_deliveries.c
        ours = and_(d.idempotency_key == due.key, d.claimed_by == due.claim)
        result = conn.execute(
            update(event_deliveries)
            .where(ours, d.generation == due.generation)
            .values(claimed_by=None, claimed_until=None, **values)
        )
        if int(result.rowcount or 0) == 1:
            return True
        conn.execute(
            update(event_deliveries).where(ours).values(claimed_by=None, claimed_until=None)
        )
        return False

    def undelivered(self, statuses: Sequence[str] = ("failed",)) -> list[FailedDelivery]:
        """Deliveries given up on (dead letters; `withheld` too if asked), oldest first."""
        d = event_deliveries.c
        stmt = (
            select(event_deliveries, care_events.c.patient_id, care_events.c.kind)
            .join(care_events, care_events.c.event_id == d.event_id)
            .where(d.status.in_(list(statuses)))
            .order_by(d.id)
        )
        return [
            FailedDelivery(
                key=r["idempotency_key"],
                subscriber=r["subscriber"],
                event_id=r["event_id"],
                patient_id=r["patient_id"],
                kind=r["kind"],
                status=r["status"],
                attempts=r["attempts"],
                last_error=r["last_error"],
                at=r["created_at"],
            )
            for r in self._read(stmt)
        ]

    def deliveries(self, subscriber: str) -> list[tuple[str, str | None, int]]:
        """A subscriber's deliveries: (event ID, status, attempts), oldest first."""
        d = event_deliveries.c
        stmt = select(d.event_id, d.status, d.attempts).where(d.subscriber == subscriber)
        rows = self._read(stmt.order_by(d.id))
        return [(r["event_id"], r["status"], r["attempts"]) for r in rows]

    def requeue_delivery(self, key: str) -> bool:
        """A dead letter (or a withheld delivery) back to the senders, tries afresh."""
        d = event_deliveries.c
        with self._transaction() as conn:
            result = conn.execute(
                update(event_deliveries)
                .where(d.idempotency_key == key, d.status.in_(["failed", "withheld"]))
                .values(
                    status=None,
                    attempts=0,
                    next_attempt_at=None,
                    last_error=None,
                    generation=d.generation + 1,
                )
            )
        return int(result.rowcount or 0) == 1

    def replay(self, since: datetime, until: datetime, subscriber: str | None = None) -> int:
        """The events that happened in [since, until) sent again to each enabled subscriber
        (or the one named) that takes them: the same event IDs, so a receiver that kept them
        drops the repeats. Returns how many deliveries are queued."""
        s, e, d = subscribers.c, care_events.c, event_deliveries.c
        chosen = select(subscribers).where(s.disabled_at.is_(None))
        if subscriber is not None:
            chosen = chosen.where(s.name == subscriber)
        now = utcnow()
        queued = 0
        with self._transaction() as conn:
            for sub in conn.execute(chosen).mappings().all():
                events = (
                    conn.execute(
                        select(e.event_id).where(
                            e.site_id == sub["site_id"],
                            e.kind.in_(sub["kinds"].split()),
                            e.at >= since,
                            e.at < until,
                        )
                    )
                    .scalars()
                    .all()
                )
                keys = [delivery_key(sub["name"], ev) for ev in events]
                for chunk in range(0, len(keys), 500):
                    part = keys[chunk : chunk + 500]
                    conn.execute(
                        update(event_deliveries)
                        .where(d.idempotency_key.in_(part))
                        .values(
                            status=None,
                            attempts=0,
                            next_attempt_at=None,
                            last_error=None,
                            generation=d.generation + 1,
                        )
                    )
                insert_once(
                    conn,
                    event_deliveries,
                    [
                        {
                            "idempotency_key": key,
                            "subscriber": sub["name"],
                            "event_id": ev,
                            "attempts": 0,
                            "generation": 0,
                            "created_at": now,
                        }
                        for key, ev in zip(keys, events, strict=True)
                    ],
                )
                queued += len(keys)
        return queued
