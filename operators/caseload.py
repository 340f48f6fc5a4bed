"""What a case manager's console lists: the patients they may see, each with where they are
(phase, treatment week, attendance, risk, next contact, open tasks), and the inbox of tasks.
Read from the store alone, so it answers with no worker running; `as_of` says how fresh."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, case, func, select

from clinical.phases import ACTIVE_PHASES
from infra.store import (
    CareStore,
    UtcDateTime,
    appointments,
    follow_up_calls,
    patients,
    tasks,
)

ACTIVE = tuple(p.value for p in ACTIVE_PHASES)


@dataclass(frozen=True)
class Scope:
    """Whose patients: one case manager's, or a whole site's (a supervisor's)."""

    case_manager_id: str | None = None
    site_id: str | None = None


@dataclass(frozen=True)
class CaseloadRow:
    patient_id: str
    name: str  # PHI: shown to those who may see it, logged never
    site_id: str
    case_manager_id: str
    phase: str
    level: str | None
    risk: str | None
    week: int | None
    attended: int
    missed: int
    next_contact: datetime | None
    open_tasks: int
    as_of: datetime

    @property
    def attendance_rate(self) -> float | None:
        done = self.attended + self.missed
        return None if done == 0 else self.attended / done


@dataclass(frozen=True)
class InboxTask:
    task_id: int
    patient_id: str
    case_manager_id: str
    kind: str
    detail: str
    opened_at: datetime
    due_at: datetime | None
    workflow_id: str | None
    task_key: str
    status: str = "open"
    done_by: str | None = None

    def overdue(self, now: datetime) -> bool:
        return self.status == "open" and self.due_at is not None and self.due_at < now


def caseload(store: CareStore, scope: Scope, now: datetime) -> list[CaseloadRow]:
    """Active patients in `scope`, with their figures, in three queries whatever their
    number (one per patient would not answer in time for 2,000)."""
    who: ColumnElement[bool] = patients.c.phase.in_(ACTIVE)
    if scope.case_manager_id is not None:
        who = and_(who, patients.c.case_manager_id == scope.case_manager_id)
    if scope.site_id is not None:
        who = and_(who, patients.c.site_id == scope.site_id)
    mine = select(patients.c.patient_id).where(who).scalar_subquery()
    attended = func.sum(case((appointments.c.status == "attended", 1), else_=0))
    missed = func.sum(case((appointments.c.status == "missed", 1), else_=0))
    upcoming = func.min(
        case(
            (
                and_(appointments.c.status == "scheduled", appointments.c.starts_at >= now),
                appointments.c.starts_at,
            ),
        ),
        type_=UtcDateTime(),
    )
    week = func.max(case((appointments.c.starts_at <= now, appointments.c.week), else_=None))
    with store.engine.connect() as conn:
        people = conn.execute(
            select(
                patients.c.patient_id,
                patients.c.given_name,
                patients.c.family_name,
                patients.c.site_id,
                patients.c.case_manager_id,
                patients.c.phase,
                patients.c.level,
                patients.c.risk,
                patients.c.updated_at,
            ).where(who)
        ).all()
        sessions = {
            r.patient_id: r
            for r in conn.execute(
                select(
                    appointments.c.patient_id,
                    attended.label("attended"),
                    missed.label("missed"),
                    upcoming.label("upcoming"),
                    week.label("week"),
                )
                .where(appointments.c.patient_id.in_(mine))
                .group_by(appointments.c.patient_id)
            )
        }
        calls = dict(
            conn.execute(
                select(follow_up_calls.c.patient_id, func.max(follow_up_calls.c.due_at))
                .where(follow_up_calls.c.patient_id.in_(mine))
                .group_by(follow_up_calls.c.patient_id)
            ).all()
        )
        open_tasks: dict[str, int] = dict(
            conn.execute(
                select(tasks.c.patient_id, func.count())
                .where(tasks.c.patient_id.in_(mine), tasks.c.status == "open")
                .group_by(tasks.c.patient_id)
            ).all()
        )
    rows = []
    for p in people:
        s = sessions.get(p.patient_id)
        upcoming_at = None if s is None else s.upcoming
        last_call = calls.get(p.patient_id)
        rows.append(
            CaseloadRow(
                patient_id=p.patient_id,
                name=f"{p.given_name} {p.family_name}",
                site_id=p.site_id,
                case_manager_id=p.case_manager_id,
                phase=p.phase,
                level=p.level,
                risk=p.risk,
                week=None if s is None else s.week,
                attended=0 if s is None else int(s.attended or 0),
                missed=0 if s is None else int(s.missed or 0),
                next_contact=upcoming_at
                if upcoming_at is not None
                else (None if last_call is None or last_call < now else last_call),
                open_tasks=int(open_tasks.get(p.patient_id, 0)),
                as_of=p.updated_at,
            )
        )
    return rows


def inbox(store: CareStore, scope: Scope, now: datetime) -> list[InboxTask]:
    """Open tasks in `scope`: overdue first, then by due date, undated last."""
    stmt = select(tasks).where(tasks.c.status == "open")
    if scope.case_manager_id is not None:
        stmt = stmt.where(tasks.c.case_manager_id == scope.case_manager_id)
    if scope.site_id is not None:
        stmt = stmt.where(
            tasks.c.patient_id.in_(
                select(patients.c.patient_id).where(patients.c.site_id == scope.site_id)
            )
        )
    with store.engine.connect() as conn:
        found = [
            InboxTask(
                task_id=r.id,
                patient_id=r.patient_id,
                case_manager_id=r.case_manager_id,
                kind=r.kind,
                detail=r.detail,
                opened_at=r.created_at,
                due_at=r.due_at,
                workflow_id=r.workflow_id,
                task_key=r.idempotency_key,
            )
            for r in conn.execute(stmt)
        ]
    far = datetime.max.replace(tzinfo=now.tzinfo)
    return sorted(found, key=lambda t: (not t.overdue(now), t.due_at or far, t.task_id))


def task(store: CareStore, task_id: int) -> InboxTask | None:
    """One task, open or done (None if there is none)."""
    with store.engine.connect() as conn:
        r = conn.execute(select(tasks).where(tasks.c.id == task_id)).first()
    if r is None:
        return None
    return InboxTask(
        task_id=r.id,
        patient_id=r.patient_id,
        case_manager_id=r.case_manager_id,
        kind=r.kind,
        detail=r.detail,
        opened_at=r.created_at,
        due_at=r.due_at,
        workflow_id=r.workflow_id,
        task_key=r.idempotency_key,
        status=r.status,
        done_by=r.completed_by,
    )
