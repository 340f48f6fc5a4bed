"""Seats in programs' group tracks and their waitlists.

A seat is a row keyed by (program, track, seat number): the database, not a count read
beforehand, decides who holds the last one, so any number of workers racing on SQLite or
PostgreSQL never seat more than a track's capacity. A seat freed goes to the first who
waits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, func, select

from clinical.groups import TrackLoad
from clinical.protocol import GroupTrack
from infra.store._core import StoreCore, insert_or_nothing
from infra.store._schema import appointments, group_seats, group_waitlist, patients


@dataclass(frozen=True)
class WaitlistEntry:
    patient_id: str
    joined_at: datetime


@dataclass(frozen=True)
class SeatGiven:
    """A freed seat that went to the patient first on the waitlist."""

    patient_id: str
    seat: int


@dataclass(frozen=True)
class RosterLine:
    """One patient booked into a group session."""

    patient_id: str
    session_id: str
    status: str
    recorded_by: str | None


@dataclass(frozen=True)
class GroupPlace:
    """A seat held (`seated`) or a place on a waitlist, since when."""

    program_id: str
    track_id: str
    patient_id: str
    since: datetime
    seated: bool


@dataclass(frozen=True)
class PatientPlaces:
    seats: dict[str, int]
    """Seat number by track."""
    waiting: tuple[str, ...]
    """Tracks whose waitlist the patient is on."""


def _of(table: Table, program_id: str, track_id: str, patient_id: str | None = None) -> Any:
    where = (table.c.program_id == program_id) & (table.c.track_id == track_id)
    return where if patient_id is None else where & (table.c.patient_id == patient_id)


class GroupSeatRecords(StoreCore):
    def take_seat(
        self, program_id: str, track: GroupTrack, patient_id: str, at: datetime
    ) -> int | None:
        """The seat the patient holds in the track (taken now, or before), or None when all
        its seats are held. Taking a seat takes the patient off the track's waitlist."""
        return self._take(program_id, track, patient_id, at)[0]

    def join_waitlist(self, program_id: str, track_id: str, patient_id: str, at: datetime) -> int:
        """The patient's place on the track's waitlist (1: next), joining it if not yet
        there; 0 when the patient already holds a seat in it."""
        if patient_id in self.roster(program_id, track_id).values():
            return 0
        row = {
            "program_id": program_id,
            "track_id": track_id,
            "patient_id": patient_id,
            "joined_at": at,
        }
        # The insert first: on SQLite a transaction that reads before it writes can be
        # refused outright by a concurrent writer, while one that writes first waits its turn.
        with self._transaction() as conn:
            conn.execute(insert_or_nothing(conn, group_waitlist).values(**row))
            mine = select(group_waitlist.c.id).where(
                _of(group_waitlist, program_id, track_id, patient_id)
            )
            ahead = select(func.count()).where(
                _of(group_waitlist, program_id, track_id),
                group_waitlist.c.id < mine.scalar_subquery(),
            )
            return int(conn.scalar(ahead) or 0) + 1

    def free_seat(
        self, program_id: str, track: GroupTrack, patient_id: str, at: datetime
    ) -> list[SeatGiven]:
        """The patient leaves the track (their seat, or their place on its waitlist); free
        seats then go to those waiting, first come first served. Returns who got one."""
        with self._transaction() as conn:
            for table in (group_seats, group_waitlist):
                conn.execute(delete(table).where(_of(table, program_id, track.id, patient_id)))
        return self.seat_the_waitlist(program_id, track, at)

    def seat_the_waitlist(
        self, program_id: str, track: GroupTrack, at: datetime
    ) -> list[SeatGiven]:
        """Free seats to the first on the waitlist, in order, until one or the other runs
        out. Two of these racing give each seat once: both may try the same patient, whose
        second try finds the seat already theirs."""
        given: list[SeatGiven] = []
        while True:
            first = self._read(
                select(group_waitlist.c.patient_id)
                .where(_of(group_waitlist, program_id, track.id))
                .order_by(group_waitlist.c.id)
                .limit(1)
            )
            if not first:
                return given
            patient_id = first[0]["patient_id"]
            seat, new = self._take(program_id, track, patient_id, at)
            if seat is None:
                return given
            if new:
                given.append(SeatGiven(patient_id=patient_id, seat=seat))

    def roster(self, program_id: str, track_id: str) -> dict[int, str]:
        """Who holds each seat of the track, by seat number."""
        rows = self._read(
            select(group_seats.c.seat, group_seats.c.patient_id)
            .where(_of(group_seats, program_id, track_id))
            .order_by(group_seats.c.seat)
        )
        return {r["seat"]: r["patient_id"] for r in rows}

    def waitlist(self, program_id: str, track_id: str) -> list[WaitlistEntry]:
        """Who waits for the track, first first."""
        rows = self._read(
            select(group_waitlist.c.patient_id, group_waitlist.c.joined_at)
            .where(_of(group_waitlist, program_id, track_id))
            .order_by(group_waitlist.c.id)
        )
        return [WaitlistEntry(r["patient_id"], r["joined_at"]) for r in rows]

    def places_of(self, program_id: str, patient_id: str) -> PatientPlaces:
        """The tracks where the patient holds a seat, and those they wait for."""
        seats = self._read(
            select(group_seats.c.track_id, group_seats.c.seat).where(
                (group_seats.c.program_id == program_id) & (group_seats.c.patient_id == patient_id)
            )
        )
        waits = self._read(
            select(group_waitlist.c.track_id).where(
                (group_waitlist.c.program_id == program_id)
                & (group_waitlist.c.patient_id == patient_id)
            )
        )
        return PatientPlaces(
            seats={r["track_id"]: r["seat"] for r in seats},
            waiting=tuple(sorted(r["track_id"] for r in waits)),
        )

    def seats_given_at(
        self, program_id: str, track_id: str, at: datetime, leaving: str
    ) -> list[SeatGiven]:
        """The seats of the track taken at `at` by others than `leaving`: what a release
        at that instant gave away, for a retried release whose first try gave them."""
        rows = self._read(
            select(group_seats.c.patient_id, group_seats.c.seat)
            .where(
                _of(group_seats, program_id, track_id)
                & (group_seats.c.taken_at == at)
                & (group_seats.c.patient_id != leaving)
            )
            .order_by(group_seats.c.seat)
        )
        return [SeatGiven(patient_id=r["patient_id"], seat=r["seat"]) for r in rows]

    def group_sessions(
        self, program_id: str, track_id: str, start: datetime, end: datetime
    ) -> list[datetime]:
        """When the track's sessions with anyone booked begin, from `start` to before `end`."""
        rows = self._read(
            select(appointments.c.starts_at)
            .distinct()
            .select_from(
                appointments.join(patients, patients.c.patient_id == appointments.c.patient_id)
            )
            .where(
                (patients.c.program_id == program_id)
                & (appointments.c.track_id == track_id)
                & (appointments.c.starts_at >= start)
                & (appointments.c.starts_at < end)
            )
            .order_by(appointments.c.starts_at)
        )
        return [r["starts_at"] for r in rows]

    def group_session_roster(
        self, program_id: str, track_id: str, starts_at: datetime
    ) -> list[RosterLine]:
        """Who is booked into one session of the track, with their session and its status
        as the store last heard it, by patient ID."""
        rows = self._read(
            select(
                appointments.c.patient_id,
                appointments.c.session_id,
                appointments.c.status,
                appointments.c.recorded_by,
            )
            .select_from(
                appointments.join(patients, patients.c.patient_id == appointments.c.patient_id)
            )
            .where(
                (patients.c.program_id == program_id)
                & (appointments.c.track_id == track_id)
                & (appointments.c.starts_at == starts_at)
            )
            .order_by(appointments.c.patient_id)
        )
        return [
            RosterLine(r["patient_id"], r["session_id"], r["status"], r["recorded_by"])
            for r in rows
        ]

    def group_places(self) -> list[GroupPlace]:
        """Every seat held and every waitlist place of every program, now: two reads (a
        simulation samples them once a simulated day)."""
        seats = self._read(
            select(
                group_seats.c.program_id,
                group_seats.c.track_id,
                group_seats.c.patient_id,
                group_seats.c.taken_at,
            )
        )
        waits = self._read(
            select(
                group_waitlist.c.program_id,
                group_waitlist.c.track_id,
                group_waitlist.c.patient_id,
                group_waitlist.c.joined_at,
            ).order_by(group_waitlist.c.id)
        )
        return [
            GroupPlace(r["program_id"], r["track_id"], r["patient_id"], r["taken_at"], True)
            for r in seats
        ] + [
            GroupPlace(r["program_id"], r["track_id"], r["patient_id"], r["joined_at"], False)
            for r in waits
        ]

    def track_loads(self, program_id: str) -> dict[str, TrackLoad]:
        """Seats held and waitlists of the program's tracks (those with either), by track."""
        seats = self._read(
            select(group_seats.c.track_id, func.count().label("n"))
            .where(group_seats.c.program_id == program_id)
            .group_by(group_seats.c.track_id)
        )
        waits = self._read(
            select(
                group_waitlist.c.track_id,
                func.count().label("n"),
                func.min(group_waitlist.c.joined_at).label("since"),
            )
            .where(group_waitlist.c.program_id == program_id)
            .group_by(group_waitlist.c.track_id)
        )
        taken = {r["track_id"]: int(r["n"]) for r in seats}
        waiting = {r["track_id"]: (int(r["n"]), r["since"]) for r in waits}
        return {
            track_id: TrackLoad(
                taken=taken.get(track_id, 0),
                waiting=waiting.get(track_id, (0, None))[0],
                waiting_since=waiting.get(track_id, (0, None))[1],
            )
            for track_id in sorted(set(taken) | set(waiting))
        }

    def _take(
        self, program_id: str, track: GroupTrack, patient_id: str, at: datetime
    ) -> tuple[int | None, bool]:
        """(seat, taken now): the lowest free seat, tried until one is ours or none is free.
        Each failed try means another patient took that seat meanwhile, so this ends."""
        while True:
            held = self.roster(program_id, track.id)
            mine = next((s for s, p in held.items() if p == patient_id), None)
            free = [s for s in range(1, track.capacity + 1) if s not in held]
            if mine is None and not free:
                return None, False
            with self._transaction() as conn:
                if mine is None:
                    row = {
                        "program_id": program_id,
                        "track_id": track.id,
                        "seat": free[0],
                        "patient_id": patient_id,
                        "taken_at": at,
                    }
                    won = conn.execute(
                        insert_or_nothing(conn, group_seats)
                        .values(**row)
                        .returning(group_seats.c.seat)
                    ).all()
                    if not won:
                        continue
                conn.execute(
                    delete(group_waitlist).where(
                        _of(group_waitlist, program_id, track.id, patient_id)
                    )
                )
            return (free[0], True) if mine is None else (mine, False)
