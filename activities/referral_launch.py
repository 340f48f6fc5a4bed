"""Starting a referral's loop as a workflow of its own.

A referral outlives the journey run that asked for it (the journey continues as new at each
phase) and can outlive the journey itself, so it is not the journey's child: a child whose
parent run has closed is an odd relation, and the time-skipping test server cannot finish
one at all (temporalio/sdk-java#1540). The journey asks this activity instead; the referral
tells the journey when it closes, by signal, as before.

Idempotent: the referral's ID goes into the workflow's memo, so a retried start that finds
its own referral already running (or already closed) does nothing."""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.records import ReferralLaunch, ReferralsEnd
from clinical.referrals import ReferralCancel
from infra.logging import get_logger

log = get_logger("carepath.activities")

REFERRAL_MEMO_KEY = "referral_id"
REFERRAL_WORKFLOW = "Referral"
"""The referral loop's workflow type (workflows.referral defines it under this name): the
activity addresses it by name, so activities never import workflow code."""
CANCEL_UPDATE = "cancel"
NON_RETRYABLE_REFERRAL_OPEN = "ReferralAlreadyOpen"


class ReferralLauncher:
    """The one activity that needs a Temporal client."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def all(self) -> list[object]:
        return [self.start_referral_loop, self.end_referral_loops]

    @activity.defn
    async def end_referral_loops(self, end: ReferralsEnd) -> list[str]:
        """Cancel the referrals a journey leaves open as it ends; those that closed
        meanwhile (or on an earlier attempt of this activity) are left as they are."""
        cancelled = []
        request = ReferralCancel(case_manager_id=end.case_manager_id, reason="journey_ended")
        for workflow_id in end.workflow_ids:
            handle = self.client.get_workflow_handle(workflow_id)
            try:
                await handle.execute_update(CANCEL_UPDATE, request)
            except WorkflowUpdateFailedError:
                continue  # refused: it is closed already
            except RPCError as exc:
                if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
                    continue  # its workflow has finished
                raise
            cancelled.append(workflow_id)
        log.info("referrals_ended", patient_id=end.patient_id, cancelled=len(cancelled))
        return cancelled

    @activity.defn
    async def start_referral_loop(self, launch: ReferralLaunch) -> None:
        if await self._already_started(launch):
            return
        try:
            await self.client.start_workflow(
                REFERRAL_WORKFLOW,
                launch.referral,
                id=launch.workflow_id,
                task_queue=launch.task_queue,
                memo={REFERRAL_MEMO_KEY: launch.referral.referral_id},
                # The same need may be referred again once an earlier loop has closed.
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                static_summary=f"{launch.referral.need.value} referral",
            )
        except WorkflowAlreadyStartedError:
            # Another attempt of this activity won the race, or an earlier loop for the
            # need is still open (the journey refuses that before asking; say so if not).
            if not await self._already_started(launch):
                raise _still_open(launch) from None
            return
        log.info(
            "referral_loop_started",
            patient_id=launch.referral.patient_id,
            referral_id=launch.referral.referral_id,
        )

    async def _already_started(self, launch: ReferralLaunch) -> bool:
        try:
            described = await self.client.get_workflow_handle(launch.workflow_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        started = await described.memo_value(REFERRAL_MEMO_KEY, default=None)
        if started == launch.referral.referral_id:
            return True
        if described.status == WorkflowExecutionStatus.RUNNING:
            raise _still_open(launch)
        return False


def _still_open(launch: ReferralLaunch) -> ApplicationError:
    return ApplicationError(
        f"an earlier {launch.referral.need.value} referral is still open",
        type=NON_RETRYABLE_REFERRAL_OPEN,
        non_retryable=True,
    )
