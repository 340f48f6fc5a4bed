"""Properties of placement and scheduling over generated assessments (hypothesis)."""

from __future__ import annotations

from datetime import time

from hypothesis import given, settings
from hypothesis import strategies as st

from clinical.assessment import AgeGroup, Assessment, Commitment, DimensionRatings, Weekday
from clinical.careplan import ScheduleConflict, fit_week, plan_care
from clinical.phases import Phase
from clinical.placement import place
from clinical.protocol import ProgramCatalog
from tests.support import PROGRAMS

PROTOCOL = ProgramCatalog(PROGRAMS).load("default-iop")
INTENSITY = {"1": 0, "2.1": 1, "2.5": 2, "higher": 3}
DIMENSIONS = ("withdrawal", "biomedical", "emotional", "readiness", "relapse", "environment")

ratings_st = st.builds(DimensionRatings, **{d: st.integers(0, 4) for d in DIMENSIONS})


@st.composite
def commitments_st(draw: st.DrawFn) -> Commitment:
    start = draw(st.integers(6 * 2, 21 * 2))  # half hours
    length = draw(st.integers(1, 24))
    end = min(start + length, 47)
    return Commitment(
        weekday=draw(st.sampled_from(list(Weekday))),
        start=time(start // 2, 30 * (start % 2)),
        end=time(end // 2, 30 * (end % 2)),
        kind=draw(st.sampled_from(["work", "school", "childcare", "other"])),
    )


assessment_st = st.builds(
    Assessment,
    ratings=ratings_st,
    age_group=st.sampled_from(list(AgeGroup)),
    substances=st.just(("alcohol",)),
    commitments=st.lists(commitments_st(), max_size=8, unique=True).map(tuple),
    transport_barrier=st.booleans(),
    distance_km=st.one_of(st.none(), st.floats(0, 200)),
)


def _minutes(t: time) -> int:
    return t.hour * 60 + t.minute


@settings(max_examples=300, deadline=None)
@given(assessment_st)
def test_every_plan_respects_band_days_and_commitments_or_says_why(a: Assessment) -> None:
    placement = place(a, PROTOCOL)
    plan = plan_care(a, placement, PROTOCOL)
    if placement.refers_out:
        assert plan.stages == ()
        return
    for stage in plan.stages:
        schedule = stage.schedule
        band = PROTOCOL.levels[stage.level].hours[a.age_group]
        is_taper = stage.phase == Phase.step_down and stage.level == PROTOCOL.step_down.taper_level
        if is_taper:  # the taper may sit below the IOP floor, never above its ceiling
            assert 0 < schedule.weekly_hours <= (band.max or schedule.weekly_hours)
        else:
            assert band.contains(schedule.weekly_hours)
        if stage.phase == Phase.intensive:
            assert schedule.session_days >= PROTOCOL.intensive.min_session_days
        for s in schedule.sessions:
            start, end = _minutes(s.start), _minutes(s.start) + round(s.hours * 60)
            for c in a.commitments:
                if c.weekday == s.weekday:
                    assert end <= _minutes(c.start) or _minutes(c.end) <= start
        far = a.distance_km is not None and a.distance_km > PROTOCOL.schedule.telehealth_distance_km
        assert (schedule.modality == "telehealth") == (a.transport_barrier or far)
    if plan.conflict is not None:
        assert plan.conflict.reason and plan.conflict.level in PROTOCOL.levels
        # The conflict is real: that level's week cannot be fitted.
        level = PROTOCOL.levels.get(plan.conflict.level)
        assert level is not None
    else:
        assert plan.stages, "a plan with no conflict has stages"


@settings(max_examples=300, deadline=None)
@given(ratings_st, st.sampled_from(DIMENSIONS), st.integers(1, 4))
def test_worse_ratings_never_place_lower(
    ratings: DimensionRatings, dimension: str, bump: int
) -> None:
    base = Assessment(ratings=ratings, age_group=AgeGroup.adult, substances=("alcohol",))
    raised = base.model_copy(
        update={
            "ratings": ratings.model_copy(
                update={dimension: min(4, getattr(ratings, dimension) + bump)}
            )
        }
    )
    assert INTENSITY[place(raised, PROTOCOL).level] >= INTENSITY[place(base, PROTOCOL).level]


@settings(max_examples=200, deadline=None)
@given(assessment_st)
def test_a_conflict_names_the_days_that_fit(a: Assessment) -> None:
    pattern = PROTOCOL.levels["2.1"].pattern
    result = fit_week(a, "2.1", pattern, PROTOCOL)
    if isinstance(result, ScheduleConflict):
        assert "needs 3" in result.reason or "individual session" in result.reason
    else:
        assert len(result.sessions) == pattern.visits_per_week + 1
