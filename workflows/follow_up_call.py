"""One aftercare check-in: a call, retried over days, ending reached / unreachable /
declined. A child of the journey with a predictable ID, so operators can find it."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.care_operations import CareOperations
    from activities.records import FollowUpCallRequest
    from clinical.aftercare import CallOutcome, FollowUpCallPlan, FollowUpResult
    from workflows.policies import TELEPHONY_RETRY, TELEPHONY_TIMEOUT


@workflow.defn(name="FollowUpCall")
class FollowUpCallWorkflow:
    @workflow.run
    async def run(self, plan: FollowUpCallPlan) -> FollowUpResult:
        for attempt in range(1, plan.attempts + 1):
            if attempt > 1:
                await workflow.sleep(
                    timedelta(seconds=plan.attempt_spacing_seconds),
                    summary=f"{plan.call_id}: wait before attempt {attempt}",
                )
            result = await workflow.execute_activity_method(
                CareOperations.place_follow_up_call,
                FollowUpCallRequest(
                    patient_id=plan.patient_id,
                    call_id=plan.call_id,
                    attempt=attempt,
                    due_at=plan.due_at,
                    window=plan.window,
                    episode=plan.episode,
                    instruments=plan.instruments,
                ),
                start_to_close_timeout=TELEPHONY_TIMEOUT,
                retry_policy=TELEPHONY_RETRY,
            )
            if result.outcome != CallOutcome.unreachable:
                return FollowUpResult(
                    call_id=plan.call_id,
                    outcome=result.outcome,
                    attempts=attempt,
                    check_in=result.check_in,
                )
        return FollowUpResult(
            call_id=plan.call_id, outcome=CallOutcome.unreachable, attempts=plan.attempts
        )
