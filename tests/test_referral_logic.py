"""The referral's logic with its activities stubbed (as the SDK's samples test workflows):
consent before any disclosure, then the partner's answer or the service levels, each step
written once. No store and no partner system: the stubs keep what they were asked."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.care_operations import CONSENT_MISSING
from clinical.assessment import SocialNeed
from clinical.protocol import ReferralConfig
from clinical.referrals import (
    ConsentGrant,
    PartnerAnswer,
    PartnerReport,
    ReferralInput,
    ReferralOutcome,
    ReferralStage,
    ReferralStatus,
)
from tests.support import stubbed_worker
from workflows.referral import ReferralWorkflow

DAY = 1.0  # a program day is a second: the service levels pass in moments of skipped time


class StubbedClinic:
    """The referral's activities: each keeps the records it is given (as JSON) and answers;
    the partner refuses a request until the patient's consent is recorded, unless
    `consented`."""

    def __init__(self, consented: bool) -> None:
        self.consented = consented
        self.asked: dict[str, list[dict[str, Any]]] = {}

    def activities(self) -> list[Callable[..., object]]:
        return [
            self.stub("record_referral", lambda r: True),
            self.stub("send_referral", self._send),
            self.stub("record_consent", self._consent),
            self.stub("remind_partner", lambda r: None),
            self.stub("open_case_manager_task", lambda t: {"created": True, "key": t["key"]}),
            self.stub("complete_case_manager_task", lambda t: True),
            self.stub("close_referral", lambda c: None),
        ]

    def stub(self, name: str, answer: Callable[[dict[str, Any]], object]) -> Callable[..., object]:
        @activity.defn(name=name)
        def stubbed(record: dict[str, Any]) -> Any:
            self.asked.setdefault(name, []).append(record)
            return answer(record)

        return stubbed

    def _send(self, dispatch: dict[str, Any]) -> str:
        if not self.consented:
            raise ApplicationError("no consent", type=CONSENT_MISSING, non_retryable=True)
        return "SIM-HOUSING-1"

    def _consent(self, consent: dict[str, Any]) -> bool:
        self.consented = True
        return True


def referral_input() -> ReferralInput:
    return ReferralInput(
        referral_id="REF-housing",
        patient_id="P-7K2M9Q4D",
        case_manager_id="CM-01",
        need=SocialNeed.housing,
        journey_workflow_id="journey-P-7K2M9Q4D",  # not running: telling it is best effort
        service_levels=ReferralConfig(),
        seconds_per_day=DAY,
        requested_by="CM-01",
    )


async def run_referral(
    env: WorkflowEnvironment,
    stubs: StubbedClinic,
    drive: Callable[[WorkflowHandle[Any, Any]], Any] | None = None,
) -> ReferralStatus:
    async with stubbed_worker(env, ReferralWorkflow, stubs.activities()) as queue:
        handle = await env.client.start_workflow(
            ReferralWorkflow.run,
            referral_input(),
            id=f"journey-P-7K2M9Q4D-REF-{uuid.uuid4().hex[:6]}",
            task_queue=queue,
        )
        if drive is not None:
            await drive(handle)
        result: ReferralStatus = await handle.result()
    return result


async def test_no_request_leaves_before_the_patient_consents(env: WorkflowEnvironment) -> None:
    stubs = StubbedClinic(consented=False)

    async def consent_then_answer(handle: WorkflowHandle[Any, Any]) -> None:
        while (await handle.query(ReferralWorkflow.status)).stage != ReferralStage.awaiting_consent:
            await env.sleep(DAY / 4)
        assert len(stubs.asked["send_referral"]) == 1  # refused
        await handle.execute_update(
            ReferralWorkflow.record_consent, ConsentGrant(case_manager_id="CM-04")
        )
        while (await handle.query(ReferralWorkflow.status)).stage != ReferralStage.sent:
            await env.sleep(DAY / 4)
        for answer in (PartnerAnswer.accepted, PartnerAnswer.completed):
            await handle.execute_update(
                ReferralWorkflow.partner_response,
                PartnerReport(answer=answer, reported_by="housing-portal"),
            )

    status = await run_referral(env, stubs, consent_then_answer)
    assert (status.stage, status.outcome) == (ReferralStage.closed, ReferralOutcome.completed)
    (task,) = stubs.asked["open_case_manager_task"]
    assert task["kind"] == "consent_needed"
    (done,) = stubs.asked["complete_case_manager_task"]
    assert (done["key"], done["by"]) == (task["key"], "CM-04")  # consent closes the task
    (consent,) = stubs.asked["record_consent"]
    assert (consent["granted"], consent["recorded_by"]) == (True, "CM-04")
    assert len(stubs.asked["send_referral"]) == 2  # refused, then sent once
    (closing,) = stubs.asked["close_referral"]
    assert closing["outcome"] == ReferralOutcome.completed.value


async def test_a_silent_partner_is_reminded_then_the_case_manager_told_then_it_expires(
    env: WorkflowEnvironment,
) -> None:
    stubs = StubbedClinic(consented=True)
    status = await run_referral(env, stubs)
    assert status.outcome == ReferralOutcome.expired
    assert [r["number"] for r in stubs.asked["remind_partner"]] == [1]
    (stalled,) = stubs.asked["open_case_manager_task"]
    assert stalled["kind"] == "referral_stalled"
    # Closing the referral closes its open task, once.
    (done,) = stubs.asked["complete_case_manager_task"]
    assert (done["key"], done["by"]) == (stalled["key"], "engine")
    (closing,) = stubs.asked["close_referral"]
    assert (closing["outcome"], closing["by"]) == ("expired", "engine")
