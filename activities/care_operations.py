"""The journey's activities: small, typed, idempotent writes to the care-operations store
and calls through provider adapters. Each takes a deterministic key from the workflow and
the store's unique constraints make a retry a no-op."""

from __future__ import annotations

from sqlalchemy import select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.records import (
    BookingResult,
    CallResult,
    CareEvents,
    CaseManagerTask,
    FollowUpCallRequest,
    IntakeRecord,
    PhaseChangeRecord,
    SessionBooking,
)
from activities.telephony import Telephony
from clinical.aftercare import CallOutcome, CheckIn
from clinical.protocol import ProgramCatalog, ProgramProtocol, ProtocolError
from infra.logging import get_logger
from infra.store import (
    CareStore,
    appointments,
    audit_events,
    follow_up_calls,
    notifications,
    patients,
    phase_changes,
    tasks,
    to_json,
    utcnow,
)

log = get_logger("carepath.activities")

NON_RETRYABLE_PROTOCOL = "ProtocolError"
NON_RETRYABLE_UNKNOWN_PATIENT = "UnknownPatient"


class CareOperations:
    """Activities bound to one store, program catalog and telephony provider."""

    def __init__(self, store: CareStore, catalog: ProgramCatalog, telephony: Telephony) -> None:
        self.store = store
        self.catalog = catalog
        self.telephony = telephony

    def all(self) -> list[object]:
        return [
            self.load_program,
            self.record_intake,
            self.book_sessions,
            self.record_care_events,
            self.record_phase_change,
            self.open_case_manager_task,
            self.place_follow_up_call,
        ]

    @activity.defn
    def load_program(self, program_id: str) -> ProgramProtocol:
        """The program's current protocol (journeys refresh it when a new run starts)."""
        try:
            return self.catalog.load(program_id)
        except ProtocolError as exc:
            raise ApplicationError(
                str(exc), type=NON_RETRYABLE_PROTOCOL, non_retryable=True
            ) from None

    @activity.defn
    def record_intake(self, intake: IntakeRecord) -> bool:
        e = intake.enrolment
        with self.store.transaction() as conn:
            created = self.store.upsert_patient(
                conn,
                {
                    "patient_id": e.patient_id,
                    "case_manager_id": e.case_manager_id,
                    "site_id": e.site_id,
                    "program_id": e.program_id,
                    "enrolled_at": intake.at,
                    "phase": "intake",
                    "level": intake.placement.level,
                    "risk": intake.risk,
                    "given_name": e.contact.given_name,
                    "family_name": e.contact.family_name,
                    "date_of_birth": e.contact.date_of_birth.isoformat(),
                    "phone": e.contact.phone,
                    "email": e.contact.email,
                    "assessment_json": e.assessment.model_dump_json(),
                    "care_plan_json": intake.plan.model_dump_json(),
                    "updated_at": utcnow(),
                },
            )
            placement = intake.placement
            entries = [
                {
                    "idempotency_key": f"{e.patient_id}/enrolled",
                    "patient_id": e.patient_id,
                    "actor": e.case_manager_id,
                    "action": "enrolled",
                    "purpose": "treatment",
                    "at": intake.at,
                    "detail_json": to_json(
                        {
                            "program": e.program_id,
                            "level": placement.level,
                            "drivers": placement.drivers,
                        }
                    ),
                }
            ]
            if placement.overridden_by is not None:
                entries.append(
                    {
                        "idempotency_key": f"{e.patient_id}/placement-overridden",
                        "patient_id": e.patient_id,
                        "actor": placement.overridden_by,
                        "action": "placement_overridden",
                        "purpose": "treatment",
                        "at": intake.at,
                        "detail_json": to_json(
                            {
                                "rules_level": placement.rules_level,
                                "level": placement.level,
                                "reason": placement.override_reason,
                            }
                        ),
                    }
                )
            self.store.insert_once(conn, audit_events, entries)
        log.info("intake_recorded", patient_id=e.patient_id, new=created)
        return created

    @activity.defn
    def book_sessions(self, booking: SessionBooking) -> BookingResult:
        now = utcnow()
        rows = [
            {
                "idempotency_key": f"{booking.patient_id}/{s.session_id}",
                "patient_id": booking.patient_id,
                "session_id": s.session_id,
                "phase": s.phase.value,
                "week": s.week,
                "level": s.level,
                "starts_at": s.starts_at,
                "hours": s.hours,
                "session_type": s.session_type,
                "modality": s.modality,
                "status": "scheduled",
                "missed_by_grace": False,
                "booked_at": now,
                "updated_at": now,
            }
            for s in booking.sessions
        ]
        with self.store.transaction() as conn:
            booked = self.store.insert_once(conn, appointments, rows)
        result = BookingResult(booked=booked, already_booked=len(rows) - booked)
        log.info("sessions_booked", patient_id=booking.patient_id, **result.model_dump())
        return result

    @activity.defn
    def record_care_events(self, events: CareEvents) -> int:
        with self.store.transaction() as conn:
            changed = self.store.set_session_statuses(
                conn,
                events.patient_id,
                (
                    {
                        "session_id": s.session_id,
                        "status": s.status.value,
                        "recorded_by": s.recorded_by,
                        "missed_by_grace": s.missed_by_grace,
                    }
                    for s in events.session_changes
                ),
            )
            self.store.insert_once(
                conn,
                audit_events,
                [
                    {
                        "idempotency_key": a.key,
                        "patient_id": events.patient_id,
                        "actor": a.actor,
                        "action": a.action,
                        "purpose": a.purpose,
                        "at": a.at,
                        "detail_json": to_json(a.detail),
                    }
                    for a in events.audit
                ],
            )
            self.store.resolve_tasks(conn, events.tasks_resolved)
        log.info(
            "care_events_recorded",
            patient_id=events.patient_id,
            session_changes=changed,
            audit_entries=len(events.audit),
        )
        return changed

    @activity.defn
    def record_phase_change(self, change: PhaseChangeRecord) -> None:
        with self.store.transaction() as conn:
            self.store.set_patient_phase(
                conn, change.patient_id, change.phase, change.level, change.risk
            )
            self.store.insert_once(
                conn,
                phase_changes,
                [
                    {
                        "idempotency_key": change.key,
                        "patient_id": change.patient_id,
                        "phase": change.phase,
                        "at": change.at,
                        "reason": change.reason,
                    }
                ],
            )
            self.store.insert_once(
                conn,
                notifications,
                [
                    {
                        "idempotency_key": f"notify/{change.key}",
                        "channel": "case_manager",
                        "recipient": change.case_manager_id,
                        "patient_id": change.patient_id,
                        "kind": "phase_changed",
                        "body": f"{change.patient_id} is now in {change.phase}: {change.reason}",
                        "created_at": utcnow(),
                    }
                ],
            )
        log.info("phase_changed", patient_id=change.patient_id, phase=change.phase)

    @activity.defn
    def open_case_manager_task(self, task: CaseManagerTask) -> bool:
        now = utcnow()
        with self.store.transaction() as conn:
            created = self.store.insert_once(
                conn,
                tasks,
                [
                    {
                        "idempotency_key": task.key,
                        "patient_id": task.patient_id,
                        "case_manager_id": task.case_manager_id,
                        "kind": task.kind,
                        "status": "open",
                        "detail": task.detail,
                        "due_at": task.due_at,
                        "created_at": now,
                    }
                ],
            )
            self.store.insert_once(
                conn,
                notifications,
                [
                    {
                        "idempotency_key": f"notify/{task.key}",
                        "channel": "case_manager",
                        "recipient": task.case_manager_id,
                        "patient_id": task.patient_id,
                        "kind": f"task_{task.kind}",
                        "body": f"New task for {task.patient_id}: {task.detail}",
                        "created_at": now,
                    }
                ],
            )
        log.info("task_opened", patient_id=task.patient_id, kind=task.kind, new=bool(created))
        return bool(created)

    @activity.defn
    def place_follow_up_call(self, request: FollowUpCallRequest) -> CallResult:
        existing = self.store.rows(follow_up_calls, idempotency_key=request.key)
        if existing:
            row = existing[0]
            check_in = (
                CheckIn(days_of_use=row["days_of_use"]) if row["days_of_use"] is not None else None
            )
            return CallResult(outcome=CallOutcome(row["outcome"]), check_in=check_in)
        with self.store.engine.connect() as conn:
            phone = conn.scalar(
                select(patients.c.phone).where(patients.c.patient_id == request.patient_id)
            )
        if phone is None:
            raise ApplicationError(
                f"no patient {request.patient_id} in the store",
                type=NON_RETRYABLE_UNKNOWN_PATIENT,
                non_retryable=True,
            )
        outcome, check_in = self.telephony.place_call(request.key, request.patient_id, phone)
        with self.store.transaction() as conn:
            self.store.insert_once(
                conn,
                follow_up_calls,
                [
                    {
                        "idempotency_key": request.key,
                        "patient_id": request.patient_id,
                        "call_id": request.call_id,
                        "attempt": request.attempt,
                        "due_at": request.due_at,
                        "placed_at": utcnow(),
                        "outcome": outcome.value,
                        "days_of_use": check_in.days_of_use if check_in else None,
                    }
                ],
            )
        log.info(
            "follow_up_call_placed",
            patient_id=request.patient_id,
            call_id=request.call_id,
            attempt=request.attempt,
            outcome=outcome.value,
        )
        return CallResult(outcome=outcome, check_in=check_in)
