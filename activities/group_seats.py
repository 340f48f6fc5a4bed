"""Placing patients in group tracks and letting them go: the store's seats decide races,
the clinical rule (`clinical.groups.choose_track`) decides which track.

Idempotent: a patient already seated in a fitting track keeps that seat, one already on a
fitting track's waitlist keeps their place, and a retried release reports the seats its
first try handed on (they were taken at the release's instant)."""

from __future__ import annotations

from datetime import datetime

from activities.records import GroupPlacement, GroupPlacementRequest, GroupRelease, SeatHandedOn
from clinical.careplan import uses_telehealth
from clinical.groups import NoTrackFits, TrackSeat, choose_track, misfit, tracks_for
from clinical.protocol import ProgramProtocol
from infra.store import CareStore


def place(store: CareStore, r: GroupPlacementRequest) -> GroupPlacement:
    candidates = tracks_for(r.protocol, r.site_id, r.level, r.phase)
    telehealth = uses_telehealth(r.assessment, r.protocol)
    fitting = {t.id for t in candidates if misfit(t, r.assessment, telehealth) is None}
    places = store.places_of(r.program_id, r.patient_id)
    held = next((t for t in places.seats if t in fitting), None)
    if held is not None:
        return GroupPlacement(track_id=held)
    while True:
        loads = store.track_loads(r.program_id)
        waiting = next((t for t in places.waiting if t in fitting), None)
        if waiting is not None:  # a retry, or a journey asking again while it waits
            ahead = store.join_waitlist(r.program_id, waiting, r.patient_id, r.at) - 1
            return GroupPlacement(waiting_for=waiting, ahead=ahead)
        choice = choose_track(r.assessment, r.level, r.site_id, r.protocol, loads, r.phase)
        if isinstance(choice, NoTrackFits):
            return GroupPlacement(reasons=choice.reasons, nearest=choice.nearest)
        track = next(t for t in candidates if t.id == choice.track_id)
        if isinstance(choice, TrackSeat):
            if store.take_seat(r.program_id, track, r.patient_id, r.at) is None:
                continue  # another enrolment took the last seat meanwhile: choose again
            # Seats held elsewhere in the program (another phase's track) go to others.
            others = tuple(t for t in places.seats if t != track.id) + places.waiting
            handed = _release(store, r.program_id, r.patient_id, others, r.protocol, r.at)
            return GroupPlacement(
                track_id=track.id, alternatives=choice.alternatives, handed_on=handed
            )
        if not r.waitlist:
            return GroupPlacement(reasons=(f"{track.id}: full",), alternatives=choice.alternatives)
        ahead = store.join_waitlist(r.program_id, track.id, r.patient_id, r.at) - 1
        return GroupPlacement(waiting_for=track.id, ahead=ahead, alternatives=choice.alternatives)


def release(store: CareStore, r: GroupRelease) -> tuple[SeatHandedOn, ...]:
    return _release(store, r.program_id, r.patient_id, r.track_ids, r.protocol, r.at)


def _release(
    store: CareStore,
    program_id: str,
    patient_id: str,
    track_ids: tuple[str, ...],
    protocol: ProgramProtocol,
    at: datetime,
) -> tuple[SeatHandedOn, ...]:
    handed: list[SeatHandedOn] = []
    tracks = {t.id: t for t in protocol.groups.tracks}
    for track_id in track_ids:
        track = tracks.get(track_id)
        if track is None:
            continue  # a track the program no longer has: nothing to hand on
        store.free_seat(program_id, track, patient_id, at)
        given = store.seats_given_at(program_id, track_id, at, leaving=patient_id)
        handed += [SeatHandedOn(patient_id=g.patient_id, track_id=track_id) for g in given]
    return tuple(handed)
