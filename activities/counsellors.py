"""Booking counsellors for the week's individual and family sessions: the clinical rule
(`clinical.counsellors`) ranks who could take each session, the store's constraints decide
races between bookings. Idempotent: a session keeps the counsellor it was given."""

from __future__ import annotations

from activities.records import CounsellorBooking, CounsellorRelease, CounsellorsBooked
from clinical.clock import zone as zone_named
from clinical.counsellors import counsellors_for, week_of, why_none
from infra.store import CareStore


def book(store: CareStore, r: CounsellorBooking) -> CounsellorsBooked:
    zone = zone_named(r.zone)
    at_site = r.counselling.at(r.site_id)
    booked: dict[str, str] = {}
    unstaffed: dict[str, str] = {}
    for s in sorted(r.sessions, key=lambda s: s.starts_at):
        held = store.counsellor_of(r.patient_id, s.session_id)
        if held is not None:
            booked[s.session_id] = held
            continue
        local = s.starts_at.astimezone(zone)
        week = week_of(local)
        loads = {c: n for (c, w), n in store.counsellor_loads([week]).items() if w == week}
        ranked = counsellors_for(at_site, local, s.hours, loads)
        who = store.book_counsellor(
            r.program_id, ranked, week, r.patient_id, s.session_id, s.starts_at, s.hours, r.at
        )
        if who is None:
            unstaffed[s.session_id] = (
                why_none(at_site, local, s.hours)
                if not ranked
                else "every counsellor "
                "available then was booked meanwhile or is at their weekly capacity"
            )
        else:
            booked[s.session_id] = who
    return CounsellorsBooked(booked=booked, unstaffed=unstaffed)


def release(store: CareStore, r: CounsellorRelease) -> int:
    return store.free_counsellors(r.patient_id, r.from_, r.sessions)
