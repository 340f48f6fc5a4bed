"""The simulated clinic shared by the tests, the demo and the benchmarks: its case manager
enters a treatment week on one sheet once the week is over, each session once, as the
patient's attendance has it; its patients are reproducible."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from clinical.assessment import check_plausible
from clinical.attendance import SessionStatus
from clinical.phases import Phase
from clinical.requests import DischargeReason, DischargeRequest, ProgressReview
from simulation.case_manager import CaseManager
from simulation.cohort import Arrival, Booked, Patient, review_due, run_clinic, stalled
from simulation.patients import steady_attendance, synthetic_cohort
from tests.support import JourneyStandIn


def _status(program_day: float, **fields: Any) -> Any:
    session = SimpleNamespace
    return SimpleNamespace(
        case_manager_id="CM-03",
        program_day=program_day,
        sessions=[
            session(session_id="INT1-W01-S1", day=7, status=SessionStatus.scheduled),
            session(session_id="INT1-W01-S2", day=9, status=SessionStatus.cancelled),
            session(session_id="INT1-W01-S3", day=11, status=SessionStatus.scheduled),
            session(session_id="INT1-W02-S1", day=14, status=SessionStatus.scheduled),
        ],
        **fields,
    )


async def test_a_week_goes_on_one_sheet_once_its_sessions_have_happened() -> None:
    journey, manager = JourneyStandIn(), CaseManager(lambda n: "attended")
    await manager.enter_weeks_over(journey, _status(10))  # type: ignore[arg-type]
    assert journey.sent == [] and manager.entered == {}  # S3 is tomorrow
    for day in (11.5, 12, 13):
        await manager.enter_weeks_over(journey, _status(day))  # type: ignore[arg-type]
    (sheet,) = journey.sent
    assert sheet.case_manager_id == "CM-03"
    # The cancelled session is never marked; week two is not over.
    assert [(m.session_id, m.status) for m in sheet.marks] == [
        ("INT1-W01-S1", "attended"),
        ("INT1-W01-S3", "attended"),
    ]
    assert (manager.sheets, manager.marked) == (1, 2)


async def test_sessions_left_to_the_grace_period_are_entered_but_never_marked() -> None:
    journey = JourneyStandIn()
    manager = CaseManager(steady_attendance)
    manager.entered = {f"EARLIER-{n}": "attended" for n in range(1, 10)}
    # The tenth session of the patient's attendance is left for the grace period.
    await manager.enter_sheet(journey, "CM-07", ["INT1-W01-S1", "INT1-W01-S2"])  # type: ignore[arg-type]
    (sheet,) = journey.sent
    assert [(m.session_id, m.status) for m in sheet.marks] == [("INT1-W01-S2", "attended")]
    assert manager.entered["INT1-W01-S1"] == "none"
    assert (manager.sheets, len(manager.entered), manager.marked) == (1, 11, 10)
    await manager.enter_sheet(journey, "CM-07", [])  # type: ignore[arg-type]
    assert manager.sheets == 1  # nothing to mark: no request


async def test_step_down_is_approved_once_a_week_while_the_journey_asks() -> None:
    journey, manager = JourneyStandIn(), CaseManager(steady_attendance)
    asking = dict(
        phase=Phase.intensive, week=8, weeks_in_phase=8, step_down_approved=False, episode=1
    )
    for _ in range(2):
        await manager.approve_step_down(journey, _status(60, **asking))  # type: ignore[arg-type]
    await manager.approve_step_down(journey, _status(62, **(asking | {"week": 7})))  # type: ignore[arg-type]
    (review,) = journey.sent
    assert isinstance(review, ProgressReview) and review.decision == "approve_step_down"
    await manager.approve_step_down(journey, _status(67, **(asking | {"week": 9})))  # type: ignore[arg-type]
    assert len(journey.sent) == 2  # extended a week, asked again


def test_a_cohort_is_the_same_for_a_seed_and_plausible_on_its_day() -> None:
    day = date(2028, 2, 29)  # a leap day: ages still fit
    first, second = synthetic_cohort(6, 7, today=day), synthetic_cohort(6, 7, today=day)
    assert first == second
    assert synthetic_cohort(6, 8, today=day) != first
    for e in synthetic_cohort(60, 3, today=day):
        check_plausible(e, day)


def test_a_cohort_arriving_over_years_is_plausible_on_each_patient_s_own_day() -> None:
    """10,000 patients at 15 a week arrive over almost thirteen years: an adolescent born
    for the first day would be an adult by the last (the 10,000-patient what-if stopped on
    one), so each is aged for the day they arrive."""
    day = date(2028, 2, 14)
    days = [int(i * 7 / 15) for i in range(400)]
    over_years = [d * 12 for d in days]  # the same 400 spread over 22 years
    cohort = synthetic_cohort(400, 7, today=day, arrival_days=over_years)
    assert any(e.assessment.age_group == "adolescent" for e in cohort)
    for e, arrives in zip(cohort, over_years, strict=True):
        check_plausible(e, day + timedelta(days=arrives))
    # The same patients and draws as a cohort arriving at once, but for their birth dates.
    at_once = synthetic_cohort(400, 7, today=day)
    assert [e.patient_id for e in cohort] == [e.patient_id for e in at_once]
    assert [e.assessment for e in cohort] == [e.assessment for e in at_once]
    with pytest.raises(ValueError, match="3 arrival days for 400 patients"):
        synthetic_cohort(400, 7, today=day, arrival_days=[0, 1, 2])


def test_a_run_is_stalled_by_a_journey_running_long_after_its_arrival_not_by_its_length() -> None:
    def patient(arrived: float, phase: Phase) -> Patient:
        return Patient(None, CaseManager(steady_attendance), phase=phase, arrived_day=arrived)  # type: ignore[arg-type]

    # Ten thousand patients at 15 a week arrive over 4,667 days: a run that long is fine
    # while every running journey is younger than the bound.
    late = [
        patient(0, Phase.completed),
        patient(4600, Phase.aftercare),
        patient(4660, Phase.intake),
    ]
    assert stalled(late, today=5000, give_up_after_days=3650) is None
    stuck = [*late, patient(1200, Phase.intensive)]
    assert stalled(stuck, today=5000, give_up_after_days=3650) == (
        "3 journeys still running, the oldest 3800 simulated days after its patient arrived; "
        "1 of them still in intake"
    )
    assert stalled([patient(0, Phase.discharged)], today=9999, give_up_after_days=1) is None


class _Server:
    """A time-skipping server as the simulated clinic uses it: a clock it steps."""

    def __init__(self, name: str, at: datetime) -> None:
        self.at = at
        self.client = SimpleNamespace(
            name=name, test_service=SimpleNamespace(unlock_time_skipping_with_sleep=self._sleep)
        )

    async def get_current_time(self) -> datetime:
        return self.at

    async def _sleep(self, request: Any, timeout: Any) -> None:
        self.at += request.duration.ToTimedelta()


class _Board:
    """The store's view: each journey ends the day after it started."""

    def __init__(self) -> None:
        self.started: dict[str, int] = {}
        self.today = 0

    def read_into(self, cohort: dict[str, Patient]) -> None:
        for pid, p in cohort.items():
            p.phase = Phase.completed if self.today > self.started[pid] else Phase.intake

    def recent_sessions(self, since: datetime) -> dict[str, list[Any]]:
        return {}


async def test_each_site_s_patients_go_to_one_server_and_the_servers_keep_one_calendar() -> None:
    began = datetime(2028, 2, 14, 13, tzinfo=UTC)
    servers = [_Server("first", began), _Server("second", began)]
    board = _Board()
    went_to: list[tuple[str, str]] = []

    async def start(enrolment: Any, client: Any) -> Any:
        went_to.append((enrolment.patient_id, client.name))
        board.started[enrolment.patient_id] = board.today
        return SimpleNamespace(id=f"journey-{enrolment.patient_id}")

    cohort = synthetic_cohort(5, 7, today=began.date())
    sites = ("south", "south", "north", "south", "north")
    arrivals = [
        Arrival(day, e.model_copy(update={"site_id": site}), CaseManager(steady_attendance))
        for day, e, site in zip((0, 0, 0, 1, 3), cohort, sites, strict=True)
    ]

    def told(day: float, ended: int, total: int) -> None:
        board.today = int(day) + 1  # what the store says after the step

    run = await run_clinic(servers, start, arrivals, board, 6, progress=told)  # type: ignore[arg-type]
    # By site (their journeys hand seats on to each other by signal): north on the first
    # server, south on the second, whatever the day or the order of arrival.
    assert [name for _, name in went_to] == ["second", "second", "first", "second", "first"]
    assert [p.client.name for p in run.cohort.values()] == [n for _, n in went_to]  # type: ignore[union-attr]
    # Every clock stepped together: the clinic keeps one calendar.
    assert servers[0].at == servers[1].at == began + timedelta(days=run.virtual_days)
    assert run.virtual_days >= 4


async def test_a_patient_who_stops_coming_is_discharged_as_withdrawn_once() -> None:
    journey = JourneyStandIn()
    manager = CaseManager(steady_attendance)
    manager.entered = {"S1": "missed", "S2": "none", "S3": "missed", "S4": "missed"}
    await manager.discharge_if_gone(journey, "CM-01", after_missed=3)  # type: ignore[arg-type]
    assert journey.sent == []  # a session left to the grace period is not known missed
    assert not manager.gone(after_missed=3)
    manager.entered["S5"] = "missed"
    assert manager.gone(after_missed=3) and not manager.gone(after_missed=4)
    for _ in range(2):
        await manager.discharge_if_gone(journey, "CM-01", after_missed=3)  # type: ignore[arg-type]
    (request,) = journey.sent
    assert isinstance(request, DischargeRequest) and request.reason == DischargeReason.withdrew
    assert not manager.gone(after_missed=3)  # discharged: the simulated clinic asks no more


def test_the_case_manager_reviews_each_intensive_week_once_from_the_earliest_step_down() -> None:
    patient = Patient(handle=JourneyStandIn(), manager=CaseManager(steady_attendance))  # type: ignore[arg-type]
    at = datetime(2028, 2, 14, 13, tzinfo=UTC)

    def booked(*weeks: int, phase: str = "intensive") -> list[Booked]:
        return [Booked("P", f"S{w}", phase, w, at, "scheduled") for w in weeks]

    assert review_due(patient, booked(4, 5), min_intensive_weeks=6) is None
    assert review_due(patient, booked(6, 7, phase="step_down"), min_intensive_weeks=6) is None
    assert review_due(patient, booked(5, 6), min_intensive_weeks=6) == 6
    assert review_due(patient, booked(5, 6), min_intensive_weeks=6) == 6  # asking marks nothing
    patient.reviewed_week = 6  # as `review` notes it
    assert review_due(patient, booked(6), min_intensive_weeks=6) is None
    assert review_due(patient, booked(6, 7), min_intensive_weeks=6) == 7


def test_nothing_outside_the_tests_imports_them() -> None:
    """The benchmarks, the demo and the simulations run the simulated clinic from
    `simulation/`; the tests import it from there, never the other way round."""
    import ast

    from infra.settings import PROJECT_ROOT

    offenders = []
    tops = [t for t in PROJECT_ROOT.iterdir() if t.name not in ("tests", "build", "data")]
    sources = [t for t in tops if t.suffix == ".py"] + [
        p for t in tops if t.is_dir() and not t.name.startswith(".") for p in t.rglob("*.py")
    ]
    assert any(p.name == "cohort.py" for p in sources)
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "tests"]
    assert offenders == []
