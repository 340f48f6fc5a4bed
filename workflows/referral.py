"""One referral to a partner service: a loop that must close, or someone must be told.

A workflow of its own with a predictable ID (`journey-<patient>-REF-<need>`), started by the
journey through an activity because it outlives the journey's runs (earlier journeys started
it as an abandoned child). It records the request, sends it only
with the patient's consent to that disclosure (asking the case manager for consent when it
is missing), then waits for the partner's answer under the program's service levels:
reminder, stalled task, follow-up task, expiry. It ends with a recorded outcome and tells the
journey."""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.care_operations import CONSENT_MISSING, CareOperations
    from activities.records import (
        CaseManagerTask,
        ConsentRecord,
        ReferralClosing,
        ReferralDispatch,
        ReferralRecord,
        ReferralReminder,
    )
    from activities.referral_launch import CANCEL_UPDATE, REFERRAL_WORKFLOW
    from clinical.actors import ENGINE
    from clinical.inbound import (
        EVENT_REFUSED,
        PartnerAnswerEvent,
        refusal_detail,
        remember,
        taken_before,
    )
    from clinical.referrals import (
        ConsentGrant,
        PartnerReport,
        ReferralCancel,
        ReferralInput,
        ReferralOutcome,
        ReferralRefused,
        ReferralStage,
        ReferralState,
        ReferralStatus,
        apply_partner_report,
        check_cancel,
        check_consent_grant,
        check_partner_report,
        close,
        consent_kind,
        next_due,
    )
    from clinical.requests import TaskDone
    from clinical.tasks import JourneyTask, TaskKind, check_task_done
    from workflows.case_manager_tasks import close_task, open_task
    from workflows.outbox import StoreCalls
    from workflows.policies import PARTNER_RETRY, PARTNER_TIMEOUT

REFERRAL_CLOSED_SIGNAL = "referral_closed"


@workflow.defn(name=REFERRAL_WORKFLOW)
class ReferralWorkflow:
    @workflow.init
    def __init__(self, referral: ReferralInput) -> None:
        self._input = referral
        self._state = ReferralState()
        self._consent_by: str | None = None
        self._changed = False
        self._store = StoreCalls(in_task=False)

    @workflow.run
    async def run(self, referral: ReferralInput) -> ReferralStatus:
        st = self._state
        await self._store(
            CareOperations.record_referral,
            ReferralRecord(
                key=self._key,
                referral_id=referral.referral_id,
                workflow_id=workflow.info().workflow_id,
                patient_id=referral.patient_id,
                case_manager_id=referral.case_manager_id,
                need=referral.need.value,
                requested_by=referral.requested_by,
                at=workflow.now(),
            ),
        )
        while st.stage != ReferralStage.closed and not await self._sent():
            await workflow.wait_condition(
                lambda: self._consent_by is not None or st.stage == ReferralStage.closed
            )
        while st.stage != ReferralStage.closed:
            await self._wait_for_partner()
        await workflow.wait_condition(workflow.all_handlers_finished)
        for task in st.case_manager_tasks:
            # Nothing left to do for a closed referral, but a partner's event it could not
            # take is still for the case manager to check.
            if task.is_open and task.kind != EVENT_REFUSED:
                await self._close_task(task, st.closed_by or ENGINE)
        await self._store(
            CareOperations.close_referral,
            ReferralClosing(
                key=self._key,
                patient_id=referral.patient_id,
                referral_id=referral.referral_id,
                outcome=str(st.outcome),
                by=st.closed_by or ENGINE,
                at=workflow.now(),
            ),
        )
        await self._tell_journey()
        return self.status()

    # --- steps -------------------------------------------------------------------------

    async def _sent(self) -> bool:
        """Send the request; False (with a consent task) when consent is missing."""
        r, st = self._input, self._state
        if self._consent_by is not None:
            await self._store(
                CareOperations.record_consent,
                ConsentRecord(
                    key=f"{self._key}/consent",
                    patient_id=r.patient_id,
                    kind=consent_kind(r.need),
                    granted=True,
                    recorded_by=self._consent_by,
                    at=workflow.now(),
                ),
            )
            for task in st.case_manager_tasks:
                if task.kind == "consent_needed" and task.is_open:
                    await self._close_task(task, self._consent_by)
            self._consent_by = None
        try:
            await workflow.execute_activity_method(
                CareOperations.send_referral,
                ReferralDispatch(
                    key=self._key,
                    patient_id=r.patient_id,
                    need=r.need.value,
                    consent_kind=consent_kind(r.need),
                    at=workflow.now(),
                ),
                start_to_close_timeout=PARTNER_TIMEOUT,
                retry_policy=PARTNER_RETRY,
            )
        except ActivityError as err:
            cause = err.cause
            if not (isinstance(cause, ApplicationError) and cause.type == CONSENT_MISSING):
                raise
            if st.stage != ReferralStage.awaiting_consent:
                st.stage = ReferralStage.awaiting_consent
                await self._task(
                    "consent_needed",
                    f"{r.need.value} referral needs the patient's consent to disclose to the "
                    "partner: record it (or cancel the referral)",
                )
            return False
        st.stage, st.sent_day = ReferralStage.sent, self._day()
        return True

    async def _wait_for_partner(self) -> None:
        r, st = self._input, self._state
        due = next_due(st, r.service_levels)
        assert due is not None
        what, day = due
        self._changed = False
        if r.clock is None:
            seconds = max(0.0, (day - self._day()) * r.seconds_per_day)
        else:
            seconds = max(0.0, (r.clock.instant(day) - workflow.now()).total_seconds())
        try:
            await workflow.wait_condition(
                lambda: self._changed,
                timeout=timedelta(seconds=seconds),
                timeout_summary=f"referral {what}",
            )
            return  # an answer or a cancellation: look again
        except TimeoutError:
            pass
        if what == "reminder":
            st.reminders += 1
            await self._store(
                CareOperations.remind_partner,
                ReferralReminder(
                    key=self._key, patient_id=r.patient_id, need=r.need.value, number=st.reminders
                ),
                retry=PARTNER_RETRY,
            )
        elif what == "stalled_task":
            await self._task(
                "referral_stalled",
                f"{r.need.value} partner has not answered the referral, even after a reminder",
            )
        elif what == "follow_up_task":
            await self._task(
                "referral_follow_up",
                f"{r.need.value} partner accepted the referral but has not reported it completed",
            )
        else:
            close(st, ReferralOutcome.expired, ENGINE)

    async def _task(self, kind: TaskKind, detail: str, suffix: str = "") -> None:
        r = self._input
        task = CaseManagerTask(
            key=f"{self._key}/task/{kind}{suffix}",
            patient_id=r.patient_id,
            case_manager_id=r.case_manager_id,
            kind=kind,
            detail=detail,
            workflow_id=workflow.info().workflow_id,
            due_at=self._due_at(kind),
        )
        await open_task(self._store, self._state.case_manager_tasks, task)

    async def _close_task(self, task: JourneyTask, by: str) -> None:
        await close_task(self._store, self._input.patient_id, task, by)

    async def _tell_journey(self) -> None:
        journey = workflow.get_external_workflow_handle(self._input.journey_workflow_id)
        try:
            await journey.signal(REFERRAL_CLOSED_SIGNAL, self.status())
        except Exception:  # the journey may have ended; the store has the outcome
            workflow.logger.info("journey not told of the referral's outcome (it has ended)")

    @property
    def _key(self) -> str:
        return f"{self._input.patient_id}/{self._input.referral_id}"

    def _due_at(self, kind: TaskKind) -> datetime:
        """When a task opened now is due: that many of the site's wall-clock days on."""
        r, now = self._input, workflow.now()
        if r.clock is None:
            return r.tasks.due_at(kind, now, r.seconds_per_day)
        return r.clock.instant(r.clock.day(now) + r.tasks.days_for(kind))

    def _day(self) -> float:
        """Today as a program day: the journey's (days since the referral began for a
        referral from before)."""
        if self._input.clock is not None:
            return self._input.clock.day(workflow.now())
        started = workflow.info().start_time
        elapsed = (workflow.now() - started).total_seconds()
        return elapsed / self._input.seconds_per_day

    # --- messages ------------------------------------------------------------------------

    @workflow.update
    def partner_response(self, report: PartnerReport) -> ReferralStatus:
        apply_partner_report(self._state, report, self._day())
        self._changed = True
        return self.status()

    @partner_response.validator
    def _validate_response(self, report: PartnerReport) -> None:
        check_partner_report(self._state, report)

    @workflow.signal
    async def partner_event(self, event: PartnerAnswerEvent) -> None:
        """A partner portal's answer, acknowledged to the portal once the server stored
        this signal: applied once per event ID, under the rule a case manager's report of
        it meets; a refusal the front door could not foresee goes to the case manager."""
        st = self._state
        if taken_before(st.events_taken, event):
            return
        st.events_taken = remember(st.events_taken, event)
        report = PartnerReport(answer=event.answer, reported_by=f"webhook:{event.sender}")
        try:
            check_partner_report(st, report)
        except ReferralRefused as exc:
            await self._task(EVENT_REFUSED, refusal_detail(event, str(exc)), f"/{event.ref}")
            return
        apply_partner_report(st, report, self._day())
        self._changed = True

    @workflow.update
    def record_consent(self, grant: ConsentGrant) -> ReferralStatus:
        self._consent_by = grant.case_manager_id
        return self.status()

    @record_consent.validator
    def _validate_consent(self, grant: ConsentGrant) -> None:
        check_consent_grant(self._state)
        if self._consent_by is not None:
            raise ReferralRefused("consent is already being recorded")

    @workflow.update(name=CANCEL_UPDATE)
    def cancel(self, request: ReferralCancel) -> ReferralStatus:
        close(self._state, ReferralOutcome.cancelled, request.case_manager_id)
        self._changed = True
        return self.status()

    @cancel.validator
    def _validate_cancel(self, request: ReferralCancel) -> None:
        check_cancel(self._state)

    @workflow.update
    async def complete_task(self, done: TaskDone) -> str:
        task = check_task_done(self._state.case_manager_tasks, done)
        await self._close_task(task, done.case_manager_id)
        if task.kind == "consent_needed":
            # Done means the patient consented: the referral records it and is sent.
            self._consent_by = done.case_manager_id
            return "consent recorded; the referral will be sent"
        return f"{task.kind} done"

    @complete_task.validator
    def _validate_task_done(self, done: TaskDone) -> None:
        task = check_task_done(self._state.case_manager_tasks, done)
        if task.kind == "consent_needed":
            check_consent_grant(self._state)
            if self._consent_by is not None:
                raise ReferralRefused("consent is already being recorded")

    @workflow.query
    def status(self) -> ReferralStatus:
        st, r = self._state, self._input
        due = next_due(st, r.service_levels)
        return ReferralStatus(
            referral_id=r.referral_id,
            need=r.need,
            stage=st.stage,
            outcome=st.outcome,
            reminders=st.reminders,
            no_shows=st.no_shows,
            tasks=list(st.tasks),
            next_due=None if due is None else due[0],
            next_due_day=None if due is None else due[1],
            open_tasks=[t for t in st.case_manager_tasks if t.is_open],
        )
