"""Group seats in the store, on SQLite and on PostgreSQL (the `database_url` fixture): a
track never seats more than its capacity however many enrolments race for it, and a seat
freed goes to the first on the waitlist. The command line shows each track's capacity."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from activities import group_seats
from activities.records import GroupPlacement, GroupPlacementRequest, GroupRelease, SeatHandedOn
from cli.main import main as cli_main
from clinical.groups import TrackLoad
from clinical.identifiers import new_patient_id
from clinical.protocol import ProgramCatalog, ProgramProtocol
from infra.settings import load_settings
from infra.store import CareStore, SeatGiven
from tests.console_support import store_only_console
from tests.support import PROGRAMS, make_enrolment
from tests.test_store import all_at_once

AT = datetime(2027, 3, 1, 14, 0, tzinfo=UTC)
PROGRAM = "default-iop"
(EVENING,) = (
    t for t in ProgramCatalog(PROGRAMS).load(PROGRAM).groups.tracks if t.id == "north-evening"
)
CAPACITY = 8
TRACK = EVENING.model_copy(update={"capacity": CAPACITY})


@pytest.fixture
def store(database_url: str) -> Iterator[CareStore]:
    s = CareStore(database_url, pool_size=10)
    s.migrate()
    yield s
    s.dispose()


def patients(n: int) -> list[str]:
    return [new_patient_id() for _ in range(n)]


def seat_all(store: CareStore, who: list[str]) -> None:
    for p in who:
        assert store.take_seat(PROGRAM, TRACK, p, AT) is not None


def test_racing_for_the_last_seats_exactly_capacity_win(store: CareStore) -> None:
    seated = patients(5)
    seat_all(store, seated)
    racers = patients(12)
    queue = iter(racers)
    results = all_at_once(12, lambda: (p := next(queue), store.take_seat(PROGRAM, TRACK, p, AT)))
    winners = {p: seat for p, seat in results if seat is not None}
    assert len(winners) == CAPACITY - len(seated)
    roster = store.roster(PROGRAM, TRACK.id)
    assert sorted(roster) == list(range(1, CAPACITY + 1))
    assert set(roster.values()) == set(seated) | set(winners)
    assert all(roster[seat] == p for p, seat in winners.items())
    assert store.track_loads(PROGRAM) == {TRACK.id: TrackLoad(taken=CAPACITY)}


def test_one_patient_racing_themself_holds_one_seat(store: CareStore) -> None:
    patient = new_patient_id()
    seats = all_at_once(6, lambda: store.take_seat(PROGRAM, TRACK, patient, AT))
    assert seats == [1] * 6
    assert store.roster(PROGRAM, TRACK.id) == {1: patient}


def test_a_freed_seat_goes_to_the_first_on_the_waitlist(store: CareStore) -> None:
    seated = patients(CAPACITY)
    seat_all(store, seated)
    first, second, third = patients(3)
    for i, p in enumerate((first, second, third)):
        assert store.take_seat(PROGRAM, TRACK, p, AT) is None
        assert store.join_waitlist(PROGRAM, TRACK.id, p, AT + timedelta(hours=i)) == i + 1
    assert store.join_waitlist(PROGRAM, TRACK.id, second, AT) == 2  # again: the same place
    assert (
        store.join_waitlist(PROGRAM, TRACK.id, seated[0], AT) == 0
    )  # holds a seat: no need to wait
    assert store.track_loads(PROGRAM)[TRACK.id] == TrackLoad(
        taken=CAPACITY, waiting=3, waiting_since=AT
    )

    given = store.free_seat(PROGRAM, TRACK, seated[2], AT)
    assert given == [SeatGiven(patient_id=first, seat=3)]
    assert [w.patient_id for w in store.waitlist(PROGRAM, TRACK.id)] == [second, third]
    # A patient who leaves while waiting gives up their place and nobody else's.
    assert store.free_seat(PROGRAM, TRACK, second, AT) == []
    assert [w.patient_id for w in store.waitlist(PROGRAM, TRACK.id)] == [third]
    assert store.track_loads(PROGRAM)[TRACK.id].waiting_since == AT + timedelta(hours=2)
    # Freeing a seat the patient no longer holds changes nothing.
    assert store.free_seat(PROGRAM, TRACK, seated[2], AT) == []
    assert store.roster(PROGRAM, TRACK.id)[3] == first


def test_seats_freed_at_once_go_to_the_waitlist_in_order(store: CareStore) -> None:
    small = 4
    track = TRACK.model_copy(update={"capacity": small})
    seated = patients(small)
    for p in seated:
        store.take_seat(PROGRAM, track, p, AT)
    waiting = patients(6)
    for p in waiting:
        store.join_waitlist(PROGRAM, TRACK.id, p, AT)
    leaving = iter(seated)
    given = all_at_once(small, lambda: store.free_seat(PROGRAM, track, next(leaving), AT))
    seated_now = list(itertools.chain.from_iterable(given))
    assert sorted(g.patient_id for g in seated_now) == sorted(waiting[:small])
    assert sorted(g.seat for g in seated_now) == list(range(1, small + 1))
    assert set(store.roster(PROGRAM, TRACK.id).values()) == set(waiting[:small])
    assert [w.patient_id for w in store.waitlist(PROGRAM, TRACK.id)] == waiting[small:]


def test_a_larger_capacity_seats_those_waiting(store: CareStore) -> None:
    """The program raised the track's capacity: the waitlist fills the new seats."""
    seat_all(store, patients(CAPACITY))
    waiting = patients(3)
    for p in waiting:
        store.join_waitlist(PROGRAM, TRACK.id, p, AT)
    given = store.seat_the_waitlist(
        PROGRAM, TRACK.model_copy(update={"capacity": CAPACITY + 2}), AT
    )
    assert given == [
        SeatGiven(patient_id=waiting[0], seat=CAPACITY + 1),
        SeatGiven(patient_id=waiting[1], seat=CAPACITY + 2),
    ]
    assert store.track_loads(PROGRAM) == {
        TRACK.id: TrackLoad(taken=CAPACITY + 2, waiting=1, waiting_since=AT)
    }


def test_another_programs_track_of_the_same_name_is_another_group(store: CareStore) -> None:
    seat_all(store, patients(CAPACITY))
    newcomer = new_patient_id()
    assert store.take_seat(PROGRAM, TRACK, newcomer, AT) is None
    assert store.take_seat("demo-iop", TRACK, newcomer, AT) == 1
    assert store.track_loads("demo-iop") == {TRACK.id: TrackLoad(taken=1)}


def test_the_command_line_shows_each_tracks_capacity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CAREPATH_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CAREPATH_DATABASE_URL", raising=False)
    monkeypatch.setenv("CAREPATH_PROGRAMS_DIR", str(PROGRAMS))
    store = CareStore(load_settings().database_url)
    store.migrate()
    seat_all(store, patients(CAPACITY))
    waiting_since = datetime.now(UTC) - timedelta(days=2)
    store.join_waitlist(PROGRAM, TRACK.id, new_patient_id(), waiting_since)
    store.dispose()

    assert cli_main(["tracks", "--site", "north", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    evening = next(t for t in shown["tracks"] if t["id"] == TRACK.id)
    # The program's capacity (10), of which the test's 8 seats are taken.
    assert (evening["taken"], evening["free"], evening["waiting"]) == (8, 2, 1)
    assert 2 <= evening["longest_wait_days"] < 2.1
    assert {t["site"] for t in shown["tracks"]} == {"north"}
    assert shown["facilitator_hours"] == {"Dana Reyes": 29.0, "Lee Chen": 35.0, "Sam Okafor": 9.0}

    assert cli_main(["tracks"]) == 0
    table = capsys.readouterr().out  # as wide as a terminal: the JSON above has the figures
    assert "default-iop: group tracks" in table
    assert "facilitator hours a week: Ana Flores 24 h, Dana Reyes 29 h" in table

    assert cli_main(["tracks", "--site", "west"]) == 2
    assert capsys.readouterr().err.startswith("error: site: 'west' is not a site")


async def test_the_operations_page_shows_each_tracks_capacity(tmp_path: Path) -> None:
    async with store_only_console(tmp_path) as c:
        for p in patients(3):
            c.console.store.take_seat(PROGRAM, TRACK, p, AT)
        c.console.store.join_waitlist(
            PROGRAM, TRACK.id, new_patient_id(), c.clock() - timedelta(days=1.5)
        )
        async with c.signed_in("ops") as http:
            shown = await http.get("/operations")
    assert shown.status_code == 200
    page = shown.text
    row = page[page.index("<td>north-evening") :].split("</tr>")[0]
    assert "<td>3 of 10</td><td>7</td><td>1</td>" in row
    assert "<td>1.5 days</td>" in row and "Sam Okafor, Lee Chen" in row
    assert "Facilitator hours a week: Ana Flores 24 h, Dana Reyes 29 h" in page
    # The demo program extends the default one: the same tracks, seats of its own.
    demo = page[page.index("<caption>demo-iop") :]
    assert "<td>0 of 3</td>" in demo.split("<td>north-evening")[1].split("</tr>")[0]


# --- placing and releasing, as the journey's activities do (retried: the same answer) ----


def _request(patient_id: str, protocol: ProgramProtocol, at: datetime) -> GroupPlacementRequest:
    return GroupPlacementRequest(
        patient_id=patient_id,
        program_id=PROGRAM,
        site_id="north",
        level="2.1",
        phase="intensive",
        assessment=make_enrolment().assessment,
        protocol=protocol,
        at=at,
    )


def test_placing_and_releasing_twice_changes_nothing_more(store: CareStore) -> None:
    base = ProgramCatalog(PROGRAMS).load(PROGRAM)
    one_seat = tuple(
        t.model_copy(update={"capacity": 1}) for t in base.groups.tracks if t.site == "north"
    )
    protocol = base.model_copy(
        update={"groups": base.groups.model_copy(update={"tracks": one_seat})}
    )
    first, second, third = patients(3)
    placed = group_seats.place(store, _request(first, protocol, AT))
    assert group_seats.place(store, _request(first, protocol, AT)) == GroupPlacement(
        track_id=placed.track_id
    )
    assert placed.track_id == "north-morning"
    assert group_seats.place(store, _request(second, protocol, AT)).track_id == "north-evening"
    waiting = group_seats.place(store, _request(third, protocol, AT))
    assert (waiting.waiting_for, waiting.ahead, waiting.alternatives) == (
        "north-morning",
        0,
        ("north-evening",),
    )
    assert group_seats.place(store, _request(third, protocol, AT)).waiting_for == "north-morning"
    assert store.places_of(PROGRAM, third).waiting == ("north-morning",)
    # The first leaves: the seat goes to the third, and a retried release says so again.
    later = AT + timedelta(days=30)
    release = GroupRelease(
        patient_id=first,
        program_id=PROGRAM,
        track_ids=("north-morning",),
        protocol=protocol,
        at=later,
    )
    told = (SeatHandedOn(patient_id=third, track_id="north-morning"),)
    assert group_seats.release(store, release) == told
    assert group_seats.release(store, release) == told
    assert store.roster(PROGRAM, "north-morning") == {1: third}
    assert store.places_of(PROGRAM, first).seats == {}
