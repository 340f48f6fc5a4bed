"""Will a program's intensive tracks hold its admissions? (`clinical.seat_demand`, rules
alone: no Temporal, no store.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clinical.assessment import Assessment, Enrolment
from clinical.protocol import ProgramCatalog
from clinical.seat_demand import seat_demand, short_of_seats
from infra.settings import PROJECT_ROOT
from simulation.patients import synthetic_cohort
from simulation.whatif import copy_programs
from tests.support import PROGRAMS, enrolment_data

PROTOCOL = ProgramCatalog(PROGRAMS).load("default-iop")
LOW = {"withdrawal": 0, "biomedical": 0, "emotional": 1, "readiness": 1, "relapse": 1}


def assessment(**overrides: Any) -> Assessment:
    return Enrolment.model_validate(enrolment_data(**overrides)).assessment


def ratings(**changed: int) -> dict[str, int]:
    base = enrolment_data()["assessment"]["ratings"]
    return {**base, **changed}


def test_each_site_and_level_counts_the_share_placed_there_and_their_weeks() -> None:
    eight = assessment()  # level 2.1, no rating of 3 or more: the minimum 8 weeks
    ten = assessment(ratings=ratings(relapse=3, environment=3))  # 2.1, two extra weeks
    outpatient = assessment(ratings=ratings(**LOW, environment=1))  # level 1: no track
    admissions = [("north", eight), ("north", ten), ("south", eight), ("south", outpatient)]
    found = {(d.site_id, d.level): d for d in seat_demand(PROTOCOL, admissions)}
    assert set(found) == {("north", "2.1"), ("north", "2.5"), ("south", "2.1")}
    north = found["north", "2.1"]
    assert (north.seats, north.placed, north.weeks) == (22, 0.5, 9.0)
    assert north.needed(per_week=10) == pytest.approx(45.0)  # 10 a week, half of them, 9 weeks each
    assert north.holds() == pytest.approx(22 / 4.5)
    south = found["south", "2.1"]
    assert (south.placed, south.weeks) == (0.25, 8.0)
    assert found["north", "2.5"].placed == 0 and found["north", "2.5"].holds() == float("inf")


def test_a_patient_whose_commitments_clash_with_every_track_takes_no_seat() -> None:
    # North's 2.1 tracks meet Monday morning and Monday evening: a Monday's work from 8
    # to 22 leaves neither (the patient gets a schedule of their own).
    monday = {"weekday": "mon", "start": "08:00", "end": "22:00", "kind": "work"}
    busy = assessment(commitments=[monday])
    free = assessment(commitments=[{**monday, "weekday": "sun"}])
    for patient, placed in ((busy, 0.0), (free, 1.0)):
        demands = seat_demand(PROTOCOL, [("north", patient)])
        assert [d.placed for d in demands if (d.site_id, d.level) == ("north", "2.1")] == [placed]


def test_only_tracks_that_need_more_seats_than_they_have_are_short() -> None:
    admissions = [("north", assessment()), ("south", assessment())]
    demands = seat_demand(PROTOCOL, admissions)
    # Each site's 2.1 tracks: 22 seats, half the admissions, 8 weeks: 5.5 admissions a week.
    assert short_of_seats(demands, per_week=5.5) == []
    short = short_of_seats(demands, per_week=6)
    assert [(d.site_id, d.level) for d in short] == [("north", "2.1"), ("south", "2.1")]
    assert short[0].explain(6) == (
        "north's level 2.1 groups have 22 seats; at 6 admissions a week they would need "
        "about 24 (50% of the clinic's admissions placed there, 8.0 intensive weeks each): "
        "they keep up with about 5.5 a week, and beyond that their waitlist grows for as "
        "long as admissions go on"
    )


def test_the_afternoon_groups_what_if_holds_15_a_week_and_the_default_does_not(
    tmp_path: Path,
) -> None:
    # The synthetic cohort's own mix of levels and commitments (its first 2,000 patients).
    cohort = synthetic_cohort(2000, 7)
    admissions = [(e.site_id, e.assessment) for e in cohort]
    default = short_of_seats(seat_demand(PROTOCOL, admissions), per_week=15)
    assert [(d.site_id, d.level) for d in default] == [("north", "2.1"), ("south", "2.1")]
    assert all(6 < d.holds() < 8 for d in default)
    what_if = PROJECT_ROOT / "docs" / "whatif" / "afternoon-groups.toml"
    afternoon = ProgramCatalog(copy_programs(PROGRAMS, tmp_path, [what_if])).load(
        "afternoon-groups"
    )
    demands = seat_demand(afternoon, admissions)
    assert short_of_seats(demands, per_week=15) == []
    assert {d.seats for d in demands if d.level == "2.1"} == {50}
