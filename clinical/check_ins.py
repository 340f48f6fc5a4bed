"""The rules of aftercare's check-in calls a case manager or the site's calendar changes:
a new schedule for the check-ins ahead, a check-in moved off a closed day, and how many in
a row went unanswered."""

from __future__ import annotations

import itertools

from clinical.aftercare import CallOutcome, FollowUp, FollowUpResult, follow_up_schedule
from clinical.clock import next_open_day
from clinical.journey import JourneyState, require_active
from clinical.phases import Phase
from clinical.requests import CheckInAdjustment, RequestRefused


def postpone_check_in(state: JourneyState, call: FollowUp) -> FollowUp:
    """A check-in due on a closed day moves to the same time on the next open day."""
    day = next_open_day(state.clock, call.day + 1, state.closed)
    moved = call.model_copy(update={"day": day, "due_at": state.clock.calendar(day)})
    state.follow_ups = [moved if f is call else f for f in state.follow_ups]
    return moved


def check_check_in_adjustment(
    state: JourneyState, adjustment: CheckInAdjustment, today: float
) -> None:
    require_active(state)
    if state.phase != Phase.aftercare or state.aftercare_start_day is None:
        raise RequestRefused("check-ins can be rescheduled in aftercare only")
    days = adjustment.days
    if any(b <= a for a, b in itertools.pairwise(days)):
        raise RequestRefused("the days must be strictly increasing")
    elapsed = today - state.aftercare_start_day
    if days[0] <= elapsed:
        raise RequestRefused(
            f"day {days[0]} has passed: aftercare is on day {int(elapsed)}; give days ahead"
        )
    limit = state.protocol.aftercare.duration_days
    if days[-1] > limit:
        raise RequestRefused(f"day {days[-1]} is after aftercare ends (day {limit})")
    taken = {f.call_id for f in state.follow_ups if f.episode == state.episode and f.outcome}
    clash = [d for d in days if f"FU-D{d:03d}" in taken]
    if clash:
        raise RequestRefused(f"day {clash[0]} already had its check-in")


def check_ins_ahead(state: JourneyState) -> list[FollowUp]:
    """This episode's check-ins not yet made."""
    return [f for f in state.follow_ups if f.outcome is None and f.episode == state.episode]


def apply_check_in_adjustment(state: JourneyState, adjustment: CheckInAdjustment) -> int:
    """Replace the check-ins still ahead; returns how many there are now."""
    assert state.aftercare_start_day is not None
    done = [f for f in state.follow_ups if f.outcome is not None or f.episode != state.episode]
    ahead = follow_up_schedule(
        state.aftercare_start_day,
        state.assessment.contact_window,
        state.clock,
        state.protocol,
        state.episode,
        offsets=adjustment.days,
        closed=state.closed,
    )
    state.follow_ups = [*done, *ahead]
    return len(ahead)


def unreachable_in_a_row(state: JourneyState) -> int:
    """Consecutive unreachable check-ins of this episode, up to the latest one done."""
    done = [f for f in state.follow_ups if f.episode == state.episode and f.outcome is not None]
    count = 0
    for f in reversed(done):
        if f.outcome != CallOutcome.unreachable:
            break
        count += 1
    return count


def record_check_in(state: JourneyState, due: FollowUp, result: FollowUpResult) -> None:
    """The check-in's call has concluded: its outcome, attempts and answers."""
    state.follow_ups = [
        f.model_copy(
            update={
                "outcome": result.outcome,
                "attempts": result.attempts,
                "check_in": result.check_in,
            }
        )
        if (f.episode, f.call_id) == (due.episode, due.call_id)
        else f
        for f in state.follow_ups
    ]


def begin_aftercare(state: JourneyState, monday: int) -> list[FollowUp]:
    """Treatment is done: aftercare begins on program day `monday` with its check-ins
    (returned) on the site's open days."""
    state.aftercare_start_day = monday
    calls = follow_up_schedule(
        monday,
        state.assessment.contact_window,
        state.clock,
        state.protocol,
        state.episode,
        closed=state.closed,
    )
    state.follow_ups = [*state.follow_ups, *calls]
    return calls
