"""Will a program's intensive tracks hold its admissions? (`clinical.seat_demand`, rules
alone: no Temporal, no store.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clinical.assessment import Assessment, Enrolment
from clinical.protocol import ProgramCatalog
from clinical.seat_demand import SeatDemand, seat_demand, short_of_seats
from infra.settings import PROJECT_ROOT
from simulation.patients import synthetic_cohort
from simulation.whatif import INTENSIVE_PHASES, copy_programs
from tests.support import PROGRAMS, enrolment_data

PROTOCOL = ProgramCatalog(PROGRAMS).load("default-iop")
LOW = {"withdrawal": 0, "biomedical": 0, "emotional": 1, "readiness": 1, "relapse": 1}


def assessment(**overrides: Any) -> Assessment:
    return Enrolment.model_validate(enrolment_data(**overrides)).assessment


def ratings(**changed: int) -> dict[str, int]:
    base = enrolment_data()["assessment"]["ratings"]
    return {**base, **changed}


def whole(demands: list[SeatDemand]) -> dict[tuple[str, str], SeatDemand]:
    return {(d.site_id, d.level): d for d in demands if d.whole}


def test_each_site_and_level_counts_the_share_placed_there_and_their_weeks() -> None:
    eight = assessment()  # level 2.1, no rating of 3 or more: the minimum 8 weeks
    ten = assessment(ratings=ratings(relapse=3, environment=3))  # 2.1, two extra weeks
    outpatient = assessment(ratings=ratings(**LOW, environment=1))  # level 1: no track
    admissions = [("north", eight), ("north", ten), ("south", eight), ("south", outpatient)]
    found = whole(seat_demand(PROTOCOL, admissions))
    assert set(found) == {("north", "2.1"), ("north", "2.5"), ("south", "2.1")}
    north = found["north", "2.1"]
    assert (north.seats, north.placed, north.weeks) == (22, 0.5, 9.0)
    assert north.track_ids == ("north-morning", "north-evening")
    assert north.needed(per_week=10) == pytest.approx(45.0)  # 10 a week, half, 9 weeks each
    assert north.holds() == pytest.approx(22 / 4.5)
    south = found["south", "2.1"]
    assert (south.placed, south.weeks) == (0.25, 8.0)
    assert found["north", "2.5"].placed == 0 and found["north", "2.5"].holds() == float("inf")


def test_each_set_of_tracks_counts_the_patients_who_fit_only_tracks_of_it() -> None:
    # South's evening group meets by telehealth alone: a patient who comes in fits only
    # its morning group; one who joins by telehealth (no transport) fits both.
    comes_in = assessment()
    remote = assessment(transport_barrier=True)
    demands = seat_demand(PROTOCOL, [("south", comes_in), ("south", remote)])
    placed = {d.track_ids: d.placed for d in demands if d.site_id == "south"}
    assert placed == {
        ("south-morning", "south-evening"): 1.0,
        ("south-morning",): 0.5,
        ("south-evening",): 0.0,
    }


def test_a_patient_whose_commitments_clash_with_every_track_takes_no_seat() -> None:
    # North's 2.1 tracks meet Monday morning and Monday evening: a Monday's work from 8
    # to 22 leaves neither (the patient gets a schedule of their own).
    monday = {"weekday": "mon", "start": "08:00", "end": "22:00", "kind": "work"}
    busy = assessment(commitments=[monday])
    free = assessment(commitments=[{**monday, "weekday": "sun"}])
    for patient, placed in ((busy, 0.0), (free, 1.0)):
        found = whole(seat_demand(PROTOCOL, [("north", patient)]))
        assert found["north", "2.1"].placed == placed


def test_only_tracks_that_need_more_seats_than_they_have_are_short() -> None:
    demands = seat_demand(PROTOCOL, [("north", assessment())])
    # North's 2.1 tracks: 22 seats, every admission, 8 weeks: 2.75 admissions a week.
    assert short_of_seats(demands, per_week=2.75) == []
    (short,) = short_of_seats(demands, per_week=3)
    assert short.explain(3) == (
        "north's level 2.1 groups have 22 seats; at 3 admissions a week they would need "
        "about 24 (100% of the clinic's admissions placed there, 8.0 intensive weeks each): "
        "they keep up with about 2.8 a week, and beyond that their waitlist grows for as "
        "long as admissions go on"
    )


def test_the_tracks_that_fall_furthest_short_are_named_even_when_the_site_has_seats() -> None:
    # Both of south's patients come in: only the 12-seat morning group fits them, whatever
    # the evening group's 10 seats; 12 seats hold 1.5 admissions a week of 8 weeks.
    demands = seat_demand(PROTOCOL, [("south", assessment()), ("south", assessment())])
    assert short_of_seats(demands, per_week=1.5) == []
    (short,) = short_of_seats(demands, per_week=2)
    assert (short.track_ids, short.whole, short.seats) == (("south-morning",), False, 12)
    assert short.explain(2).startswith(
        "south's level 2.1 patients who fit only south-morning (their commitments or way "
        "of attending) have 12 seats; at 2 admissions a week they would need about 16"
    )


def test_patients_who_come_back_after_use_take_seats_again() -> None:
    demands = seat_demand(PROTOCOL, [("north", assessment())], phases=1.5)
    (north,) = [d for d in demands if d.whole and (d.site_id, d.level) == ("north", "2.1")]
    assert north.needed(per_week=2) == pytest.approx(2 * 8 * 1.5)
    assert "8.0 intensive weeks a phase, 1.5 phases each)" in north.explain(2)
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        seat_demand(PROTOCOL, [("north", assessment())], phases=0.5)


def test_the_15_a_week_what_if_holds_15_a_week_and_the_default_does_not(
    tmp_path: Path,
) -> None:
    # The synthetic cohort's own mix of levels, commitments and ways of attending, and its
    # patients' returns after use.
    cohort = synthetic_cohort(2000, 7)
    admissions = [(e.site_id, e.assessment) for e in cohort]
    default = short_of_seats(seat_demand(PROTOCOL, admissions, INTENSIVE_PHASES), per_week=15)
    assert [(d.site_id, d.level) for d in default] == [("north", "2.1"), ("south", "2.1")]
    assert all(5 < d.holds() < 7 for d in default)
    what_if = PROJECT_ROOT / "docs" / "whatif" / "groups-for-15-a-week.toml"
    bigger = ProgramCatalog(copy_programs(PROGRAMS, tmp_path, [what_if])).load(
        "groups-for-15-a-week"
    )
    demands = seat_demand(bigger, admissions, INTENSIVE_PHASES)
    assert short_of_seats(demands, per_week=15) == []
    assert {d.seats for d in demands if d.whole and d.level == "2.1"} == {96}
    # Its evening groups are among the nearest to full: those who work days wait for them
    # alone.
    evenings = tuple(f"north-evening{x}" for x in ("", "-b", "-c", "-d"))
    (evening,) = [d for d in demands if d.track_ids == evenings]
    assert 15 < evening.holds() < 25
