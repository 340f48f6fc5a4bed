"""A counsellor for each individual and family session (patch `counsellor-calendars`): when
a week's sessions are booked, each that needs one is given a counsellor of the site free
for all of it and under their weekly capacity; a session none can take opens a
case-manager task saying why (not a silent skip). An ended journey's counsellor sessions
from then on go back to the counsellors.

Journeys that began before the patch, and programs without counsellors, book sessions
without one, as before."""

from __future__ import annotations

from collections.abc import Sequence

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.care_operations import CareOperations
    from activities.records import CounsellorBooking, CounsellorRelease, CounsellorWanted
    from clinical.careplan import SessionSpec
    from clinical.phases import Phase
    from clinical.tasks import TaskKind
    from workflows.journey_surveys import JourneySurveys

COUNSELLOR_TASK: TaskKind = "counsellor_needed"


class JourneyCounsellors(JourneySurveys):
    _counsellors: bool
    """Whether this run books counsellors (decided first thing in the run)."""
    _counsellors_follow_closures: bool
    """Whether a closure frees its cancelled sessions' counsellors and staffs its make-up
    sessions (patch `counsellors-follow-closures`; before it, both were left as they were)."""

    def _uses_counsellors(self) -> bool:
        st = self._state
        return self._counsellors and bool(st.protocol.counselling.at(st.site_id))

    async def _book_counsellors(self, specs: Sequence[SessionSpec]) -> None:
        st = self._state
        if not self._uses_counsellors():
            return
        wanted = tuple(
            CounsellorWanted(session_id=s.session_id, starts_at=s.starts_at, hours=s.hours)
            for s in specs
            if s.session_type in st.protocol.counselling.session_types and s.attendee == "patient"
        )
        if not wanted:
            return
        booked = await self._store(
            CareOperations.book_counsellors,
            CounsellorBooking(
                patient_id=st.patient_id,
                program_id=st.program_id,
                site_id=st.site_id,
                zone=st.clock.zone,
                sessions=wanted,
                counselling=st.protocol.counselling,
                at=workflow.now(),
            ),
        )
        if booked.unstaffed:
            missing = "; ".join(f"{sid}: {why}" for sid, why in sorted(booked.unstaffed.items()))
            await self._open_task(
                COUNSELLOR_TASK,
                f"no counsellor for {len(booked.unstaffed)} session(s): {missing}",
                key_suffix=min(booked.unstaffed),
            )

    async def _free_counsellors(self) -> None:
        st = self._state
        if not self._uses_counsellors():
            return
        await self._store(
            CareOperations.free_counsellors,
            # Sessions are on the clinic's calendar (ahead of real time on a compressed clock).
            CounsellorRelease(patient_id=st.patient_id, from_=st.clock.calendar_of(workflow.now())),
        )

    async def _counsellors_after_closure(
        self, cancelled: Sequence[str], make_ups: Sequence[SessionSpec]
    ) -> None:
        """A closure's cancelled sessions give their counsellors back (first, so that the
        week's make-ups may have them), and its make-up sessions get counsellors."""
        st = self._state
        if not (self._counsellors_follow_closures and self._uses_counsellors()):
            return
        if cancelled:
            await self._store(
                CareOperations.free_counsellors,
                CounsellorRelease(
                    patient_id=st.patient_id,
                    from_=st.clock.calendar_of(workflow.now()),
                    sessions=tuple(cancelled),
                ),
            )
        await self._book_counsellors(make_ups)

    async def _end(self, outcome: Phase, reason: str) -> None:
        await self._free_counsellors()
        await super()._end(outcome, reason)
