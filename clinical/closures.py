"""What a site's closed days do to a patient's week: pure rules, no Temporal, no I/O.

A session on a closed day is cancelled, never missed: it does not count against attendance,
engagement or step-down. When closures leave an intensive week with fewer session days than
the program's minimum, a make-up session goes into a free slot of the same week (the
clinic's slot, a day the site is open and the patient's commitments leave free), or, when
none fits, the case manager gets a `closure_make_up` task."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from pydantic import BaseModel, ConfigDict

from clinical.assessment import Assessment
from clinical.attendance import SessionRecord, SessionStatus, cancel_from
from clinical.careplan import SessionSpec, is_free, minutes_of, treatment_week_of
from clinical.clock import ProgramClock
from clinical.journey import JourneyState, require_active
from clinical.phases import Phase
from clinical.protocol import ProgramProtocol
from clinical.requests import ClosureKnown, RequestRefused
from clinical.sites import Closure, ClosureCalendar
from clinical.tasks import TaskKind

MAKE_UP_TASK: TaskKind = "closure_make_up"


def closed_because(reason: str) -> str:
    return f"site closed: {reason}"


def split_closed(
    specs: Iterable[SessionSpec], calendar: ClosureCalendar, clock: ProgramClock
) -> tuple[list[SessionSpec], list[SessionRecord]]:
    """The sessions on open days (to book), and those on closed days, cancelled with why."""
    kept: list[SessionSpec] = []
    closed: list[SessionRecord] = []
    for spec in specs:
        reason = calendar.closed(clock.local_date(spec.day))
        if reason is None:
            kept.append(spec)
        else:
            closed.append(
                SessionRecord.booked(spec).model_copy(
                    update={
                        "status": SessionStatus.cancelled,
                        "cancelled_for": closed_because(reason),
                    }
                )
            )
    return kept, closed


def cancel_on(
    records: list[SessionRecord], day: date, reason: str, clock: ProgramClock, now_day: float
) -> tuple[list[SessionRecord], list[SessionRecord]]:
    """Cancel the scheduled sessions still ahead on local date `day`: the updated records and
    the ones cancelled (an unplanned closure)."""
    return cancel_from(
        records,
        now_day,
        only=lambda r: clock.local_date(r.day) == day,
        because=closed_because(reason),
    )


def is_make_up(session_id: str) -> bool:
    """A make-up session's ID ends in `-M<n>` (`INT1-W03-M1`)."""
    return session_id.rsplit("-", 1)[-1].startswith("M")


class MakeUp(BaseModel):
    """What closures leave an intensive week needing: the make-up sessions that fit, and how
    many session days are still short after them (a task for the case manager)."""

    model_config = ConfigDict(frozen=True)

    sessions: list[SessionSpec]
    short_by: int


def make_up(
    week: list[SessionRecord],
    *,
    phase: Phase,
    week_start_day: int,
    now_day: float,
    calendar: ClosureCalendar,
    clock: ProgramClock,
    protocol: ProgramProtocol,
    assessment: Assessment,
) -> MakeUp:
    """Make-up sessions for one treatment week's records (all of them, cancelled included)."""
    if phase != Phase.intensive:
        return MakeUp(sessions=[], short_by=0)
    mine = [r for r in week if r.attendee == "patient"]
    planned_days = {clock.local_date(r.day) for r in mine if not is_make_up(r.session_id)}
    days = {clock.local_date(r.day) for r in mine if r.status != SessionStatus.cancelled}
    wanted = min(protocol.intensive.min_session_days, len(planned_days))
    short = wanted - len(days)
    closed = [r for r in mine if r.cancelled_for is not None]
    if short <= 0 or not closed:
        return MakeUp(sessions=[], short_by=0)
    individual = protocol.schedule.individual_session_type
    template = next((r for r in closed if r.session_type != individual), closed[0])
    taken = {r.session_id for r in week}
    sessions: list[SessionSpec] = []
    slots = _free_slots(
        week_start_day, now_day, template.hours, calendar, clock, protocol, assessment
    )
    for day in slots:
        local = clock.local_date(day)
        if short == 0 or local in days:
            continue
        n = 1 + sum(1 for sid in taken if is_make_up(sid))
        session_id = f"{treatment_week_of(template.session_id)}-M{n}"
        spec = SessionSpec.model_validate(
            {
                **template.model_dump(include=set(SessionSpec.model_fields)),
                "session_id": session_id,
                "day": day,
                "starts_at": clock.calendar(day),
            }
        )
        sessions.append(spec)
        taken.add(session_id)
        days.add(local)
        short -= 1
    return MakeUp(sessions=sessions, short_by=short)


def _free_slots(
    week_start_day: int,
    now_day: float,
    hours: float,
    calendar: ClosureCalendar,
    clock: ProgramClock,
    protocol: ProgramProtocol,
    assessment: Assessment,
) -> list[float]:
    """The program days of the clinic's slots in the week that are still ahead, on open
    days, and free of the patient's commitments; earliest first."""
    found: list[float] = []
    for slot in protocol.schedule.slots:
        for weekday in slot.weekdays:
            day = week_start_day + weekday.number + minutes_of(slot.start) / 1440
            if day <= now_day or calendar.closed(clock.local_date(day)) is not None:
                continue
            start = minutes_of(slot.start)
            busy = [
                (minutes_of(c.start), minutes_of(c.end))
                for c in assessment.commitments
                if c.weekday == weekday
            ]
            if is_free(busy, start, start + round(hours * 60)):
                found.append(day)
    return sorted(found)


def check_closure(state: JourneyState, closure: Closure, today: float) -> None:
    require_active(state)
    if state.closures is None:
        raise RequestRefused(
            "this journey keeps the UTC calendar it was enrolled on (before sites had time "
            "zones) and takes no closures"
        )
    if closure.site_id != state.site_id:
        raise RequestRefused(f"the patient is at site {state.site_id}, not {closure.site_id}")
    if closure.date < state.clock.local_date(today):
        raise RequestRefused(f"date: {closure.date} has passed at site {state.site_id}")
    if any(c.date == closure.date for c in state.closures.unplanned):
        raise ClosureKnown(f"the closure on {closure.date} was announced to this journey before")


def apply_closure(state: JourneyState, closure: Closure, today: float) -> list[SessionRecord]:
    """The site is closed on `closure.date`: its sessions still ahead that day are
    cancelled (never missed). Check-ins due that day move when the journey wakes for them."""
    assert state.closures is not None
    state.closures = state.closures.with_closure(closure)
    state.sessions, cancelled = cancel_on(
        state.sessions, closure.date, closure.reason, state.clock, today
    )
    return cancelled
