"""Opening and closing a case manager's tasks, the same way for the journey and the
referral loop: the store's inbox row first, then the workflow's own list."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.care_operations import CareOperations
    from activities.records import CaseManagerTask, TaskCompletion
    from clinical.tasks import JourneyTask, resolve_task
    from workflows.outbox import StoreCalls


async def open_task(store: StoreCalls, tasks: list[JourneyTask], task: CaseManagerTask) -> None:
    """Into the inbox (idempotent by its key), then listed once."""
    await store(CareOperations.open_case_manager_task, task)
    if all(t.key != task.key for t in tasks):
        tasks.append(
            JourneyTask(key=task.key, kind=task.kind, detail=task.detail, opened_at=workflow.now())
        )


async def close_task(store: StoreCalls, patient_id: str, task: JourneyTask, by: str) -> None:
    resolve_task(task, by)
    await store(
        CareOperations.complete_case_manager_task,
        TaskCompletion(
            key=task.key, patient_id=patient_id, kind=task.kind, by=by, at=workflow.now()
        ),
    )
