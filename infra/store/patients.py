"""Patients: recorded once at intake (contact details sealed at rest), their phase kept as
the journey last wrote it, and every phase change on the record."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update

from clinical.assessment import PatientContact
from clinical.phases import Phase
from infra.store._core import StoreCore, insert_once, utcnow
from infra.store._schema import PATIENT_COLUMNS_WITHOUT_CONTACT, patients, phase_changes, tasks
from infra.store.audit import AuditFact, write_audit
from infra.store.consents import ConsentEntry, record_consents
from infra.store.events import PHASE_CHANGED, CareEvent, publish
from infra.store.outbox import notify_case_manager


@dataclass(frozen=True)
class NewPatient:
    """What an intake records of a patient; the journey starts in intake."""

    patient_id: str
    case_manager_id: str
    site_id: str
    program_id: str
    enrolled_at: datetime
    level: str | None
    risk: str | None
    contact: PatientContact
    assessment_json: str
    care_plan_json: str


@dataclass(frozen=True)
class EnrolledPatient:
    """A patient as an operator's read takes them: no names, birth date, phone or answers."""

    patient_id: str
    case_manager_id: str
    site_id: str
    program_id: str
    enrolled_at: datetime
    phase: Phase
    level: str | None
    risk: str | None
    updated_at: datetime
    """When the journey last wrote the patient's phase (or the intake)."""


@dataclass(frozen=True)
class PhaseChangeEntry:
    key: str
    patient_id: str
    phase: Phase
    at: datetime
    reason: str


def enrolled_patient(row: Mapping[str, Any]) -> EnrolledPatient:
    return EnrolledPatient(
        **{c.name: row[c.name] for c in PATIENT_COLUMNS_WITHOUT_CONTACT if c.name != "phase"},
        phase=Phase(row["phase"]),
    )


def phase_change_entry(row: Mapping[str, Any]) -> PhaseChangeEntry:
    return PhaseChangeEntry(
        key=row["idempotency_key"],
        patient_id=row["patient_id"],
        phase=Phase(row["phase"]),
        at=row["at"],
        reason=row["reason"],
    )


# A patient's row is read on every API call and webhook event: built once, its cache key
# and SQL are made once.
_PATIENT = select(*PATIENT_COLUMNS_WITHOUT_CONTACT).where(
    patients.c.patient_id == bindparam("wanted")
)


AMONG_AT_MOST = 10_000
"""Patient IDs one statement binds (SQLite allows 32,766): a longer list is read in parts."""


class PatientRecords(StoreCore):
    def record_intake(
        self, patient: NewPatient, audit: Sequence[AuditFact], consents: Sequence[ConsentEntry]
    ) -> bool:
        """The patient once (a retried intake, even one running at the same time on another
        worker, changes nothing), with the intake's audit facts and the consents given at
        intake. False if the patient was recorded before."""
        contact = patient.contact
        row = {
            "patient_id": patient.patient_id,
            "case_manager_id": patient.case_manager_id,
            "site_id": patient.site_id,
            "program_id": patient.program_id,
            "enrolled_at": patient.enrolled_at,
            "phase": Phase.intake.value,
            "level": patient.level,
            "risk": patient.risk,
            "given_name": contact.given_name,
            "family_name": contact.family_name,
            "date_of_birth": contact.date_of_birth.isoformat(),
            "phone": contact.phone,
            "email": contact.email,
            "assessment_json": patient.assessment_json,
            "care_plan_json": patient.care_plan_json,
            "updated_at": utcnow(),
        }
        with self._transaction() as conn:
            created = insert_once(conn, patients, [row])
            write_audit(conn, audit)
            record_consents(conn, consents)
        return created == 1

    def record_phase_change(
        self, change: PhaseChangeEntry, *, case_manager_id: str, level: str | None, risk: str
    ) -> None:
        """The patient's phase (with level and risk) as of the change, the change on the
        record once, and a notice to the case manager."""
        with self._transaction() as conn:
            conn.execute(
                update(patients)
                .where(patients.c.patient_id == change.patient_id)
                .values(phase=change.phase.value, level=level, risk=risk, updated_at=utcnow())
            )
            insert_once(
                conn,
                phase_changes,
                [
                    {
                        "idempotency_key": change.key,
                        "patient_id": change.patient_id,
                        "phase": change.phase.value,
                        "at": change.at,
                        "reason": change.reason,
                    }
                ],
            )
            notify_case_manager(
                conn,
                key=f"notify/{change.key}",
                case_manager_id=case_manager_id,
                patient_id=change.patient_id,
                kind="phase_changed",
                body=f"{change.patient_id} is now in {change.phase}: {change.reason}",
            )
            publish(
                conn,
                [
                    CareEvent(
                        PHASE_CHANGED,
                        change.key,
                        change.patient_id,
                        change.at,
                        {"phase": change.phase.value, "reason": change.reason},
                    )
                ],
            )

    def patient(self, patient_id: str) -> EnrolledPatient | None:
        found = self._read(_PATIENT, {"wanted": patient_id})
        return enrolled_patient(found[0]) if found else None

    def patients(
        self,
        *,
        site_id: str | None = None,
        case_manager_id: str | None = None,
        among: Collection[str] | None = None,
    ) -> list[EnrolledPatient]:
        """The patients matching every filter given, by patient ID (`among`: of these
        patient IDs, read `AMONG_AT_MOST` at a time)."""
        stmt = select(*PATIENT_COLUMNS_WITHOUT_CONTACT).order_by(patients.c.patient_id)
        if site_id is not None:
            stmt = stmt.where(patients.c.site_id == site_id)
        if case_manager_id is not None:
            stmt = stmt.where(patients.c.case_manager_id == case_manager_id)
        if among is None:
            return [enrolled_patient(r) for r in self._read(stmt)]
        ids = list(among)
        parts = [ids[start : start + AMONG_AT_MOST] for start in range(0, len(ids), AMONG_AT_MOST)]
        found = [
            enrolled_patient(r)
            for part in parts
            for r in self._read(stmt.where(patients.c.patient_id.in_(part)))
        ]
        return found if len(parts) < 2 else sorted(found, key=lambda p: p.patient_id)

    def active_patients_at(self, site_id: str) -> list[str]:
        """The patients of a site whose journey has not ended (as the store last heard)."""
        return [p.patient_id for p in self.patients(site_id=site_id) if not p.phase.is_terminal]

    def patient_phone(self, patient_id: str) -> str | None:
        """The number a follow-up call dials (None: no such patient)."""
        with self.engine.connect() as conn:
            phone = conn.scalar(select(patients.c.phone).where(patients.c.patient_id == patient_id))
        return None if phone is None else str(phone)

    def reassign_patient(self, patient_id: str, case_manager_id: str, audit: AuditFact) -> bool:
        """The patient and their open tasks move to another case manager, once (the audit
        fact's key makes a retry a no-op); False if it was done before."""
        with self._transaction() as conn:
            if not write_audit(conn, [audit]):
                return False
            conn.execute(
                update(patients)
                .where(patients.c.patient_id == patient_id)
                .values(case_manager_id=case_manager_id, updated_at=audit.at)
            )
            conn.execute(
                update(tasks)
                .where(tasks.c.patient_id == patient_id, tasks.c.status == "open")
                .values(case_manager_id=case_manager_id)
            )
        return True

    def patient_names(self, patient_ids: Collection[str]) -> dict[str, str]:
        """Each patient's name as people read it (PHI: for those who may see it, and only
        where a caseload or chart shows it)."""
        if not patient_ids:
            return {}
        stmt = select(patients.c.patient_id, patients.c.given_name, patients.c.family_name)
        rows = self._read(stmt.where(patients.c.patient_id.in_(list(patient_ids))))
        return {r["patient_id"]: f"{r['given_name']} {r['family_name']}" for r in rows}

    def preferred_names(self, patient_ids: Collection[str]) -> dict[str, str]:
        """How a group's facilitator calls each patient: given name and family initial (PHI:
        a sign-in sheet for staff eyes only)."""
        if not patient_ids:
            return {}
        stmt = select(patients.c.patient_id, patients.c.given_name, patients.c.family_name)
        rows = self._read(stmt.where(patients.c.patient_id.in_(list(patient_ids))))
        return {r["patient_id"]: f"{r['given_name']} {r['family_name'][:1]}." for r in rows}

    def phase_changes(self, patient_id: str) -> list[PhaseChangeEntry]:
        """A patient's phase changes in the order they were recorded."""
        stmt = select(phase_changes).where(phase_changes.c.patient_id == patient_id)
        return [phase_change_entry(r) for r in self._read(stmt.order_by(phase_changes.c.id))]
