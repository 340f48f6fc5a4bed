"""The journey's activities: small, typed, idempotent writes to the care-operations store
and calls through provider adapters. Each takes a deterministic key from the workflow and
the store's unique constraints make a retry a no-op."""

from __future__ import annotations

from sqlalchemy import Connection, select
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.partners import PartnerServices, SimulatedPartners
from activities.records import (
    BookingResult,
    CallResult,
    CareEvents,
    CareEventsWritten,
    CaseManagerTask,
    ConsentRecord,
    FollowUpCallRequest,
    IntakeRecord,
    PhaseChangeRecord,
    ReferralClosing,
    ReferralDispatch,
    ReferralRecord,
    ReferralReminder,
    SessionBooking,
    SessionStatusChange,
    TaskCompletion,
    TaskOpened,
    TaskResolution,
)
from activities.telephony import Telephony
from clinical.actors import ENGINE
from clinical.aftercare import (
    CHECK_IN_CONCLUDED,
    CallOutcome,
    CheckIn,
    check_in_concluded_key,
)
from clinical.attendance import SessionStatus
from clinical.careplan import FAMILY_SESSION_TYPES
from clinical.protocol import ProgramCatalog, ProgramProtocol, ProtocolError
from clinical.reminders import Reminder, session_reminder_key
from infra.logging import get_logger
from infra.store import (
    CareStore,
    appointments,
    audit_events,
    consents,
    follow_up_calls,
    notifications,
    patients,
    phase_changes,
    referrals,
    tasks,
    to_json,
    utcnow,
)

log = get_logger("carepath.activities")

NON_RETRYABLE_PROTOCOL = "ProtocolError"
NON_RETRYABLE_UNKNOWN_PATIENT = "UnknownPatient"
CONSENT_MISSING = "ConsentMissing"
"""A disclosure the patient has not consented to: never retried; the workflow asks for
consent instead."""


class CareOperations:
    """Activities bound to one store, program catalog and telephony provider."""

    def __init__(
        self,
        store: CareStore,
        catalog: ProgramCatalog,
        telephony: Telephony,
        partners: PartnerServices | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.telephony = telephony
        self.partners = partners if partners is not None else SimulatedPartners(store)

    def all(self) -> list[object]:
        return [
            self.load_program,
            self.record_intake,
            self.book_sessions,
            self.record_care_events,
            self.record_phase_change,
            self.open_case_manager_task,
            self.complete_case_manager_task,
            self.queue_messages,
            self.place_follow_up_call,
            self.record_referral,
            self.send_referral,
            self.remind_partner,
            self.close_referral,
            self.record_consent,
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
            given = e.assessment.consents
            kinds = {"family_involvement": given.family_involvement}
            kinds |= {f"disclosure:{need.value}": True for need in given.partner_disclosure}
            self.store.insert_once(
                conn,
                consents,
                [
                    _consent_row(
                        ConsentRecord(
                            key=f"{e.patient_id}/consent/intake/{kind}",
                            patient_id=e.patient_id,
                            kind=kind,
                            granted=granted,
                            recorded_by=e.case_manager_id,
                            at=intake.at,
                        )
                    )
                    for kind, granted in kinds.items()
                ],
            )
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
                "status": status,
                "missed_by_grace": False,
                "booked_at": now,
                "updated_at": now,
            }
            for status, specs in (("scheduled", booking.sessions), ("cancelled", booking.closed))
            for s in specs
        ]
        # The family contact is invited to each family session (an outbox the notification
        # adapter delivers from); the invitation names no one, only the session and time.
        invitations = [
            {
                "idempotency_key": f"invite/{booking.patient_id}/{s.session_id}",
                "channel": "family",
                "recipient": f"family:{booking.patient_id}",
                "patient_id": booking.patient_id,
                "kind": f"invite_{s.session_type}",
                "body": f"Invitation: {s.session_type.replace('_', ' ')} on "
                f"{s.starts_at:%a %d %b %H:%M} ({s.modality.replace('_', ' ')})",
                "created_at": now,
            }
            for s in booking.sessions
            if s.session_type in FAMILY_SESSION_TYPES
        ]
        with self.store.transaction() as conn:
            booked = self.store.insert_once(conn, appointments, rows)
            self.store.insert_once(conn, notifications, invitations)
            for invitation in invitations:  # telling the family is a disclosure too
                self.store.audit(
                    conn,
                    key=f"{invitation['idempotency_key']}/disclosed",
                    patient_id=booking.patient_id,
                    actor=ENGINE,
                    action="disclosed_to_family",
                    purpose="family_involvement",
                    at=now,
                    detail={"session": str(invitation["idempotency_key"]).rsplit("/", 1)[-1]},
                )
            self.store.queue_reminders(conn, booking.reminders, now)
            if booking.events is not None:
                self._record_events(conn, booking.events)
        result = BookingResult(
            booked=booked,
            already_booked=len(rows) - booked,
            session_ids=[s.session_id for s in booking.sessions],
        )
        log.info(
            "sessions_booked",
            patient_id=booking.patient_id,
            booked=result.booked,
            already_booked=result.already_booked,
        )
        return result

    def _record_events(self, conn: Connection, events: CareEvents) -> int:
        """What a journey gathered since its last write: attendance changes, audit entries,
        resolved tasks, reminders queued and withdrawn. Returns the sessions changed."""
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
        self.store.queue_reminders(conn, events.reminders, utcnow())
        self.store.withdraw_reminders(conn, events.reminders_withdrawn, utcnow())
        # A cancelled session's reminder is not sent.
        self.store.withdraw_reminders(
            conn,
            (
                session_reminder_key(events.patient_id, s.session_id)
                for s in events.session_changes
                if s.status == SessionStatus.cancelled
            ),
            utcnow(),
        )
        return changed

    @activity.defn
    def record_care_events(self, events: CareEvents) -> CareEventsWritten:
        with self.store.transaction() as conn:
            changed = self._record_events(conn, events)
        log.info(
            "care_events_recorded",
            patient_id=events.patient_id,
            session_changes=changed,
            audit_entries=len(events.audit),
        )
        return CareEventsWritten(
            changed=changed,
            session_changes=[
                SessionStatusChange(session_id=s.session_id, status=s.status.value)
                for s in events.session_changes
            ],
        )

    @activity.defn
    def record_phase_change(self, change: PhaseChangeRecord) -> PhaseChangeRecord:
        """Returns what it recorded (the history's story reads it from a write made in the
        workflow task, which leaves only its result there)."""
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
        return change

    @activity.defn
    def open_case_manager_task(self, task: CaseManagerTask) -> TaskOpened:
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
                        "workflow_id": task.workflow_id,
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
        return TaskOpened(created=bool(created), key=task.key, kind=task.kind, detail=task.detail)

    @activity.defn
    def place_follow_up_call(self, request: FollowUpCallRequest) -> CallResult:
        existing = self.store.rows(follow_up_calls, idempotency_key=request.key)
        if existing:
            row = existing[0]
            check_in = None
            if row["check_in_json"]:
                check_in = CheckIn.model_validate_json(row["check_in_json"])
            elif row["days_of_use"] is not None:  # recorded before instruments were asked
                check_in = CheckIn(days_of_use=row["days_of_use"])
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
        outcome, check_in = self.telephony.place_call(
            request.key, request.patient_id, phone, request.instruments
        )
        with self.store.transaction() as conn:
            if request.concludes_with(outcome):
                self.store.audit(
                    conn,
                    key=check_in_concluded_key(
                        request.patient_id, request.episode, request.call_id
                    ),
                    patient_id=request.patient_id,
                    actor=ENGINE,
                    action=CHECK_IN_CONCLUDED,
                    purpose="treatment",
                    at=request.at or utcnow(),
                    detail={
                        "call_id": request.call_id,
                        "outcome": outcome.value,
                        "attempts": request.attempt,
                    },
                )
            self.store.insert_once(
                conn,
                follow_up_calls,
                [
                    {
                        "idempotency_key": request.key,
                        "patient_id": request.patient_id,
                        "call_id": request.call_ref,
                        "attempt": request.attempt,
                        "due_at": request.due_at,
                        "placed_at": utcnow(),
                        "outcome": outcome.value,
                        "days_of_use": check_in.days_of_use if check_in else None,
                        "check_in_json": check_in.model_dump_json() if check_in else None,
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

    @activity.defn
    def complete_case_manager_task(self, done: TaskCompletion) -> bool:
        """Close a task in the store and audit who did (a task already closed keeps its
        first closing)."""
        with self.store.transaction() as conn:
            closed = self.store.resolve_tasks(
                conn, [TaskResolution(key=done.key, by=done.by, at=done.at)]
            )
            self.store.audit(
                conn,
                key=f"{done.key}/done",
                patient_id=done.patient_id,
                actor=done.by,
                action="task_completed",
                purpose="treatment",
                at=done.at,
                detail={"kind": done.kind},
            )
        log.info("task_completed", patient_id=done.patient_id, kind=done.kind)
        return closed > 0

    @activity.defn
    def queue_messages(self, messages: list[Reminder]) -> int:
        """Messages for patients into the outbox (once per key)."""
        with self.store.transaction() as conn:
            return self.store.queue_reminders(conn, messages, utcnow())

    # --- referrals and consent -------------------------------------------------------------

    @activity.defn
    def record_referral(self, r: ReferralRecord) -> bool:
        with self.store.transaction() as conn:
            created = self.store.insert_once(
                conn,
                referrals,
                [
                    {
                        "idempotency_key": r.key,
                        "referral_id": r.referral_id,
                        "workflow_id": r.workflow_id,
                        "patient_id": r.patient_id,
                        "case_manager_id": r.case_manager_id,
                        "need": r.need,
                        "status": "requested",
                        "reminders": 0,
                        "requested_at": r.at,
                    }
                ],
            )
            self.store.audit(
                conn,
                key=f"{r.key}/requested",
                patient_id=r.patient_id,
                actor=r.requested_by,
                action="referral_requested",
                purpose="care_coordination",
                at=r.at,
                detail={"referral": r.referral_id, "need": r.need},
            )
        log.info("referral_recorded", patient_id=r.patient_id, need=r.need, new=bool(created))
        return bool(created)

    @activity.defn
    def send_referral(self, d: ReferralDispatch) -> str:
        """Send the service request, only with the patient's consent to that disclosure."""
        with self.store.engine.connect() as conn:
            consented = self.store.consent_in_force(conn, d.patient_id, d.consent_kind)
        if not consented:
            raise ApplicationError(
                f"no consent in force for {d.consent_kind}",
                type=CONSENT_MISSING,
                non_retryable=True,
                # An expected answer, not a fault: no error log or failure metric.
                category=ApplicationErrorCategory.BENIGN,
            )
        reference = self.partners.send_request(d.key, d.patient_id, d.need)
        with self.store.transaction() as conn:
            conn.execute(
                referrals.update()
                .where(referrals.c.idempotency_key == d.key, referrals.c.sent_at.is_(None))
                .values(status="sent", partner_reference=reference, sent_at=d.at)
            )
            # A disclosure of Part 2 information: who, to whom, under which consent.
            self.store.audit(
                conn,
                key=f"{d.key}/disclosed",
                patient_id=d.patient_id,
                actor=ENGINE,
                action="disclosed_to_partner",
                purpose="care_coordination",
                at=d.at,
                detail={"partner": d.need, "consent": d.consent_kind, "reference": reference},
            )
        log.info("referral_sent", patient_id=d.patient_id, need=d.need)
        return reference

    @activity.defn
    def remind_partner(self, r: ReferralReminder) -> None:
        self.partners.send_reminder(f"{r.key}/reminder-{r.number}", r.patient_id, r.need)
        with self.store.transaction() as conn:
            conn.execute(
                referrals.update()
                .where(referrals.c.idempotency_key == r.key, referrals.c.reminders < r.number)
                .values(reminders=r.number)
            )
        log.info("partner_reminded", patient_id=r.patient_id, need=r.need, number=r.number)

    @activity.defn
    def close_referral(self, c: ReferralClosing) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                referrals.update()
                .where(referrals.c.idempotency_key == c.key, referrals.c.closed_at.is_(None))
                .values(status="closed", outcome=c.outcome, closed_at=c.at)
            )
            self.store.audit(
                conn,
                key=f"{c.key}/closed",
                patient_id=c.patient_id,
                actor=c.by,
                action="referral_closed",
                purpose="care_coordination",
                at=c.at,
                detail={"referral": c.referral_id, "outcome": c.outcome},
            )
        log.info("referral_closed", patient_id=c.patient_id, outcome=c.outcome)

    @activity.defn
    def record_consent(self, c: ConsentRecord) -> bool:
        with self.store.transaction() as conn:
            created = self.store.insert_once(conn, consents, [_consent_row(c)])
            self.store.audit(
                conn,
                key=f"{c.key}/audit",
                patient_id=c.patient_id,
                actor=c.recorded_by,
                action="consent_given" if c.granted else "consent_withdrawn",
                purpose="consent",
                at=c.at,
                detail={"kind": c.kind},
            )
        log.info("consent_recorded", patient_id=c.patient_id, kind=c.kind, granted=c.granted)
        return bool(created)


def _consent_row(c: ConsentRecord) -> dict[str, object]:
    return {
        "idempotency_key": c.key,
        "patient_id": c.patient_id,
        "kind": c.kind,
        "granted": c.granted,
        "recorded_by": c.recorded_by,
        "recorded_at": c.at,
    }
