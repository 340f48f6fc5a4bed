"""A patient's journey as the care store knows it: what `status` shows when no worker runs
to answer the journey's query, with the time the store last heard from the journey. No
contact details: the same fields a status shows."""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

from pydantic import BaseModel

from infra.store import (
    PATIENT_COLUMNS_WITHOUT_CONTACT,
    CareStore,
    appointments,
    follow_up_calls,
    patients,
    referrals,
)

SNAPSHOT_COLUMNS = (*PATIENT_COLUMNS_WITHOUT_CONTACT, "updated_at")


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
    found = store.rows(patients, columns=SNAPSHOT_COLUMNS, patient_id=patient_id)
    if not found:
        return None
    row = found[0]
    booked = sorted(store.rows(appointments, patient_id=patient_id), key=lambda r: r["starts_at"])
    calls: dict[str, Any] = {}
    for c in sorted(store.rows(follow_up_calls, patient_id=patient_id), key=lambda c: c["attempt"]):
        calls[c["call_id"]] = c
    moments = [row["updated_at"], *(r["updated_at"] for r in booked)]
    moments += [c["placed_at"] for c in calls.values()]
    return StoredSnapshot(
        patient_id=row["patient_id"],
        case_manager_id=row["case_manager_id"],
        site_id=row["site_id"],
        program_id=row["program_id"],
        phase=row["phase"],
        level=row["level"],
        risk=row["risk"],
        enrolled_at=row["enrolled_at"].astimezone(zone),
        as_of=max(moments).astimezone(zone),
        sessions=[
            StoredSession(
                session_id=r["session_id"],
                starts_at=r["starts_at"].astimezone(zone),
                session_type=r["session_type"],
                status=r["status"],
            )
            for r in booked
        ],
        open_tasks=[t["kind"] for t in store.task_list(patient_id=patient_id)],
        check_ins={k: c["outcome"] for k, c in calls.items()},
        referrals={
            r["need"]: r["outcome"] or r["status"]
            for r in store.rows(referrals, patient_id=patient_id)
        },
    )
