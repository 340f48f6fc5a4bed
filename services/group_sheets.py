"""A group session's sign-in sheet for every door (command line, console, API): its roster
from the store, and its marks to each patient's journey through `services.journeys`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio.client import Client

from clinical.group_sheets import GroupSheet, SheetLine
from clinical.protocol import GroupTrack, ProgramCatalog, ProtocolError
from infra.store import CareStore, RosterLine
from services.journeys import record_group_sheet


class SheetRefused(ValueError):
    """A sheet that names no track or session the clinic has, in one line."""


@dataclass(frozen=True)
class GroupRoster:
    track: GroupTrack
    starts_at: datetime
    lines: list[RosterLine]
    names: dict[str, str]
    """Each patient's name as the facilitator calls them (PHI: staff eyes only)."""


def track_of(catalog: ProgramCatalog, program_id: str, track_id: str) -> GroupTrack:
    try:
        protocol = catalog.load(program_id)
    except ProtocolError as exc:
        raise SheetRefused(str(exc)) from None
    track = next((t for t in protocol.groups.tracks if t.id == track_id), None)
    if track is None:
        raise SheetRefused(f"program {program_id} has no group track {track_id!r}")
    return track


def recent_sessions(
    store: CareStore, program_id: str, track: GroupTrack, now: datetime, days: int = 14
) -> list[datetime]:
    """The track's sessions of the past `days` and the coming week, by start."""
    return store.group_sessions(
        program_id, track.id, now - timedelta(days=days), now + timedelta(days=7)
    )


def roster(
    store: CareStore, catalog: ProgramCatalog, program_id: str, track_id: str, starts_at: datetime
) -> GroupRoster:
    track = track_of(catalog, program_id, track_id)
    lines = store.group_session_roster(program_id, track_id, starts_at)
    if not lines:
        raise SheetRefused(f"no session of {track_id} at {starts_at:%Y-%m-%d %H:%M} UTC")
    names = store.preferred_names([r.patient_id for r in lines])
    return GroupRoster(track=track, starts_at=starts_at, lines=lines, names=names)


async def submit(
    client: Client, task_queue: str, store: CareStore, catalog: ProgramCatalog, sheet: GroupSheet
) -> list[SheetLine]:
    """Each mark to its patient's journey; a patient not booked into the session refused."""
    found = roster(store, catalog, sheet.program_id, sheet.track_id, sheet.starts_at)
    case_managers = {}
    for line in found.lines:
        patient = store.patient(line.patient_id)
        if patient is not None:
            case_managers[line.patient_id] = patient.case_manager_id
    return await record_group_sheet(client, task_queue, sheet, found.lines, case_managers)
