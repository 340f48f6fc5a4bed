"""A patient's journey as the care store knows it: what `status` shows when no worker runs
to answer the journey's query, with the time the store last heard from the journey. No
contact details: the same fields a status shows."""

from __future__ import annotations

from datetime import datetime, tzinfo

from pydantic import BaseModel

from infra.store import CareStore


class StoredSession(BaseModel):
    session_id: str
    starts_at: datetime
    session_type: str
    status: str


class StoredSnapshot(BaseModel):
    source: str = "store"
    patient_id: str
    case_manager_id: str
    site_id: str
    program_id: str
    phase: str
    level: str | None
    risk: str | None
    enrolled_at: datetime
    as_of: datetime
    """When the store last heard from the journey: how fresh this is."""
    sessions: list[StoredSession]
    open_tasks: list[str]
    check_ins: dict[str, str]
    referrals: dict[str, str]


def stored_snapshot(store: CareStore, patient_id: str, zone: tzinfo) -> StoredSnapshot | None:
    """The store's view of one patient (times at the site's `zone`), or None if it has none."""
    patient = store.patient(patient_id)
    if patient is None:
        return None
    booked = store.appointments(patient_id)
    calls = {c.call_ref: c for c in store.call_attempts(patient_id)}  # each one's last attempt
    moments = [patient.updated_at, *(a.updated_at for a in booked)]
    moments += [c.placed_at for c in calls.values()]
    return StoredSnapshot(
        patient_id=patient.patient_id,
        case_manager_id=patient.case_manager_id,
        site_id=patient.site_id,
        program_id=patient.program_id,
        phase=patient.phase,
        level=patient.level,
        risk=patient.risk,
        enrolled_at=patient.enrolled_at.astimezone(zone),
        as_of=max(moments).astimezone(zone),
        sessions=[
            StoredSession(
                session_id=a.session_id,
                starts_at=a.starts_at.astimezone(zone),
                session_type=a.session_type,
                status=a.status,
            )
            for a in booked
        ],
        open_tasks=[t.kind for t in store.tasks(patient_id=patient_id)],
        check_ins={ref: c.outcome for ref, c in calls.items()},
        referrals={r.need: r.outcome or r.status for r in store.referrals(patient_id=patient_id)},
    )
