"""Counsellors' calendars: each individual or family session a counsellor takes is a row
numbered within their site-local week, from 1 up to their weekly capacity. The database
decides races, as it does for group seats: the key (counsellor, week, number) refuses a
booking past capacity, (counsellor, start) a second session at the same start, and
(patient, session) a second counsellor for one session, so a retried booking finds the one
it made. Sessions that overlap at different starts are refused before the insert and, for
two bookings racing, after it: a booking that finds another overlapping its own lets its
row go (two at once may both let go and move on to the next counsellor: never both stay). A
counsellor ID is a person, whichever program names them."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import delete, func, or_, select

from clinical.counsellors import Counsellor
from infra.store._core import StoreCore, insert_or_nothing
from infra.store._schema import counsellor_sessions as cs

MAX_SESSION_HOURS = 12
"""No counselling session is longer: how far back a booking looks for one still running."""


@dataclass(frozen=True)
class CounsellorSession:
    counsellor_id: str
    patient_id: str
    session_id: str
    starts_at: datetime
    hours: float


class CounsellorRecords(StoreCore):
    def book_counsellor(
        self,
        program_id: str,
        candidates: Sequence[Counsellor],
        week: date,
        patient_id: str,
        session_id: str,
        starts_at: datetime,
        hours: float,
        at: datetime,
    ) -> str | None:
        """The counsellor who takes the session: the one it has already (a retry), else the
        first of `candidates` (best first) the database lets have it; None when every one
        is busy then (a session overlapping) or full that week."""
        held = self.counsellor_of(patient_id, session_id)
        if held is not None:
            return held
        for counsellor in candidates:
            while True:
                taken = self._numbers(counsellor.id, week)
                free = [n for n in range(1, counsellor.sessions_per_week + 1) if n not in taken]
                if not free or self._overlapping(
                    counsellor.id, patient_id, session_id, starts_at, hours
                ):
                    break
                row = {
                    "counsellor_id": counsellor.id,
                    "week": week.isoformat(),
                    "number": free[0],
                    "patient_id": patient_id,
                    "session_id": session_id,
                    "starts_at": starts_at,
                    "hours": hours,
                    "program_id": program_id,
                    "booked_at": at,
                }
                with self._transaction() as conn:
                    won = conn.execute(
                        insert_or_nothing(conn, cs).values(**row).returning(cs.c.number)
                    ).all()
                if won and not self._overlapping(
                    counsellor.id, patient_id, session_id, starts_at, hours
                ):
                    return counsellor.id
                if won:  # an overlapping session was booked at the same moment
                    self._let_go(counsellor.id, week, won[0][0])
                    break
                # Refused: that number went to another booking (try the next), the
                # counsellor was taken at that start (the next counsellor), or this very
                # session was booked meanwhile (a retry racing itself: that one stands).
                held = self.counsellor_of(patient_id, session_id)
                if held is not None:
                    return held
        return None

    def counsellor_of(self, patient_id: str, session_id: str) -> str | None:
        with self.engine.connect() as conn:
            found = conn.scalar(
                select(cs.c.counsellor_id).where(
                    cs.c.patient_id == patient_id, cs.c.session_id == session_id
                )
            )
        return None if found is None else str(found)

    def free_counsellors(
        self, patient_id: str, from_: datetime, session_ids: Collection[str] | None = None
    ) -> int:
        """The patient's counsellor sessions from `from_` on are let go (discharge,
        step-down; with `session_ids`, only those: sessions a closure cancelled); how many."""
        stmt = delete(cs).where(cs.c.patient_id == patient_id, cs.c.starts_at >= from_)
        if session_ids is not None:
            stmt = stmt.where(cs.c.session_id.in_(sorted(session_ids)))
        with self._transaction() as conn:
            return int(conn.execute(stmt).rowcount)

    def counsellor_week(self, counsellor_id: str, week: date) -> list[CounsellorSession]:
        rows = self._read(
            select(cs)
            .where(cs.c.counsellor_id == counsellor_id, cs.c.week == week.isoformat())
            .order_by(cs.c.starts_at)
        )
        return [
            CounsellorSession(
                counsellor_id=r["counsellor_id"],
                patient_id=r["patient_id"],
                session_id=r["session_id"],
                starts_at=r["starts_at"],
                hours=r["hours"],
            )
            for r in rows
        ]

    def counsellor_loads(self, weeks: Sequence[date]) -> dict[tuple[str, date], int]:
        """Sessions booked per (counsellor, week), for the weeks given."""
        wanted = [w.isoformat() for w in weeks]
        rows = self._read(
            select(cs.c.counsellor_id, cs.c.week, func.count().label("n"))
            .where(cs.c.week.in_(wanted))
            .group_by(cs.c.counsellor_id, cs.c.week)
        )
        return {(r["counsellor_id"], date.fromisoformat(r["week"])): r["n"] for r in rows}

    def _numbers(self, counsellor_id: str, week: date) -> set[int]:
        with self.engine.connect() as conn:
            return set(
                conn.scalars(
                    select(cs.c.number).where(
                        cs.c.counsellor_id == counsellor_id, cs.c.week == week.isoformat()
                    )
                )
            )

    def _overlapping(
        self,
        counsellor_id: str,
        patient_id: str,
        session_id: str,
        starts_at: datetime,
        hours: float,
    ) -> bool:
        """Whether the counsellor has a session (other than this one) overlapping
        [starts_at, starts_at + hours)."""
        ends_at = starts_at + timedelta(hours=hours)
        near = select(cs.c.starts_at, cs.c.hours).where(
            cs.c.counsellor_id == counsellor_id,
            or_(cs.c.patient_id != patient_id, cs.c.session_id != session_id),
            cs.c.starts_at > starts_at - timedelta(hours=MAX_SESSION_HOURS),
            cs.c.starts_at < ends_at,
        )
        return any(
            r["starts_at"] + timedelta(hours=r["hours"]) > starts_at for r in self._read(near)
        )

    def _let_go(self, counsellor_id: str, week: date, number: int) -> None:
        with self._transaction() as conn:
            conn.execute(
                delete(cs).where(
                    cs.c.counsellor_id == counsellor_id,
                    cs.c.week == week.isoformat(),
                    cs.c.number == number,
                )
            )
