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

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.care_operations import CareOperations
    from activities.records import IntakeRecord, SessionBooking
    from clinical.actors import ENGINE
    from clinical.aftercare import (
        CHECK_IN_CONCLUDED,
        CallOutcome,
        CallReport,
        FollowUp,
        FollowUpCallPlan,
        FollowUpResult,
        check_in_concluded_key,
    )
    from clinical.alumni import alumni_invitations
    from clinical.assessment import Enrolment
    from clinical.attendance import SessionRecord, cancel_from
    from clinical.careplan import CarePlan, week_sessions
    from clinical.check_ins import (
        begin_aftercare,
        postpone_check_in,
        record_check_in,
        unreachable_in_a_row,
    )
    from clinical.clock import first_monday_after
    from clinical.closures import split_closed
    from clinical.instruments import Finding
    from clinical.journey import JourneyInput, JourneyOutcome, Relapse, start_journey
    from clinical.phases import Phase
    from clinical.placement import PlacementRefused
    from clinical.reminders import call_reminders, session_reminders
    from clinical.sites import ClosureCalendar
    from clinical.tasks import TaskKind
    from clinical.treatment import (
        relapse_found_by_call,
        relink,
        step_down_blocker,
        with_intensive_weeks,
    )
    from workflows import patches
    from workflows.check_in_call import CheckInCall
    from workflows.follow_up_call import FollowUpCallWorkflow
    from workflows.journey_requests import JourneyRequests
    from workflows.outbox import Outbox, StoreCalls
    from workflows.policies import PROGRAM_LOAD_RETRY, PROGRAM_LOAD_TIMEOUT
    from workflows.search_attributes import SearchAttributes


# A value no calendar can hold (a protocol or clock past its ranges) fails the journey where
# operators see it, instead of failing its workflow task forever.
@workflow.defn(name="PatientJourney", failure_exception_types=[OverflowError])
class PatientJourneyWorkflow(JourneyRequests):
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
        self._check_ins_adjusted = False
        self._phase_boundary = False
        self._outcome = None
        self._search_attributes = SearchAttributes()
        # Runs begun from here on write to the store inside the workflow task (local
        # activities): no activity task and no extra workflow task per write. Decided once,
        # first thing in the run, because temporalio 1.35 cannot replay a `patched` call
        # that follows a local activity whose marker landed in an earlier workflow task.
        self._writes_in_task = workflow.patched(patches.STORE_WRITES_IN_TASK)
        # Later changes, decided here for the same reason (see `_since`).
        self._ends_referrals = workflow.patched(patches.END_REFERRALS)
        self._referrals_on_site_clock = workflow.patched(patches.REFERRALS_ON_SITE_CLOCK)
        self._group_tracks = workflow.patched(patches.GROUP_TRACKS)
        self._support_surveys = workflow.patched(patches.SUPPORT_SURVEYS)
        self._no_fit_task = workflow.patched(patches.GROUP_NO_FIT_TASK)
        self._counsellors = workflow.patched(patches.COUNSELLOR_CALENDARS)
        self._counsellors_follow_closures = workflow.patched(patches.COUNSELLORS_FOLLOW_CLOSURES)
        # Check-in calls inside the journey's own run, not a FollowUpCall child each (the
        # child's workflow tasks and the server's work for a workflow of its own saved).
        self._calls_itself = workflow.patched(patches.CHECK_IN_IN_JOURNEY)
        self._calls = CheckInCall()
        self._store = StoreCalls(in_task=self._writes_in_task)
        self._outbox = Outbox(self._state.patient_id, self._store)

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
        if self._uses_tracks() and st.plan.phases:
            await self._take_group_seat(st.plan.phases[0])
            await self._await_group_seat()
            if self._interrupted():
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
        self._plan_on_tracks()
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
                await self._book(booking.model_copy(update={"events": self._outbox.take()}))
            else:
                await asyncio.gather(self._book(booking), self._outbox.flush())
            await self._book_counsellors(specs)
            if short_by:
                await self._open_make_up_task(short_by)
            self._update_visibility()
            return
        phases = st.plan.phases
        position = phases.index(st.phase)
        if position + 1 < len(phases):
            if phases[position + 1] == Phase.step_down:
                await self._send_survey("step_down")
            if phases[position + 1] == Phase.step_down and self._uses_tracks():
                # Step-down frees the intensive seat for those waiting and moves the
                # patient to a step-down track.
                await self._leave_groups()
                await self._take_group_seat(Phase.step_down)
                self._plan_on_tracks()
            await self._outbox.flush()
            await self._enter_phase(
                phases[position + 1], monday, f"completed {weeks} weeks of {st.phase.value}"
            )
            return
        calls = begin_aftercare(st, monday)
        # Journeys that reached aftercare before call reminders existed had none queued.
        if self._since(patches.CALL_REMINDERS):
            self._outbox.reminders += call_reminders(st, calls)
        # Likewise for alumni and peer-support invitations.
        if self._since(patches.ALUMNI_INVITATIONS):
            self._outbox.reminders += alumni_invitations(st)
        await self._leave_groups()
        await self._outbox.flush()
        await self._enter_phase(Phase.aftercare, monday, "treatment phases completed")

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
        record_check_in(st, due, result)
        if not self._writes_in_task:  # the check-in's last call records its conclusion now
            self._outbox.audit_entry(
                ENGINE,
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
        await self._send_aftercare_survey()
        await self._outbox.flush()
        self._update_visibility()

    async def _act_on_findings(self, due: FollowUp, findings: list[Finding]) -> None:
        """Use re-links the patient to care; self-harm, risk and weak protective factors go
        to the case manager (self-harm the same day)."""
        st = self._state
        for finding in findings:
            if finding.kind == "relapse":
                st.relapse = relapse_found_by_call(st)
                continue
            kind: TaskKind = (
                "clinical_follow_up" if finding.kind == "self_harm" else "aftercare_support"
            )
            await self._open_task(
                kind,
                f"check-in {due.call_id}: {finding.detail}",
                key_suffix=f"E{st.episode}-{due.call_id}-{finding.kind}",
            )

    async def _check_in(self, due: FollowUp) -> FollowUpResult | None:
        st = self._state
        aftercare = st.protocol.aftercare
        plan = FollowUpCallPlan(
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
            callback_wait_seconds=aftercare.callback_wait_minutes * 60,
        )
        call: asyncio.Future[FollowUpResult]
        if self._calls_itself:
            call = asyncio.ensure_future(self._calls.run(plan))
        else:
            call = await workflow.start_child_workflow(
                FollowUpCallWorkflow.run,
                plan,
                id=f"{workflow.info().workflow_id}-E{st.episode}-{due.call_id}",
                parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
            )
        await workflow.wait_condition(lambda: call.done() or self._interrupted())
        if not call.done():
            call.cancel()  # its timer, or the activity or wait in flight, is cancelled
            return None
        return call.result()

    @workflow.update
    def call_outcome(self, report: CallReport) -> str:
        """The provider's word on one of the journey's check-in calls (a webhook brings it;
        calls of journeys from before go to their FollowUpCall child instead)."""
        return self._calls.take(report)

    @call_outcome.validator
    def _check_call_outcome(self, report: CallReport) -> None:
        self._calls.check(report, "journey")

    async def _relink(self, relapse: Relapse) -> None:
        """Relapse: back to intake with the reassessment, as a new treatment episode.
        Intake then escalates, asks for a schedule, or enters the first phase again."""
        st = self._state
        st.sessions, cancelled = cancel_from(st.sessions, self._today())
        self._outbox.sessions_changed(cancelled)
        self._close_out()
        self._withdraw_call_reminders()  # the check-ins ahead are dropped
        await self._outbox.flush()
        relink(st, relapse)
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
            if not self._outbox.pending():
                break
            await self._outbox.flush()
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
