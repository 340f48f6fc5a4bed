"""The check-in call's logic with its activities stubbed, as the SDK's samples test workflows:
functions under the activities' names return canned results, so no store, telephony or
worker settings are involved and each case runs in a fraction of a second."""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from temporalio import activity
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from activities.records import CallOutcomeRecord, FollowUpCallRequest
from activities.telephony import CallPlaced
from clinical.aftercare import CallOutcome, CallReport, CheckIn, FollowUpCallPlan, FollowUpResult
from clinical.assessment import ContactWindow
from clinical.reminders import Reminder
from simulation.telephony import answered
from tests.support import stubbed_worker
from workflows.follow_up_call import FollowUpCallWorkflow

SPACING = timedelta(days=2)
WAIT = timedelta(minutes=30)


class StubbedClinic:
    """The call's activities, answering from a script of outcomes as an in-process provider
    does (with the placing; None: no word, the outcome must come by callback) and
    remembering what the workflow asked and recorded."""

    def __init__(self, outcomes: list[CallOutcome | None]) -> None:
        self.outcomes = outcomes
        self.calls: list[FollowUpCallRequest] = []
        self.recorded: list[CallOutcomeRecord] = []
        self.texts: list[Reminder] = []
        self.hold: threading.Event | None = None

    def activities(self) -> list[Callable[..., object]]:
        @activity.defn(name="place_call")
        def place_call(request: FollowUpCallRequest) -> CallPlaced:
            self.calls.append(request)
            outcome = self.outcomes[len(self.calls) - 1]
            if outcome is None:
                return CallPlaced(provider_call_id=f"CA-{len(self.calls)}")
            reached = CheckIn(days_of_use=0) if outcome == CallOutcome.reached else None
            return answered(request.key, outcome, reached)

        @activity.defn(name="record_call_outcome")
        def record_call_outcome(record: CallOutcomeRecord) -> bool:
            self.recorded.append(record)
            if self.hold is not None:  # the workflow stays in its write until released
                self.hold.wait(10)
            return True

        @activity.defn(name="queue_messages")
        def queue_messages(messages: list[Reminder]) -> int:
            self.texts += messages
            return len(messages)

        return [place_call, record_call_outcome, queue_messages]


def plan_of(reminders: str = "sms") -> FollowUpCallPlan:
    return FollowUpCallPlan(
        patient_id="P-7K2M9Q4D",
        call_id="FU-D030",
        due_at=datetime(2027, 3, 1, 15, tzinfo=UTC),
        window=ContactWindow.model_validate({"reminders": reminders}),
        attempts=3,
        attempt_spacing_seconds=SPACING.total_seconds(),
        instruments=("bam",),
        sms_before_retry=True,
        callback_wait_seconds=WAIT.total_seconds(),
    )


async def call(
    env: WorkflowEnvironment, outcomes: list[CallOutcome | None], reminders: str = "sms"
) -> tuple[FollowUpResult, StubbedClinic]:
    stubs = StubbedClinic(outcomes)
    plan = plan_of(reminders)
    async with stubbed_worker(env, FollowUpCallWorkflow, stubs.activities()) as queue:
        result = await env.client.execute_workflow(
            FollowUpCallWorkflow.run, plan, id=f"call-{uuid.uuid4()}", task_queue=queue
        )
    return result, stubs


async def test_a_patient_reached_at_once_is_called_once_and_never_texted(
    env: WorkflowEnvironment,
) -> None:
    result, stubs = await call(env, [CallOutcome.reached])
    assert (result.outcome, result.attempts) == (CallOutcome.reached, 1)
    assert result.check_in == CheckIn(days_of_use=0)
    assert [c.attempt for c in stubs.calls] == [1]
    assert stubs.calls[0].instruments == ("bam",) and stubs.calls[0].last_attempt == 3
    assert stubs.texts == []
    (recorded,) = stubs.recorded
    assert (recorded.outcome, recorded.heard, recorded.request) == (
        CallOutcome.reached,
        True,
        stubs.calls[0],
    )


async def test_an_unreachable_patient_gets_one_text_then_calls_spaced_by_the_plan(
    env: WorkflowEnvironment,
) -> None:
    result, stubs = await call(
        env, [CallOutcome.unreachable, CallOutcome.unreachable, CallOutcome.reached]
    )
    assert (result.outcome, result.attempts) == (CallOutcome.reached, 3)
    assert [c.attempt for c in stubs.calls] == [1, 2, 3]
    placed = [c.at for c in stubs.calls if c.at is not None]
    gaps = [b - a for a, b in itertools.pairwise(placed)]
    assert len(gaps) == 2 and all(gap >= SPACING for gap in gaps), gaps
    (text,) = stubs.texts  # before the second attempt only, keyed to be sent once
    assert (text.channel, text.kind, text.about) == ("sms", "check_in_sms", "FU-D030")
    assert text.key == "P-7K2M9Q4D/sms/E1-FU-D030"


@pytest.mark.parametrize("reminders", ["email", "none"])
async def test_a_patient_who_takes_no_texts_is_not_texted(
    env: WorkflowEnvironment, reminders: str
) -> None:
    _, stubs = await call(env, [CallOutcome.unreachable, CallOutcome.reached], reminders)
    assert len(stubs.calls) == 2 and stubs.texts == []


async def test_the_call_ends_unreachable_after_the_last_attempt(env: WorkflowEnvironment) -> None:
    result, stubs = await call(env, [CallOutcome.unreachable] * 3)
    assert (result.outcome, result.attempts, result.check_in) == (CallOutcome.unreachable, 3, None)
    assert len(stubs.calls) == 3


async def test_a_declined_call_is_not_tried_again(env: WorkflowEnvironment) -> None:
    result, stubs = await call(env, [CallOutcome.declined, CallOutcome.reached])
    assert (result.outcome, result.attempts) == (CallOutcome.declined, 1)
    assert len(stubs.calls) == 1


async def test_silence_from_the_provider_counts_the_attempt_unreachable(
    env: WorkflowEnvironment,
) -> None:
    """No callback within the wait: unreachable, recorded as unheard, and the next attempt
    calls again (time skips through the waits: nothing else is in flight)."""
    result, stubs = await call(env, [None, CallOutcome.reached])
    assert (result.outcome, result.attempts) == (CallOutcome.reached, 2)
    first, second = stubs.recorded
    assert (first.outcome, first.heard) == (CallOutcome.unreachable, False)
    assert (second.outcome, second.heard) == (CallOutcome.reached, True)
    assert second.request.at is not None and first.request.at is not None
    assert second.request.at - first.request.at >= WAIT + SPACING


async def test_the_callback_completes_the_attempt_once_and_unknown_calls_are_refused(
    env: WorkflowEnvironment,
) -> None:
    stubs = StubbedClinic([None])
    stubs.hold = threading.Event()
    async with stubbed_worker(env, FollowUpCallWorkflow, stubs.activities()) as queue:
        with env.auto_time_skipping_disabled():  # the callback comes in real time
            handle = await env.client.start_workflow(
                FollowUpCallWorkflow.run, plan_of(), id=f"call-{uuid.uuid4()}", task_queue=queue
            )
            for _ in range(200):
                if stubs.calls:
                    break
                await asyncio.sleep(0.02)
            reference = stubs.calls[0].key
            with pytest.raises(WorkflowUpdateFailedError):
                await handle.execute_update(
                    FollowUpCallWorkflow.call_outcome,
                    CallReport(
                        reference="P-7K2M9Q4D/FU-D030/attempt-9", outcome=CallOutcome.reached
                    ),
                )
            report = CallReport(
                reference=reference, outcome=CallOutcome.reached, check_in=CheckIn(days_of_use=2)
            )
            said = await handle.execute_update(FollowUpCallWorkflow.call_outcome, report)
            # The same call again while the outcome is being recorded (the workflow ends
            # right after: a callback later finds the store's record, web.webhooks).
            again = asyncio.create_task(
                handle.execute_update(
                    FollowUpCallWorkflow.call_outcome,
                    report.model_copy(update={"outcome": CallOutcome.declined}),
                )
            )
            await asyncio.sleep(0.3)
            stubs.hold.set()
            result = await handle.result()
    assert again.done()
    assert said == f"call {reference}: reached"
    assert again.result() == f"call {reference}: reached, taken before"
    assert (result.outcome, result.attempts, result.check_in) == (
        CallOutcome.reached,
        1,
        CheckIn(days_of_use=2),
    )
    # Recorded as taken (a store write may run again: its key makes that a no-op).
    assert {(r.outcome, r.check_in, r.request.attempt) for r in stubs.recorded} == {
        (CallOutcome.reached, CheckIn(days_of_use=2), 1)
    }
