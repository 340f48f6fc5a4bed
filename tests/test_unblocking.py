"""Nothing a journey starts is left with no way out: every kind of case-manager task closes
by some command, and what a journey started (referrals) ends when the journey ends."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import get_args

import pytest
from temporalio.testing import WorkflowEnvironment

from cli.main import COMMANDS, parser
from clinical.assessment import Commitment, Enrolment, parse_commitment
from clinical.identifiers import referral_workflow_id
from clinical.phases import Phase
from clinical.referrals import ReferralOutcome, ReferralStatus
from clinical.requests import DischargeReason, DischargeRequest
from clinical.tasks import CLOSED_BY_ACTION, TaskKind
from tests.support import clinic, enrolment_data
from workflows.patient_journey import PatientJourneyWorkflow


def test_every_task_kind_has_a_command_that_closes_it() -> None:
    """`done` closes a task unless its cause must be dealt with first; those name the
    command that deals with it, and that command exists."""
    for kind in get_args(TaskKind):
        if kind in CLOSED_BY_ACTION:
            command = CLOSED_BY_ACTION[kind].split("`starter.py ")[1].split("`")[0]
            assert command in COMMANDS, (kind, command)
        else:
            assert "done" in COMMANDS
    # The actions themselves parse from the command line.
    args = parser().parse_args(
        [
            "commitments",
            "P-7K2M9Q4D",
            "--commitment",
            "tue 08:00-17:00 work",
            "--case-manager",
            "CM-01",
        ]
    )
    assert COMMANDS[args.command].__name__ == "cmd_commitments"
    args = parser().parse_args(
        [
            "cancel-referral",
            "P-7K2M9Q4D",
            "housing",
            "--reason",
            "no_longer_needed",
            "--case-manager",
            "CM-01",
        ]
    )
    assert COMMANDS[args.command].__name__ == "cmd_cancel_referral"


def test_a_commitment_is_typed_as_a_person_says_it() -> None:
    fields = parse_commitment("Tue 08:00-17:00 work")
    assert Commitment.model_validate(fields) == Commitment(
        weekday="tue", start="08:00", end="17:00", kind="work"
    )
    assert parse_commitment("sat 09:00-10:30") == {
        "weekday": "sat",
        "start": "09:00",
        "end": "10:30",
    }
    for bad in ("tuesday 8-5", "tue 08:00", "tue 08:00-17:00 sleeping", "tue 08:00-17:00\nwork"):
        with pytest.raises(ValueError, match=r"^commitment: "):
            parse_commitment(bad)


async def test_a_discharge_ends_the_referrals_the_journey_started(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    enrolment = Enrolment.model_validate(
        enrolment_data(social_needs=["housing"], consents={"partner_disclosure": ["housing"]})
    )
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            handle, _, _ = await c.enrol_and_drive(
                env,
                enrolment,
                until=lambda s: s.phase == Phase.intensive and s.referrals != [],
            )
            ended = await handle.execute_update(
                PatientJourneyWorkflow.discharge,
                DischargeRequest(case_manager_id="CM-01", reason=DischargeReason.withdrew),
            )
            referral = c.client.get_workflow_handle(
                referral_workflow_id(enrolment.patient_id, "housing")
            )
            status = ReferralStatus.model_validate(
                await asyncio.wait_for(referral.result(), timeout=60)
            )
        (row,) = c.store.referrals(patient_id=enrolment.patient_id)
    assert ended.outcome == Phase.withdrawn
    assert status.outcome == ReferralOutcome.cancelled
    assert row.outcome == "cancelled"
    described = await referral.describe()
    assert described.status is not None and described.status.name == "COMPLETED"
