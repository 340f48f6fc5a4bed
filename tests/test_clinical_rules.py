"""The clinical rules alone: pure functions on pydantic models, no Temporal."""

from __future__ import annotations

from datetime import UTC, datetime, time
from pathlib import Path

import pytest
from pydantic import ValidationError

from clinical.aftercare import follow_up_schedule
from clinical.assessment import Assessment, ContactWindow, Enrolment
from clinical.attendance import SessionStatus, close_out, summarize
from clinical.careplan import ScheduleConflict, fit_week, intensive_weeks, plan_care
from clinical.clock import ProgramClock, first_monday_after
from clinical.journey import JourneyState, start_journey
from clinical.phases import Phase
from clinical.placement import PlacementRefused, place, place_enrolment, risk_level
from clinical.protocol import ProgramCatalog, ProtocolError, load_protocol
from clinical.requests import AttendanceMark, AttendanceReport, AttendanceSheet, RequestRefused
from clinical.treatment import apply_attendance, check_attendance, check_attendance_sheet
from tests.support import PROGRAMS, enrolment_data

PROTOCOL = ProgramCatalog(PROGRAMS).load("default-iop")


def assessment(**overrides: object) -> Assessment:
    return Enrolment.model_validate(enrolment_data(**overrides)).assessment


def ratings(**r: int) -> dict[str, int]:
    base = dict.fromkeys(
        ("withdrawal", "biomedical", "emotional", "readiness", "relapse", "environment"), 0
    )
    return {**base, **r}


# --- protocol ----------------------------------------------------------------------------


def test_demo_program_is_the_default_on_a_compressed_clock() -> None:
    demo = ProgramCatalog(PROGRAMS).load("demo-iop")
    assert demo.clock.seconds_per_day == 0.4
    assert demo.levels == PROTOCOL.levels and demo.aftercare == PROTOCOL.aftercare


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("[aftercare]\nfollow_up_days = [30, 7]\nduration_days = 365\n", "strictly increasing"),
        ("[intensive]\nmin_weeks = 12\nmax_weeks = 8\n", "min_weeks is greater"),
        ('[levels."2.1"]\npattern = { visits_per_week = 1, visit_hours = 2 }\n', "outside"),
        ('[placement]\ndefault_level = "9"\n', "placement.default_level: unknown level '9'"),
        ("[clock]\nseconds_per_day = -1\n", "clock.seconds_per_day"),
        ("this is = = not toml", "not valid TOML"),
    ],
)
def test_a_broken_program_is_refused_with_field_and_reason(
    tmp_path: Path, change: str, message: str
) -> None:
    (tmp_path / "default-iop.toml").write_text((PROGRAMS / "default-iop.toml").read_text())
    broken = tmp_path / "broken.toml"
    broken.write_text('extends = "default-iop.toml"\n' + change)
    with pytest.raises(ProtocolError, match=r"broken\.toml") as err:
        load_protocol(broken)
    assert message in str(err.value)


def test_unknown_program_names_the_known_ones() -> None:
    with pytest.raises(ProtocolError, match="known programs: default-iop, demo-iop"):
        ProgramCatalog(PROGRAMS).load("nope")


def test_the_catalog_reads_a_program_again_only_when_one_of_its_files_changed(
    tmp_path: Path,
) -> None:
    import os

    base = tmp_path / "default-iop.toml"
    base.write_text((PROGRAMS / "default-iop.toml").read_text())
    demo = tmp_path / "demo-iop.toml"
    demo.write_text((PROGRAMS / "demo-iop.toml").read_text())
    catalog = ProgramCatalog(tmp_path)
    first = catalog.load("demo-iop")
    assert catalog.load("demo-iop") is first  # nothing changed: not parsed again
    # The file it extends changes: the next load reads it.
    base.write_text(base.read_text().replace("grace_days = 2 ", "grace_days = 3 "))
    os.utime(base, ns=(base.stat().st_atime_ns, base.stat().st_mtime_ns + 1_000_000))
    changed = catalog.load("demo-iop")
    assert (first.attendance.grace_days, changed.attendance.grace_days) == (2, 3)
    # Broken now: refused, not answered from what was read before.
    demo.write_text("this is = = not toml")
    with pytest.raises(ProtocolError, match="not valid TOML"):
        catalog.load("demo-iop")


def test_a_process_shares_one_catalog_per_directory_which_sees_programs_added(
    tmp_path: Path,
) -> None:
    shared = ProgramCatalog.of(tmp_path)
    assert ProgramCatalog.of(tmp_path) is shared and ProgramCatalog.of(PROGRAMS) is not shared
    with pytest.raises(ProtocolError, match="known programs: none"):
        shared.load("default-iop")
    (tmp_path / "default-iop.toml").write_text((PROGRAMS / "default-iop.toml").read_text())
    assert ProgramCatalog.of(tmp_path).load("default-iop").program.id == "default-iop"


# --- placement ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("r", "level", "drivers"),
    [
        (ratings(withdrawal=3, relapse=2), "higher", {"withdrawal": 3}),
        (ratings(emotional=4, relapse=3), "2.5", {"emotional": 4}),
        (ratings(relapse=2, readiness=1), "2.1", {"relapse": 2}),
        (ratings(relapse=1, readiness=1), "1", {}),
    ],
)
def test_placement_by_the_programs_rules_explains_itself(
    r: dict[str, int], level: str, drivers: dict[str, int]
) -> None:
    placement = place(assessment(ratings=r), PROTOCOL)
    assert placement.level == level
    assert placement.drivers == drivers
    assert f"level {level}" in placement.explain()


def test_a_case_manager_overrides_placement_with_a_reason() -> None:
    data = enrolment_data(ratings=ratings(relapse=2, readiness=1))  # the rules say 2.1
    data["placement_override"] = {"level": "2.5", "reason": "  failed 2.1 twice last year  "}
    enrolment = Enrolment.model_validate(data)
    placement = place_enrolment(enrolment, PROTOCOL)
    assert (placement.level, placement.rules_level) == ("2.5", "2.1")
    assert placement.overridden_by == enrolment.case_manager_id
    assert placement.override_reason == "failed 2.1 twice last year"
    assert placement.drivers == {"relapse": 2}  # what the rules saw is kept
    assert placement.hours_band == PROTOCOL.levels["2.5"].hours[enrolment.assessment.age_group]
    assert "over the rules' level 2.1" in placement.explain()
    # The care plan follows the overridden level.
    state = start_journey(enrolment, PROTOCOL, datetime(2026, 3, 2, tzinfo=UTC))
    assert state.plan.stages[0].level == "2.5"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"level": "2.5"}, "placement_override.reason"),
        ({"level": "2.5", "reason": "   short   "}, "placement_override.reason"),
        ({"level": "3.7", "reason": "needs more structure"}, "not a level of program"),
        ({"level": "2.1", "reason": "needs more structure"}, "already place this patient"),
    ],
)
def test_a_placement_override_needs_a_known_new_level_and_a_reason(
    override: dict[str, str], message: str
) -> None:
    data = enrolment_data(ratings=ratings(relapse=2, readiness=1))
    data["placement_override"] = override
    with pytest.raises((ValidationError, PlacementRefused), match=message):
        place_enrolment(Enrolment.model_validate(data), PROTOCOL)


def test_risk_and_intensive_weeks_follow_the_ratings() -> None:
    low = assessment(ratings=ratings(relapse=2))
    high = assessment(ratings=ratings(relapse=3, environment=3, emotional=3))
    assert risk_level(low, PROTOCOL) == "moderate" and risk_level(high, PROTOCOL) == "high"
    assert intensive_weeks(low, PROTOCOL) == 8
    assert intensive_weeks(high, PROTOCOL) == 11  # 8 + one week per rating >= 3


# --- schedules ---------------------------------------------------------------------------


def test_the_weekly_schedule_avoids_commitments_and_meets_the_level() -> None:
    work = [
        {"weekday": d, "start": "08:00", "end": "17:00", "kind": "work"}
        for d in ("mon", "tue", "wed", "thu", "fri")
    ]
    a = assessment(commitments=work)
    week = fit_week(a, "2.1", PROTOCOL.levels["2.1"].pattern, PROTOCOL)
    assert not isinstance(week, ScheduleConflict)
    for s in week.sessions:
        start = s.start.hour * 60 + s.start.minute
        for c in a.commitments:
            if c.weekday == s.weekday:
                c0, c1 = c.start.hour * 60 + c.start.minute, c.end.hour * 60 + c.end.minute
                assert start + s.hours * 60 <= c0 or c1 <= start
    assert week.session_days >= PROTOCOL.intensive.min_session_days
    assert PROTOCOL.levels["2.1"].hours[a.age_group].contains(week.weekly_hours)


def test_no_fitting_schedule_says_why() -> None:
    busy = [
        {"weekday": d, "start": "07:00", "end": "23:00", "kind": "work"}
        for d in ("mon", "tue", "wed", "thu", "fri")
    ]
    a = assessment(commitments=busy)
    result = fit_week(a, "2.1", PROTOCOL.levels["2.1"].pattern, PROTOCOL)
    assert isinstance(result, ScheduleConflict)
    assert result.reason.startswith("only 1 session day(s) fit")
    assert "(sat)" in result.reason


def test_telehealth_when_distance_or_transport_is_a_barrier() -> None:
    near = fit_week(assessment(distance_km=5), "2.1", PROTOCOL.levels["2.1"].pattern, PROTOCOL)
    far = fit_week(assessment(distance_km=90), "2.1", PROTOCOL.levels["2.1"].pattern, PROTOCOL)
    assert not isinstance(near, ScheduleConflict) and near.modality == "in_person"
    assert not isinstance(far, ScheduleConflict) and far.modality == "telehealth"


def test_care_plan_stages() -> None:
    a = assessment(ratings=ratings(relapse=2))
    plan = plan_care(a, place(a, PROTOCOL), PROTOCOL)
    assert [(s.phase, s.level, s.weeks) for s in plan.stages] == [
        (Phase.intensive, "2.1", 8),
        (Phase.step_down, "2.1", 2),
        (Phase.step_down, "1", 4),
    ]
    taper = plan.stages[1].schedule
    assert taper.weekly_hours < 9  # the taper may sit below the IOP floor
    outpatient = assessment(ratings=ratings(relapse=1))
    assert plan_care(outpatient, place(outpatient, PROTOCOL), PROTOCOL).phases == (Phase.step_down,)


# --- clock, attendance, aftercare ------------------------------------------------------


def test_program_clock_maps_days_to_instants_and_calendar() -> None:
    clock = ProgramClock.starting_at(datetime(2026, 11, 24, 12, 0, tzinfo=UTC), 0.5)
    assert clock.day(datetime(2026, 11, 24, 12, 0, tzinfo=UTC)) == pytest.approx(0.5)
    assert clock.calendar(7.375) == datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert (clock.instant(10) - clock.instant(3)).total_seconds() == pytest.approx(3.5)
    assert first_monday_after(0.5, origin_weekday=1) == 6  # Tue 24 Nov -> Mon 30 Nov


def _journey() -> JourneyState:
    e = Enrolment.model_validate(enrolment_data())
    return start_journey(e, PROTOCOL, datetime(2026, 11, 24, 12, 0, tzinfo=UTC))


def test_grace_period_counts_unrecorded_sessions_as_missed() -> None:
    from clinical.attendance import SessionRecord
    from clinical.careplan import week_sessions

    st = _journey()
    specs = week_sessions(st.plan, Phase.intensive, 1, 1, 6, st.clock, PROTOCOL)
    st.sessions = [SessionRecord.booked(s) for s in specs]
    apply_attendance(
        st,
        AttendanceReport(
            case_manager_id="CM-01", session_id=specs[0].session_id, status="attended"
        ),
    )
    first_day = specs[0].day
    records, missed = close_out(st.sessions, first_day + 1.9, PROTOCOL.attendance.grace_days)
    assert missed == []
    records, missed = close_out(st.sessions, specs[-1].day + 2, PROTOCOL.attendance.grace_days)
    assert len(missed) == len(specs) - 1 and all(m.missed_by_grace for m in missed)
    summary = summarize(records)
    assert (summary.attended, summary.missed, summary.pending) == (1, len(specs) - 1, 0)
    assert summary.rate == pytest.approx(1 / len(specs))
    assert summarize([]).rate is None


def test_attendance_requests_are_checked() -> None:
    from clinical.attendance import SessionRecord
    from clinical.careplan import week_sessions

    st = _journey()
    specs = week_sessions(st.plan, Phase.intensive, 1, 1, 6, st.clock, PROTOCOL)
    st.sessions = [SessionRecord.booked(s) for s in specs]
    report = AttendanceReport(case_manager_id="CM-01", session_id="INT1-W09-S1", status="missed")
    with pytest.raises(RequestRefused, match="unknown session"):
        check_attendance(st, report, now_day=20)
    future = report.model_copy(update={"session_id": specs[-1].session_id})
    with pytest.raises(RequestRefused, match="has not happened yet"):
        check_attendance(st, future, now_day=specs[-1].day - 0.1)
    check_attendance(st, future, now_day=specs[-1].day + 0.1)
    st.phase = Phase.completed
    with pytest.raises(RequestRefused, match="has ended"):
        check_attendance(st, future, now_day=99)
    with pytest.raises(ValidationError):
        AttendanceReport(case_manager_id="Dr Who", session_id="x", status="attended")
    assert st.sessions[0].status == SessionStatus.scheduled


def test_an_attendance_sheet_is_checked_whole() -> None:
    from clinical.attendance import SessionRecord
    from clinical.careplan import week_sessions

    st = _journey()
    specs = week_sessions(st.plan, Phase.intensive, 1, 1, 6, st.clock, PROTOCOL)
    st.sessions = [SessionRecord.booked(s) for s in specs]
    marks = [AttendanceMark(session_id=s.session_id, status="attended") for s in specs]
    sheet = AttendanceSheet(case_manager_id="CM-01", marks=marks)
    check_attendance_sheet(st, sheet, now_day=specs[-1].day + 0.1)
    # The last session has not happened yet: the sheet is refused, naming it.
    with pytest.raises(RequestRefused, match=f"session {specs[-1].session_id} .* not happened"):
        check_attendance_sheet(st, sheet, now_day=specs[-1].day - 0.1)
    unknown = sheet.model_copy(
        update={"marks": [*marks[:1], AttendanceMark(session_id="INT1-W09-S1", status="missed")]}
    )
    with pytest.raises(RequestRefused, match="unknown session 'INT1-W09-S1'"):
        check_attendance_sheet(st, unknown, now_day=99)
    with pytest.raises(ValidationError, match="marked twice"):
        AttendanceSheet(case_manager_id="CM-01", marks=[marks[0], marks[0]])
    with pytest.raises(ValidationError):
        AttendanceSheet(case_manager_id="CM-01", marks=[])
    assert [r.session_id for r in sheet.reports()] == [s.session_id for s in specs]
    assert {r.case_manager_id for r in sheet.reports()} == {"CM-01"}


def test_aftercare_cadence_is_the_protocols() -> None:
    clock = ProgramClock.starting_at(datetime(2026, 11, 24, tzinfo=UTC), 86400)
    calls = follow_up_schedule(100, ContactWindow(start=time(10), end=time(12)), clock, PROTOCOL)
    assert [c.day_offset for c in calls] == [7, 30, 60, 90, 180, 270, 365]
    assert calls[0].due_at.hour == 10 and calls[0].day == pytest.approx(107 + 10 / 24)


@pytest.mark.parametrize("bad", ["JaneDoe", "P-ABCDEFGH", "P-1234567", "p-7k2m9q4d", "P-7K2M9Q4I"])
def test_patient_ids_are_opaque(bad: str) -> None:
    with pytest.raises(ValidationError, match="opaque identifier"):
        Enrolment.model_validate({**enrolment_data(), "patient_id": bad})
