"""Group tracks as rules alone (pydantic models, no Temporal, no store): the program's tracks
are validated as a whole, and the track a patient is placed in fits their level, site,
commitments and way of attending, with a seat or else the shortest waitlist."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from clinical.assessment import Assessment, Enrolment
from clinical.groups import (
    NoTrackFits,
    TrackLoad,
    TrackSeat,
    TrackWaitlist,
    capacity_view,
    choose_track,
    facilitator_hours,
)
from clinical.protocol import ProgramCatalog, ProgramProtocol
from tests.support import PROGRAMS, enrolment_data

PROTOCOL = ProgramCatalog(PROGRAMS).load("default-iop")
NOW = datetime(2027, 3, 3, 15, 0, tzinfo=UTC)


def assessment(*commitments: str, **overrides: Any) -> Assessment:
    """Commitments as `tue 08:00-17:00 work`."""
    parsed = []
    for text in commitments:
        day, hours, kind = text.split()
        start, end = hours.split("-")
        parsed.append({"weekday": day, "start": start, "end": end, "kind": kind})
    return Enrolment.model_validate(enrolment_data(commitments=parsed, **overrides)).assessment


def with_tracks(*tracks: dict[str, Any]) -> ProgramProtocol:
    data = PROTOCOL.model_dump(mode="json")
    data["groups"] = {"tracks": list(tracks)}
    return ProgramProtocol.model_validate(data)


def track(track_id: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": track_id,
        "site": "north",
        "name": f"Group {track_id}",
        "level": "2.1",
        "weekdays": ["mon", "wed", "fri"],
        "start": "09:00",
        "hours": 3,
        "session_types": ["group_therapy"],
        "capacity": 10,
        "facilitators": ["Dana Reyes"],
        "room": "Room A",
    }
    return {**base, **fields}


# --- the program's tracks -------------------------------------------------------------


def test_the_default_program_has_tracks_at_both_sites() -> None:
    sites = {t.site for t in PROTOCOL.groups.tracks}
    assert sites == {"north", "south"}
    assert all(t.capacity >= 8 for t in PROTOCOL.groups.tracks)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"level": "9"}, "unknown level '9'"),
        ({"weekdays": ["mon", "wed"]}, "meets 2 day(s) a week; level 2.1 needs 3"),
        ({"session_types": ["yoga"]}, "session type(s) 'yoga' are not in"),
        ({"room": None}, "needs a room, a telehealth_link or both"),
        ({"weekdays": ["mon", "mon", "wed"]}, "a weekday appears twice"),
        ({"start": "22:00"}, "would end after midnight"),
        ({"capacity": 0}, "greater than or equal to 1"),
        ({"telehealth_link": "http://plain.example.org/x"}, "should match pattern"),
    ],
)
def test_a_broken_track_is_refused_with_its_reason(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        with_tracks(track("t1"), track("t2", **fields))


def test_a_track_id_used_twice_is_refused() -> None:
    with pytest.raises(ValidationError, match="track id 't1' is used twice"):
        with_tracks(track("t1"), track("t1", start="18:00"))


# --- choosing a track --------------------------------------------------------------------

MORNING = track("morning")
EVENING = track("evening", weekdays=["mon", "tue", "thu"], start="18:00", capacity=8)
REMOTE = track("remote", room=None, telehealth_link="https://th.example.org/r")


def test_the_track_with_most_free_seats_that_fits_is_chosen() -> None:
    protocol = with_tracks(MORNING, EVENING)
    loads = {"morning": TrackLoad(taken=9), "evening": TrackLoad(taken=2)}
    choice = choose_track(assessment(), "2.1", "north", protocol, loads)
    assert choice == TrackSeat(track_id="evening", alternatives=("morning",))
    # Equally free: the program's order decides.
    even = {"morning": TrackLoad(taken=3), "evening": TrackLoad(taken=1)}
    choice = choose_track(assessment(), "2.1", "north", protocol, even)
    assert choice == TrackSeat(track_id="morning", alternatives=("evening",))


def test_commitments_rule_a_track_out() -> None:
    protocol = with_tracks(MORNING, EVENING)
    works_days = assessment("mon 08:00-17:00 work", "wed 08:00-17:00 work")
    choice = choose_track(works_days, "2.1", "north", protocol, {})
    assert choice == TrackSeat(track_id="evening")
    # A commitment touching the session's edges leaves it free: 12:00 is when it ends.
    until_noon = assessment("fri 12:00-17:00 school")
    choice = choose_track(until_noon, "2.1", "north", protocol, {})
    assert choice == TrackSeat(track_id="morning", alternatives=("evening",))


def test_no_track_fits_says_why_for_each() -> None:
    protocol = with_tracks(MORNING, EVENING)
    busy = assessment("wed 08:30-10:00 childcare", "tue 17:00-23:00 work")
    choice = choose_track(busy, "2.1", "north", protocol, {})
    assert choice == NoTrackFits(
        reasons=(
            "morning: meets wed 09:00, during the patient's childcare 08:30-10:00",
            "evening: meets tue 18:00, during the patient's work 17:00-23:00",
        ),
        nearest="morning, which clashes on 1 of its 3 day(s)",  # a tie: the program's order
    )
    elsewhere = choose_track(busy, "2.1", "south", protocol, {})
    assert elsewhere == NoTrackFits(reasons=("no level 2.1 track at site south",))
    other_level = choose_track(assessment(), "2.5", "north", protocol, {})
    assert other_level == NoTrackFits(reasons=("no level 2.5 track at site north",))


def test_telehealth_patients_need_a_link_and_others_a_room() -> None:
    protocol = with_tracks(MORNING, REMOTE)
    far = assessment(distance_km=120)
    assert choose_track(far, "2.1", "north", protocol, {}) == TrackSeat(track_id="remote")
    near = choose_track(assessment(), "2.1", "north", protocol, {})
    assert near == TrackSeat(track_id="morning")
    only_remote = with_tracks(REMOTE)
    refused = choose_track(assessment(), "2.1", "north", only_remote, {})
    assert refused == NoTrackFits(
        reasons=("remote: telehealth only; the patient attends in person",),
        nearest="remote if the patient can attend by telehealth",
    )


def test_the_nearest_track_asks_least_of_the_patient() -> None:
    """Attending the other way beats moving a commitment; fewer clashing days beat more."""
    protocol = with_tracks(MORNING, EVENING, REMOTE)
    works = assessment(
        "mon 08:00-13:00 work",
        "wed 08:00-13:00 work",
        "fri 08:00-13:00 work",
        "mon 17:00-22:00 childcare",
        "thu 17:00-22:00 childcare",
    )
    choice = choose_track(works, "2.1", "north", with_tracks(MORNING, EVENING), {})
    assert isinstance(choice, NoTrackFits)
    assert choice.nearest == "evening, which clashes on 2 of its 3 day(s)"
    # The telehealth track meets at the morning's hours: the patient's work still clashes.
    choice = choose_track(works, "2.1", "north", protocol, {})
    assert isinstance(choice, NoTrackFits)
    assert choice.nearest == "evening, which clashes on 2 of its 3 day(s)"
    free_mornings = assessment("mon 17:00-22:00 childcare")
    only_remote = choose_track(free_mornings, "2.1", "north", with_tracks(REMOTE, EVENING), {})
    assert isinstance(only_remote, NoTrackFits)
    assert only_remote.nearest == "remote if the patient can attend by telehealth"


def test_when_every_fitting_track_is_full_the_shortest_waitlist_is_joined() -> None:
    protocol = with_tracks(MORNING, EVENING)
    loads = {
        "morning": TrackLoad(taken=10, waiting=3),
        "evening": TrackLoad(taken=8, waiting=1),
    }
    choice = choose_track(assessment(), "2.1", "north", protocol, loads)
    assert choice == TrackWaitlist(track_id="evening", ahead=1, alternatives=("morning",))


def test_a_free_seat_with_a_waitlist_is_not_for_a_newcomer() -> None:
    protocol = with_tracks(MORNING)
    # A seat was freed and the first who waits is about to get it: the newcomer waits.
    loads = {"morning": TrackLoad(taken=9, waiting=2)}
    choice = choose_track(assessment(), "2.1", "north", protocol, loads)
    assert choice == TrackWaitlist(track_id="morning", ahead=1)


# --- capacity in view -----------------------------------------------------------------------


def test_capacity_view_counts_seats_waits_and_facilitator_hours() -> None:
    protocol = with_tracks(
        MORNING, {**EVENING, "facilitators": ["Sam Okafor", "Dana Reyes"], "hours": 2.5}
    )
    loads = {"evening": TrackLoad(taken=8, waiting=2, waiting_since=NOW - timedelta(days=3))}
    morning, evening = capacity_view(protocol.groups.tracks, loads, NOW)
    assert (morning.taken, morning.free, morning.waiting, morning.longest_wait_days) == (
        0,
        10,
        0,
        None,
    )
    assert (evening.taken, evening.free, evening.waiting, evening.longest_wait_days) == (
        8,
        0,
        2,
        3.0,
    )
    # Three 3-hour mornings and three 2.5-hour evenings.
    assert facilitator_hours(protocol.groups.tracks) == {"Dana Reyes": 16.5, "Sam Okafor": 7.5}
