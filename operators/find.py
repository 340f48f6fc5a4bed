"""Finding patients by phase, case manager, site, risk, overdue contact and enrolment, as
`starter.py find` does over Temporal's visibility, answered from the store (no worker or
visibility store needed): the API's `GET /api/v1/patients`. A patient's next contact is the
caseload's: the sooner of the next session and the earliest open task's due time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from clinical.phases import Phase
from infra.store import CareStore


@dataclass(frozen=True)
class PatientQuery:
    """Every filter given must hold (none given: every patient)."""

    phase: Phase | None = None
    case_manager_id: str | None = None
    site_id: str | None = None
    risk: str | None = None
    overdue: bool = False
    """The next contact is past due."""
    enrolled_from: date | None = None
    enrolled_to: date | None = None
    """Exclusive; both days in UTC, as the CLI's search attribute holds them."""
    active: bool = False
    """Journeys that have not ended only."""


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def find_patients(store: CareStore, query: PatientQuery, now: datetime) -> list[dict[str, Any]]:
    """The patients the query finds, as `find --json` lists them: by next contact due
    (none last), then patient ID."""
    entries = store.caseload(
        now, case_manager_id=query.case_manager_id, site_id=query.site_id, include_ended=True
    )
    rows = []
    for e in entries:
        p, due = e.patient, e.next_contact
        if (
            (query.phase is not None and p.phase != query.phase)
            or (query.risk is not None and p.risk != query.risk)
            or (query.active and p.phase.is_terminal)
            or (query.overdue and (due is None or due >= now))
            or (query.enrolled_from and p.enrolled_at < _midnight(query.enrolled_from))
            or (query.enrolled_to and p.enrolled_at >= _midnight(query.enrolled_to))
        ):
            continue
        rows.append(
            {
                "patient_id": p.patient_id,
                "phase": p.phase.value,
                "case_manager_id": p.case_manager_id,
                "site_id": p.site_id,
                "risk": p.risk,
                "attendance_rate": e.attendance_rate,
                "next_contact_due": due.isoformat() if due else None,
                "running": not p.phase.is_terminal,
                "enrolled_at": p.enrolled_at.isoformat(),
            }
        )
    rows.sort(key=lambda r: (r["next_contact_due"] or "9999", r["patient_id"]))
    return rows
