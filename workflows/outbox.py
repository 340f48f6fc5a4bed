"""How workflow code reaches the care-operations store, and the journey's write buffer.

A journey's steps and its case managers' requests change session records, write audit
entries, close tasks and queue or withdraw reminders between two store writes; the outbox
gathers them and hands them to the next write whole (one transaction, no extra workflow
task per change)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.care_operations import CareOperations
    from activities.records import AuditEntry, CareEvents, TaskResolution
    from clinical.attendance import SessionRecord
    from clinical.reminders import Reminder
    from workflows.policies import STORE_RETRY, STORE_TIMEOUT

_In = TypeVar("_In")
_Out = TypeVar("_Out")

AuditDetail = dict[str, str | int | float | bool | None]


class StoreCalls:
    """Calls to the care-operations store: writes, idempotent by their key (a retried or
    re-run write changes nothing), and the program read. Inside the workflow task (local
    activities: the result in a marker, nothing else) for runs that write there, as activity
    tasks otherwise."""

    def __init__(self, in_task: bool) -> None:
        self.in_task = in_task

    async def __call__(
        self,
        activity: Callable[[CareOperations, _In], _Out],
        arg: _In,
        timeout: timedelta = STORE_TIMEOUT,
        retry: RetryPolicy = STORE_RETRY,
    ) -> _Out:
        if self.in_task:
            return await workflow.execute_local_activity_method(
                activity, arg, start_to_close_timeout=timeout, retry_policy=retry
            )
        return await workflow.execute_activity_method(
            activity, arg, start_to_close_timeout=timeout, retry_policy=retry
        )


class Outbox:
    """What a journey gathered since its last store write."""

    def __init__(self, patient_id: str, store: StoreCalls) -> None:
        self._patient_id = patient_id
        self._store = store
        self.sessions: dict[str, SessionRecord] = {}
        self.audit: list[AuditEntry] = []
        self.resolutions: list[TaskResolution] = []
        self.reminders: list[Reminder] = []
        self.withdrawn: list[str] = []
        """Keys of reminders queued before that are no longer to be sent."""

    def sessions_changed(self, records: Iterable[SessionRecord]) -> None:
        self.sessions.update({s.session_id: s for s in records})

    def tasks_resolved(self, keys: Iterable[str], by: str) -> None:
        now = workflow.now()
        self.resolutions += [TaskResolution(key=key, by=by, at=now) for key in keys]

    def audit_entry(
        self,
        actor: str,
        action: str,
        purpose: str,
        detail: AuditDetail,
        key: str | None = None,
    ) -> None:
        """An audit entry keyed by the update that caused it (unless a key is given)."""
        if key is None:
            update = workflow.current_update_info()
            key = f"{self._patient_id}/update/{update.id if update else action}"
        self.audit.append(
            AuditEntry(
                key=key,
                actor=actor,
                action=action,
                purpose=purpose,
                at=workflow.now(),
                detail=detail,
            )
        )

    def pending(self) -> bool:
        return bool(
            self.sessions or self.audit or self.resolutions or self.reminders or self.withdrawn
        )

    def take(self) -> CareEvents | None:
        """What was gathered, handed over to be written (None if nothing was)."""
        if not self.pending():
            return None
        events = CareEvents(
            patient_id=self._patient_id,
            session_changes=list(self.sessions.values()),
            audit=self.audit,
            tasks_resolved=self.resolutions,
            reminders=self.reminders,
            reminders_withdrawn=self.withdrawn,
        )
        self.sessions, self.audit, self.resolutions = {}, [], []
        self.reminders, self.withdrawn = [], []
        return events

    async def flush(self) -> None:
        events = self.take()
        if events is not None:
            await self._store(CareOperations.record_care_events, events)
