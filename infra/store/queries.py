"""Reads across the clinic: the census (counts with no patient in them), a cohort's facts for
the outcomes report, a caseload, and the check that no fact was written twice."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, case, func, select, type_coerce

from clinical.attendance import SessionStatus
from clinical.careplan import FAMILY_EDUCATION
from infra.store._schema import (
    BUSINESS_KEYS,
    PATIENT_COLUMNS_WITHOUT_CONTACT,
    UtcDateTime,
    appointments,
    audit_events,
    follow_up_calls,
    patients,
    phase_changes,
    referrals,
    tasks,
)
from infra.store.audit import AuditFact, audit_fact
from infra.store.calls import CallAttempt, call_attempt_of
from infra.store.patients import (
    EnrolledPatient,
    PatientRecords,
    PhaseChangeEntry,
    enrolled_patient,
    phase_change_entry,
)
from infra.store.referrals import ReferralEntry, referral_entry
from infra.store.sessions import SessionAppointment, session_appointment
from infra.store.tasks import InboxTask, inbox_task


@dataclass(frozen=True)
class CohortFacts:
    """A cohort's facts (see `ClinicQueries.cohort`)."""

    patients: list[EnrolledPatient]
    appointments: list[SessionAppointment]
    phase_changes: list[PhaseChangeEntry]
    call_attempts: list[CallAttempt]
    referrals: list[ReferralEntry]
    tasks: list[InboxTask]
    audit: list[AuditFact]


@dataclass(frozen=True)
class CaseloadEntry:
    """One patient of a caseload, as a case manager's list shows them."""

    patient: EnrolledPatient
    week: int | None
    """The treatment week of the phase's latest session begun (None: none begun yet)."""
    attended: int
    missed: int
    open_tasks: int
    next_session_at: datetime | None
    next_task_due_at: datetime | None

    @property
    def attendance_rate(self) -> float | None:
        """Sessions attended of those attended or missed (None before any)."""
        counted = self.attended + self.missed
        return self.attended / counted if counted else None

    @property
    def next_contact(self) -> datetime | None:
        """The sooner of the next session and the earliest open task's due time."""
        due = [t for t in (self.next_session_at, self.next_task_due_at) if t is not None]
        return min(due, default=None)


class ClinicQueries(PatientRecords):
    def census(self) -> dict[str, dict[str, int]]:
        """What the clinic looks like now, in counts with no patient in them: patients by
        phase, aftercare check-ins by the outcome of their latest call attempt, open tasks
        by kind."""
        latest = (
            select(
                follow_up_calls.c.patient_id,
                follow_up_calls.c.call_id,
                func.max(follow_up_calls.c.attempt).label("attempt"),
            )
            .group_by(follow_up_calls.c.patient_id, follow_up_calls.c.call_id)
            .subquery()
        )
        queries = {
            "patients": select(patients.c.phase, func.count()).group_by(patients.c.phase),
            "check_ins": select(follow_up_calls.c.outcome, func.count())
            .join(
                latest,
                (follow_up_calls.c.patient_id == latest.c.patient_id)
                & (follow_up_calls.c.call_id == latest.c.call_id)
                & (follow_up_calls.c.attempt == latest.c.attempt),
            )
            .group_by(follow_up_calls.c.outcome),
            "open_tasks": select(tasks.c.kind, func.count())
            .where(tasks.c.status == "open")
            .group_by(tasks.c.kind),
        }
        with self.engine.connect() as conn:
            return {
                name: {str(label): int(n) for label, n in conn.execute(query)}
                for name, query in queries.items()
            }

    def cohort(
        self,
        *,
        site_id: str | None = None,
        case_manager_id: str | None = None,
        program_id: str | None = None,
        enrolled_from: datetime | None = None,
        enrolled_to: datetime | None = None,
        audit_actions: Sequence[str] = (),
    ) -> CohortFacts:
        """Read only, in one snapshot: the patients matching every filter given (enrolled in
        [from, to)) and their sessions, phase changes, check-in call attempts, referrals,
        tasks and the audit facts of the actions asked for. No contact details."""
        chosen = select(patients.c.patient_id)
        for column, value in (
            (patients.c.site_id, site_id),
            (patients.c.case_manager_id, case_manager_id),
            (patients.c.program_id, program_id),
        ):
            if value is not None:
                chosen = chosen.where(column == value)
        if enrolled_from is not None:
            chosen = chosen.where(patients.c.enrolled_at >= enrolled_from)
        if enrolled_to is not None:
            chosen = chosen.where(patients.c.enrolled_at < enrolled_to)

        with self.engine.connect() as conn:

            def of_cohort(table: Table, *where: Any) -> list[dict[str, Any]]:
                stmt = select(table).where(table.c.patient_id.in_(chosen), *where)
                return [dict(r) for r in conn.execute(stmt.order_by(table.c.id)).mappings()]

            picked = select(*PATIENT_COLUMNS_WITHOUT_CONTACT).where(
                patients.c.patient_id.in_(chosen)
            )
            found = conn.execute(picked.order_by(patients.c.patient_id)).mappings()
            return CohortFacts(
                patients=[enrolled_patient(dict(r)) for r in found],
                appointments=[session_appointment(r) for r in of_cohort(appointments)],
                phase_changes=[phase_change_entry(r) for r in of_cohort(phase_changes)],
                call_attempts=[call_attempt_of(r) for r in of_cohort(follow_up_calls)],
                referrals=[referral_entry(r) for r in of_cohort(referrals)],
                tasks=[inbox_task(r) for r in of_cohort(tasks)],
                audit=[
                    audit_fact(r)
                    for r in of_cohort(audit_events, audit_events.c.action.in_(audit_actions))
                ],
            )

    def caseload(
        self,
        as_of: datetime,
        *,
        case_manager_id: str | None = None,
        site_id: str | None = None,
        include_ended: bool = False,
    ) -> list[CaseloadEntry]:
        """The patients of a case manager or a site (or the clinic's), by patient ID, each
        with their phase, week, attendance, open tasks and next contact as of `as_of`;
        journeys that ended only if asked. Three grouped reads, whatever the caseload."""
        chosen = [
            p
            for p in self.patients(site_id=site_id, case_manager_id=case_manager_id)
            if include_ended or not p.phase.is_terminal
        ]
        ids = select(patients.c.patient_id)
        if site_id is not None:
            ids = ids.where(patients.c.site_id == site_id)
        if case_manager_id is not None:
            ids = ids.where(patients.c.case_manager_id == case_manager_id)
        a = appointments.c
        begun = a.starts_at <= as_of
        # Family education is the family's session, not the patient's attendance.
        patients_own = a.session_type != FAMILY_EDUCATION

        def counted(status: SessionStatus) -> Any:
            return func.sum(case((and_(a.status == status.value, patients_own), 1), else_=0))

        sessions = (
            select(
                a.patient_id,
                a.phase,
                func.max(case((begun, a.week))).label("week"),
                counted(SessionStatus.attended).label("attended"),
                counted(SessionStatus.missed).label("missed"),
                type_coerce(
                    func.min(
                        case((and_(~begun, a.status == SessionStatus.scheduled.value), a.starts_at))
                    ),
                    UtcDateTime(),
                ).label("next_session_at"),
            )
            .where(a.patient_id.in_(ids))
            .group_by(a.patient_id, a.phase)
        )
        t = tasks.c
        inbox = (
            select(
                t.patient_id,
                func.count().label("open_tasks"),
                type_coerce(func.min(t.due_at), UtcDateTime()).label("next_task_due_at"),
            )
            .where(t.patient_id.in_(ids), t.status == "open")
            .group_by(t.patient_id)
        )
        phases_of: dict[str, dict[str, dict[str, Any]]] = {}
        open_tasks: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(sessions).mappings():
                phases_of.setdefault(r["patient_id"], {})[r["phase"]] = dict(r)
            for r in conn.execute(inbox).mappings():
                open_tasks[r["patient_id"]] = dict(r)
        entries = []
        for p in chosen:
            by_phase = phases_of.get(p.patient_id, {})
            phases = list(by_phase.values())
            upcoming = [v["next_session_at"] for v in phases if v["next_session_at"] is not None]
            inbox_row = open_tasks.get(p.patient_id, {})
            entries.append(
                CaseloadEntry(
                    patient=p,
                    week=by_phase.get(p.phase.value, {}).get("week"),
                    attended=sum(int(v["attended"] or 0) for v in phases),
                    missed=sum(int(v["missed"] or 0) for v in phases),
                    open_tasks=int(inbox_row.get("open_tasks", 0)),
                    next_session_at=min(upcoming, default=None),
                    next_task_due_at=inbox_row.get("next_task_due_at"),
                )
            )
        return entries

    def duplicate_counts(self) -> dict[str, int]:
        """Rows sharing an idempotency key or business key, per table (should all be 0)."""
        counts: dict[str, int] = {}
        with self.engine.connect() as conn:
            for table, business_key in BUSINESS_KEYS.items():
                dupes = 0
                for cols in ([table.c.idempotency_key], [table.c[c] for c in business_key]):
                    grouped = (
                        select(func.count().label("n")).select_from(table).group_by(*cols)
                    ).subquery()
                    dupes += int(
                        conn.scalar(select(func.coalesce(func.sum(grouped.c.n - 1), 0))) or 0
                    )
                counts[table.name] = dupes
        return counts
