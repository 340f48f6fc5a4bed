"""The simulated clinic's case manager: what one does for a patient, through the journey's
own updates as `starter.py` sends them. The tests, the demo and the benchmarks each decide
when the case manager looks (a day of a time-skipping clock, a poll in real time, a clock
step over the clinic's records); what is done on looking is here, once."""

from __future__ import annotations

import contextlib
import itertools
import random
from collections.abc import Iterable, Iterator
from typing import Any

from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from clinical.assessment import DimensionRatings
from clinical.attendance import SessionStatus
from clinical.careplan import weeks_over
from clinical.phases import Phase
from clinical.referrals import (
    ConsentGrant,
    PartnerAnswer,
    PartnerReport,
    ReferralCancel,
    ReferralStage,
    ReferralStatus,
)
from clinical.requests import (
    AttendanceMark,
    AttendanceSheet,
    CommitmentsRevision,
    DischargeReason,
    DischargeRequest,
    ProgressReview,
    RelapseReport,
    TaskDone,
)
from clinical.status import JourneyStatus, awaits_step_down_approval
from clinical.tasks import CLOSED_BY_ACTION
from simulation.patients import Attendance
from workflows.patient_journey import PatientJourneyWorkflow
from workflows.referral import ReferralWorkflow


@contextlib.contextmanager
def moved_on() -> Iterator[None]:
    """An update the workflow refused (it moved on: done meanwhile, discharged first), or
    one sent as the workflow closed (a referral that just expired): the server then has no
    such update ("not found"). Either way there is nothing left to do."""
    try:
        yield
    except WorkflowUpdateFailedError:
        pass
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise


class CaseManager:
    """One patient's case manager. Enters attendance as the patient's `attendance` has it
    (each session once: `entered` maps every session dealt with to its fate, `none` for one
    left to the grace period), approves step-down when the journey asks (once a week), and,
    with an `rng` for its own habits, works the inbox and the patient's referrals."""

    def __init__(self, attendance: Attendance, rng: random.Random | None = None) -> None:
        self.attendance = attendance
        self.rng = rng or random.Random(0)
        self.entered: dict[str, str] = {}
        self.sheets = 0
        self.discharged = False
        self._asked: set[tuple[int, int]] = set()

    @property
    def marked(self) -> int:
        """Sessions marked on a sheet or in an update (not left to the grace period)."""
        return sum(1 for fate in self.entered.values() if fate != "none")

    def marks(self, session_ids: Iterable[str]) -> list[AttendanceMark]:
        """The marks for these sessions, in the order given, as the patient attended."""
        marks = []
        for session_id in session_ids:
            fate = self.attendance(len(self.entered) + 1)
            self.entered[session_id] = fate
            if fate != "none":
                marks.append(AttendanceMark(session_id=session_id, status=fate))
        return marks

    def weeks_over(self, status: JourneyStatus) -> list[list[str]]:
        """The sessions of each treatment week whose sessions have all happened and are not
        entered yet (a cancelled session is never marked)."""
        pending = [
            s
            for s in status.sessions
            if s.session_id not in self.entered and s.status != SessionStatus.cancelled
        ]
        return [[s.session_id for s in week] for week in weeks_over(pending, status.program_day)]

    async def enter_sheet(
        self, handle: WorkflowHandle[Any, Any], case_manager_id: str, session_ids: list[str]
    ) -> None:
        """One treatment week's sign-in sheet, in one request (none when the whole week is
        left to the grace period)."""
        marks = self.marks(session_ids)
        if not marks:
            return
        self.sheets += 1
        await handle.execute_update(
            PatientJourneyWorkflow.record_attendance_sheet,
            AttendanceSheet(case_manager_id=case_manager_id, marks=marks),
        )

    async def enter_weeks_over(
        self, handle: WorkflowHandle[Any, Any], status: JourneyStatus
    ) -> None:
        for week in self.weeks_over(status):
            await self.enter_sheet(handle, status.case_manager_id, week)

    async def approve_step_down(
        self, handle: WorkflowHandle[Any, Any], status: JourneyStatus
    ) -> None:
        """Approves step-down when the intensive phase reaches its planned end, once a week:
        while the criteria are not met, the journey extends a week and asks again."""
        if not awaits_step_down_approval(status) or (status.episode, status.week) in self._asked:
            return
        self._asked.add((status.episode, status.week))
        with moved_on():
            await handle.execute_update(
                PatientJourneyWorkflow.review_progress,
                ProgressReview(
                    case_manager_id=status.case_manager_id, decision="approve_step_down"
                ),
            )

    def gone(self, after_missed: int) -> bool:
        """Whether the patient, not yet discharged, has missed the last `after_missed`
        sessions entered (a check that starts no request: a simulation asks it of every
        patient in treatment every simulated day)."""
        if self.discharged or len(self.entered) < after_missed:
            return False
        last = list(itertools.islice(reversed(self.entered.values()), after_missed))
        return all(f == "missed" for f in last)

    async def discharge_if_gone(
        self, handle: WorkflowHandle[Any, Any], case_manager_id: str, after_missed: int
    ) -> None:
        """A patient who has missed `after_missed` sessions in a row has stopped coming: the
        case manager discharges them as withdrawn."""
        if self.gone(after_missed):
            self.discharged = True
            with moved_on():  # it ended meanwhile
                await handle.execute_update(
                    PatientJourneyWorkflow.discharge,
                    DischargeRequest(
                        case_manager_id=case_manager_id, reason=DischargeReason.withdrew
                    ),
                )

    async def report_relapse(self, handle: WorkflowHandle[Any, Any], status: JourneyStatus) -> None:
        """A relapse in the third week of the first intensive phase (a higher relapse
        rating than at intake)."""
        if (status.episode, status.phase, status.week) != (1, Phase.intensive, 3):
            return
        with moved_on():  # e.g. a discharge came first
            await handle.execute_update(
                PatientJourneyWorkflow.report_relapse,
                RelapseReport(
                    case_manager_id=status.case_manager_id,
                    ratings=DimensionRatings(
                        withdrawal=1,
                        biomedical=0,
                        emotional=2,
                        readiness=2,
                        relapse=3,
                        environment=2,
                    ),
                ),
            )

    async def resolve_schedule_conflict(
        self, handle: WorkflowHandle[Any, Any], status: JourneyStatus
    ) -> None:
        """What a case manager does with a schedule conflict: finds the patient some room
        (here, by dropping commitments one at a time, childcare first)."""
        if not status.schedule_conflict:
            return
        commitments = sorted(status.commitments, key=lambda c: c.kind != "childcare")
        with moved_on():  # resolved meanwhile
            await handle.execute_update(
                PatientJourneyWorkflow.revise_commitments,
                CommitmentsRevision(
                    case_manager_id=status.case_manager_id, commitments=tuple(commitments[1:])
                ),
            )

    async def work_the_inbox(self, handle: WorkflowHandle[Any, Any], status: JourneyStatus) -> None:
        """Most follow-ups are dealt with within a few days."""
        for task in status.open_tasks:
            if task.kind not in CLOSED_BY_ACTION and self.rng.random() < 0.3:
                await complete(handle, task.key, status.case_manager_id)

    async def follow_referrals(self, client: Client, status: JourneyStatus) -> None:
        for referral in status.referrals:
            if referral.outcome is None:
                await self.close_the_loop(client, referral.workflow_id, status.case_manager_id)

    async def close_the_loop(self, client: Client, workflow_id: str, case_manager_id: str) -> None:
        """A referral's other parties: the patient consents when asked (most do, some
        decline and the case manager cancels), and the partner answers within days (or
        stays silent, and the service levels run)."""
        rng = self.rng
        referral = client.get_workflow_handle(workflow_id)
        try:
            status: ReferralStatus = await referral.query(ReferralWorkflow.status)
        except RPCError as exc:
            # The journey lists a referral as it starts the referral's workflow; on a busy
            # server the start lands a moment later. Look again next time.
            if exc.status == RPCStatusCode.NOT_FOUND:
                return
            raise
        with moved_on():  # the referral moved on
            if status.stage == ReferralStage.awaiting_consent:
                if rng.random() < 0.8:
                    await referral.execute_update(
                        ReferralWorkflow.record_consent,
                        ConsentGrant(case_manager_id=case_manager_id),
                    )
                else:
                    await referral.execute_update(
                        ReferralWorkflow.cancel,
                        ReferralCancel(case_manager_id=case_manager_id, reason="patient_declined"),
                    )
            elif (
                status.stage in (ReferralStage.sent, ReferralStage.accepted) and rng.random() < 0.1
            ):
                answer = {
                    ReferralStage.sent: PartnerAnswer.accepted
                    if rng.random() < 0.85
                    else PartnerAnswer.declined,
                    ReferralStage.accepted: PartnerAnswer.completed,
                }[status.stage]
                await referral.execute_update(
                    ReferralWorkflow.partner_response,
                    PartnerReport(answer=answer, reported_by="partner-portal"),
                )
            for task in status.open_tasks:
                if task.kind != "consent_needed" and rng.random() < 0.3:
                    await complete(referral, task.key, case_manager_id)


async def complete(handle: WorkflowHandle[Any, Any], task_key: str, case_manager_id: str) -> None:
    """Mark a task done, as `starter.py done` does."""
    with moved_on():  # done meanwhile, or closed
        await handle.execute_update(
            "complete_task", TaskDone(case_manager_id=case_manager_id, task_key=task_key)
        )
