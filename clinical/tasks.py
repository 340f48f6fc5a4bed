"""The kinds of task CarePath gives a case manager: the clinic's vocabulary, shared by the
journey, the referral loop, the store's metrics and the inbox."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from clinical.requests import RequestRefused, TaskDone

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
    "group_waitlist",
    "group_no_fit",
    "counsellor_needed",
    "event_refused",
]


class JourneyTask(BaseModel):
    """A task the journey gave the case manager; open until someone resolves it."""

    key: str
    kind: str
    detail: str
    opened_at: datetime
    resolved_by: str | None = None

    @property
    def is_open(self) -> bool:
        return self.resolved_by is None


# Tasks that close when their cause is dealt with, not by marking them done.
CLOSED_BY_ACTION = {
    "schedule_conflict": "revise the patient's commitments (`starter.py commitments`)",
    "step_down_decision": "record a progress review (`starter.py review`)",
}


def check_task_done(tasks: list[JourneyTask], request: TaskDone) -> JourneyTask:
    task = next((t for t in tasks if t.key == request.task_key), None)
    if task is None:
        raise RequestRefused(f"no task {request.task_key!r} for this patient")
    if not task.is_open:
        raise RequestRefused(f"task {task.kind} was already done by {task.resolved_by}")
    if task.kind in CLOSED_BY_ACTION:
        raise RequestRefused(f"a {task.kind} task closes when you {CLOSED_BY_ACTION[task.kind]}")
    return task


def resolve_task(task: JourneyTask, by: str) -> None:
    """Whoever dealt with it (a case manager, or the engine when its cause is gone)."""
    task.resolved_by = by
