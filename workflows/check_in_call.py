"""One aftercare check-in's calls, the one code for both places it runs: inside the
journey (journeys from patch `check-in-in-journey` on) and in a `FollowUpCall` child
workflow (journeys from before). The attempts, the text before a retry, the spacing, the
placing, the wait for the provider's word and the record of each attempt are here; the
workflow that holds a `CheckInCall` only says which of the older patches its run takes and
hands it the provider's word (its `call_outcome` update).

An attempt places the call through the provider, then waits for the provider's word on it
for the plan's callback wait, and counts silence as unreachable."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.care_operations import NON_RETRYABLE_UNKNOWN_PATIENT, CareOperations
    from activities.records import CallOutcomeRecord, CallResult, FollowUpCallRequest
    from clinical.aftercare import CallOutcome, CallReport, FollowUpCallPlan, FollowUpResult
    from clinical.reminders import Reminder
    from workflows.policies import STORE_RETRY, STORE_TIMEOUT, TELEPHONY_RETRY, TELEPHONY_TIMEOUT


def _always(*_: object) -> bool:
    return True


class CheckInCall:
    """A check-in's calls and the provider's word on them. `texts_before_retry()` and
    `by_callback(attempt)` say whether the run takes those patches (a journey's run decides
    its patches first thing; a `FollowUpCall` asks where it always asked)."""

    def __init__(
        self,
        texts_before_retry: Callable[[], bool] = _always,
        by_callback: Callable[[FollowUpCallPlan, int], bool] = _always,
    ) -> None:
        self._texts_before_retry = texts_before_retry
        self._by_callback = by_callback
        self._placed: set[str] = set()
        self._reports: dict[str, CallReport] = {}
        self._given_up: set[str] = set()  # attempts counted unreachable for want of a word

    async def run(self, plan: FollowUpCallPlan) -> FollowUpResult:
        for attempt in range(1, plan.attempts + 1):
            # A text before the second attempt, if the patient takes texts.
            if (
                attempt == 2
                and plan.sms_before_retry
                and plan.window.reminders == "sms"
                and self._texts_before_retry()
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
            if self._by_callback(plan, attempt):
                result = await self._call(plan, request)
            else:  # runs from before callbacks: placed and answered in one activity
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
                self.take(placed.report)
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

    def take(self, report: CallReport) -> str:
        """The provider's word on a call, taken once: a callback again changes nothing."""
        reference = report.reference
        if reference in self._given_up:
            return f"call {reference}: counted unreachable already (no word within the wait)"
        if reference in self._reports:
            return f"call {reference}: {self._reports[reference].outcome.value}, taken before"
        self._reports[reference] = report
        return f"call {reference}: {report.outcome.value}"

    def check(self, report: CallReport, placed_by: str) -> None:
        """Refuse word on a call this check-in (or journey) did not place."""
        if report.reference not in self._placed:
            raise ValueError(f"no call {report.reference} was placed by this {placed_by}")
