"""A journey's place in the program's group tracks: a seat taken at intake (or a place on
a full track's waitlist, the journey waiting in intake until a seat is handed to it), a
move to a step-down track at step-down, and every seat let go when treatment ends, each
freed seat handed to the first who waits and their journey told (a signal).

Journeys that began before tracks (patch `group-tracks`) and programs without tracks
keep their own group sessions, as before."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import FailureError

with workflow.unsafe.imports_passed_through():
    from activities.care_operations import CareOperations
    from activities.records import GroupPlacementRequest, GroupRelease, SeatHandedOn
    from clinical.actors import ENGINE
    from clinical.careplan import on_tracks
    from clinical.groups import TrackPhase, tracks_for
    from clinical.identifiers import journey_workflow_id
    from clinical.phases import Phase
    from clinical.tasks import TaskKind
    from workflows.journey_steps import JourneySteps

SEAT_GIVEN_SIGNAL = "group_seat_given"
WAITLIST_TASK: TaskKind = "group_waitlist"
NO_FIT_TASK: TaskKind = "group_no_fit"


class JourneyGroups(JourneySteps):
    _group_tracks: bool
    """Whether this run places the patient in tracks (decided first thing in the run)."""
    _no_fit_task: bool
    """Whether a patient no track fits gets a case-manager task (decided with the above)."""

    def _uses_tracks(self) -> bool:
        return self._group_tracks and bool(self._state.protocol.groups.tracks)

    async def _take_group_seat(self, phase: Phase) -> None:
        """A seat in a fitting track for `phase` (intensive: else the waitlist, with a task
        showing the next best; step-down: else the patient's own sessions)."""
        st = self._state
        if not self._uses_tracks() or phase not in (Phase.intensive, Phase.step_down):
            return
        kind: TrackPhase = "intensive" if phase == Phase.intensive else "step_down"
        placed = await self._store(
            CareOperations.place_in_group,
            GroupPlacementRequest(
                patient_id=st.patient_id,
                program_id=st.program_id,
                site_id=st.site_id,
                level=st.placement.level,
                phase=kind,
                assessment=st.assessment,
                protocol=st.protocol,
                at=workflow.now(),
                waitlist=phase == Phase.intensive,
            ),
        )
        await self._hand_on(placed.handed_on)
        if placed.track_id is not None:
            st.group_tracks = {phase.value: placed.track_id}
            st.group_waiting = None
            return
        st.group_tracks = {}
        if placed.waiting_for is not None:
            st.group_waiting = placed.waiting_for
            nearest = ", ".join(placed.alternatives) or "none at the site"
            await self._open_task(
                WAITLIST_TASK,
                f"group track {placed.waiting_for} is full: on its waitlist with "
                f"{placed.ahead} ahead; next best: {nearest}",
                key_suffix=f"E{st.episode}-{placed.waiting_for}",
            )
        elif tracks_for(st.protocol, st.site_id, st.placement.level, kind):
            # The site runs such tracks but none fits: the patient's own sessions, and (patch
            # group-no-fit-task) the case manager told why and what comes nearest.
            workflow.logger.info(
                "no group track fits", extra={"patient_id": st.patient_id, "phase": kind}
            )
            if self._no_fit_task:
                await self._open_task(
                    NO_FIT_TASK,
                    f"no {kind.replace('_', '-')} group track takes the patient: "
                    f"{'; '.join(placed.reasons)}; next best: {placed.nearest or 'none'}; "
                    "meanwhile the patient's own group sessions",
                    key_suffix=f"E{st.episode}-{kind}",
                )

    async def _await_group_seat(self) -> None:
        """Wait in intake while on a waitlist, until a seat is handed to the patient."""
        st = self._state
        if st.group_waiting is None:
            return
        self._update_visibility()
        await workflow.wait_condition(lambda: st.group_waiting is None or self._interrupted())

    def _plan_on_tracks(self) -> None:
        st = self._state
        if st.group_tracks:
            st.plan = on_tracks(st.plan, st.assessment, st.protocol, st.placed_tracks())

    async def _leave_groups(self, keep: Phase | None = None) -> None:
        """Let go of every seat and waitlist place but `keep`'s; freed seats go to those
        waiting, whose journeys are told."""
        st = self._state
        leaving = [t for p, t in st.group_tracks.items() if keep is None or p != keep.value]
        if st.group_waiting is not None:
            leaving.append(st.group_waiting)
        if not self._group_tracks or not leaving:
            return
        handed = await self._store(
            CareOperations.leave_groups,
            GroupRelease(
                patient_id=st.patient_id,
                program_id=st.program_id,
                track_ids=tuple(leaving),
                protocol=st.protocol,
                at=workflow.now(),
            ),
        )
        st.group_tracks = {p: t for p, t in st.group_tracks.items() if t not in leaving}
        st.group_waiting = None
        self._resolve_tasks(WAITLIST_TASK, ENGINE)
        await self._hand_on(handed)

    async def _hand_on(self, handed: tuple[SeatHandedOn, ...]) -> None:
        st = self._state
        queue = [seat for seat in handed if seat.patient_id != st.patient_id]
        while queue:
            seat = queue.pop(0)
            other = workflow.get_external_workflow_handle(journey_workflow_id(seat.patient_id))
            try:
                await other.signal(SEAT_GIVEN_SIGNAL, seat)
            except FailureError:
                # That journey ended after it was handed the seat: let the seat go on its
                # behalf, to the next who waits.
                queue += await self._store(
                    CareOperations.leave_groups,
                    GroupRelease(
                        patient_id=seat.patient_id,
                        program_id=st.program_id,
                        track_ids=(seat.track_id,),
                        protocol=st.protocol,
                        at=workflow.now(),
                    ),
                )

    async def _end(self, outcome: Phase, reason: str) -> None:
        await self._leave_groups()
        await super()._end(outcome, reason)

    @workflow.signal(name=SEAT_GIVEN_SIGNAL)
    def group_seat_given(self, seat: SeatHandedOn) -> None:
        """A seat freed elsewhere was handed to this patient (told twice: nothing more)."""
        st = self._state
        if st.group_waiting != seat.track_id:
            return
        phase = st.plan.phases[0] if st.plan.phases else Phase.intensive
        st.group_tracks = {phase.value: seat.track_id}
        st.group_waiting = None
        self._resolve_tasks(WAITLIST_TASK, ENGINE)
