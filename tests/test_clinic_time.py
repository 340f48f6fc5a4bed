"""Journeys on a clinic's own time, on the time-skipping server: a journey starting on each
of the seven weekdays, journeys crossing both daylight-saving changes, a month end, a year
end and 29 February, a holiday week, and an unplanned closure announced twice."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from clinical.attendance import SessionStatus
from clinical.closures import is_make_up
from clinical.phases import Phase
from clinical.sites import Closure, SiteDirectory
from clinical.status import JourneyStatus
from services.closures import ClosureRefused, announce_closure
from tests.clinic_time import START, StartChoice, next_date, step_to
from tests.support import (
    DAY,
    PROGRAMS,
    attend_every_session,
    clinic,
    first_session_of_week,
    in_intensive_week,
    journey_histories,
    make_enrolment,
    settle,
    start_time_skipping,
    write_holiday_sites,
)
from workflows.patient_journey import PatientJourneyWorkflow

NY = ZoneInfo("America/New_York")
# Works Monday to Friday: the plan's groups are in the evening (18:00) or on Saturday.
DAY_JOB = [
    {"weekday": d, "start": "08:00", "end": "17:00", "kind": "work"}
    for d in ("mon", "tue", "wed", "thu", "fri")
]


@asynccontextmanager
async def server(start: StartChoice | None) -> AsyncIterator[WorkflowEnvironment]:
    env = await start_time_skipping(start)
    try:
        yield env
    finally:
        await env.shutdown()


def assert_on_the_sites_calendar(status: JourneyStatus) -> None:
    """Every session is where the plan put it on the site's wall clock: its weekday and
    start, the local date of its program day, and the zone's offset on that date."""
    clock = status.clock
    planned = {
        (s.weekday.number, s.start.strftime("%H:%M"))
        for stage in status.plan.stages
        for s in stage.schedule.sessions
    }
    for s in status.sessions:
        local = s.starts_at.astimezone(NY)
        assert local.date() == clock.local_date(s.day), s.session_id
        assert s.starts_at.utcoffset() == local.utcoffset(), s.session_id
        assert clock.instant(s.day) == s.starts_at, s.session_id
        if s.attendee == "patient" and s.session_type != "family_therapy":
            assert (local.weekday(), f"{local:%H:%M}") in planned or is_make_up(s.session_id)


@pytest.mark.parametrize("weekday", range(7), ids=lambda d: f"weekday-{d}")
async def test_a_journey_starting_on_any_weekday(weekday: int, tmp_path: Path) -> None:
    """The run's hour, on each weekday: treatment weeks begin on the site's Mondays, and a
    week's sheet lands whole."""
    start = StartChoice(weekday, START.hour, START.minute)
    async with server(start) as env, clinic(env.client, tmp_path) as c:
        enrolment = make_enrolment()
        with env.auto_time_skipping_disabled():
            _, status, reported = await c.enrol_and_drive(
                env,
                enrolment,
                choose=lambda n: "missed" if n % 5 == 0 else "attended",
                sheets=True,
                until=in_intensive_week(3),
            )
    clock = status.clock
    assert clock.zone == "America/New_York"
    assert clock.origin_date.weekday() == weekday
    assert clock.calendar(0).strftime("%H:%M") == "00:00"
    assert status.phase_start_day is not None
    assert clock.calendar(status.phase_start_day).strftime("%a %H:%M") == "Mon 00:00"
    assert 1 <= status.phase_start_day <= 7
    assert_on_the_sites_calendar(status)
    marked = {sid: v for sid, v in reported.items() if v != "none"}
    assert (
        marked
        and {s.session_id: s.status.value for s in status.sessions if s.session_id in marked}
        == marked
    )
    expected = sum(v == "attended" for v in marked.values()) / len(marked)
    assert status.attendance_rate == pytest.approx(expected)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("month", "day", "leap", "crossing"),
    [
        (1, 11, False, "spring daylight-saving change"),
        (10, 18, False, "autumn daylight-saving change"),
        (1, 20, False, "a month end"),
        (12, 14, False, "a year end"),
        (2, 10, True, "29 February"),
    ],
    ids=["spring-dst", "autumn-dst", "month-end", "year-end", "leap-day"],
)
async def test_a_journey_crossing(
    month: int, day: int, leap: bool, crossing: str, tmp_path: Path
) -> None:
    async with server(None) as env, clinic(env.client, tmp_path) as c:
        await step_to(env, next_date(await env.get_current_time(), month, day, leap=leap))
        enrolment = make_enrolment(commitments=DAY_JOB)
        with env.auto_time_skipping_disabled():
            handle = await c.enrol(enrolment)
            status, _ = await attend_every_session(
                env, handle, until=lambda s: s.phase == Phase.aftercare
            )
    assert_on_the_sites_calendar(status)
    first, last = status.sessions[0].starts_at, status.sessions[-1].starts_at
    evening = [s.starts_at for s in status.sessions if s.starts_at.astimezone(NY).hour == 18]
    assert evening, "a day job puts the groups in the evening"
    assert {f"{t.astimezone(NY):%H:%M}" for t in evening} == {"18:00"}
    if crossing == "spring daylight-saving change":
        # Enrolled in January: the evening group at 18:00 -05:00 then, 18:00 -04:00 in April.
        offsets = {t.astimezone(NY).month: t.utcoffset() for t in evening}
        assert offsets[1] == timedelta(hours=-5) and offsets[4] == timedelta(hours=-4)
        assert {f"{t:%H:%M}" for t in evening if t.month == 1} == {"18:00"}
        assert {t.astimezone(ZoneInfo("UTC")).hour for t in evening} == {22, 23}
    elif crossing == "autumn daylight-saving change":
        assert {t.utcoffset() for t in evening} == {timedelta(hours=-4), timedelta(hours=-5)}
    elif crossing == "a month end":
        assert first.month != last.month
    elif crossing == "a year end":
        assert first.year + 1 == last.year
    else:
        dates = {s.starts_at.astimezone(NY).date() for s in status.sessions}
        assert first.date() < datetime(first.year, 2, 29).date() < last.date()
        assert status.clock.local_date(status.clock.calendar_day(datetime(first.year, 3, 1))) == (
            datetime(first.year, 3, 1).date()
        )
        assert dates  # every session's date was checked against its program day above


async def test_a_holiday_week_cancels_a_session_and_leaves_attendance_as_it_was(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    enrolment = make_enrolment()
    holiday = first_session_of_week(enrolment, await env.get_current_time(), week=2)
    sites = write_holiday_sites(tmp_path / "sites.toml", holiday.starts_at)
    async with clinic(env.client, tmp_path, sites=sites) as c:
        with env.auto_time_skipping_disabled():
            handle = await c.enrol(enrolment)
            status, reported = await attend_every_session(env, handle, until=in_intensive_week(3))
        rows = {r.session_id: r for r in c.store.appointments(enrolment.patient_id)}
        reminders = {
            n.key.rsplit("/", 1)[-1]
            for n in c.store.outbox(enrolment.patient_id)
            if n.kind == "session_reminder"
        }
    closed = [s for s in status.sessions if s.cancelled_for]
    # Every session of the day (a group, and an individual session after it) is cancelled.
    assert closed and {s.starts_at.date() for s in closed} == {holiday.starts_at.date()}
    assert {s.status for s in closed} == {SessionStatus.cancelled}
    assert {s.cancelled_for for s in closed} == {"site closed: Founders Day"}
    for s in closed:
        assert rows[s.session_id].status == "cancelled"
        assert s.session_id not in reminders and s.session_id not in reported
    # Not missed: every session that took place was attended, so the rate is still 100%.
    assert status.attendance.missed == 0 and status.attendance_rate == 1.0
    assert status.attendance.cancelled == len(closed)
    # Three session days a week is the program's floor: a make-up in a free slot that week.
    (make_up,) = [s for s in status.sessions if is_make_up(s.session_id)]
    assert make_up.session_id == "INT1-W02-M1"
    assert make_up.starts_at.date() != holiday.starts_at.date()
    assert rows[make_up.session_id].status == "attended"
    assert_on_the_sites_calendar(status)


async def test_an_unplanned_closure_sent_twice_cancels_each_session_once(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    sites = SiteDirectory.load(PROGRAMS / "sites.toml")
    async with clinic(env.client, tmp_path) as c:
        enrolment = make_enrolment()
        with env.auto_time_skipping_disabled():
            handle, status, _ = await c.enrol_and_drive(env, enrolment, until=in_intensive_week(1))
            ahead = min(
                (s for s in status.sessions if s.day > status.program_day + 1),
                key=lambda s: s.day,
            )
            snow = Closure(
                site_id="north", date=ahead.starts_at.date(), reason="snow", announced_by="ops-1"
            )
            now = await env.get_current_time()
            first = await announce_closure(c.client, c.store, sites, snow, now)
            second = await announce_closure(c.client, c.store, sites, snow, now)
            await settle(c.client, handle.id)
            after: JourneyStatus = await handle.query(PatientJourneyWorkflow.status)
            with pytest.raises(ClosureRefused, match=r"date: .* has passed at site north"):
                await announce_closure(
                    c.client,
                    c.store,
                    sites,
                    snow.model_copy(update={"date": now.date() - timedelta(days=2)}),
                    now,
                )
            with pytest.raises(ClosureRefused, match="'west' is not a site"):
                await announce_closure(
                    c.client, c.store, sites, snow.model_copy(update={"site_id": "west"}), now
                )
            histories = await journey_histories(c.client, handle)
        pid = enrolment.patient_id
        audit = c.store.audit_trail(pid, actions=["closure_applied"])
        notices = [n for n in c.store.outbox(pid) if n.kind == "closure_notice"]
        rows = {r.session_id: r.status for r in c.store.appointments(pid)}
        recorded = c.store.closures("north")

    assert (first.new, list(first.applied), first.already) == (True, [pid], [])
    assert (second.new, second.applied, second.already) == (False, {}, [pid])
    on_that_day = [
        s
        for s in after.sessions
        if s.starts_at.date() == snow.date and not is_make_up(s.session_id)
    ]
    assert on_that_day and {s.status for s in on_that_day} == {SessionStatus.cancelled}
    assert {rows[s.session_id] for s in on_that_day} == {"cancelled"}
    assert len(audit) == 1 and audit[0].actor == "ops-1"
    assert len(notices) == 1 and "snow" in notices[0].body and "Avery" not in notices[0].body
    assert len(recorded) == 1
    accepted = [
        e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
        for h in histories
        for e in h.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    ]
    assert accepted.count("announce_closure") == 1
    assert after.attendance.missed == 0


async def test_a_tasks_due_time_is_wall_clock_time_at_the_site(tmp_path: Path) -> None:
    """A schedule conflict opened two days before the spring change is due three program days
    later at the same local time (72 real hours would land an hour late)."""
    from clinical.assessment import Enrolment
    from tests.support import enrolment_data

    busy = [
        {"weekday": d, "start": "07:00", "end": "21:00", "kind": "work"}
        for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    ]
    async with server(None) as env, clinic(env.client, tmp_path) as c:
        change = spring_change_after(await env.get_current_time())
        await step_to(env, datetime.combine(change - 2 * DAY, time(10), tzinfo=NY))
        handle = await c.enrol(Enrolment.model_validate(enrolment_data(commitments=busy)))
        await settle(c.client, handle.id)
        (task,) = c.store.tasks()
        status: JourneyStatus = await handle.query(PatientJourneyWorkflow.status)
    (opened_task,) = status.open_tasks  # when the journey opened it, on its own clock
    assert task.due_at is not None and task.kind == "schedule_conflict"
    opened, due = opened_task.opened_at.astimezone(NY), task.due_at.astimezone(NY)
    assert opened.utcoffset() == timedelta(hours=-5) and due.utcoffset() == timedelta(hours=-4)
    assert (due.date() - opened.date()).days == 3
    assert abs(
        (due.replace(tzinfo=None) - opened.replace(tzinfo=None)) - timedelta(days=3)
    ) < timedelta(minutes=1)


def spring_change_after(instant: datetime) -> date:
    """The site's next spring-forward date a few days or more after `instant`."""
    day = instant.astimezone(NY).date() + timedelta(days=4)
    while not (noon(day).utcoffset() == timedelta(hours=-4) != noon(day - DAY).utcoffset()):
        day += DAY
    return day


def noon(day: date) -> datetime:
    return datetime.combine(day, time(12), tzinfo=NY)


def wall_days(start: datetime, end: datetime) -> timedelta:
    """Wall-clock time at the site from `start` to `end` (not real time)."""
    return end.astimezone(NY).replace(tzinfo=None) - start.astimezone(NY).replace(tzinfo=None)


async def test_a_referrals_timer_and_task_keep_the_sites_wall_clock(tmp_path: Path) -> None:
    """Two referrals sent two days before the spring change: the partner's reminder is set for
    five program days on, and the task asking for the other's missing consent is due seven
    days on, each at the local time it began (that many times 24 real hours would land an
    hour late)."""
    from clinical.assessment import Enrolment
    from clinical.identifiers import referral_workflow_id
    from clinical.referrals import ReferralStage, ReferralStatus
    from tests.support import enrolment_data
    from workflows.referral import ReferralWorkflow

    data = enrolment_data(
        social_needs=["employment", "housing"], consents={"partner_disclosure": ["employment"]}
    )
    enrolment = Enrolment.model_validate(data)
    wanted = {"employment": ReferralStage.sent, "housing": ReferralStage.awaiting_consent}
    async with server(None) as env, clinic(env.client, tmp_path) as c:
        change = spring_change_after(await env.get_current_time())
        await step_to(env, datetime.combine(change - 2 * DAY, time(10), tzinfo=NY))
        with env.auto_time_skipping_disabled():
            await c.enrol(enrolment)
            loops = {
                need: c.client.get_workflow_handle(referral_workflow_id(enrolment.patient_id, need))
                for need in wanted
            }
            for _ in range(600):  # real time: the loops send at once, then wait
                stages, events = {}, []
                with contextlib.suppress(RPCError):  # not started yet
                    for need, loop in loops.items():
                        status: ReferralStatus = await loop.query(ReferralWorkflow.status)
                        stages[need] = status.stage
                    events = list((await loops["employment"].fetch_history()).events)
                timers = [e for e in events if e.HasField("timer_started_event_attributes")]
                # The loop says it awaits consent as it opens the task: wait for the task too.
                asked = c.store.tasks(kind="consent_needed")
                if stages == wanted and timers and asked:
                    break
                await asyncio.sleep(0.1)
            assert stages == wanted
            (consent_task,) = c.store.tasks(kind="consent_needed")
    began = events[0].event_time.ToDatetime(tzinfo=UTC)
    (timer,) = timers
    set_at = timer.event_time.ToDatetime(tzinfo=UTC)
    fires = set_at + timer.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
    assert began.astimezone(NY).utcoffset() == timedelta(hours=-5)
    assert fires.astimezone(NY).utcoffset() == timedelta(hours=-4)
    assert abs(wall_days(began, fires) - 5 * DAY) < timedelta(minutes=1)
    assert fires - set_at < 5 * DAY - timedelta(minutes=59)  # the lost hour, in real time
    due = consent_task.due_at
    assert due is not None and due.astimezone(NY).utcoffset() == timedelta(hours=-4)
    assert abs(wall_days(began, due) - 7 * DAY) < timedelta(minutes=1)
