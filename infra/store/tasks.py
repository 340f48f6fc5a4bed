"""Case managers' tasks: opened once per key (with a notice to the case manager), closed
once (the first closing stands), read as an inbox."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, union, update

from infra.store._core import StoreCore, insert_once, utcnow
from infra.store._schema import patients, referrals, tasks
from infra.store.audit import AuditFact, write_audit
from infra.store.events import TASK_CLOSED, TASK_OPENED, CareEvent, publish
from infra.store.outbox import notify_case_manager


@dataclass(frozen=True)
class NewTask:
    key: str
    patient_id: str
    case_manager_id: str
    kind: str
    detail: str
    due_at: datetime | None = None
    workflow_id: str | None = None
    """Where completing the task is delivered (the journey's or a referral's workflow)."""


@dataclass(frozen=True)
class TaskClosing:
    """A task closed: by whom (a case manager, or the engine when its cause went away)."""

    key: str
    by: str
    at: datetime


@dataclass(frozen=True)
class InboxTask:
    id: int
    key: str
    patient_id: str
    case_manager_id: str
    kind: str
    status: str
    """open or done."""
    detail: str
    due_at: datetime | None
    created_at: datetime
    completed_at: datetime | None
    completed_by: str | None
    workflow_id: str | None

    @property
    def open(self) -> bool:
        return self.status == "open"


def close_tasks(conn: Connection, closings: Iterable[TaskClosing]) -> int:
    """Close open tasks (each closing an event); a task already closed keeps its first
    closing."""
    closed: list[CareEvent] = []
    for c in closings:
        found = conn.execute(
            update(tasks)
            .where(tasks.c.idempotency_key == c.key, tasks.c.status == "open")
            .values(status="done", completed_at=c.at, completed_by=c.by)
            .returning(tasks.c.patient_id, tasks.c.kind)
        ).first()
        if found is not None:
            facts = {"task_kind": found.kind, "closed_by": c.by}
            closed.append(CareEvent(TASK_CLOSED, c.key, found.patient_id, c.at, facts))
    publish(conn, closed)
    return len(closed)


def inbox_task(row: Mapping[str, Any]) -> InboxTask:
    return InboxTask(
        id=row["id"],
        key=row["idempotency_key"],
        patient_id=row["patient_id"],
        case_manager_id=row["case_manager_id"],
        kind=row["kind"],
        status=row["status"],
        detail=row["detail"],
        due_at=row["due_at"],
        created_at=row["created_at"],
        completed_at=row["completed_at"],
        completed_by=row["completed_by"],
        workflow_id=row["workflow_id"],
    )


class TaskRecords(StoreCore):
    def open_task(self, task: NewTask) -> bool:
        """The task, once per key, and a notice to the patient's case manager of record; False
        if it was open (or done) already. The record decides, not the task: a referral that
        began before a reassignment still names the former case manager."""
        with self._transaction() as conn:
            holder = conn.scalar(
                select(patients.c.case_manager_id).where(patients.c.patient_id == task.patient_id)
            )
            if holder is not None and holder != task.case_manager_id:
                task = replace(task, case_manager_id=holder)
            created = insert_once(
                conn,
                tasks,
                [
                    {
                        "idempotency_key": task.key,
                        "patient_id": task.patient_id,
                        "case_manager_id": task.case_manager_id,
                        "kind": task.kind,
                        "status": "open",
                        "detail": task.detail,
                        "due_at": task.due_at,
                        "created_at": utcnow(),
                        "workflow_id": task.workflow_id,
                    }
                ],
            )
            notify_case_manager(
                conn,
                key=f"notify/{task.key}",
                case_manager_id=task.case_manager_id,
                patient_id=task.patient_id,
                kind=f"task_{task.kind}",
                body=f"New task for {task.patient_id}: {task.detail}",
            )
            if created:
                # The task's kind, not its detail: the detail is free text for the inbox.
                facts = {"task_kind": task.kind, "case_manager_id": task.case_manager_id}
                if task.due_at is not None:
                    facts["due_at"] = task.due_at.isoformat()
                publish(conn, [CareEvent(TASK_OPENED, task.key, task.patient_id, utcnow(), facts)])
        return created == 1

    def complete_task(self, closing: TaskClosing, audit: AuditFact) -> bool:
        """A case manager closed the task: closed (unless it was already) and audited."""
        with self._transaction() as conn:
            closed = close_tasks(conn, [closing])
            write_audit(conn, [audit])
        return closed > 0

    def tasks(
        self,
        *,
        case_manager_id: str | None = None,
        patient_id: str | None = None,
        site_id: str | None = None,
        kind: str | None = None,
        include_done: bool = False,
    ) -> list[InboxTask]:
        """An inbox: tasks matching every filter given, oldest first (open ones only unless
        asked)."""
        stmt = select(tasks).order_by(tasks.c.created_at, tasks.c.id)
        for column, value in (
            (tasks.c.case_manager_id, case_manager_id),
            (tasks.c.patient_id, patient_id),
            (tasks.c.kind, kind),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if site_id is not None:
            at_site = select(patients.c.patient_id).where(patients.c.site_id == site_id)
            stmt = stmt.where(tasks.c.patient_id.in_(at_site))
        if not include_done:
            stmt = stmt.where(tasks.c.status == "open")
        return [inbox_task(r) for r in self._read(stmt)]

    def patients_with_open_work(self) -> set[str]:
        """The patients with an open task or a referral not yet closed: those a case
        manager working the inbox and the referral list looks at today, in one read."""
        open_tasks = select(tasks.c.patient_id).where(tasks.c.status == "open")
        open_referrals = select(referrals.c.patient_id).where(referrals.c.outcome.is_(None))
        return {r["patient_id"] for r in self._read(union(open_tasks, open_referrals))}

    def task(self, task_id: int) -> InboxTask | None:
        """One task by its number in the inbox."""
        found = self._read(select(tasks).where(tasks.c.id == task_id))
        return inbox_task(found[0]) if found else None
