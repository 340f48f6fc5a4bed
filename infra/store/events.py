"""Events for subscribers: what happened to a patient (a phase change, a task opened or
closed, a referral's outcome, a check-in's result), written by `publish` in the transaction
of the change it describes, so an event exists exactly when its change does.

An event's ID is derived from the change's own idempotency key (`event_id`): an activity
retried writes the same change and the same event, which the store takes once. A new event
is handed at once to each subscriber of the patient's site that takes its kind (a delivery
row each; services.subscribers sends them)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from infra.store._core import insert_once, to_json, utcnow
from infra.store._schema import care_events, event_deliveries, patients, subscribers

PHASE_CHANGED = "phase_changed"
TASK_OPENED = "task_opened"
TASK_CLOSED = "task_closed"
REFERRAL_CLOSED = "referral_closed"
CHECK_IN_CONCLUDED = "check_in_concluded"
EVENT_KINDS = (PHASE_CHANGED, TASK_OPENED, TASK_CLOSED, REFERRAL_CLOSED, CHECK_IN_CONCLUDED)

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://carepath.example.org/events")


def event_id(kind: str, key: str) -> str:
    """The event of the change recorded under `key`: the same on every retry."""
    return str(uuid.uuid5(_NAMESPACE, f"{kind}/{key}"))


@dataclass(frozen=True)
class CareEvent:
    kind: str
    key: str
    """The idempotency key of the change it describes."""
    patient_id: str
    at: datetime
    facts: Mapping[str, Any] = field(default_factory=dict)
    """What a subscriber may be told (opaque IDs, codes, scores): never names or free text."""

    @property
    def event_id(self) -> str:
        return event_id(self.kind, self.key)


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    kind: str
    patient_id: str
    site_id: str
    at: datetime
    facts: Mapping[str, Any]


def stored_event(row: Mapping[str, Any]) -> StoredEvent:
    return StoredEvent(
        event_id=row["event_id"],
        kind=row["kind"],
        patient_id=row["patient_id"],
        site_id=row["site_id"],
        at=row["at"],
        facts=json.loads(row["facts_json"]),
    )


def delivery_key(subscriber: str, event: str) -> str:
    return f"{subscriber}/{event}"


def publish(conn: Connection, events: Sequence[CareEvent]) -> int:
    """The events new to the store, each handed to the subscribers of its patient's site
    that take its kind; returns how many were new."""
    if not events:
        return 0
    ids = [e.event_id for e in events]
    known = set(conn.scalars(select(care_events.c.event_id).where(care_events.c.event_id.in_(ids))))
    fresh = [e for e in events if e.event_id not in known]
    if not fresh:
        return 0
    pids = {e.patient_id for e in fresh}
    site_of = dict(
        conn.execute(
            select(patients.c.patient_id, patients.c.site_id).where(patients.c.patient_id.in_(pids))
        ).all()
    )
    now = utcnow()
    rows = [
        {
            "event_id": e.event_id,
            "patient_id": e.patient_id,
            "site_id": site_of[e.patient_id],
            "kind": e.kind,
            "at": e.at,
            "facts_json": to_json({**e.facts, "key": e.key}),
            "recorded_at": now,
        }
        for e in fresh
        if e.patient_id in site_of
    ]
    insert_once(conn, care_events, rows)
    s = subscribers.c
    listening = conn.execute(
        select(s.name, s.site_id, s.kinds).where(
            s.site_id.in_({r["site_id"] for r in rows}), s.disabled_at.is_(None)
        )
    ).all()
    deliveries = [
        {
            "idempotency_key": delivery_key(name, r["event_id"]),
            "subscriber": name,
            "event_id": r["event_id"],
            "attempts": 0,
            "generation": 0,
            "created_at": now,
        }
        for r in rows
        for name, site_id, kinds in listening
        if site_id == r["site_id"] and r["kind"] in kinds.split()
    ]
    insert_once(conn, event_deliveries, deliveries)
    return len(rows)
