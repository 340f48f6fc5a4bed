"""Case managers' requests to a journey: an update per request, each with a validator
that asks the clinical `check_*` rule (a bad request is refused before it touches history)
and a handler that applies the clinical `apply_*` rule and writes what it changed."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.care_operations import CareOperations
    from activities.records import ConsentRecord, ReassignmentRecord, SessionBooking
    from clinical.alumni import (
        ALUMNI_ATTENDED,
        apply_alumni_attendance,
        check_alumni_attendance,
    )
    from clinical.attendance import AttendanceSummary
    from clinical.check_ins import (
        apply_check_in_adjustment,
        check_check_in_adjustment,
        check_ins_ahead,
    )
    from clinical.closures import MakeUp, apply_closure, check_closure
    from clinical.inbound import (
        EVENT_REFUSED,
        AttendanceEvent,
        refusal_detail,
        remember,
        taken_before,
    )
    from clinical.journey import JourneyOutcome, ReferralRef
    from clinical.referrals import ReferralStatus, apply_referral_closed, check_referral
    from clinical.reminders import (
        call_reminder_key,
        call_reminders,
        closure_notice,
        session_reminders,
    )
    from clinical.requests import (
        AlumniAttendance,
        AttendanceReport,
        AttendanceSheet,
        CheckInAdjustment,
        CommitmentsRevision,
        DischargeRequest,
        FamilyConsentChange,
        ProgressReview,
        Reassignment,
        ReferralRequest,
        RelapseReport,
        RequestRefused,
        TaskDone,
    )
    from clinical.sites import Closure
    from clinical.status import JourneyStatus, status_of
    from clinical.tasks import check_task_done
    from clinical.treatment import (
        apply_attendance,
        apply_commitments_revision,
        apply_discharge,
        apply_family_consent,
        apply_reassignment,
        apply_relapse,
        apply_review,
        check_attendance,
        check_attendance_sheet,
        check_commitments_revision,
        check_discharge,
        check_family_consent,
        check_reassignment,
        check_relapse,
        check_review,
    )
    from workflows.case_manager_tasks import close_task
    from workflows.journey_counsellors import JourneyCounsellors
    from workflows.referral import REFERRAL_CLOSED_SIGNAL


class JourneyRequests(JourneyCounsellors):
    @workflow.query
    def status(self) -> JourneyStatus:
        return status_of(self._state, workflow.now())

    @workflow.update
    async def record_attendance(self, report: AttendanceReport) -> AttendanceSummary:
        self._note_attendance(report)
        summary = self._state.summary()
        if report.status == "missed":
            await self._raise_engagement_alerts()
        return summary

    @record_attendance.validator
    def _validate_attendance(self, report: AttendanceReport) -> None:
        check_attendance(self._state, report, self._today())

    @workflow.update
    async def announce_closure(self, closure: Closure) -> str:
        """The site is closed on a day (weather, an outage): that day's sessions are
        cancelled, the patient told, and a make-up booked (or a task opened) when the week
        falls short of the program's session days."""
        st = self._state
        cancelled = apply_closure(st, closure, self._today())
        self._outbox.sessions_changed(cancelled)
        self._outbox.audit_entry(
            closure.announced_by,
            "closure_applied",
            "operations",
            {"date": closure.date.isoformat(), "cancelled": len(cancelled)},
        )
        found = MakeUp(sessions=[], short_by=0)
        if cancelled:
            self._outbox.reminders.append(
                closure_notice(
                    patient_id=st.patient_id,
                    day=closure.date,
                    reason=closure.reason,
                    cancelled=len(cancelled),
                    now=workflow.now(),
                    window=st.assessment.contact_window,
                    clock=st.clock,
                )
            )
            this_week = st.phase_start_day is not None and st.week >= 1
            if this_week and any(s.week == st.week and s.phase == st.phase for s in cancelled):
                assert st.phase_start_day is not None
                found = self._make_up(st.phase_start_day + 7 * (st.week - 1))
        if found.sessions:
            await self._book(
                SessionBooking(
                    patient_id=st.patient_id,
                    sessions=found.sessions,
                    reminders=session_reminders(st, found.sessions),
                    events=self._outbox.take(),
                )
            )
        else:
            await self._outbox.flush()
        await self._counsellors_after_closure([s.session_id for s in cancelled], found.sessions)
        if found.short_by:
            await self._open_make_up_task(found.short_by)
        self._update_visibility()
        return (
            f"closed {closure.date}: {len(cancelled)} session(s) cancelled, "
            f"{len(found.sessions)} make-up session(s) booked"
        )

    @announce_closure.validator
    def _validate_closure(self, closure: Closure) -> None:
        check_closure(self._state, closure, self._today())

    @workflow.update
    async def record_attendance_sheet(self, sheet: AttendanceSheet) -> AttendanceSummary:
        update = workflow.current_update_info()
        assert update is not None  # always set inside an update handler
        for report in sheet.reports():
            self._note_attendance(
                report, key=f"{self._state.patient_id}/update/{update.id}/{report.session_id}"
            )
        summary = self._state.summary()
        if any(m.status == "missed" for m in sheet.marks):
            await self._raise_engagement_alerts()
        return summary

    @record_attendance_sheet.validator
    def _validate_attendance_sheet(self, sheet: AttendanceSheet) -> None:
        check_attendance_sheet(self._state, sheet, self._today())

    @workflow.signal
    async def attendance_event(self, event: AttendanceEvent) -> None:
        """An EHR's attendance, acknowledged to the EHR once the server stored this signal:
        applied once per event ID, under the rule a case manager's sheet meets; a refusal
        the front door could not foresee from the store goes to the case manager."""
        st = self._state
        seen = st.events_taken.get(event.session_id, [])
        if taken_before(seen, event):
            return
        st.events_taken = {**st.events_taken, event.session_id: remember(seen, event)}
        report = AttendanceReport(
            case_manager_id=st.case_manager_id, session_id=event.session_id, status=event.status
        )
        try:
            check_attendance(st, report, self._today())
        except RequestRefused as exc:
            await self._open_task(
                EVENT_REFUSED, refusal_detail(event, str(exc)), key_suffix=f"event-{event.ref}"
            )
            return
        self._note_attendance(report, key=f"{st.patient_id}/event/{event.ref}/{event.session_id}")
        if report.status == "missed":
            await self._raise_engagement_alerts()

    def _note_attendance(self, report: AttendanceReport, key: str | None = None) -> None:
        """Into the state now, into the store with the journey's next write."""
        record = apply_attendance(self._state, report)
        self._outbox.sessions_changed([record])
        self._outbox.audit_entry(
            report.case_manager_id,
            "attendance_recorded",
            "treatment",
            {"session_id": report.session_id, "status": report.status},
            key=key,
        )

    @workflow.update
    async def discharge(self, request: DischargeRequest) -> JourneyOutcome:
        apply_discharge(self._state, request)
        self._outbox.audit_entry(
            request.case_manager_id,
            "discharge_requested",
            "treatment",
            {"reason": request.reason.value},
        )
        await workflow.wait_condition(lambda: self._outcome is not None)
        assert self._outcome is not None
        return self._outcome

    @discharge.validator
    def _validate_discharge(self, request: DischargeRequest) -> None:
        check_discharge(self._state, request)

    @workflow.update
    def review_progress(self, review: ProgressReview) -> str:
        result = apply_review(self._state, review)
        self._outbox.audit_entry(
            review.case_manager_id,
            "progress_reviewed",
            "treatment",
            {"decision": review.decision, "weeks": review.weeks, "level": review.level},
        )
        if review.decision == "approve_step_down":
            self._resolve_tasks("step_down_decision", review.case_manager_id)
        return result

    @review_progress.validator
    def _validate_review(self, review: ProgressReview) -> None:
        check_review(self._state, review)

    @workflow.update
    async def change_family_consent(self, change: FamilyConsentChange) -> str:
        st = self._state
        cancelled = apply_family_consent(st, change, self._today())
        self._outbox.sessions_changed(cancelled)
        update = workflow.current_update_info()
        await self._store(
            CareOperations.record_consent,
            ConsentRecord(
                key=f"{st.patient_id}/consent/{update.id if update else 'family'}",
                patient_id=st.patient_id,
                kind="family_involvement",
                granted=change.granted,
                recorded_by=change.case_manager_id,
                at=workflow.now(),
            ),
        )
        if change.granted:
            return "family consent given: family sessions from next week's booking"
        return f"family consent withdrawn: {len(cancelled)} family session(s) cancelled"

    @change_family_consent.validator
    def _validate_family_consent(self, change: FamilyConsentChange) -> None:
        check_family_consent(self._state, change)

    @workflow.update
    def report_alumni_attendance(self, report: AlumniAttendance) -> str:
        attended = apply_alumni_attendance(self._state, report)
        self._outbox.audit_entry(
            report.case_manager_id,
            ALUMNI_ATTENDED,
            "treatment",
            {"meeting": report.meeting_id},
        )
        return f"{attended} alumni meeting(s) attended"

    @report_alumni_attendance.validator
    def _validate_alumni(self, report: AlumniAttendance) -> None:
        check_alumni_attendance(self._state, report, self._today())

    @workflow.update
    def adjust_check_ins(self, adjustment: CheckInAdjustment) -> str:
        st = self._state
        before = check_ins_ahead(st)
        ahead = apply_check_in_adjustment(st, adjustment)
        fresh = call_reminders(st, check_ins_ahead(st))
        kept = {r.key for r in fresh}
        self._outbox.withdrawn += [
            key
            for f in before
            if (key := call_reminder_key(st.patient_id, f.episode, f.call_id)) not in kept
        ]
        self._outbox.reminders += fresh
        self._check_ins_adjusted = True
        self._outbox.audit_entry(
            adjustment.case_manager_id,
            "check_ins_rescheduled",
            "treatment",
            {"reason": adjustment.reason, "days": ",".join(map(str, adjustment.days))},
        )
        self._update_visibility()
        return f"{ahead} check-in(s) ahead, from aftercare day {adjustment.days[0]}"

    @adjust_check_ins.validator
    def _validate_check_ins(self, adjustment: CheckInAdjustment) -> None:
        check_check_in_adjustment(self._state, adjustment, self._today())

    @workflow.update
    async def complete_task(self, done: TaskDone) -> str:
        task = check_task_done(self._state.tasks, done)
        await close_task(self._store, self._state.patient_id, task, done.case_manager_id)
        return f"{task.kind} done"

    @complete_task.validator
    def _validate_task_done(self, done: TaskDone) -> None:
        check_task_done(self._state.tasks, done)

    @workflow.update
    async def refer(self, request: ReferralRequest) -> ReferralRef:
        return await self._start_referral(request.need, request.case_manager_id)

    @refer.validator
    def _validate_referral(self, request: ReferralRequest) -> None:
        check_referral(self._state, request)

    @workflow.signal(name=REFERRAL_CLOSED_SIGNAL)
    def referral_closed(self, closed: ReferralStatus) -> None:
        apply_referral_closed(self._state, closed)

    @workflow.update
    def report_relapse(self, report: RelapseReport) -> str:
        apply_relapse(self._state, report)
        self._outbox.audit_entry(
            report.case_manager_id,
            "relapse_reported",
            "treatment",
            {"phase": self._state.phase.value},
        )
        return f"relapse recorded during {self._state.phase.value}; re-linking to care"

    @report_relapse.validator
    def _validate_relapse(self, report: RelapseReport) -> None:
        check_relapse(self._state, report)

    @workflow.update
    def revise_commitments(self, revision: CommitmentsRevision) -> str | None:
        apply_commitments_revision(self._state, revision)
        self._outbox.audit_entry(
            revision.case_manager_id,
            "commitments_revised",
            "treatment",
            {"commitments": len(revision.commitments)},
        )
        conflict = self._state.plan.conflict
        if conflict is None:
            self._resolve_tasks("schedule_conflict", revision.case_manager_id)
        return None if conflict is None else conflict.reason

    @revise_commitments.validator
    def _validate_revision(self, revision: CommitmentsRevision) -> None:
        check_commitments_revision(self._state, revision)

    @workflow.update
    async def reassign_case_manager(self, change: Reassignment) -> str:
        """A supervisor's decision: the journey's tasks go to the new case manager from now
        on, and the store moves the patient and their open tasks (one idempotent write)."""
        st = self._state
        previous = apply_reassignment(st, change)
        update = workflow.current_update_info()
        await self._store(
            CareOperations.record_reassignment,
            ReassignmentRecord(
                key=f"{st.patient_id}/reassigned/{update.id if update else st.case_manager_id}",
                patient_id=st.patient_id,
                case_manager_id=st.case_manager_id,
                previous=previous,
                by=change.case_manager_id,
                at=workflow.now(),
            ),
        )
        self._update_visibility()
        return f"case manager now {st.case_manager_id} (was {previous})"

    @reassign_case_manager.validator
    def _validate_reassignment(self, change: Reassignment) -> None:
        check_reassignment(self._state, change)
