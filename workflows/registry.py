"""The workflow types CarePath runs: one list for the worker, the replay gate and anything
that lists them."""

from __future__ import annotations

from workflows.follow_up_call import FollowUpCallWorkflow
from workflows.patient_journey import PatientJourneyWorkflow
from workflows.referral import ReferralWorkflow

WORKFLOWS: list[type] = [PatientJourneyWorkflow, FollowUpCallWorkflow, ReferralWorkflow]
