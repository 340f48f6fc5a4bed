"""The kinds of task CarePath gives a case manager: the clinic's vocabulary, shared by the
journey, the referral loop, the store's metrics and the inbox."""

from __future__ import annotations

from typing import Literal

TaskKind = Literal[
    "schedule_conflict",
    "escalation_referral",
    "unreachable_patient",
    "outreach",
    "review",
    "reassessment",
    "step_down_decision",
    "consent_needed",
    "referral_stalled",
    "referral_follow_up",
    "clinical_follow_up",
    "aftercare_support",
    "closure_make_up",
]
