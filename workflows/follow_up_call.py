"""One aftercare check-in as a workflow of its own: a child of the journey with a
predictable ID (`journey-{patient}-E{episode}-{call}`), for journeys whose run began before
patch `check-in-in-journey` (later journeys call inside their own run). The calls are the
shared `CheckInCall`; this workflow only asks its own patches where it always asked them
(replaying its recorded histories depends on that order) and takes the provider's word.

On the time-skipping test server, a wait with nothing else in flight lets the clock jump
to its end before a real-time callback arrives: tests that take callbacks from the HTTP
provider step the clock by hand (auto skipping off) and let the callback arrive before
stepping past the wait; the in-process provider's word is there before the wait starts."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from clinical.aftercare import CallReport, FollowUpCallPlan, FollowUpResult
    from workflows import patches
    from workflows.check_in_call import CheckInCall


def _texts_before_retry() -> bool:
    # Journeys that called before texts existed did not send one.
    return workflow.patched(patches.SMS_BEFORE_RETRY)


def _by_callback(plan: FollowUpCallPlan, attempt: int) -> bool:
    # Runs from before callbacks switch at their next attempt.
    if not workflow.patched(patches.CALL_OUTCOME_BY_CALLBACK):
        return False
    if attempt == 1 and plan.sms_before_retry and plan.window.reminders == "sms":
        # Decided before the run's first store write (a local activity): the SDK cannot
        # replay a first `patched` after one (README, patches).
        workflow.patched(patches.SMS_BEFORE_RETRY)
    return True


@workflow.defn(name="FollowUpCall")
class FollowUpCallWorkflow:
    def __init__(self) -> None:
        self._calls = CheckInCall(_texts_before_retry, _by_callback)

    @workflow.run
    async def run(self, plan: FollowUpCallPlan) -> FollowUpResult:
        return await self._calls.run(plan)

    @workflow.update
    def call_outcome(self, report: CallReport) -> str:
        """The provider's word on one of this check-in's calls (a webhook brings it)."""
        return self._calls.take(report)

    @call_outcome.validator
    def _check_call_outcome(self, report: CallReport) -> None:
        self._calls.check(report, "check-in")
