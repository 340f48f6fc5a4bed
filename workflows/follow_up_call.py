"""One aftercare check-in: a call, retried over days, ending reached / unreachable /
declined. A child of the journey with a predictable ID, so operators can find it."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.care_operations import CareOperations
    from activities.records import FollowUpCallRequest
    from clinical.aftercare import CallOutcome, FollowUpCallPlan, FollowUpResult
    from clinical.reminders import Reminder
    from workflows import patches
    from workflows.policies import STORE_RETRY, STORE_TIMEOUT, TELEPHONY_RETRY, TELEPHONY_TIMEOUT


@workflow.defn(name="FollowUpCall")
class FollowUpCallWorkflow:
    @workflow.run
    async def run(self, plan: FollowUpCallPlan) -> FollowUpResult:
        for attempt in range(1, plan.attempts + 1):
            # A text before the second attempt, if the patient takes texts (journeys that
            # called before texts existed did not send one).
            if (
                attempt == 2
                and plan.sms_before_retry
                and plan.window.reminders == "sms"
                and workflow.patched(patches.SMS_BEFORE_RETRY)
            ):
                await workflow.execute_activity_method(
                    CareOperations.queue_messages,
                    [
                        Reminder(
                            key=f"{plan.patient_id}/sms/E{plan.episode}-{plan.call_id}",
                            patient_id=plan.patient_id,
                            channel="sms",
                            kind="check_in_sms",
                            about=plan.call_id,
                            deliver_at=workflow.now(),
                            body="The clinic tried to call you for your check-in and will "
                            "try again; reply CALL to ask for a call back.",
                        )
                    ],
                    start_to_close_timeout=STORE_TIMEOUT,
                    retry_policy=STORE_RETRY,
                )
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
                    last_attempt=plan.attempts,
                    at=workflow.now(),
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
