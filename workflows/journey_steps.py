"""What a patient's journey does, shared by its run and its case managers' requests:
opening tasks and referrals, make-up sessions, engagement alerts, phase changes and the
journey's end. `PatientJourneyWorkflow` sequences these; its requests (updates) use them."""

from __future__ import annotations

from temporalio import workflow
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.care_operations import CareOperations
    from activities.records import (
        CaseManagerTask,
        PhaseChangeRecord,
        ReferralLaunch,
        ReferralsEnd,
        SessionBooking,
    )
    from activities.referral_launch import ReferralLauncher
    from clinical.actors import ENGINE
    from clinical.aftercare import CallOutcome
    from clinical.alumni import alumni_meetings
    from clinical.assessment import SocialNeed
    from clinical.attendance import SessionRecord, cancel_from, close_out
    from clinical.careplan import treatment_week_id, treatment_week_of
    from clinical.closures import MAKE_UP_TASK, MakeUp, make_up
    from clinical.engagement import engagement_alerts
    from clinical.journey import (
        JourneyOutcome,
        JourneyState,
        ReferralRef,
        enter_phase,
        note_phase_change,
    )
    from clinical.phases import Phase
    from clinical.referrals import ReferralInput, new_referral, referral_opened, referrals_ended
    from clinical.reminders import alumni_invitation_key, call_reminder_key
    from clinical.status import current_level
    from clinical.tasks import TaskKind
    from workflows import patches
    from workflows.case_manager_tasks import open_task
    from workflows.outbox import Outbox, StoreCalls
    from workflows.policies import STORE_RETRY, STORE_TIMEOUT
    from workflows.referral import ReferralWorkflow
    from workflows.search_attributes import SearchAttributes


class JourneySteps:
    """The journey's state and what acts on it; the workflow class sets these up."""

    _state: JourneyState
    _store: StoreCalls
    _outbox: Outbox
    _search_attributes: SearchAttributes
    _writes_in_task: bool
    _ends_referrals: bool
    _referrals_on_site_clock: bool
    _check_ins_adjusted: bool
    _phase_boundary: bool
    _outcome: JourneyOutcome | None

    def _since(self, patch_id: str) -> bool:
        """Whether this run takes a behaviour change made under journeys in flight. Runs that
        write inside the workflow task began after every change named here, so they take
        them all without asking (asking after a store write is the replay hazard noted in
        `PatientJourneyWorkflow.__init__`); a later change is a new `workflow.patched` beside
        that first one there."""
        return self._writes_in_task or workflow.patched(patch_id)

    def _today(self) -> float:
        return self._state.clock.day(workflow.now())

    def _interrupted(self) -> bool:
        return self._state.discharge is not None or self._state.relapse is not None

    def _close_out(self, final: bool = False) -> None:
        st = self._state
        grace = 0.0 if final else st.protocol.attendance.grace_days
        st.sessions, missed = close_out(st.sessions, self._today(), grace)
        self._outbox.sessions_changed(missed)

    def _update_visibility(self) -> None:
        self._search_attributes.show(self._state, self._today())

    async def _book(self, booking: SessionBooking) -> None:
        await self._store(CareOperations.book_sessions, booking)

    async def _open_task(self, kind: TaskKind, detail: str, key_suffix: str) -> None:
        st = self._state
        task = CaseManagerTask(
            key=f"{st.patient_id}/task/{kind}/{key_suffix}",
            patient_id=st.patient_id,
            case_manager_id=st.case_manager_id,
            kind=kind,
            detail=detail,
            # On the journey's own clock: due at the same wall-clock time at the site
            # that many program days on, across a daylight-saving change too.
            due_at=st.clock.instant(self._today() + st.protocol.tasks.days_for(kind)),
        )
        await open_task(self._store, st.tasks, task)

    def _resolve_tasks(self, kind: str, by: str) -> None:
        """Close the case manager's tasks of a kind in the next write."""
        self._outbox.tasks_resolved(self._state.resolve_tasks(kind, by), by)

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
            # One clock: the referral's service levels and task due times are the site's
            # wall-clock days, like the journey's (referrals from before counted real days).
            clock=st.clock if self._referrals_on_site_clock else None,
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

    def _withdraw_call_reminders(self) -> None:
        """The check-ins and alumni meetings still ahead are off: their reminders and
        invitations are not sent."""
        st = self._state
        ahead = [f for f in st.follow_ups if f.outcome is None]
        # Journeys that queued no call reminders have none to withdraw.
        if ahead and self._since(patches.CALL_REMINDERS):
            self._outbox.withdrawn += [
                call_reminder_key(st.patient_id, f.episode, f.call_id) for f in ahead
            ]
        today = self._today()
        meetings = [m for m, day in alumni_meetings(st) if day > today]
        if meetings and st.phase == Phase.aftercare and self._since(patches.ALUMNI_INVITATIONS):
            self._outbox.withdrawn += [alumni_invitation_key(st.patient_id, m) for m in meetings]

    # --- phase changes and endings -----------------------------------------------------

    async def _enter_phase(self, phase: Phase, start_day: int, reason: str) -> None:
        st = self._state
        if st.phase == Phase.intensive and phase != Phase.intensive:
            self._resolve_tasks("step_down_decision", ENGINE)  # the decision is made
        enter_phase(st, phase, start_day)
        await self._record_phase(reason)
        self._phase_boundary = True

    async def _end(self, outcome: Phase, reason: str) -> None:
        st = self._state
        today = self._today()
        st.sessions, cancelled = cancel_from(st.sessions, today)
        self._outbox.sessions_changed(cancelled)
        self._close_out(final=True)
        self._withdraw_call_reminders()
        # Nothing is left to do for an ended journey; journeys that ended before this rule
        # left their tasks open.
        still_open = sorted({t.kind for t in st.tasks if t.is_open})
        if still_open and self._since(patches.CLOSE_TASKS_AT_END):
            for kind in still_open:
                self._resolve_tasks(kind, ENGINE)
        await self._outbox.flush()
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
        referrals_ended(still_open)

    async def _record_phase(self, reason: str) -> None:
        st = self._state
        now = workflow.now()
        note_phase_change(st, now, self._today(), reason)
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
