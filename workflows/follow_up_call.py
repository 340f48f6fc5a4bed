"""One aftercare check-in: a call, retried over days, ending reached / unreachable /
declined. A child of the journey with a predictable ID, so operators can find it.

An attempt places the call through the provider, then waits for the provider's word on it
(the `call_outcome` update, which a webhook delivers; an in-process provider gives it with
the placing) for the plan's callback wait, and counts silence as unreachable.

On the time-skipping test server, a wait with nothing else in flight lets the clock jump
to its end before a real-time callback arrives: tests that take callbacks from the HTTP
provider step the clock by hand (auto skipping off) and let the callback arrive before
stepping past the wait; the in-process provider's word is there before the wait starts."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.care_operations import NON_RETRYABLE_UNKNOWN_PATIENT, CareOperations
    from activities.records import CallOutcomeRecord, CallResult, FollowUpCallRequest
    from clinical.aftercare import CallOutcome, CallReport, FollowUpCallPlan, FollowUpResult
    from clinical.reminders import Reminder
    from workflows import patches
    from workflows.policies import STORE_RETRY, STORE_TIMEOUT, TELEPHONY_RETRY, TELEPHONY_TIMEOUT


@workflow.defn(name="FollowUpCall")
class FollowUpCallWorkflow:
    def __init__(self) -> None:
        self._placed: set[str] = set()
        self._reports: dict[str, CallReport] = {}
        self._given_up: set[str] = set()  # attempts counted unreachable for want of a word

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
            request = FollowUpCallRequest(
                patient_id=plan.patient_id,
                call_id=plan.call_id,
                attempt=attempt,
                due_at=plan.due_at,
                window=plan.window,
                episode=plan.episode,
                instruments=plan.instruments,
                last_attempt=plan.attempts,
                at=workflow.now(),
            )
            # Runs from before callbacks switch at their next attempt.
            if workflow.patched(patches.CALL_OUTCOME_BY_CALLBACK):
                if attempt == 1 and plan.sms_before_retry and plan.window.reminders == "sms":
                    # Decided before the run's first store write (a local activity): the
                    # SDK cannot replay a first `patched` after one (README, patches).
                    workflow.patched(patches.SMS_BEFORE_RETRY)
                result = await self._call(plan, request)
            else:
                result = await workflow.execute_activity_method(
                    CareOperations.place_follow_up_call,
                    request,
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

    async def _call(self, plan: FollowUpCallPlan, request: FollowUpCallRequest) -> CallResult:
        """Place the call, wait for the provider's word, record how the attempt ended."""
        reference = request.key
        self._placed.add(reference)  # before placing: a prompt callback may beat the answer
        try:
            placed = await workflow.execute_activity_method(
                CareOperations.place_call,
                request,
                start_to_close_timeout=TELEPHONY_TIMEOUT,
                retry_policy=TELEPHONY_RETRY,
            )
        except ActivityError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type == NON_RETRYABLE_UNKNOWN_PATIENT:
                raise
            # The provider down through the retries, or refusing the call: no call was made,
            # which for the patient is an attempt that did not reach them.
        else:
            if placed.report is not None:
                self._take(placed.report)
            if reference not in self._reports:
                try:
                    await workflow.wait_condition(
                        lambda: reference in self._reports,
                        timeout=timedelta(seconds=plan.callback_wait_seconds),
                        timeout_summary=f"{plan.call_id}: the provider's word on attempt "
                        f"{request.attempt}",
                    )
                except TimeoutError:
                    pass
        report = self._reports.get(reference)
        if report is None:
            self._given_up.add(reference)
        record = CallOutcomeRecord(
            request=request,
            outcome=CallOutcome.unreachable if report is None else report.outcome,
            check_in=None if report is None else report.check_in,
            heard=report is not None,
        )
        # In the workflow task (a marker, not an activity and a workflow task of its own).
        await workflow.execute_local_activity_method(
            CareOperations.record_call_outcome,
            record,
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
        )
        return CallResult(outcome=record.outcome, check_in=record.check_in)

    def _take(self, report: CallReport) -> str:
        """The provider's word on a call, taken once: a callback again changes nothing."""
        reference = report.reference
        if reference in self._given_up:
            return f"call {reference}: counted unreachable already (no word within the wait)"
        if reference in self._reports:
            return f"call {reference}: {self._reports[reference].outcome.value}, taken before"
        self._reports[reference] = report
        return f"call {reference}: {report.outcome.value}"

    @workflow.update
    def call_outcome(self, report: CallReport) -> str:
        """The provider's word on one of this check-in's calls (a webhook brings it)."""
        return self._take(report)

    @call_outcome.validator
    def _check_call_outcome(self, report: CallReport) -> None:
        if report.reference not in self._placed:
            raise ValueError(f"no call {report.reference} was placed by this check-in")
