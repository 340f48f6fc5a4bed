"""Group utilisation and attendance by track and facilitator in the outcomes report, as
rules on a cohort written out by hand (no store, no Temporal)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from clinical.attendance import SessionStatus
from clinical.phases import Phase
from operators.outcomes import (
    Cohort,
    CohortFilter,
    PatientFact,
    SessionFact,
    TrackFact,
    facilitator_use,
    outcomes,
    track_use,
)
from operators.report_html import render_html

AS_OF = datetime(2027, 4, 1, tzinfo=UTC)
MONDAY = datetime(2027, 3, 1, 14, tzinfo=UTC)


def _patient(pid: str) -> PatientFact:
    return PatientFact(
        patient_id=pid,
        site_id="north",
        case_manager_id="CM-01",
        program_id="default-iop",
        enrolled_at=MONDAY - timedelta(days=3),
        phase=Phase.intensive,
    )


def _session(pid: str, at: datetime, status: SessionStatus, track: str | None) -> SessionFact:
    return SessionFact(
        patient_id=pid,
        session_id=f"INT1-W01-S{at.day}",
        starts_at=at,
        session_type="group_therapy",
        status=status,
        track_id=track,
    )


def test_utilisation_and_attendance_by_track_and_facilitator() -> None:
    a, s, m = SessionStatus.attended, SessionStatus.scheduled, SessionStatus.missed
    wed, later = MONDAY + timedelta(days=2), AS_OF + timedelta(days=1)
    cohort = Cohort(
        filter=CohortFilter(),
        as_of=AS_OF,
        patients=[_patient("P-1"), _patient("P-2"), _patient("P-3")],
        sessions=[
            # Monday: three booked, two came. Wednesday: one came, one missed.
            _session("P-1", MONDAY, a, "north-morning"),
            _session("P-2", MONDAY, a, "north-morning"),
            _session("P-3", MONDAY, m, "north-morning"),
            _session("P-1", wed, a, "north-morning"),
            _session("P-2", wed, m, "north-morning"),
            # Not held: nobody marked yet; and a patient's own session.
            _session("P-1", MONDAY + timedelta(days=4), s, "north-morning"),
            _session("P-1", later, s, "north-morning"),
            _session("P-3", wed, a, None),
        ],
        tracks=[
            TrackFact(
                program_id="default-iop",
                track_id="north-morning",
                site_id="north",
                capacity=10,
                facilitators=("Dana Reyes",),
            ),
            TrackFact(
                program_id="default-iop",
                track_id="north-evening",
                site_id="north",
                capacity=8,
                facilitators=("Sam Okafor", "Dana Reyes"),
            ),
        ],
    )
    morning, evening = track_use(cohort)
    assert (morning.sessions, morning.mean_roster, morning.utilisation) == (2, 2.5, 0.25)
    assert (morning.attendance.numerator, morning.attendance.denominator) == (3, 5)
    assert (evening.sessions, evening.utilisation, evening.attendance.rate) == (0, None, None)
    dana, sam = facilitator_use(cohort)
    assert (dana.name, dana.sessions, dana.attendance.numerator) == ("Dana Reyes", 2, 3)
    assert (sam.name, sam.sessions, sam.attendance.rate) == ("Sam Okafor", 0, None)


def test_the_report_shows_group_tracks_only_where_there_are_any() -> None:
    cohort = Cohort(
        filter=CohortFilter(),
        as_of=AS_OF,
        patients=[_patient("P-1")],
        sessions=[_session("P-1", MONDAY, SessionStatus.attended, "north-morning")],
        tracks=[
            TrackFact(
                program_id="default-iop",
                track_id="north-morning",
                site_id="north",
                capacity=10,
                facilitators=("Dana Reyes",),
            )
        ],
    )
    page = render_html(outcomes(cohort))
    section = page[page.index('<section id="groups">') :]
    assert "north-morning (north)" in section and "10%" in section and "Dana Reyes" in section
    without = render_html(outcomes(cohort.model_copy(update={"tracks": []})))
    assert '<section id="groups">' not in without
