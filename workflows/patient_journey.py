"""One durable workflow per patient: intake → intensive → step-down → aftercare → completed,
with exits (discharged, withdrawn, escalated, lost to contact).

The workflow only sequences: clinical rules are pure functions in `clinical`, side effects
are activities. It wakes once a week in treatment (close out the past week's attendance,
book the coming week in one activity) and once per check-in in aftercare, and continues as
new at every phase boundary so each run's history stays small."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.care_operations import CareOperations
    from activities.records import (
        AuditEntry,
        CareEvents,
        CaseManagerTask,
        ConsentRecord,
        IntakeRecord,
        PhaseChangeRecord,
        ReferralLaunch,
        ReferralsEnd,
        SessionBooking,
        TaskCompletion,
        TaskResolution,
    )
    from activities.referral_launch import ReferralLauncher
    from clinical.aftercare import (
        CHECK_IN_CONCLUDED,
        CallOutcome,
        FollowUp,
        FollowUpCallPlan,
        FollowUpResult,
        check_in_concluded_key,
        follow_up_schedule,
    )
    from clinical.alumni import alumni_invitations, alumni_meetings, check_alumni_attendance
    from clinical.assessment import Enrolment, SocialNeed
    from clinical.attendance import (
        AttendanceSummary,
        SessionRecord,
        cancel_from,
        close_out,
    )
    from clinical.careplan import (
        CarePlan,
        treatment_week_id,
        treatment_week_of,
        week_sessions,
    )
    from clinical.check_ins import (
        apply_check_in_adjustment,
        check_check_in_adjustment,
        check_ins_ahead,
        postpone_check_in,
        unreachable_in_a_row,
    )
    from clinical.clock import first_monday_after
    from clinical.closures import (
        MAKE_UP_TASK,
        MakeUp,
        apply_closure,
        check_closure,
        make_up,
        split_closed,
    )
    from clinical.engagement import engagement_alerts
    from clinical.instruments import Finding
    from clinical.journey import (
        JourneyInput,
        JourneyOutcome,
        PhaseChange,
        ReferralRef,
        Relapse,
        reassess,
        start_journey,
    )
    from clinical.phases import Phase
    from clinical.placement import PlacementRefused
    from clinical.referrals import (
        ReferralInput,
        ReferralStatus,
        check_referral,
        new_referral,
        referral_opened,
    )
    from clinical.reminders import (
        Reminder,
        alumni_invitation_key,
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
        ReferralRequest,
        RelapseReport,
        TaskDone,
    )
    from clinical.sites import Closure, ClosureCalendar
    from clinical.status import JourneyStatus, current_level, next_contact_day, status_of
    from clinical.tasks import JourneyTask, check_task_done
    from clinical.treatment import (
        apply_attendance,
        apply_commitments_revision,
        apply_family_consent,
        apply_review,
        check_attendance,
        check_attendance_sheet,
        check_commitments_revision,
        check_discharge,
        check_family_consent,
        check_relapse,
        check_review,
        relapse_found_by_call,
        step_down_blocker,
        with_intensive_weeks,
    )
    from infra import visibility
    from workflows import patches
    from workflows.follow_up_call import FollowUpCallWorkflow
    from workflows.policies import (
        PROGRAM_LOAD_RETRY,
        PROGRAM_LOAD_TIMEOUT,
        STORE_RETRY,
        STORE_TIMEOUT,
    )
    from workflows.referral import REFERRAL_CLOSED_SIGNAL, ReferralWorkflow


_In = TypeVar("_In")
_Out = TypeVar("_Out")

ENGINE = "engine"
"""The actor of what the journey does by itself (closing tasks whose cause is gone)."""


# A value no calendar can hold (a protocol or clock past its ranges) fails the journey where
# operators see it, instead of failing its workflow task forever.
@workflow.defn(name="PatientJourney", failure_exception_types=[OverflowError])
class PatientJourneyWorkflow:
    @workflow.init
    def __init__(self, journey: JourneyInput) -> None:
        if journey.state is not None:
            self._state = journey.state
        elif journey.enrolment is not None and journey.protocol is not None:
            # The site's clock and closures: journeys enrolled before kept the UTC calendar
            # they started on (their input named no site).
            closures = None
            if journey.site is not None and workflow.patched(patches.CLINIC_TIME):
                closures = ClosureCalendar(site=journey.site, unplanned=journey.closures)
            try:
                self._state = start_journey(
                    journey.enrolment, journey.protocol, workflow.now(), closures
                )
            except PlacementRefused as exc:
                # Starters check this first; a client that did not must not leave a journey
                # retrying its first task forever.
                raise ApplicationError(str(exc), non_retryable=True) from None
        else:
            raise ValueError("a journey starts from an enrolment and a program protocol")
        self._pending_sessions: dict[str, SessionRecord] = {}
        self._pending_audit: list[AuditEntry] = []
        self._pending_resolutions: list[TaskResolution] = []
        self._check_ins_adjusted = False
        self._pending_reminders: list[Reminder] = []
        self._withdrawn_reminders: list[str] = []
        self._visible: dict[str, Any] = {}
        self._phase_boundary = False
        self._outcome: JourneyOutcome | None = None
        # Runs begun from here on write to the store inside the workflow task (local
        # activities): no activity task and no extra workflow task per write. Decided once,
        # first thing in the run, because temporalio 1.35 cannot replay a `patched` call
        # that follows a local activity whose marker landed in an earlier workflow task.
        self._writes_in_task = workflow.patched(patches.STORE_WRITES_IN_TASK)
        # Later changes, decided here for the same reason (see `_since`).
        self._ends_referrals = workflow.patched(patches.END_REFERRALS)

    # --- the journey ---------------------------------------------------------------------

    @workflow.run
    async def run(self, journey: JourneyInput) -> JourneyOutcome:
        st = self._state
        if journey.state is not None:
            await self._refresh_protocol()
        while not st.phase.is_terminal:
            if st.discharge is not None:
                await self._end(st.discharge.reason.outcome, f"discharged: {st.discharge.reason}")
                continue
            if st.relapse is not None:
                await self._relink(st.relapse)
            if st.phase == Phase.intake:
                # Intake runs on into the first week before any continue-as-new (as it
                # always has: recorded journeys depend on that order).
                await self._intake(journey.enrolment)
                if st.phase.is_terminal or self._interrupted():
                    continue
            if st.phase in (Phase.intensive, Phase.step_down):
                await self._treatment_week()
            elif st.phase == Phase.aftercare:
                await self._aftercare_step()
            if (
                not st.phase.is_terminal
                and st.discharge is None
                and (self._phase_boundary or workflow.info().is_continue_as_new_suggested())
            ):
                await self._continue_as_new()
        await workflow.wait_condition(workflow.all_handlers_finished)
        assert self._outcome is not None
        return self._outcome

    async def _intake(self, enrolment: Enrolment | None) -> None:
        st = self._state
        if not st.intake_recorded and enrolment is not None:
            await self._store(
                CareOperations.record_intake,
                IntakeRecord(
                    enrolment=enrolment,
                    placement=st.placement,
                    plan=st.plan,
                    risk=st.risk,
                    at=st.enrolled_at,
                ),
            )
            st.intake_recorded = True
            # Journeys enrolled before referrals existed had none started at intake.
            if not st.referrals and self._since(patches.REFERRALS_AT_INTAKE):
                for need in st.assessment.social_needs:
                    await self._start_referral(need, enrolment.case_manager_id)
        self._update_visibility()
        if st.placement.refers_out:
            await self._open_task(
                "escalation_referral",
                f"placement refers out: {st.placement.explain()}",
                key_suffix=f"E{st.episode}",
            )
            await self._end(Phase.escalated, "needs a higher level of care than this program")
            return
        revision = 0
        while st.plan.conflict is not None:
            revision += 1
            # Captured before the task activity: a revision may arrive while it runs.
            conflicted = st.plan
            await self._open_task(
                "schedule_conflict",
                st.plan.conflict.reason,
                key_suffix=f"E{st.episode}-r{revision}",
            )
            await self._await_new_plan(conflicted)
            if self._interrupted():
                return
        first = st.plan.phases[0]
        start = first_monday_after(self._today(), st.clock.origin_date.weekday())
        await self._enter_phase(first, start, f"placed at level {st.placement.level}")

    async def _await_new_plan(self, seen: CarePlan) -> None:
        await workflow.wait_condition(lambda: self._state.plan is not seen or self._interrupted())

    async def _treatment_week(self) -> None:
        st = self._state
        assert st.phase_start_day is not None
        monday = st.phase_start_day + 7 * st.week
        weeks = st.plan.weeks_in(st.phase)
        label = f"week {st.week + 1} of {st.phase.value}" if st.week < weeks else "phase end"
        if not await self._wake_at(monday, label):
            return
        self._close_out()
        await self._raise_engagement_alerts()
        # A review may have changed the plan while the journey slept.
        weeks = st.plan.weeks_in(st.phase)
        if st.phase == Phase.intensive and st.week >= weeks:
            await self._hold_for_step_down_criteria()
            weeks = st.plan.weeks_in(st.phase)
        if st.week < weeks:
            st.week += 1
            # Journeys booked before family sessions existed go on without them.
            family = st.family_involved and self._since(patches.FAMILY_SESSIONS)
            specs = week_sessions(
                st.plan,
                st.phase,
                st.episode,
                st.week,
                monday,
                st.clock,
                st.protocol,
                family_of=st.assessment if family else None,
            )
            closed: list[SessionRecord] = []
            if st.closures is not None:
                specs, closed = split_closed(specs, st.closures, st.clock)
            st.sessions = [*st.sessions, *(SessionRecord.booked(s) for s in specs), *closed]
            short_by = 0
            if closed:
                make_ups = self._make_up(monday)
                specs, short_by = [*specs, *make_ups.sessions], make_ups.short_by
            booking = SessionBooking(
                patient_id=st.patient_id,
                sessions=specs,
                reminders=session_reminders(st, specs),
                closed=closed,
            )
            if self._since(patches.WEEK_IN_ONE_WRITE):
                # The past week's attendance and the coming week's bookings in one
                # transaction: one activity, one workflow task a week instead of two.
                await self._book(booking.model_copy(update={"events": self._take_pending()}))
            else:
                await asyncio.gather(self._book(booking), self._flush())
            if short_by:
                await self._open_make_up_task(short_by)
            self._update_visibility()
            return
        phases = st.plan.phases
        position = phases.index(st.phase)
        if position + 1 < len(phases):
            await self._flush()
            await self._enter_phase(
                phases[position + 1], monday, f"completed {weeks} weeks of {st.phase.value}"
            )
            return
        st.aftercare_start_day = monday
        calls = follow_up_schedule(
            monday,
            st.assessment.contact_window,
            st.clock,
            st.protocol,
            st.episode,
            closed=st.closed,
        )
        st.follow_ups = [*st.follow_ups, *calls]
        # Journeys that reached aftercare before call reminders existed had none queued.
        if self._since(patches.CALL_REMINDERS):
            self._pending_reminders += call_reminders(st, calls)
        # Likewise for alumni and peer-support invitations.
        if self._since(patches.ALUMNI_INVITATIONS):
            self._pending_reminders += alumni_invitations(st)
        await self._flush()
        await self._enter_phase(Phase.aftercare, monday, "treatment phases completed")

    def _make_up(self, monday: int) -> MakeUp:
        """Make-up sessions for the current week after closures, into the state (the caller
        books them); and how many session days are still short."""
        st = self._state
        assert st.closures is not None
        week_id = treatment_week_id(st.phase, st.episode, st.week)
        found = make_up(
            [s for s in st.sessions if treatment_week_of(s.session_id) == week_id],
            phase=st.phase,
            week_start_day=monday,
            now_day=self._today(),
            calendar=st.closures,
            clock=st.clock,
            protocol=st.protocol,
            assessment=st.assessment,
        )
        st.sessions = [*st.sessions, *(SessionRecord.booked(s) for s in found.sessions)]
        return found

    async def _open_make_up_task(self, short_by: int) -> None:
        st = self._state
        await self._open_task(
            MAKE_UP_TASK,
            f"site closures leave week {st.week} of {st.phase.value} {short_by} session day(s) "
            "short and no free slot fits: arrange a make-up session",
            key_suffix=f"E{st.episode}-{treatment_week_id(st.phase, st.episode, st.week)}",
        )

    async def _aftercare_step(self) -> None:
        st = self._state
        due = next((f for f in st.follow_ups if f.outcome is None), None)
        if due is None:
            assert st.aftercare_start_day is not None
            end = st.aftercare_start_day + st.protocol.aftercare.duration_days
            if await self._wake_at(end, "end of aftercare"):
                self._close_out()
                await self._end(Phase.completed, "aftercare finished")
            return
        woke = await self._wake_at(
            due.day, f"check-in {due.call_id}", or_when=lambda: self._check_ins_adjusted
        )
        if not woke:
            return
        if self._check_ins_adjusted:  # a new schedule: wait for its first check-in instead
            self._check_ins_adjusted = False
            return
        if st.closed(st.clock.local_date(due.day)) is not None:
            postpone_check_in(st, due)  # the site is closed: the next open day, same time
            self._update_visibility()
            return
        # Program changes reach a patient in aftercare at their next check-in (how it is
        # placed, what is asked); the schedule already made stays. Journeys from before
        # kept the protocol of their run.
        if self._since(patches.PROTOCOL_AT_CHECK_IN):
            await self._refresh_protocol()
        result = await self._check_in(due)
        if result is None:  # discharged or relapsed during the call window
            return
        st.follow_ups = [
            f.model_copy(
                update={
                    "outcome": result.outcome,
                    "attempts": result.attempts,
                    "check_in": result.check_in,
                }
            )
            if (f.episode, f.call_id) == (due.episode, due.call_id)
            else f
            for f in st.follow_ups
        ]
        if not self._writes_in_task:  # the check-in's last call records its conclusion now
            self._audit(
                "system",
                CHECK_IN_CONCLUDED,
                "treatment",
                {
                    "call_id": due.call_id,
                    "outcome": result.outcome.value,
                    "attempts": result.attempts,
                },
                key=check_in_concluded_key(st.patient_id, st.episode, due.call_id),
            )
        findings = result.check_in.findings() if result.check_in is not None else []
        # Journeys recorded before instruments were scored acted on days of use alone, and
        # those recorded before re-linkage existed only noted the answer.
        if findings and self._since(patches.CHECK_IN_FINDINGS):
            await self._act_on_findings(due, findings)
        elif (
            result.check_in is not None
            and result.check_in.days_of_use > 0
            and self._since(patches.RELAPSE_FROM_CHECK_IN)
        ):
            st.relapse = relapse_found_by_call(st)
        if result.outcome == CallOutcome.unreachable:
            await self._open_task(
                "unreachable_patient",
                f"aftercare check-in {due.call_id} unreachable after {result.attempts} attempts",
                key_suffix=f"E{st.episode}-{due.call_id}",
            )
            missed = unreachable_in_a_row(st)
            if missed >= st.protocol.aftercare.lost_after_unreachable and self._since(
                patches.LOST_TO_CONTACT
            ):
                await self._end(
                    Phase.lost_to_contact,
                    f"{missed} aftercare check-ins in a row unreachable",
                )
                return
        await self._flush()
        self._update_visibility()

    async def _act_on_findings(self, due: FollowUp, findings: list[Finding]) -> None:
        """Use re-links the patient to care; self-harm, risk and weak protective factors go
        to the case manager (self-harm the same day)."""
        st = self._state
        for finding in findings:
            if finding.kind == "relapse":
                st.relapse = relapse_found_by_call(st)
                continue
            kind = "clinical_follow_up" if finding.kind == "self_harm" else "aftercare_support"
            await self._open_task(
                kind,
                f"check-in {due.call_id}: {finding.detail}",
                key_suffix=f"E{st.episode}-{due.call_id}-{finding.kind}",
            )

    async def _check_in(self, due: FollowUp) -> FollowUpResult | None:
        st = self._state
        aftercare = st.protocol.aftercare
        call = await workflow.start_child_workflow(
            FollowUpCallWorkflow.run,
            FollowUpCallPlan(
                patient_id=st.patient_id,
                call_id=due.call_id,
                due_at=due.due_at,
                window=st.assessment.contact_window,
                attempts=aftercare.call_attempts,
                attempt_spacing_seconds=st.clock.duration(
                    aftercare.attempt_spacing_days
                ).total_seconds(),
                instruments=aftercare.instruments,
                episode=st.episode,
                sms_before_retry=aftercare.sms_before_retry,
            ),
            id=f"{workflow.info().workflow_id}-E{st.episode}-{due.call_id}",
            parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
        )
        await workflow.wait_condition(lambda: call.done() or self._interrupted())
        if not call.done():
            call.cancel()
            return None
        return call.result()

    async def _relink(self, relapse: Relapse) -> None:
        """Relapse: back to intake with the reassessment, as a new treatment episode.
        Intake then escalates, asks for a schedule, or enters the first phase again."""
        st = self._state
        st.sessions, cancelled = cancel_from(st.sessions, self._today())
        self._pending_sessions.update({s.session_id: s for s in cancelled})
        self._close_out()
        self._withdraw_call_reminders()  # the check-ins ahead are dropped
        await self._flush()
        st.relapse = None
        reassess(st, relapse.ratings)
        st.phase = Phase.intake
        await self._record_phase(
            f"relapse ({relapse.source}): reassessed, episode {st.episode}, "
            f"{st.placement.explain()}"
        )
        if relapse.source == "follow_up_call":
            await self._open_task(
                "reassessment",
                "use reported on an aftercare check-in: the patient was re-linked to care; "
                "confirm with a full reassessment",
                key_suffix=f"E{st.episode}",
            )

    def _withdraw_call_reminders(self) -> None:
        """The check-ins and alumni meetings still ahead are off: their reminders and
        invitations are not sent."""
        st = self._state
        ahead = [f for f in st.follow_ups if f.outcome is None]
        # Journeys that queued no call reminders have none to withdraw.
        if ahead and self._since(patches.CALL_REMINDERS):
            self._withdrawn_reminders += [
                call_reminder_key(st.patient_id, f.episode, f.call_id) for f in ahead
            ]
        today = self._today()
        meetings = [m for m, day in alumni_meetings(st) if day > today]
        if meetings and st.phase == Phase.aftercare and self._since(patches.ALUMNI_INVITATIONS):
            self._withdrawn_reminders += [alumni_invitation_key(st.patient_id, m) for m in meetings]

    async def _hold_for_step_down_criteria(self) -> None:
        """At the planned end of the intensive phase, step down only if the protocol's
        criteria hold; otherwise extend a week (up to the program's maximum) and ask the
        case manager to decide."""
        st = self._state
        # Journeys started before step-down criteria existed stepped down on schedule.
        if not self._since(patches.STEP_DOWN_CRITERIA):
            return
        blocker = step_down_blocker(st)
        if blocker is None:
            return
        weeks = st.plan.weeks_in(Phase.intensive)
        if weeks < st.protocol.intensive.max_weeks:
            st.plan = with_intensive_weeks(st.plan, weeks + 1)
            await self._open_task(
                "step_down_decision",
                f"{blocker}; intensive phase extended to {weeks + 1} weeks",
                key_suffix=f"E{st.episode}-W{weeks}",
            )
        else:
            await self._open_task(
                "review",
                f"stepping down at the program's maximum of {weeks} intensive weeks: {blocker}",
                key_suffix=f"E{st.episode}-max-weeks",
            )

    async def _raise_engagement_alerts(self) -> None:
        """Outreach after consecutive misses, a care-plan review when attendance is low."""
        st = self._state
        if st.phase not in (Phase.intensive, Phase.step_down):
            return
        # Journeys started before these rules existed carry on without them.
        if not self._since(patches.ENGAGEMENT_ALERTS):
            return
        today = self._today()
        alerts = engagement_alerts(st.sessions, today, st.protocol.engagement, st.last_review_day)
        for alert in alerts:
            if alert.key in st.alerts_opened:
                continue
            # Marked before the activity: a handler may evaluate the rules meanwhile.
            st.alerts_opened = [*st.alerts_opened, alert.key]
            if alert.kind == "review":
                st.last_review_day = today
            await self._open_task(alert.kind, alert.detail, key_suffix=alert.key)

    # --- phase changes and endings -----------------------------------------------------

    async def _enter_phase(self, phase: Phase, start_day: int, reason: str) -> None:
        st = self._state
        if st.phase == Phase.intensive and phase != Phase.intensive:
            self._resolve_tasks("step_down_decision", ENGINE)  # the decision is made
        st.phase = phase
        st.phase_start_day = start_day
        st.week = 0
        await self._record_phase(reason)
        self._phase_boundary = True

    async def _end(self, outcome: Phase, reason: str) -> None:
        st = self._state
        today = self._today()
        st.sessions, cancelled = cancel_from(st.sessions, today)
        self._pending_sessions.update({s.session_id: s for s in cancelled})
        self._close_out(final=True)
        self._withdraw_call_reminders()
        # Nothing is left to do for an ended journey; journeys that ended before this rule
        # left their tasks open.
        still_open = sorted({t.kind for t in st.tasks if t.is_open})
        if still_open and self._since(patches.CLOSE_TASKS_AT_END):
            for kind in still_open:
                self._resolve_tasks(kind, ENGINE)
        await self._flush()
        await self._end_referrals()
        st.phase = outcome
        await self._record_phase(reason)
        summary = st.summary()
        self._outcome = JourneyOutcome(
            patient_id=st.patient_id,
            outcome=outcome,
            reason=reason,
            attendance=summary,
            follow_ups_reached=sum(1 for f in st.follow_ups if f.outcome == CallOutcome.reached),
            follow_ups_total=len(st.follow_ups),
            ended_at=workflow.now(),
        )

    async def _end_referrals(self) -> None:
        """Nothing the journey started outlives it: open referrals are cancelled (journeys
        from before left them running)."""
        st = self._state
        still_open = [r for r in st.referrals if r.outcome is None]
        if not still_open or not self._ends_referrals:
            return
        await workflow.execute_activity_method(
            ReferralLauncher.end_referral_loops,
            ReferralsEnd(
                patient_id=st.patient_id,
                workflow_ids=[r.workflow_id for r in still_open],
                case_manager_id=st.case_manager_id,
            ),
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
        )
        for ref in still_open:
            ref.outcome = ref.outcome or "cancelled"

    async def _record_phase(self, reason: str) -> None:
        st = self._state
        now = workflow.now()
        st.phase_history = [
            *st.phase_history,
            PhaseChange(phase=st.phase, at=now, day=self._today(), reason=reason),
        ]
        await self._store(
            CareOperations.record_phase_change,
            PhaseChangeRecord(
                key=f"{st.patient_id}/phase/{len(st.phase_history)}-{st.phase.value}",
                patient_id=st.patient_id,
                case_manager_id=st.case_manager_id,
                phase=st.phase.value,
                level=current_level(st),
                risk=st.risk,
                at=now,
                reason=reason,
            ),
        )
        self._update_visibility()

    async def _continue_as_new(self) -> None:
        # Nothing may be lost across the boundary: let running handlers finish and write
        # what they gathered, then continue with no await in between. A discharge handler
        # waits for the journey to end, so a discharge pre-empts the boundary instead.
        st = self._state
        while True:
            await workflow.wait_condition(
                lambda: workflow.all_handlers_finished() or st.discharge is not None
            )
            if st.discharge is not None:
                return
            if not self._writes_pending():
                break
            await self._flush()
        st.runs += 1
        workflow.continue_as_new(JourneyInput(state=st))

    async def _refresh_protocol(self) -> None:
        """A new run picks up the program's current protocol, so protocol changes reach
        patients at their next phase or check-in, never retroactively."""
        st = self._state
        try:
            st.protocol = await self._store(
                CareOperations.load_program,
                st.program_id,
                timeout=PROGRAM_LOAD_TIMEOUT,
                retry=PROGRAM_LOAD_RETRY,
            )
        except ActivityError:
            workflow.logger.warning(
                "program protocol could not be reloaded; keeping the current one",
                extra={"patient_id": st.patient_id, "program_id": st.program_id},
            )

    # --- helpers -------------------------------------------------------------------------

    def _since(self, patch_id: str) -> bool:
        """Whether this run takes a behaviour change made under journeys in flight. Runs that
        write inside the workflow task began after every change named here, so they take
        them all without asking (asking after a store write is the replay hazard above); a
        later change is a new `workflow.patched` beside that first one in `__init__`."""
        return self._writes_in_task or workflow.patched(patch_id)

    async def _store(
        self,
        activity: Callable[[CareOperations, _In], _Out],
        arg: _In,
        timeout: timedelta = STORE_TIMEOUT,
        retry: RetryPolicy = STORE_RETRY,
    ) -> _Out:
        """A call to the care-operations store: a write, idempotent by its key (a retried or
        re-run write changes nothing), or the program read. Inside the workflow task in runs
        that write there (its result in a marker, nothing else), as an activity task in runs
        from before."""
        if self._writes_in_task:
            return await workflow.execute_local_activity_method(
                activity, arg, start_to_close_timeout=timeout, retry_policy=retry
            )
        return await workflow.execute_activity_method(
            activity, arg, start_to_close_timeout=timeout, retry_policy=retry
        )

    def _today(self) -> float:
        return self._state.clock.day(workflow.now())

    async def _wake_at(
        self, day: float, summary: str, or_when: Callable[[], bool] | None = None
    ) -> bool:
        """Sleep until program day `day` (or until `or_when` holds); False if a discharge
        or relapse interrupted."""
        delay = self._state.clock.instant(day) - workflow.now()
        if self._since(patches.WAKE_BY_TIMER_ALWAYS):
            # Whether a timer starts must not hang on now(): after a retried workflow task
            # (a worker killed mid-task) replay can read now() a fraction of a second later
            # than the live task did, and a wake-up that was just ahead becomes just past:
            # the replay would skip a timer the history holds. A wake-up already due waits a
            # millisecond instead.
            delay = max(delay, timedelta(milliseconds=1))
        if delay.total_seconds() > 0:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self._interrupted() or (or_when is not None and or_when()),
                    timeout=delay,
                    timeout_summary=summary,
                )
        return not self._interrupted()

    def _interrupted(self) -> bool:
        return self._state.discharge is not None or self._state.relapse is not None

    def _close_out(self, final: bool = False) -> None:
        st = self._state
        grace = 0.0 if final else st.protocol.attendance.grace_days
        st.sessions, missed = close_out(st.sessions, self._today(), grace)
        self._pending_sessions.update({s.session_id: s for s in missed})

    def _writes_pending(self) -> bool:
        return bool(
            self._pending_sessions
            or self._pending_audit
            or self._pending_resolutions
            or self._pending_reminders
            or self._withdrawn_reminders
        )

    def _take_pending(self) -> CareEvents | None:
        """What was gathered since the last write, handed over to be written (None if
        nothing was)."""
        if not self._writes_pending():
            return None
        events = CareEvents(
            patient_id=self._state.patient_id,
            session_changes=list(self._pending_sessions.values()),
            audit=self._pending_audit,
            tasks_resolved=self._pending_resolutions,
            reminders=self._pending_reminders,
            reminders_withdrawn=self._withdrawn_reminders,
        )
        self._pending_sessions, self._pending_audit = {}, []
        self._pending_resolutions = []
        self._pending_reminders, self._withdrawn_reminders = [], []
        return events

    async def _flush(self) -> None:
        events = self._take_pending()
        if events is None:
            return
        await self._store(CareOperations.record_care_events, events)

    async def _book(self, booking: SessionBooking) -> None:
        await self._store(CareOperations.book_sessions, booking)

    async def _open_task(self, kind: Any, detail: str, key_suffix: str) -> None:
        st = self._state
        key = f"{st.patient_id}/task/{kind}/{key_suffix}"
        await self._store(
            CareOperations.open_case_manager_task,
            CaseManagerTask(
                key=key,
                patient_id=st.patient_id,
                case_manager_id=st.case_manager_id,
                kind=kind,
                detail=detail,
                # On the journey's own clock: due at the same wall-clock time at the site
                # that many program days on, across a daylight-saving change too.
                due_at=st.clock.instant(self._today() + st.protocol.tasks.days_for(kind)),
            ),
        )
        if all(t.key != key for t in st.tasks):
            st.tasks.append(
                JourneyTask(key=key, kind=kind, detail=detail, opened_at=workflow.now())
            )

    async def _start_referral(self, need: SocialNeed, by: str) -> ReferralRef:
        st = self._state
        ref = new_referral(st, need, by)
        referral = ReferralInput(
            referral_id=ref.referral_id,
            patient_id=st.patient_id,
            case_manager_id=st.case_manager_id,
            need=need,
            journey_workflow_id=workflow.info().workflow_id,
            service_levels=st.protocol.referrals,
            seconds_per_day=st.protocol.clock.seconds_per_day,
            requested_by=by,
            tasks=st.protocol.tasks,
        )
        # The referral outlives this run (continue-as-new) and even the journey: a workflow
        # of its own, not a child of a run that will close (see activities/referral_launch).
        if self._since(patches.REFERRALS_OWN_WORKFLOWS):
            await workflow.execute_activity_method(
                ReferralLauncher.start_referral_loop,
                ReferralLaunch(
                    workflow_id=ref.workflow_id,
                    task_queue=workflow.info().task_queue,
                    referral=referral,
                ),
                start_to_close_timeout=STORE_TIMEOUT,
                retry_policy=STORE_RETRY,
            )
        else:
            await workflow.start_child_workflow(
                ReferralWorkflow.run,
                referral,
                id=ref.workflow_id,
                parent_close_policy=ParentClosePolicy.ABANDON,
                static_summary=f"{need.value} referral",
            )
        referral_opened(st, ref)
        return ref

    def _resolve_tasks(self, kind: str, by: str) -> None:
        """Close the case manager's tasks of a kind in the next write."""
        now = workflow.now()
        self._pending_resolutions += [
            TaskResolution(key=key, by=by, at=now) for key in self._state.resolve_tasks(kind, by)
        ]

    def _audit(
        self,
        actor: str,
        action: str,
        purpose: str,
        detail: dict[str, str | int | float | bool | None],
        key: str | None = None,
    ) -> None:
        if key is None:
            update = workflow.current_update_info()
            key = f"{self._state.patient_id}/update/{update.id if update else action}"
        self._pending_audit.append(
            AuditEntry(
                key=key,
                actor=actor,
                action=action,
                purpose=purpose,
                at=workflow.now(),
                detail=detail,
            )
        )

    def _update_visibility(self) -> None:
        """Upsert only the search attributes whose value changed (each upsert is an event)."""
        st = self._state
        due = next_contact_day(st, self._today())
        wanted: dict[str, Any] = {
            visibility.PHASE.name: st.phase.value,
            visibility.CASE_MANAGER.name: st.case_manager_id,
            visibility.SITE.name: st.site_id,
            visibility.PROGRAM.name: st.program_id,
            visibility.RISK.name: st.risk,
            visibility.ENROLLED_AT.name: st.enrolled_at,
            visibility.NEXT_CONTACT_DUE.name: None if due is None else st.clock.instant(due),
            visibility.ATTENDANCE_RATE.name: st.summary().rate,
        }
        keys = {k.name: k for k in visibility.ALL_KEYS}
        updates: list[SearchAttributeUpdate[Any]] = []
        for name, value in wanted.items():
            if name in self._visible and self._visible[name] == value:
                continue
            key = keys[name]
            updates.append(key.value_unset() if value is None else key.value_set(value))
            self._visible[name] = value
        if updates:
            workflow.upsert_search_attributes(updates)

    # --- case managers' messages -------------------------------------------------------

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
        self._pending_sessions.update({s.session_id: s for s in cancelled})
        self._audit(
            closure.announced_by,
            "closure_applied",
            "operations",
            {"date": closure.date.isoformat(), "cancelled": len(cancelled)},
        )
        found = MakeUp(sessions=[], short_by=0)
        if cancelled:
            self._pending_reminders.append(
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
                    events=self._take_pending(),
                )
            )
        else:
            await self._flush()
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

    def _note_attendance(self, report: AttendanceReport, key: str | None = None) -> None:
        """Into the state now, into the store with the journey's next write."""
        record = apply_attendance(self._state, report)
        self._pending_sessions[record.session_id] = record
        self._audit(
            report.case_manager_id,
            "attendance_recorded",
            "treatment",
            {"session_id": report.session_id, "status": report.status},
            key=key,
        )

    @workflow.update
    async def discharge(self, request: DischargeRequest) -> JourneyOutcome:
        self._state.discharge = request
        self._audit(
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
        self._audit(
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
        self._pending_sessions.update({s.session_id: s for s in cancelled})
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
        self._state.alumni_attended.append(report.meeting_id)
        self._audit(
            report.case_manager_id,
            "alumni_meeting_attended",
            "treatment",
            {"meeting": report.meeting_id},
        )
        return f"{len(self._state.alumni_attended)} alumni meeting(s) attended"

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
        self._withdrawn_reminders += [
            key
            for f in before
            if (key := call_reminder_key(st.patient_id, f.episode, f.call_id)) not in kept
        ]
        self._pending_reminders += fresh
        self._check_ins_adjusted = True
        self._audit(
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
        task.resolved_by = done.case_manager_id
        await self._store(
            CareOperations.complete_case_manager_task,
            TaskCompletion(
                key=task.key,
                patient_id=self._state.patient_id,
                kind=task.kind,
                by=done.case_manager_id,
                at=workflow.now(),
            ),
        )
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
        for ref in self._state.referrals:
            if ref.referral_id == closed.referral_id:
                ref.outcome = str(closed.outcome)

    @workflow.update
    def report_relapse(self, report: RelapseReport) -> str:
        self._state.relapse = Relapse(
            reported_by=report.case_manager_id, source="case_manager", ratings=report.ratings
        )
        self._audit(
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
        self._audit(
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
