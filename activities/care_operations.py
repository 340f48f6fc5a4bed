"""The journey's activities: small, typed, idempotent writes to the care-operations store
and calls through provider adapters. Each takes a deterministic key from the workflow and
the store's unique constraints make a retry a no-op."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities import counsellors, group_seats
from activities.partners import PartnerServices
from activities.records import (
    BookingResult,
    CallOutcomeRecord,
    CallResult,
    CareEvents,
    CareEventsWritten,
    CaseManagerTask,
    ConsentRecord,
    CounsellorBooking,
    CounsellorRelease,
    CounsellorsBooked,
    FollowUpCallRequest,
    GroupPlacement,
    GroupPlacementRequest,
    GroupRelease,
    IntakeRecord,
    PhaseChangeRecord,
    ReassignmentRecord,
    ReferralClosing,
    ReferralDispatch,
    ReferralRecord,
    ReferralReminder,
    SeatHandedOn,
    SessionBooking,
    SessionStatusChange,
    SurveyIssue,
    TaskCompletion,
    TaskOpened,
)
from activities.telephony import CallPlaced, Telephony, TelephonyRefused
from clinical.actors import ENGINE
from clinical.aftercare import (
    CHECK_IN_CONCLUDED,
    CallOutcome,
    CheckIn,
    check_in_concluded_key,
)
from clinical.messages import survey_message
from clinical.phases import Phase
from clinical.protocol import ProgramCatalog, ProgramProtocol, ProtocolError
from clinical.reminders import Reminder
from infra.logging import get_logger
from infra.store import (
    DISCLOSED_TO_PARTNER,
    AttendanceMark,
    AuditFact,
    CallAttempt,
    CareEventFacts,
    CareStore,
    ConsentEntry,
    NewPatient,
    NewReferral,
    NewSurvey,
    NewTask,
    PhaseChangeEntry,
    TaskClosing,
    utcnow,
)
from infra.survey_links import LinkSigner, new_token

log = get_logger("carepath.activities")

NON_RETRYABLE_PROTOCOL = "ProtocolError"
NON_RETRYABLE_UNKNOWN_PATIENT = "UnknownPatient"
TELEPHONY_REFUSED = "TelephonyRefused"
CONSENT_MISSING = "ConsentMissing"
"""A disclosure the patient has not consented to: never retried; the workflow asks for
consent instead."""


class CareOperations:
    """Activities bound to one store, program catalog, telephony provider and partners,
    and the signer of survey links (None: one of this process's own, for tests)."""

    def __init__(
        self,
        store: CareStore,
        catalog: ProgramCatalog,
        telephony: Telephony,
        partners: PartnerServices,
        links: LinkSigner | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.telephony = telephony
        self.partners = partners
        self.links = links or LinkSigner.ephemeral()

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
            self.place_call,
            self.record_call_outcome,
            self.record_referral,
            self.send_referral,
            self.remind_partner,
            self.close_referral,
            self.record_consent,
            self.record_reassignment,
            self.place_in_group,
            self.leave_groups,
            self.issue_survey,
            self.book_counsellors,
            self.free_counsellors,
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
    def place_in_group(self, request: GroupPlacementRequest) -> GroupPlacement:
        """A seat in a fitting group track, else a place on its waitlist (idempotent)."""
        placed = group_seats.place(self.store, request)
        log.info(
            "group_placement",
            patient_id=request.patient_id,
            track=placed.track_id,
            waiting_for=placed.waiting_for,
        )
        return placed

    @activity.defn
    def book_counsellors(self, request: CounsellorBooking) -> CounsellorsBooked:
        """A counsellor for each of the week's individual and family sessions (idempotent:
        a session keeps the one it has); the sessions none could take, and why."""
        booked = counsellors.book(self.store, request)
        log.info(
            "counsellors_booked",
            patient_id=request.patient_id,
            booked=len(booked.booked),
            unstaffed=len(booked.unstaffed),
        )
        return booked

    @activity.defn
    def free_counsellors(self, release: CounsellorRelease) -> int:
        """The patient's counsellor sessions from then on go back to the counsellors."""
        freed = counsellors.release(self.store, release)
        log.info("counsellors_freed", patient_id=release.patient_id, sessions=freed)
        return freed

    @activity.defn
    def leave_groups(self, release: GroupRelease) -> tuple[SeatHandedOn, ...]:
        """The patient's seats and waitlist places go; freed seats to those waiting."""
        return group_seats.release(self.store, release)

    @activity.defn
    def issue_survey(self, issue: SurveyIssue) -> bool:
        """The questionnaire and the message with its signed link, once per key; True if
        this call issued it (a retry finds it issued and sends nothing more)."""
        expires = issue.at + timedelta(days=issue.link_days)
        token = new_token()
        issued = self.store.issue_survey(
            NewSurvey(
                key=issue.key,
                token=token,
                patient_id=issue.patient_id,
                program_id=issue.program_id,
                site_id=issue.site_id,
                track_id=issue.track_id,
                occasion=issue.occasion,
                episode=issue.episode,
                issued_at=issue.at,
                expires_at=expires,
                channel=issue.channel,
            ),
            lambda t: survey_message(self.links.url(t, expires)),
        )
        new = issued.token == token
        log.info("survey_issued", patient_id=issue.patient_id, occasion=issue.occasion, new=new)
        return new

    @activity.defn
    def record_intake(self, intake: IntakeRecord) -> bool:
        e, placement = intake.enrolment, intake.placement
        audit = [
            AuditFact(
                key=f"{e.patient_id}/enrolled",
                patient_id=e.patient_id,
                actor=e.case_manager_id,
                action="enrolled",
                purpose="treatment",
                at=intake.at,
                detail={
                    "program": e.program_id,
                    "level": placement.level,
                    "drivers": placement.drivers,
                },
            )
        ]
        if placement.overridden_by is not None:
            audit.append(
                AuditFact(
                    key=f"{e.patient_id}/placement-overridden",
                    patient_id=e.patient_id,
                    actor=placement.overridden_by,
                    action="placement_overridden",
                    purpose="treatment",
                    at=intake.at,
                    detail={
                        "rules_level": placement.rules_level,
                        "level": placement.level,
                        "reason": placement.override_reason,
                    },
                )
            )
        given = e.assessment.consents
        kinds = {"family_involvement": given.family_involvement}
        kinds |= {f"disclosure:{need.value}": True for need in given.partner_disclosure}
        consents = [
            ConsentEntry(
                key=f"{e.patient_id}/consent/intake/{kind}",
                patient_id=e.patient_id,
                kind=kind,
                granted=granted,
                recorded_by=e.case_manager_id,
                recorded_at=intake.at,
            )
            for kind, granted in kinds.items()
        ]
        patient = NewPatient(
            patient_id=e.patient_id,
            case_manager_id=e.case_manager_id,
            site_id=e.site_id,
            program_id=e.program_id,
            enrolled_at=intake.at,
            level=placement.level,
            risk=intake.risk,
            contact=e.contact,
            assessment_json=e.assessment.model_dump_json(),
            care_plan_json=intake.plan.model_dump_json(),
        )
        created = self.store.record_intake(patient, audit, consents)
        log.info("intake_recorded", patient_id=e.patient_id, new=created)
        return created

    @activity.defn
    def book_sessions(self, booking: SessionBooking) -> BookingResult:
        booked = self.store.book_week(
            booking.patient_id,
            booking.sessions,
            closed=booking.closed,
            reminders=booking.reminders,
            events=None if booking.events is None else _event_facts(booking.events),
        )
        result = BookingResult(
            booked=booked,
            already_booked=len(booking.sessions) + len(booking.closed) - booked,
            session_ids=[s.session_id for s in booking.sessions],
        )
        log.info(
            "sessions_booked",
            patient_id=booking.patient_id,
            booked=result.booked,
            already_booked=result.already_booked,
        )
        return result

    @activity.defn
    def record_care_events(self, events: CareEvents) -> CareEventsWritten:
        changed = self.store.record_care_events(_event_facts(events))
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
        self.store.record_phase_change(
            PhaseChangeEntry(
                key=change.key,
                patient_id=change.patient_id,
                phase=Phase(change.phase),
                at=change.at,
                reason=change.reason,
            ),
            case_manager_id=change.case_manager_id,
            level=change.level,
            risk=change.risk,
        )
        log.info("phase_changed", patient_id=change.patient_id, phase=change.phase)
        return change

    @activity.defn
    def open_case_manager_task(self, task: CaseManagerTask) -> TaskOpened:
        created = self.store.open_task(
            NewTask(
                key=task.key,
                patient_id=task.patient_id,
                case_manager_id=task.case_manager_id,
                kind=task.kind,
                detail=task.detail,
                due_at=task.due_at,
                workflow_id=task.workflow_id,
            )
        )
        log.info("task_opened", patient_id=task.patient_id, kind=task.kind, new=created)
        return TaskOpened(created=created, key=task.key, kind=task.kind, detail=task.detail)

    @activity.defn
    def place_call(self, request: FollowUpCallRequest) -> CallPlaced:
        """Ask the provider to place an attempt's call (the attempt's key is the provider's
        idempotency key: a retry never places a second call). How it ended comes later."""
        phone = self._phone(request.patient_id)
        # Before placing: the provider's callback may come before this activity returns,
        # and must find the workflow waiting (the journey, or a check-in's own workflow).
        placed_by = activity.info().workflow_id
        if placed_by is not None:
            self.store.record_call_placement(request.key, request.patient_id, placed_by)
        try:
            placed = self.telephony.place_call(
                request.key, request.patient_id, phone, request.instruments
            )
        except TelephonyRefused as exc:
            raise ApplicationError(str(exc), type=TELEPHONY_REFUSED, non_retryable=True) from None
        log.info(
            "follow_up_call_placed",
            patient_id=request.patient_id,
            call_id=request.call_id,
            attempt=request.attempt,
        )
        return placed

    @activity.defn
    def record_call_outcome(self, record: CallOutcomeRecord) -> bool:
        """The attempt's outcome once (and the check-in's conclusion, if it concludes)."""
        request = record.request
        created = self._record_attempt(request, record.outcome, record.check_in)
        log.info(
            "follow_up_call_ended",
            patient_id=request.patient_id,
            call_id=request.call_id,
            attempt=request.attempt,
            outcome=record.outcome.value,
            heard=record.heard,
            new=created,
        )
        return created

    @activity.defn
    def place_follow_up_call(self, request: FollowUpCallRequest) -> CallResult:
        """The check-in calls of runs from before callbacks (patches.CALL_OUTCOME_BY_CALLBACK):
        placed and answered in one step. Such runs take the callback path from their next
        attempt; one of these still in flight when the HTTP provider arrived cannot hear
        its callback, so it counts as unreachable and the next attempt calls again."""
        placed = self.store.call_attempt(request.key)
        if placed is not None:  # a retry: the call was placed and recorded
            return CallResult(outcome=placed.outcome, check_in=placed.check_in)
        phone = self._phone(request.patient_id)
        report = self.telephony.place_call(
            request.key, request.patient_id, phone, request.instruments
        ).report
        outcome = CallOutcome.unreachable if report is None else report.outcome
        check_in = None if report is None else report.check_in
        self._record_attempt(request, outcome, check_in)
        log.info(
            "follow_up_call_placed",
            patient_id=request.patient_id,
            call_id=request.call_id,
            attempt=request.attempt,
            outcome=outcome.value,
        )
        return CallResult(outcome=outcome, check_in=check_in)

    def _phone(self, patient_id: str) -> str:
        phone = self.store.patient_phone(patient_id)
        if phone is None:
            raise ApplicationError(
                f"no patient {patient_id} in the store",
                type=NON_RETRYABLE_UNKNOWN_PATIENT,
                non_retryable=True,
            )
        return phone

    def _record_attempt(
        self, request: FollowUpCallRequest, outcome: CallOutcome, check_in: CheckIn | None
    ) -> bool:
        concluded = None
        if request.concludes_with(outcome):
            concluded = AuditFact(
                key=check_in_concluded_key(request.patient_id, request.episode, request.call_id),
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
        attempt = CallAttempt(
            key=request.key,
            patient_id=request.patient_id,
            call_ref=request.call_ref,
            attempt=request.attempt,
            due_at=request.due_at,
            placed_at=utcnow(),
            outcome=outcome,
            check_in=check_in,
        )
        return self.store.record_call_attempt(attempt, concluded)

    @activity.defn
    def complete_case_manager_task(self, done: TaskCompletion) -> bool:
        """Close a task in the store and audit who did (a task already closed keeps its
        first closing)."""
        closed = self.store.complete_task(
            TaskClosing(key=done.key, by=done.by, at=done.at),
            AuditFact(
                key=f"{done.key}/done",
                patient_id=done.patient_id,
                actor=done.by,
                action="task_completed",
                purpose="treatment",
                at=done.at,
                detail={"kind": done.kind},
            ),
        )
        log.info("task_completed", patient_id=done.patient_id, kind=done.kind)
        return closed

    @activity.defn
    def queue_messages(self, messages: list[Reminder]) -> int:
        """Messages for patients into the outbox (once per key)."""
        return self.store.queue_messages(messages)

    # --- referrals and consent -------------------------------------------------------------

    @activity.defn
    def record_referral(self, r: ReferralRecord) -> bool:
        created = self.store.open_referral(
            NewReferral(
                key=r.key,
                referral_id=r.referral_id,
                workflow_id=r.workflow_id,
                patient_id=r.patient_id,
                case_manager_id=r.case_manager_id,
                need=r.need,
                requested_at=r.at,
            ),
            AuditFact(
                key=f"{r.key}/requested",
                patient_id=r.patient_id,
                actor=r.requested_by,
                action="referral_requested",
                purpose="care_coordination",
                at=r.at,
                detail={"referral": r.referral_id, "need": r.need},
            ),
        )
        log.info("referral_recorded", patient_id=r.patient_id, need=r.need, new=created)
        return created

    @activity.defn
    def send_referral(self, d: ReferralDispatch) -> str:
        """Send the service request, only with the patient's consent to that disclosure."""
        # A consent revoked, or one whose written form has expired, stops the disclosure
        # as no consent does: the referral asks for consent again.
        why_not = self.store.why_not_consented(
            d.patient_id, d.consent_kind, "care_coordination", d.at
        )
        if why_not is not None:
            raise ApplicationError(
                f"no consent in force for {d.consent_kind}: {why_not}",
                type=CONSENT_MISSING,
                non_retryable=True,
                # An expected answer, not a fault: no error log or failure metric.
                category=ApplicationErrorCategory.BENIGN,
            )
        reference = self.partners.send_request(d.key, d.patient_id, d.need)
        # A disclosure of Part 2 information: who, to whom, under which consent.
        disclosure = AuditFact(
            key=f"{d.key}/disclosed",
            patient_id=d.patient_id,
            actor=ENGINE,
            action=DISCLOSED_TO_PARTNER,
            purpose="care_coordination",
            at=d.at,
            detail={"partner": d.need, "consent": d.consent_kind, "reference": reference},
        )
        self.store.mark_referral_sent(d.key, reference, d.at, disclosure)
        log.info("referral_sent", patient_id=d.patient_id, need=d.need)
        return reference

    @activity.defn
    def remind_partner(self, r: ReferralReminder) -> None:
        self.partners.send_reminder(f"{r.key}/reminder-{r.number}", r.patient_id, r.need)
        self.store.count_partner_reminder(r.key, r.number)
        log.info("partner_reminded", patient_id=r.patient_id, need=r.need, number=r.number)

    @activity.defn
    def close_referral(self, c: ReferralClosing) -> None:
        self.store.close_referral(
            c.key,
            c.outcome,
            c.at,
            AuditFact(
                key=f"{c.key}/closed",
                patient_id=c.patient_id,
                actor=c.by,
                action="referral_closed",
                purpose="care_coordination",
                at=c.at,
                detail={"referral": c.referral_id, "outcome": c.outcome},
            ),
        )
        log.info("referral_closed", patient_id=c.patient_id, outcome=c.outcome)

    @activity.defn
    def record_consent(self, c: ConsentRecord) -> bool:
        created = self.store.record_consent(
            ConsentEntry(
                key=c.key,
                patient_id=c.patient_id,
                kind=c.kind,
                granted=c.granted,
                recorded_by=c.recorded_by,
                recorded_at=c.at,
            ),
            AuditFact(
                key=f"{c.key}/audit",
                patient_id=c.patient_id,
                actor=c.recorded_by,
                action="consent_given" if c.granted else "consent_withdrawn",
                purpose="consent",
                at=c.at,
                detail={"kind": c.kind},
            ),
        )
        log.info("consent_recorded", patient_id=c.patient_id, kind=c.kind, granted=c.granted)
        return created

    @activity.defn
    def record_reassignment(self, r: ReassignmentRecord) -> bool:
        moved = self.store.reassign_patient(
            r.patient_id,
            r.case_manager_id,
            AuditFact(
                key=r.key,
                patient_id=r.patient_id,
                actor=r.by,
                action="case_manager_reassigned",
                purpose="operations",
                at=r.at,
                detail={"from": r.previous, "to": r.case_manager_id},
            ),
        )
        log.info("case_manager_reassigned", patient_id=r.patient_id, new=moved)
        return moved


def _event_facts(events: CareEvents) -> CareEventFacts:
    """What a journey gathered, as the store records it."""
    return CareEventFacts(
        patient_id=events.patient_id,
        session_changes=[
            AttendanceMark(
                session_id=s.session_id,
                status=s.status,
                recorded_by=s.recorded_by,
                missed_by_grace=s.missed_by_grace,
            )
            for s in events.session_changes
        ],
        audit=[
            AuditFact(
                key=a.key,
                patient_id=events.patient_id,
                actor=a.actor,
                action=a.action,
                purpose=a.purpose,
                at=a.at,
                detail=a.detail,
            )
            for a in events.audit
        ],
        tasks_closed=[TaskClosing(key=t.key, by=t.by, at=t.at) for t in events.tasks_resolved],
        reminders=events.reminders,
        reminders_withdrawn=events.reminders_withdrawn,
    )
