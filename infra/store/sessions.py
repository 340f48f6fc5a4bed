"""Sessions: a week booked in one write (the family contact invited to family sessions, and
that disclosure audited), attendance recorded, and what a journey gathered since its last
write (audit facts, tasks closed, reminders queued and withdrawn) in the same transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from clinical.actors import ENGINE
from clinical.attendance import SessionStatus
from clinical.careplan import FAMILY_SESSION_TYPES, SessionSpec
from clinical.consents import FAMILY
from clinical.phases import Phase
from clinical.reminders import Reminder, session_reminder_key
from infra.store._core import StoreCore, insert_once, utcnow
from infra.store._schema import appointments
from infra.store.audit import AuditFact, write_audit
from infra.store.consents import why_not_consented
from infra.store.disclosures import DISCLOSED_TO_FAMILY
from infra.store.outbox import OutboxMessage, post, queue_reminders, withdraw_reminders
from infra.store.tasks import TaskClosing, close_tasks


@dataclass(frozen=True)
class AttendanceMark:
    """What became of a booked session."""

    session_id: str
    status: SessionStatus
    recorded_by: str | None = None
    missed_by_grace: bool = False


@dataclass(frozen=True)
class CareEventFacts:
    """What a journey gathered since its last write."""

    patient_id: str
    session_changes: Sequence[AttendanceMark] = ()
    audit: Sequence[AuditFact] = ()
    tasks_closed: Sequence[TaskClosing] = ()
    reminders: Sequence[Reminder] = ()
    reminders_withdrawn: Sequence[str] = ()


@dataclass(frozen=True)
class SessionAppointment:
    key: str
    patient_id: str
    session_id: str
    phase: Phase
    week: int
    level: str
    starts_at: datetime
    hours: float
    session_type: str
    modality: str
    status: SessionStatus
    recorded_by: str | None
    missed_by_grace: bool
    booked_at: datetime
    updated_at: datetime
    track_id: str | None = None


def session_appointment(row: Mapping[str, Any]) -> SessionAppointment:
    return SessionAppointment(
        key=row["idempotency_key"],
        patient_id=row["patient_id"],
        session_id=row["session_id"],
        phase=Phase(row["phase"]),
        week=row["week"],
        level=row["level"],
        starts_at=row["starts_at"],
        hours=row["hours"],
        session_type=row["session_type"],
        modality=row["modality"],
        status=SessionStatus(row["status"]),
        recorded_by=row["recorded_by"],
        missed_by_grace=row["missed_by_grace"],
        booked_at=row["booked_at"],
        updated_at=row["updated_at"],
        track_id=row.get("track_id"),
    )


# Every EHR event reads it: built once.
_APPOINTMENT = select(appointments).where(
    appointments.c.patient_id == bindparam("patient"),
    appointments.c.session_id == bindparam("session"),
)


class SessionRecords(StoreCore):
    def book_week(
        self,
        patient_id: str,
        sessions: Sequence[SessionSpec],
        *,
        closed: Sequence[SessionSpec] = (),
        reminders: Sequence[Reminder] = (),
        events: CareEventFacts | None = None,
    ) -> int:
        """A week's sessions, once each (`closed`: on days the site is closed, on the record
        as cancelled), their reminders, and the journey's other facts; returns how many
        sessions were new."""
        now = utcnow()
        rows = [
            {
                "idempotency_key": f"{patient_id}/{s.session_id}",
                "patient_id": patient_id,
                "session_id": s.session_id,
                "phase": s.phase.value,
                "week": s.week,
                "level": s.level,
                "starts_at": s.starts_at,
                "hours": s.hours,
                "session_type": s.session_type,
                "modality": s.modality,
                "track_id": s.track_id,
                "status": status.value,
                "missed_by_grace": False,
                "booked_at": now,
                "updated_at": now,
            }
            for status, specs in (
                (SessionStatus.scheduled, sessions),
                (SessionStatus.cancelled, closed),
            )
            for s in specs
        ]
        # The family contact is invited to each family session; the invitation names no
        # one, only the session and time. Telling the family is a disclosure too.
        family = [s for s in sessions if s.session_type in FAMILY_SESSION_TYPES]
        invitations = [
            OutboxMessage(
                key=f"invite/{patient_id}/{s.session_id}",
                channel="family",
                recipient=f"family:{patient_id}",
                patient_id=patient_id,
                kind=f"invite_{s.session_type}",
                body=f"Invitation: {s.session_type.replace('_', ' ')} on "
                f"{s.starts_at:%a %d %b %H:%M} ({s.modality.replace('_', ' ')})",
                created_at=now,
            )
            for s in family
        ]
        disclosures = [
            AuditFact(
                key=f"invite/{patient_id}/{s.session_id}/disclosed",
                patient_id=patient_id,
                actor=ENGINE,
                action=DISCLOSED_TO_FAMILY,
                purpose="family_involvement",
                at=now,
                detail={"session": s.session_id},
            )
            for s in family
        ]
        with self._transaction() as conn:
            booked = insert_once(conn, appointments, rows)
            # Only under the family consent in force today: one whose written form has
            # expired invites no one (the sessions stay booked).
            if family and why_not_consented(conn, patient_id, FAMILY, "treatment", now) is None:
                post(conn, invitations)
                write_audit(conn, disclosures)
            queue_reminders(conn, reminders, now)
            if events is not None:
                _record_events(conn, events)
        return booked

    def record_care_events(self, events: CareEventFacts) -> int:
        """The journey's facts in one write; returns how many sessions changed status."""
        with self._transaction() as conn:
            return _record_events(conn, events)

    def appointment(self, patient_id: str, session_id: str) -> SessionAppointment | None:
        """One of a patient's booked sessions, if the journey booked it."""
        found = self._read(_APPOINTMENT, {"patient": patient_id, "session": session_id})
        return session_appointment(found[0]) if found else None

    def appointments(
        self, patient_id: str | None = None, *, starting_from: datetime | None = None
    ) -> list[SessionAppointment]:
        """A patient's (or every patient's) booked sessions (those starting at or after
        `starting_from`, if given), by start time."""
        stmt = select(appointments).order_by(
            appointments.c.starts_at, appointments.c.session_id, appointments.c.id
        )
        if patient_id is not None:
            stmt = stmt.where(appointments.c.patient_id == patient_id)
        if starting_from is not None:
            stmt = stmt.where(appointments.c.starts_at >= starting_from)
        return [session_appointment(r) for r in self._read(stmt)]


def _record_events(conn: Connection, events: CareEventFacts) -> int:
    now = utcnow()
    changed = 0
    for mark in events.session_changes:
        result = conn.execute(
            update(appointments)
            .where(
                appointments.c.patient_id == events.patient_id,
                appointments.c.session_id == mark.session_id,
            )
            .values(
                status=mark.status.value,
                recorded_by=mark.recorded_by,
                missed_by_grace=mark.missed_by_grace,
                updated_at=now,
            )
        )
        changed += int(result.rowcount or 0)
    write_audit(conn, events.audit)
    close_tasks(conn, events.tasks_closed)
    queue_reminders(conn, events.reminders, now)
    withdraw_reminders(conn, events.reminders_withdrawn, now)
    # A cancelled session's reminder is not sent.
    withdraw_reminders(
        conn,
        (
            session_reminder_key(events.patient_id, m.session_id)
            for m in events.session_changes
            if m.status == SessionStatus.cancelled
        ),
        now,
    )
    return changed
