"""Counsellor calendars: the program's counsellors validated (a bad one refused in one
line), the rule that ranks who may take a session, and the store deciding races on SQLite
and PostgreSQL (the `database_url` fixture): a counsellor never takes more sessions in a
week than their capacity, nor two at one start, and a session never gets two counsellors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from queue import SimpleQueue
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from temporalio.testing import WorkflowEnvironment

from activities import counsellors as booking
from activities.records import CounsellorBooking, CounsellorRelease, CounsellorWanted
from cli.main import main as cli_main
from clinical.attendance import SessionStatus
from clinical.closures import is_make_up
from clinical.counsellors import (
    CounsellingConfig,
    Counsellor,
    counsellors_for,
    week_of,
    why_none,
)
from clinical.identifiers import new_patient_id
from clinical.phases import Phase
from clinical.protocol import ProgramCatalog, ProgramProtocol
from clinical.requests import DischargeReason, DischargeRequest
from clinical.sites import Closure, SiteDirectory
from clinical.status import JourneyStatus
from infra.settings import load_settings
from infra.store import CareStore
from services.closures import announce_closure
from tests.console_support import store_only_console
from tests.support import (
    OPEN_SITES,
    PROGRAMS,
    clinic,
    drive_journey,
    make_enrolment,
    settle,
)
from tests.test_store import all_at_once
from workflows.patient_journey import PatientJourneyWorkflow

TEST_PROGRAMS = Path(__file__).parent / "programs"

# A Monday 09:00 at north (America/New_York, UTC-5 in March before the change).
MONDAY_9 = datetime(2027, 3, 1, 14, 0, tzinfo=UTC)
ZONE = "America/New_York"
LOCAL_MONDAY_9 = MONDAY_9.astimezone(ZoneInfo(ZONE))


def counsellor(cid: str, per_week: int = 10, **fields: Any) -> Counsellor:
    data: dict[str, Any] = {
        "id": cid,
        "name": f"Counsellor {cid}",
        "site": "north",
        "availability": [
            {"weekday": d, "start": "08:00", "end": "17:00"} for d in ("mon", "tue", "wed")
        ],
        "sessions_per_week": per_week,
    }
    return Counsellor.model_validate({**data, **fields})


# --- the program's counsellors -------------------------------------------------------


def _with_counselling(counselling: dict[str, Any]) -> ProgramProtocol:
    data = ProgramCatalog(PROGRAMS).load("default-iop").model_dump(mode="json")
    data["counselling"] = counselling
    return ProgramProtocol.model_validate(data)


def _one(**fields: Any) -> dict[str, Any]:
    return counsellor("CM-C01").model_dump(mode="json") | fields


@pytest.mark.parametrize(
    ("counselling", "message"),
    [
        ({"counsellors": [_one(sessions_per_week=0)]}, "greater than or equal to 1"),
        (
            {
                "counsellors": [
                    _one(availability=[{"weekday": "mon", "start": "17:00", "end": "09:00"}])
                ]
            },
            "availability on mon ends before it starts",
        ),
        (
            {
                "counsellors": [
                    _one(
                        availability=[
                            {"weekday": "mon", "start": "08:00", "end": "12:00"},
                            {"weekday": "mon", "start": "11:00", "end": "15:00"},
                        ]
                    )
                ]
            },
            "counsellor CM-C01: mon availability overlaps",
        ),
        ({"counsellors": [_one(), _one()]}, "id 'CM-C01' is used twice"),
        ({"counsellors": [_one(id="Dana")]}, "should match pattern"),
        ({"session_types": ["yoga"]}, "counselling.session_types: 'yoga' not among"),
    ],
)
def test_a_bad_counsellor_is_refused_with_its_reason(
    counselling: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        _with_counselling(counselling)


def test_the_demo_program_has_counsellors_at_both_sites() -> None:
    config = ProgramCatalog(PROGRAMS).load("demo-iop").counselling
    assert {c.site for c in config.counsellors} == {"north", "south"}


# --- who may take a session ------------------------------------------------------------


def test_the_least_loaded_counsellor_free_for_the_whole_session_comes_first() -> None:
    a, b = counsellor("CM-C01", per_week=2), counsellor("CM-C02")
    late = counsellor("CM-C03", availability=[{"weekday": "mon", "start": "12:00", "end": "20:00"}])
    everyone = [a, b, late]
    assert counsellors_for(everyone, LOCAL_MONDAY_9, 1, {}) == [a, b]
    assert counsellors_for(everyone, LOCAL_MONDAY_9, 1, {"CM-C01": 1}) == [b, a]
    assert counsellors_for(everyone, LOCAL_MONDAY_9, 1, {"CM-C01": 2}) == [b]  # a is full
    # 16:30 for an hour runs past 17:00: only the late counsellor holds it.
    half_four = LOCAL_MONDAY_9.replace(hour=16, minute=30)
    assert counsellors_for(everyone, half_four, 1, {}) == [late]
    assert why_none([a, b], half_four, 1) == "no counsellor is available Mon 16:30 for 1 h"
    assert why_none([], half_four, 1) == "the site has no counsellor"
    assert week_of(LOCAL_MONDAY_9 + timedelta(days=6)) == LOCAL_MONDAY_9.date()


# --- the store decides races -------------------------------------------------------------


@pytest.fixture
def store(database_url: str) -> Iterator[CareStore]:
    s = CareStore(database_url, pool_size=12)
    s.migrate()
    yield s
    s.dispose()


def test_racing_bookings_never_pass_a_counsellors_weekly_capacity(store: CareStore) -> None:
    """Twelve patients' sessions at twelve different hours of one week race for a
    counsellor who takes five a week: exactly five get them."""
    only = counsellor("CM-C01", per_week=5)
    week = LOCAL_MONDAY_9.date()
    numbered: SimpleQueue[tuple[int, str]] = SimpleQueue()
    for i in range(12):
        numbered.put((i, new_patient_id()))

    def one() -> str | None:
        i, patient = numbered.get()  # thread-safe, unlike a generator
        starts = MONDAY_9 + timedelta(hours=i % 8, days=i // 8)
        return store.book_counsellor(
            "default-iop", [only], week, patient, "INT1-W01-S2", starts, 1, MONDAY_9
        )

    won = [r for r in all_at_once(12, one) if r is not None]
    assert won == ["CM-C01"] * 5
    taken = store.counsellor_week("CM-C01", week)
    assert len(taken) == 5 and len({s.starts_at for s in taken}) == 5


def test_racing_for_one_start_each_counsellor_takes_one_session(store: CareStore) -> None:
    a, b = counsellor("CM-C01"), counsellor("CM-C02")
    week = LOCAL_MONDAY_9.date()
    racers: SimpleQueue[str] = SimpleQueue()
    for _ in range(10):
        racers.put(new_patient_id())

    def one() -> str | None:
        return store.book_counsellor(
            "default-iop", [a, b], week, racers.get(), "INT1-W01-S2", MONDAY_9, 1, MONDAY_9
        )

    won = sorted(r for r in all_at_once(10, one) if r is not None)
    assert won == ["CM-C01", "CM-C02"]


def test_a_counsellor_never_has_two_sessions_at_once(store: CareStore) -> None:
    """Sessions overlapping at different starts: refused one after the other, and when ten
    race (starts 15 minutes apart, an hour each) the counsellor ends with no two at once."""
    only = counsellor("CM-C01")
    week = LOCAL_MONDAY_9.date()

    def book(patient: str, starts: datetime) -> str | None:
        return store.book_counsellor(
            "default-iop", [only], week, patient, "INT1-W01-S2", starts, 1, MONDAY_9
        )

    assert book(new_patient_id(), MONDAY_9) == "CM-C01"
    assert book(new_patient_id(), MONDAY_9 + timedelta(minutes=30)) is None
    assert book(new_patient_id(), MONDAY_9 - timedelta(minutes=59)) is None
    assert book(new_patient_id(), MONDAY_9 + timedelta(hours=1)) == "CM-C01"  # back to back

    racers: SimpleQueue[int] = SimpleQueue()
    for i in range(10):
        racers.put(i)
    afternoon = MONDAY_9 + timedelta(hours=5)
    all_at_once(
        10, lambda: book(new_patient_id(), afternoon + timedelta(minutes=15 * racers.get()))
    )
    taken = sorted(s.starts_at for s in store.counsellor_week("CM-C01", week))
    assert len(taken) >= 3 and all(b - a >= timedelta(hours=1) for a, b in pairwise(taken))


def test_one_session_racing_itself_gets_one_counsellor(store: CareStore) -> None:
    """A retried activity racing its first try: the same counsellor, one row."""
    a, b = counsellor("CM-C01"), counsellor("CM-C02")
    patient, week = new_patient_id(), LOCAL_MONDAY_9.date()
    orders: SimpleQueue[list[Counsellor]] = SimpleQueue()
    for i in range(6):
        orders.put([a, b] if i % 2 else [b, a])
    results = all_at_once(
        6,
        lambda: store.book_counsellor(
            "default-iop", orders.get(), week, patient, "INT1-W01-S2", MONDAY_9, 1, MONDAY_9
        ),
    )
    assert len(set(results)) == 1 and results[0] in {"CM-C01", "CM-C02"}
    assert store.counsellor_loads([week]) == {(results[0], week): 1}


def test_booking_a_week_is_idempotent_says_who_is_missing_and_frees(store: CareStore) -> None:
    config = CounsellingConfig(counsellors=(counsellor("CM-C01", per_week=1),))
    patient = new_patient_id()
    wanted = (
        CounsellorWanted(session_id="INT1-W01-S2", starts_at=MONDAY_9, hours=1),
        CounsellorWanted(session_id="INT1-W01-S4", starts_at=MONDAY_9 + timedelta(days=1), hours=1),
        CounsellorWanted(session_id="INT1-W01-S5", starts_at=MONDAY_9 + timedelta(days=4), hours=1),
    )
    request = CounsellorBooking(
        patient_id=patient,
        program_id="default-iop",
        site_id="north",
        zone=ZONE,
        sessions=wanted,
        counselling=config,
        at=MONDAY_9,
    )
    first = booking.book(store, request)
    assert first.booked == {"INT1-W01-S2": "CM-C01"}
    assert first.unstaffed == {
        "INT1-W01-S4": "every counsellor available then is booked or at their weekly capacity",
        "INT1-W01-S5": "no counsellor is available Fri 09:00 for 1 h",
    }
    assert booking.book(store, request) == first  # a retry changes nothing
    # Discharged before the session: the counsellor's hour goes back.
    freed = booking.release(store, CounsellorRelease(patient_id=patient, from_=MONDAY_9))
    assert freed == 1 and store.counsellor_loads([LOCAL_MONDAY_9.date()]) == {}
    other = booking.book(store, request.model_copy(update={"patient_id": new_patient_id()}))
    assert other.booked == {"INT1-W01-S2": "CM-C01"}


# --- the journey books counsellors (patch counsellor-calendars) ------------------------


async def test_a_journey_books_a_counsellor_else_tells_the_case_manager_and_frees_at_the_end(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with clinic(env.client, tmp_path, programs_dir=TEST_PROGRAMS) as c:
        with env.auto_time_skipping_disabled():
            first, second = make_enrolment(), make_enrolment()
            one = await c.enrol(first, program_id="counsellors-iop")
            await settle(env.client, one.id)
            two = await c.enrol(second, program_id="counsellors-iop")
            p1, p2 = one.id.removeprefix("journey-"), two.id.removeprefix("journey-")
            s1, _ = await drive_journey(env, one, until=week_booked, step=timedelta(hours=2))
            s2, _ = await drive_journey(env, two, until=week_booked, step=timedelta(hours=2))
            individual = {
                p: next(x for x in s.sessions if x.session_type == "individual_therapy")
                for p, s in ((p1, s1), (p2, s2))
            }
            given = {p: c.store.counsellor_of(p, x.session_id) for p, x in individual.items()}
            # Both weeks begin at once: whichever books first has the one session a week.
            assert sorted(given.values(), key=str) == ["CM-C01", None]
            winner = next(p for p, who in given.items() if who == "CM-C01")
            loser = next(p for p in given if p != winner)
            [task] = c.store.tasks(patient_id=loser, kind="counsellor_needed")
            # Booked before the loser looked, or between its look and its booking (a race
            # the store decided): either way the task says so.
            assert task.detail in {
                f"no counsellor for 1 session(s): {individual[loser].session_id}: every "
                f"counsellor available then {why}"
                for why in (
                    "is booked or at their weekly capacity",
                    "was booked meanwhile or is at their weekly capacity",
                )
            }
            assert c.store.tasks(patient_id=winner, kind="counsellor_needed") == []
            # Discharged before the session: the counsellor's hour goes back.
            assert individual[winner].starts_at > max(s1.today, s2.today)
            handle = one if winner == p1 else two
            await handle.execute_update(
                PatientJourneyWorkflow.discharge,
                DischargeRequest(case_manager_id="CM-01", reason=DischargeReason.withdrew),
            )
            await settle(env.client, handle.id)
            assert c.store.counsellor_of(winner, individual[winner].session_id) is None


async def test_a_closure_gives_its_sessions_counsellor_back_and_staffs_the_make_ups(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with clinic(env.client, tmp_path, programs_dir=TEST_PROGRAMS) as c:
        with env.auto_time_skipping_disabled():
            handle = await c.enrol(make_enrolment(), program_id="counsellors-iop")
            pid = handle.id.removeprefix("journey-")
            status, _ = await drive_journey(env, handle, until=week_booked, step=timedelta(hours=2))
            individual = next(s for s in status.sessions if s.session_type == "individual_therapy")
            assert c.store.counsellor_of(pid, individual.session_id) == "CM-C01"
            day = individual.starts_at.astimezone(ZoneInfo(ZONE)).date()
            snow = Closure(site_id="north", date=day, reason="snow", announced_by="ops-1")
            sites = SiteDirectory.load(OPEN_SITES)
            now = await env.get_current_time()
            result = await announce_closure(c.client, c.store, sites, snow, now)
            assert list(result.applied) == [pid]
            await settle(env.client, handle.id)
            after: JourneyStatus = await handle.query(PatientJourneyWorkflow.status)
        cancelled = next(s for s in after.sessions if s.session_id == individual.session_id)
        assert cancelled.status == SessionStatus.cancelled
        # The hour goes back to the counsellor (one session a week: nobody else could have it).
        assert c.store.counsellor_of(pid, individual.session_id) is None
        make_ups = [s for s in after.sessions if is_make_up(s.session_id)]
        staffed = {s.session_id: c.store.counsellor_of(pid, s.session_id) for s in make_ups}
        counselled = [s.session_id for s in make_ups if s.session_type == "individual_therapy"]
        assert {sid for sid, who in staffed.items() if who} == set(counselled)
        week = week_of(individual.starts_at.astimezone(ZoneInfo(ZONE)))
        assert c.store.counsellor_loads([week]).get(("CM-C01", week), 0) == len(counselled)


def week_booked(status: JourneyStatus) -> bool:
    """The first intensive week's sessions are booked (the clock still before them)."""
    return status.phase == Phase.intensive and any(
        s.session_type == "individual_therapy" for s in status.sessions
    )


# --- counsellors' load in view -----------------------------------------------------------


def _book_this_week(store: CareStore, now: datetime, n: int) -> None:
    robin = next(
        c
        for c in ProgramCatalog(PROGRAMS).load("demo-iop").counselling.counsellors
        if c.id == "CM-C01"
    )
    monday = week_of(now.astimezone(ZoneInfo(ZONE)))
    for i in range(n):
        start = datetime.combine(monday, LOCAL_MONDAY_9.timetz()) + timedelta(hours=i)
        assert store.book_counsellor(
            "demo-iop", [robin], monday, new_patient_id(), "INT1-W01-S2", start, 1, now
        )


def test_the_command_line_shows_each_counsellors_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CAREPATH_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CAREPATH_DATABASE_URL", raising=False)
    monkeypatch.setenv("CAREPATH_PROGRAMS_DIR", str(PROGRAMS))
    now = datetime.now(UTC)

    class Frozen(datetime):  # the command's "this week" is the week booked, at any hour
        @classmethod
        def now(cls, tz: Any = None) -> Frozen:
            return cast(Frozen, now.astimezone(tz))

    monkeypatch.setattr("cli.sites.datetime", Frozen)
    store = CareStore(load_settings().database_url)
    store.migrate()
    _book_this_week(store, now, 3)
    store.dispose()
    assert cli_main(["counsellors", "--program", "demo-iop", "--site", "north", "--json"]) == 0
    shown = {c["id"]: c for c in json.loads(capsys.readouterr().out)}
    assert set(shown) == {"CM-C01", "CM-C02"}
    robin = shown["CM-C01"]
    assert (robin["this_week"], robin["next_week"], robin["sessions_per_week"]) == (3, 0, 12)
    assert robin["weekly_hours"] == 45
    assert cli_main(["counsellors", "--program", "demo-iop"]) == 0
    assert "demo-iop: counsellors" in capsys.readouterr().out
    assert cli_main(["counsellors", "--site", "west"]) == 2
    assert capsys.readouterr().err.startswith("error: site: 'west' is not a site")


async def test_the_operations_page_shows_each_counsellors_load(tmp_path: Path) -> None:
    async with store_only_console(tmp_path) as c:
        _book_this_week(c.console.store, c.clock(), 2)
        async with c.signed_in("ops") as http:
            shown = await http.get("/operations")
    assert shown.status_code == 200
    page = shown.text[shown.text.index("<h2>Counsellors</h2>") :]
    row = page[page.index("<td>CM-C01 Robin Hale") :].split("</tr>")[0]
    assert "<td>2 of 12</td><td>0 of 12</td>" in row and "<td>45 h</td>" in row
