"""What-if simulations (`starter.py simulate`): the same cohort under two programs, and the
command's argument errors."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

import cli.simulate
from cli.common import CliError
from cli.main import main
from clinical.assessment import check_plausible
from infra.settings import PROJECT_ROOT, load_settings
from infra.store import CareStore
from simulation.behaviour import Behaviour, load_behaviour
from simulation.report import charts, from_json, html_report, table, to_json
from simulation.whatif import (
    JOURNEY_DAYS,
    CareDays,
    Comparison,
    Plan,
    arrivals,
    compare,
    copy_programs,
    failed_tasks,
    failure_kinds,
    seats_short,
    start_instant,
)


def program_file(into: Path, weeks: int) -> Path:
    """The default program with `weeks` intensive weeks (and step-down from then), and a
    month of aftercare so the journeys end soon."""
    path = into / f"weeks-{weeks}.toml"
    path.write_text(
        'extends = "default-iop.toml"\n\n'
        f'[program]\nid = "weeks-{weeks}"\nname = "{weeks} intensive weeks"\n\n'
        f"[intensive]\nmin_weeks = {weeks}\n\n"
        f"[step_down.criteria]\nmin_intensive_weeks = {weeks}\n\n"
        "[aftercare]\nfollow_up_days = [7, 30]\nduration_days = 30\n"
    )
    return path


def staying(behaviour: Behaviour) -> Behaviour:
    """Everyone stays to step-down, so both programs have weeks to step-down to compare."""
    return behaviour.model_copy(
        update={"dropout": behaviour.dropout.model_copy(update={"per_session": 0.0})}
    )


@pytest.mark.slow
async def test_a_what_if_shows_the_shorter_intensive_phase(tmp_path: Path) -> None:
    sources = tmp_path / "sources"
    sources.mkdir()
    files = [program_file(sources, 6), program_file(sources, 8)]
    programs = copy_programs(PROJECT_ROOT / "programs", tmp_path / "programs", files)
    settings = dataclasses.replace(load_settings(), programs_dir=programs)
    plan = Plan(programs=("weeks-6", "weeks-8"), patients=3, per_week=3, seeds=(11,))
    told: list[float] = []
    comparison = await compare(
        settings, plan, staying(load_behaviour()), tmp_path / "runs", told.append
    )
    six, eight = (comparison.runs[p][0] for p in plan.programs)
    assert six["weeks_to_step_down"] is not None and eight["weeks_to_step_down"] is not None
    # A patient's extra weeks (a rating of 3 or more) come on top of either program's.
    assert eight["weeks_to_step_down"] - six["weeks_to_step_down"] == pytest.approx(2, abs=0.5)
    assert six["facilitator_hours"] is not None and eight["facilitator_hours"] is not None
    assert six["treatment_completed"] == eight["treatment_completed"] == 1.0
    assert six["days_to_first_session"] is not None and six["days_to_first_session"] < 14
    assert six["waited_for_seat"] == 0.0  # three patients fit any track
    # The simulated patients answered questionnaires by their links (step-down, the end).
    assert six["survey_response"] is not None and six["survey_response"] > 0
    assert six["support_felt"] is not None and 1 <= six["support_felt"] <= 5
    # The three hold seats in the program's tracks, and nobody waits for one.
    seated = {k: v for k, v in six.items() if k.startswith("track:") and k.endswith(":peak_seats")}
    assert seated and sum(v or 0 for v in seated.values()) >= 1
    assert all(v == 0 for k, v in six.items() if k.endswith(":peak_waitlist"))
    assert told[-1] == 1.0 and told == sorted(told)
    lines = table(comparison).splitlines()
    assert "weeks-6" in lines[0] and "weeks-8" in lines[0]
    assert "simulated patient-years; CPU a patient-year: worker" in lines[-2]
    assert lines[-1].startswith("failed workflow tasks: 0; failed activity attempts")


@pytest.mark.slow
async def test_a_what_if_spread_over_two_servers_keeps_one_store_and_calendar(
    tmp_path: Path,
) -> None:
    sources = tmp_path / "sources"
    sources.mkdir()
    programs = copy_programs(
        PROJECT_ROOT / "programs", tmp_path / "programs", [program_file(sources, 6)]
    )
    settings = dataclasses.replace(load_settings(), programs_dir=programs)
    plan = Plan(programs=("weeks-6",), patients=4, per_week=4, seeds=(11,), servers=2)
    comparison = await compare(
        settings, plan, staying(load_behaviour()), tmp_path / "runs", lambda _: None
    )
    (run,) = comparison.runs["weeks-6"]
    # Every patient of both servers in the run's one store, each through to aftercare.
    assert run["treatment_completed"] == 1.0 and run["patient_years"] is not None
    assert run["weeks_to_step_down"] is not None and 6 <= run["weeks_to_step_down"] < 9
    assert comparison.cpu["failed_workflow_tasks"] == 0
    assert comparison.cpu["server"] > 0 and comparison.cpu["worker"] > 0
    scratch = tmp_path / "runs" / "weeks-6-11"
    assert sorted(p.name for p in scratch.glob("worker-*.log")) == [
        "worker-carepath-2.log",
        "worker-carepath.log",
    ]
    store = CareStore(f"sqlite:///{scratch / 'care.db'}")
    try:
        assert len(store.patients()) == 4
    finally:
        store.dispose()


THREE_SITES = """
[sites.east]
name = "East clinic"
zone = "America/Chicago"

[sites.north]
name = "North clinic"
zone = "America/New_York"

[sites.south]
name = "South clinic"
zone = "America/Los_Angeles"
"""


def one_seat_a_site(into: Path, sites: tuple[str, ...]) -> Path:
    """The six-week program with one intensive group a site of one seat, on weekday
    evenings (the synthetic patients' work ends at 17:00), in a room and by telehealth."""
    path = program_file(into, 6)
    tracks = "".join(
        f'\n[[groups.tracks]]\nid = "{site}-one"\nsite = "{site}"\nname = "One seat"\n'
        'level = "2.1"\nweekdays = ["mon", "tue", "thu"]\nstart = "18:00"\nhours = 3\n'
        'session_types = ["group_therapy"]\ncapacity = 1\nfacilitators = ["Dana Reyes"]\n'
        f'room = "Room A"\ntelehealth_link = "https://telehealth.example.org/{site}-one"\n'
        for site in sites
    )
    path.write_text(path.read_text() + tracks)
    return path


@pytest.mark.slow
async def test_a_seat_is_handed_on_within_a_site_on_a_what_if_of_two_servers(
    tmp_path: Path,
) -> None:
    """A leaving patient's journey hands their seat to the next on the waitlist by signal,
    which reaches only journeys on its own server: each site's patients go to one server.
    Three sites on two servers, patients arriving at each in turn: in turn, the two
    servers would split a site (the 10,000-patient run lost its handoffs so, and left its
    waiting patients in intake for good)."""
    sources = tmp_path / "sources"
    sources.mkdir()
    sites = ("east", "north", "south")
    programs = copy_programs(
        PROJECT_ROOT / "programs", tmp_path / "programs", [one_seat_a_site(sources, sites)]
    )
    (programs / "sites.toml").write_text(THREE_SITES)
    settings = dataclasses.replace(load_settings(), programs_dir=programs)
    plan = Plan(programs=("weeks-6",), patients=6, per_week=6, seeds=(11,), servers=2)
    comparison = await compare(
        settings, plan, staying(load_behaviour()), tmp_path / "runs", lambda _: None
    )
    (run,) = comparison.runs["weeks-6"]
    assert comparison.cpu["failed_workflow_tasks"] == 0
    # Each site's second patient waited for the first's seat and had it handed on when the
    # first stepped down (or withdrew): every journey went through treatment or withdrew
    # from it, none was left waiting in intake.
    assert run["treatment_completed"] + run["withdrawn"] == pytest.approx(1.0)  # type: ignore[operator]
    assert run["waited_for_seat"] == 0.5
    for site in sites:
        figure = {f: run[f"track:{site}-one:{f}"] for f in ("peak_waitlist", "waited")}
        assert figure == {"peak_waitlist": 1.0, "waited": 1.0}, site
        assert run[f"track:{site}-one:never_seated"] == 0.0
        wait = run[f"track:{site}-one:median_wait_days"]
        assert wait is not None and wait > 7


def test_every_what_if_starts_on_a_monday_in_february_of_the_coming_year() -> None:
    for now in (datetime(2026, 12, 7, 1, tzinfo=UTC), datetime(2027, 2, 28, 23, tzinfo=UTC)):
        start = start_instant(now)
        assert (start.year, start.month, start.weekday()) == (now.year + 1, 2, 0)
        assert 8 <= start.day <= 14


def test_a_patient_behaves_alike_under_every_program() -> None:
    """The n-th session's fate is the patient's whatever came before (and the seed's)."""
    behaviour = load_behaviour()
    one, again = behaviour.attendance_of(7, "P-A1B2C3D4"), behaviour.attendance_of(7, "P-A1B2C3D4")
    forwards = [one(n) for n in range(1, 61)]
    assert [again(n) for n in range(60, 0, -1)] == forwards[::-1]
    other_seed = behaviour.attendance_of(8, "P-A1B2C3D4")
    assert [other_seed(n) for n in range(1, 61)] != forwards


def test_synthetic_patients_arrive_at_the_clinic_s_own_sites_aged_for_that_day() -> None:
    """A clinic whose sites are not the sample's north and south: its patients are enrolled
    at its sites (the 10,000-patient run also found adolescents who had come of age)."""
    plan = Plan(programs=("default-iop",), patients=10_000, per_week=15, seeds=(7,))
    today = datetime(2028, 2, 14, tzinfo=UTC).date()
    cohort = arrivals(plan, 7, today, load_behaviour(), ("harbour", "hill"))
    assert {a.enrolment.site_id for a in cohort} == {"harbour", "hill"}
    assert cohort[-1].day == 4666  # 10,000 at 15 a week arrive over almost 13 years
    last = cohort[-1]
    check_plausible(last.enrolment, today + timedelta(days=last.day))


def test_a_run_s_progress_follows_its_patients_days_in_care_not_the_calendar() -> None:
    import random

    rng = random.Random(5)
    arrival_days = sorted(rng.randrange(0, 900) for _ in range(300))
    progress = CareDays(arrival_days)
    shares = []
    for today in [0, 0.5, 17, 240, 479.5, 480, 700, 1000, 1379, 1380, 2000]:
        by_hand = sum(min(max(today - d, 0), JOURNEY_DAYS) for d in arrival_days)
        share = progress.share(today)
        assert share == pytest.approx(by_hand / (300 * JOURNEY_DAYS))
        shares.append(share)
    assert shares == sorted(shares) and shares[-1] == pytest.approx(1.0)
    # 10,000 at 15 a week: a year in, 7% of the calendar but 3% of the work.
    cohort = CareDays([int(i * 7 / 15) for i in range(10_000)])
    assert cohort.share(365) == pytest.approx(0.030, abs=0.001)


def test_a_what_if_copies_the_clinic_s_sites_file_from_wherever_it_is(tmp_path: Path) -> None:
    elsewhere = tmp_path / "etc" / "clinic-sites.toml"
    elsewhere.parent.mkdir()
    elsewhere.write_text('[sites.harbour]\nname = "Harbour"\nzone = "Europe/Dublin"\n')
    programs = copy_programs(PROJECT_ROOT / "programs", tmp_path / "run", [], elsewhere)
    assert (programs / "sites.toml").read_text() == elsewhere.read_text()
    assert (programs / "default-iop.toml").is_file()


def test_dropout_leaves_a_longer_program_with_fewer_patients() -> None:
    behaviour = load_behaviour()
    fates = [behaviour.attendance_of(7, f"P-{i:08d}") for i in range(400)]

    def stayed(sessions: int) -> int:
        return sum(all(f(n) != "missed" for n in range(sessions - 3, sessions + 1)) for f in fates)

    assert stayed(30) > stayed(60) > 0


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (["--patients", "0"], "--patients must be from 1 to 10,000"),
        (["--arrivals", "many"], "--arrivals 'many': give admissions a week, e.g. 15/week"),
        (["--seeds", "0"], "--seeds must be from 1 to 20"),
        (["--program", "default-iop"], "each --program once: default-iop"),
        (["--program", "no-such"], "--program no-such: unknown program 'no-such'"),
        (["--program", "demo-iop"], "--program demo-iop runs on a compressed clock"),
        (["--program", "missing.toml"], "--program missing.toml: no such file"),
    ],
)
def test_simulate_refuses_bad_arguments_in_one_line(
    arguments: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--program", "default-iop", *arguments]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"error: {error}") and err.count("\n") == 1
    assert "What if" not in out


def a_comparison(seeds: int = 3) -> Comparison:
    """Two programs' outcomes as a what-if would give them, without running one."""
    plan = Plan(
        programs=("default-iop", "<six> & weeks"),
        patients=40,
        per_week=10,
        seeds=tuple(range(7, 7 + seeds)),
    )

    def run(i: int, shift: float) -> dict[str, float | None]:
        return {
            "treatment_completed": 0.6 + shift + 0.05 * i,
            "journey_completed": 0.5,
            "withdrawn": 0.4,
            "attendance": 0.75,
            "days_to_first_session": 6.0,
            "waited_for_seat": 0.1,
            "weeks_to_step_down": 10.0 - 2 * (shift > 0) + 0.1 * i,
            "relinked": None,
            "check_in_reach": 0.96,
            "referral_closure": 0.2,
            "tasks_per_cm_week": 1.0,
            "peak_tasks_per_cm_week": 11.0,
            "peak_seats": 8.0 + i,
            "facilitator_hours": 27.0,
            "peak_facilitator_hours": 126.0,
            "survey_response": 0.75,
            "support_felt": 3.4,
            "patient_years": 40.0,
        }

    return Comparison(
        plan,
        {
            "default-iop": [run(i, 0.0) for i in range(seeds)],
            "<six> & weeks": [run(i, 0.1) for i in range(seeds)],
        },
        {"worker": 80.0, "server": 24.0, "driver": 16.0, "failed_workflow_tasks": 0.0},
    )


def test_the_charts_show_each_program_s_median_and_range_over_the_seeds() -> None:
    lines = charts(a_comparison()).splitlines()
    assert lines[0] == "█ lowest seed  ▓ median  ░ highest seed"
    at = lines.index("completed treatment (reached aftercare)")
    default, six = lines[at + 1], lines[at + 2]
    assert default.endswith("| 65% (60%-70%)") and six.endswith("| 75% (70%-80%)")
    bar = default.split("|")[1]
    # A share's full bar is 100%: 60% solid, to 65% the median, to 70% the range.
    assert len(bar) == 30 and bar.count("█") == 18 and bar.count("▓") == 2
    assert bar.count("░") == 1 and bar.endswith(" " * 9)
    # A count's full bar is the largest value of any program.
    seats = lines[lines.index("seats needed at the busiest group session") + 1]
    assert seats.split("|")[1].rstrip().endswith("░") and seats.endswith("9.0 (8.0-10.0)")
    # A figure a program has none of is a dash, not a bar.
    relinked = lines[lines.index("re-linked to care after use reported in aftercare") + 1]
    assert relinked.split("|")[1] == " " * 30 and relinked.endswith("| -")


def test_one_seed_says_how_to_get_intervals() -> None:
    lines = charts(a_comparison(seeds=1)).splitlines()
    assert lines[0].startswith("one seed: run with --seeds")
    assert "░" not in "\n".join(lines) and "▓" not in "\n".join(lines)


def test_the_html_report_charts_each_figure_and_escapes_names() -> None:
    page = html_report(a_comparison())
    assert page.count("<svg") == 12
    assert "&lt;six&gt; &amp; weeks" in page and "<six>" not in page
    assert "seeds 7-9: bars are medians, lines the range" in page
    assert "completed treatment (reached aftercare)" in page


def test_a_comparison_survives_json() -> None:
    comparison = a_comparison()
    again = from_json(to_json(comparison))
    assert again == comparison
    assert table(again) == table(comparison)
    last, failed = table(comparison).splitlines()[-2:]
    assert failed == "failed workflow tasks: 0; failed activity attempts (retried): 0"
    assert last.startswith("240 simulated patient-years; CPU a patient-year: worker 0.33 s")


def test_simulate_refuses_a_report_in_a_missing_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "nowhere" / "report.html"
    assert main(["simulate", "--program", "default-iop", "--report", str(report)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --report ") and err.count("\n") == 1


def _stopped_by(error: BaseException, signum: int | None) -> object:
    """A run that, once `signum` lands (sent to this process, as Ctrl-C or a supervisor
    would), ends in `error`: what the stop itself causes under load (a worker the same
    Ctrl-C ended, a query no worker answered, an update the cancellation broke)."""
    import os

    async def run(*_: object) -> int:
        if signum is not None:
            assert signal.getsignal(signum) not in (signal.SIG_DFL, signal.SIG_IGN)
            os.kill(os.getpid(), signum)  # its handler runs before the next line
        raise error

    return run


STOP_ERRORS = [
    WorkflowUpdateRPCTimeoutOrCancelledError(),
    RPCError("Query deadline exceeded", RPCStatusCode.DEADLINE_EXCEEDED, b""),
    CliError("the simulation failed: Query deadline exceeded", 1),
    RuntimeError("the worker exited with code -2 while in use"),
    asyncio.CancelledError(),
]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("error", STOP_ERRORS, ids=lambda e: type(e).__name__)
def test_whatever_ends_a_run_after_a_signal_is_the_interruption(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: BaseException,
    signum: int,
) -> None:
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(cli.simulate, "_simulate", _stopped_by(error, signum))
    assert main(["simulate", "--program", "default-iop"]) == 130
    assert capsys.readouterr().err == "interrupted\n"
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers  # put back


def test_a_run_that_fails_without_a_signal_is_a_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = CliError("the simulation failed: Query deadline exceeded", 1)
    monkeypatch.setattr(cli.simulate, "_simulate", _stopped_by(failed, None))
    assert main(["simulate", "--program", "default-iop"]) == 1
    assert capsys.readouterr().err == "error: the simulation failed: Query deadline exceeded\n"


@pytest.mark.slow
def test_a_synthetic_patient_refused_at_enrolment_ends_the_run_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """As the 10,000-patient run's adolescent who had come of age: one line, exit 1, not
    a traceback, and nothing left running."""
    import simulation.whatif
    from services.enrolment import EnrolmentRefused
    from simulation.workers import children

    def refused(*_: object, **__: object) -> None:
        raise EnrolmentRefused("assessment.age_group: adolescent, but ... makes the patient 18")

    monkeypatch.setattr(simulation.whatif, "journey_input", refused)
    before = children()
    arguments = ["--program", "default-iop", "--patients", "1", "--arrivals", "5/week"]
    assert main(["simulate", *arguments]) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("error: the simulation failed: synthetic patient P-")
    assert err.endswith(
        "was refused at enrolment under default-iop: assessment.age_group: adolescent, "
        "but ... makes the patient 18"
    )
    assert children() <= before


def test_ctrl_c_interrupts_a_what_if_started_with_sigint_ignored(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A shell's background job starts with SIGINT ignored; its workers (worker.py) stop
    on Ctrl-C all the same, so the command must too, not wait for them."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        monkeypatch.setattr(
            cli.simulate, "_simulate", _stopped_by(RuntimeError("worker gone"), signal.SIGINT)
        )
        assert main(["simulate", "--program", "default-iop"]) == 130
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert capsys.readouterr().err == "interrupted\n"


def _in_group(group: int) -> set[int]:
    """Every running process of a process group (a what-if's: its command, workers and
    time-skipping servers), zombies left out."""
    found: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == group:
            found.add(int(stat.parent.name))
    return found


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signal_name", "to_group", "under_way"),
    [("SIGINT", True, True), ("SIGTERM", False, True), ("SIGTERM", False, False)],
    ids=["ctrl-c", "sigterm-to-the-command", "sigterm-while-starting"],
)
def test_ctrl_c_stops_a_what_if_and_leaves_no_process_or_scratch_behind(
    tmp_path: Path, signal_name: str, to_group: bool, under_way: bool
) -> None:
    """Ctrl-C in a terminal is SIGINT to the whole foreground process group: the command,
    its workers and its time-skipping servers; a supervisor's SIGTERM goes to the command
    alone, which stops the rest. Whenever it lands (under way: the clinic's clock has
    moved; or while the first server starts), the command says "interrupted", exits 130,
    and leaves no process of its group and no scratch directory. The child starts with
    SIGINT ignored, as a shell's background job (and some CI runners) would start it."""
    import os
    import subprocess
    import sys

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    progress = tmp_path / "progress"
    env = {**os.environ, "TMPDIR": str(scratch)}
    command = [sys.executable, str(PROJECT_ROOT / "starter.py"), "simulate"]
    arguments = ["--program", "default-iop", "--patients", "30", "--arrivals", "30/week"]
    proc = subprocess.Popen(
        [*command, *arguments, "--seeds", "2", "--progress-file", str(progress)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal's job is
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        # Waits with deadlines only so that a run that never gets going fails, not hangs.
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if under_way and progress.exists() and float(progress.read_text().split()[0]) > 0:
                break
            if not under_way and len(_in_group(proc.pid)) > 1:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the what-if ended before it was stopped"
        assert time.monotonic() < deadline, "the what-if never got going"
        (os.killpg if to_group else os.kill)(proc.pid, getattr(signal, signal_name))
        # A generous bound: the bug this guards against waits out a 10-minute clock step.
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert (proc.returncode, err.rstrip().splitlines()[-1]) == (130, "interrupted")
    # Before its servers started, it said that 30 a week outgrow the default's seats.
    assert "note: default-iop: north's level 2.1 groups have 22 seats; at 30 admissions" in err
    assert _in_group(proc.pid) == set()
    assert list(scratch.glob("carepath-whatif-*")) == []  # (a bytecode cache stays)


def test_failed_tasks_are_counted_from_the_worker_s_warnings(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text(
        "WARNING:temporalio.worker._workflow_instance:Failed activation on workflow "
        "PatientJourneyWorkflow with ID journey-P-1 and run ID r\n"
        "WARNING:temporalio.activity:Completing activity as failed ({'activity_id': '3'})\n"
        "WARNING:temporalio.activity:Completing activity as failed ({'activity_id': '4'})\n"
    )
    assert failed_tasks(log) == {"failed_workflow_tasks": 1.0, "failed_activity_attempts": 2.0}
    assert failed_tasks(tmp_path / "none.log") == {
        "failed_workflow_tasks": 0.0,
        "failed_activity_attempts": 0.0,
    }


_stalled: list[str] = []


@workflow.defn(name="StallsOnce", sandboxed=False)
class StallsOnce:
    """A workflow task that blocks its thread for longer than the SDK lets it (2 s): the
    deadlock detector fails the task, whose retry runs through."""

    @workflow.run
    async def run(self) -> str:
        if not _stalled:
            _stalled.append(workflow.info().run_id)
            time.sleep(2.5)
        return "through"


async def test_a_failed_workflow_task_is_reported_by_its_kind(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """A worker logs a failed workflow task (the SDK's deadlock detector, as a loaded
    machine's worker may: see BENCHMARKS.md) as a what-if's worker does (the stdlib's
    default format); the what-if's summary names its kind."""
    log = tmp_path / "worker-carepath.log"
    handler = logging.FileHandler(log)
    handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    sdk = logging.getLogger("temporalio")
    sdk.addHandler(handler)
    try:
        async with Worker(
            env.client,
            task_queue="stalls",
            workflows=[StallsOnce],
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):
            result = await env.client.execute_workflow(
                StallsOnce.run, id=f"stalls-{uuid.uuid4()}", task_queue="stalls"
            )
    finally:
        sdk.removeHandler(handler)
        handler.close()
    assert result == "through"
    assert failed_tasks(log)["failed_workflow_tasks"] == 1.0
    kinds = failure_kinds(log)
    assert kinds == {"workflow task: _DeadlockError [TMPRL1101] Potential deadlock detected": 1}
    comparison = dataclasses.replace(
        a_comparison(), cpu=a_comparison().cpu | failed_tasks(log), failures=dict(kinds)
    )
    assert table(comparison).splitlines()[-2:] == [
        "failed workflow tasks: 1; failed activity attempts (retried): 0",
        "  1 workflow task: _DeadlockError [TMPRL1101] Potential deadlock detected",
    ]
    assert from_json(to_json(comparison)) == comparison


def test_failure_kinds_name_the_exception_never_the_message(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text(
        "\x1b[2m2026-12-07T04:06:17Z\x1b[0m WARN temporalio_sdk_core::worker: started\n"
        "WARNING:temporalio.worker._workflow_instance:Failed activation on workflow "
        "PatientJourneyWorkflow with ID journey-P-1 and run ID r\n"
        "Traceback (most recent call last):\n"
        '  File "workflows/journey.py", line 3, in run\n'
        "    raise KeyError(name)\n"
        "KeyError: 'Jane Roe'\n"
        "\n"
        "The above exception was the direct cause of the following exception:\n"
        "\n"
        "Traceback (most recent call last):\n"
        '  File "temporalio/worker/_workflow_instance.py", line 9, in activate\n'
        "temporalio.workflow.NondeterminismError: [TMPRL1100] Nondeterminism error: "
        "Jane Roe's activity\n"
        "WARNING:temporalio.activity:Completing activity as failed ({'activity_id': '3', "
        "'activity_type': 'record_attendance', 'attempt': 1})\n"
        "Traceback (most recent call last):\n"
        '  File "activities/care_operations.py", line 3, in record_attendance\n'
        "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked\n"
        "[SQL: UPDATE patients SET name=? WHERE id=?]\n"
        "[parameters: ('Jane Roe', 'P-1')]\n"
        "WARNING:temporalio.activity:Completing activity as failed ({'activity_id': '4', "
        "'activity_type': 'place_call', 'attempt': 2})\n"
        "Traceback (most recent call last):\n"
        '  File "activities/telephony.py", line 3, in place_call\n'
        "TimeoutError\n"
        "ERROR:temporalio.worker._workflow:Failed handling activation on workflow with run "
        "ID r2\n"
        "Traceback (most recent call last):\n"
        '  File "workflows/journey.py", line 9, in run\n'
        "temporalio.worker._workflow._DeadlockError: [TMPRL1101] Potential deadlock "
        "detected: workflow didn't yield within 2 second(s).\n"
        "2026-12-07T04:07:00Z [warning  ] store_retry patient_id=P-1\n"
    )
    kinds = failure_kinds(log)
    assert kinds == {
        "workflow task (PatientJourneyWorkflow): NondeterminismError [TMPRL1100] "
        "Nondeterminism error": 1,
        "activity attempt (record_attendance): OperationalError (sqlite3.OperationalError) "
        "database is locked": 1,
        "activity attempt (place_call): TimeoutError": 1,
        "workflow task: _DeadlockError [TMPRL1101] Potential deadlock detected": 1,
    }
    assert "Jane" not in repr(kinds)
    assert sum(kinds.values()) == sum(failed_tasks(log).values())


@pytest.mark.slow
def test_keep_keeps_the_scratch_directory_with_the_workers_logs(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    command = [sys.executable, str(PROJECT_ROOT / "starter.py"), "simulate", "--keep"]
    arguments = ["--program", "default-iop", "--patients", "1", "--arrivals", "5/week"]
    done = subprocess.run(
        [*command, *arguments],
        cwd=PROJECT_ROOT,
        env={**os.environ, "TMPDIR": str(scratch)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "failed workflow tasks: 0; failed activity attempts (retried): 0" in done.stdout
    kept = [line for line in done.stderr.splitlines() if "scratch directory kept: " in line]
    assert len(kept) == 1
    root = Path(kept[0].split("scratch directory kept: ", 1)[1].split(" ", 1)[0])
    assert root.parent == scratch and (root / "default-iop-7" / "worker-carepath.log").is_file()


_held: list[str] = []


@workflow.defn(name="HoldsOnce", sandboxed=False)
class HoldsOnce:
    """A workflow task that holds its thread for 2.5 s once, as a full garbage collection of
    a large simulation worker on a loaded machine may."""

    @workflow.run
    async def run(self) -> str:
        if not _held:
            _held.append(workflow.info().run_id)
            time.sleep(2.5)
        return "through"


@pytest.mark.parametrize("threads", [True, False], ids=["on threads", "on the event loop"])
async def test_a_simulation_worker_s_task_may_be_held_longer_than_the_sdk_s_2_s(
    env: WorkflowEnvironment, tmp_path: Path, threads: bool
) -> None:
    """A simulation's worker runs workflow tasks on its event loop (no detector); on
    threads, as a clinic's worker does, its detector waits a minute, not the SDK's 2 s."""
    from concurrent.futures import ThreadPoolExecutor

    from infra.temporal import build_worker
    from simulation.workers import simulation_worker, worker_env

    _held.clear()
    variables = simulation_worker(worker_env("localhost:7233", tmp_path, tmp_path, "holds"))
    settings = load_settings(variables)
    assert settings.deadlock_timeout == 60 and load_settings({}).deadlock_timeout == 2
    assert not settings.workflow_threads and load_settings({}).workflow_threads
    assert settings.gc_tuning and not load_settings({}).gc_tuning
    # Every journey of a server of 2,500 stays cached; a clinic's worker keeps 1,000.
    assert settings.max_cached_workflows == 3000 and load_settings({}).max_cached_workflows == 1000
    settings = dataclasses.replace(settings, workflow_threads=threads)
    log = tmp_path / "worker-carepath.log"
    handler = logging.FileHandler(log)
    handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    sdk = logging.getLogger("temporalio")
    sdk.addHandler(handler)
    try:
        with ThreadPoolExecutor(max_workers=1) as executor:
            worker = build_worker(
                env.client,
                settings,
                [HoldsOnce],
                [],
                executor,
                workflow_runner=UnsandboxedWorkflowRunner(),
                interceptors=[],
            )
            async with worker:
                result = await env.client.execute_workflow(
                    HoldsOnce.run, id=f"holds-{uuid.uuid4()}", task_queue="holds"
                )
    finally:
        sdk.removeHandler(handler)
        handler.close()
    assert result == "through" and len(_held) == 1
    assert failed_tasks(log)["failed_workflow_tasks"] == 0.0


def test_a_track_s_seats_waitlist_and_waits_are_sampled_from_the_store_s_places() -> None:
    from clinical.protocol import ProgramCatalog
    from infra.store.groups import GroupPlace
    from simulation.tracks import TrackWatch, track_key

    day = datetime(2027, 2, 8, 13, tzinfo=UTC)

    def place(patient: str, days: int, seated: bool, track: str = "T1") -> GroupPlace:
        return GroupPlace("p", track, patient, day.replace(day=8 + days), seated)

    watch = TrackWatch()
    watch.sample([place("A", 0, True), place("B", 0, True), place("C", 1, False)])
    watch.sample([place("A", 0, True), place("B", 0, True), place("C", 1, False)])
    watch.sample([place("B", 0, True), place("C", 5, True), place("D", 5, False)])
    watch.sample([place("C", 5, True)])  # D left the waitlist without a seat
    track = ProgramCatalog(PROJECT_ROOT / "programs").load("default-iop").groups.tracks[0]
    figures = watch.figures([track.model_copy(update={"id": "T1", "capacity": 2})])
    assert figures[track_key("T1", "capacity")] == 2.0
    assert figures[track_key("T1", "peak_seats")] == 2.0
    assert figures[track_key("T1", "peak_waitlist")] == 1.0
    assert figures[track_key("T1", "waited")] == 2.0
    assert figures[track_key("T1", "never_seated")] == 1.0
    assert figures[track_key("T1", "median_wait_days")] == 4.0  # C: joined day 1, seated day 5
    assert figures[track_key("T1", "facilitator_hours")] == (
        track.hours * len(track.weekdays) * len(track.facilitators)
    )


def test_the_table_shows_each_track_under_the_programs_that_ran_it() -> None:
    from simulation.tracks import track_key

    comparison = a_comparison(seeds=2)
    for i, r in enumerate(comparison.runs["default-iop"]):
        r[track_key("EVE", "peak_seats")] = 10.0 + i
        r[track_key("EVE", "median_wait_days")] = None
    lines = table(comparison).splitlines()
    at = lines.index("group track EVE")
    seats = next(line for line in lines[at:] if "most seats taken at once" in line)
    assert "10.5 (10.0-11.0)" in seats and seats.endswith("-")
    wait = next(line for line in lines[at:] if "days waited" in line)
    assert wait.split()[-2:] == ["-", "-"]
    assert table(from_json(to_json(comparison))) == table(comparison)


def test_a_what_if_says_which_program_s_tracks_its_admissions_would_outgrow(
    tmp_path: Path,
) -> None:
    what_if = PROJECT_ROOT / "docs" / "whatif" / "groups-for-15-a-week.toml"
    programs = copy_programs(PROJECT_ROOT / "programs", tmp_path, [what_if])
    settings = dataclasses.replace(load_settings(), programs_dir=programs)
    plan = Plan(("default-iop", "groups-for-15-a-week"), patients=50, per_week=15, seeds=(7,))
    short = seats_short(settings, plan)
    assert list(short) == ["default-iop"]  # the bigger groups hold 15 a week
    north, south = short["default-iop"]
    assert north.startswith("north's level 2.1 groups have 22 seats; at 15 admissions")
    assert south.startswith("south's level 2.1 groups have 22 seats")
    assert seats_short(settings, dataclasses.replace(plan, per_week=5)) == {}
    # The run's table says so under its figures, also as the console reads it back.
    comparison = dataclasses.replace(a_comparison(), seats_short=short)
    lines = table(from_json(to_json(comparison))).splitlines()
    at = lines.index("default-iop has too few intensive seats for these admissions:")
    assert lines[at + 1 : at + 3] == [f"  {north}", f"  {south}"]
    assert "too few intensive seats" not in table(a_comparison())


def test_a_simulation_worker_collects_less_often_and_never_what_it_built_at_start() -> None:
    import gc

    from worker import GC_THRESHOLDS, tune_garbage_collection

    before = gc.get_threshold()
    try:
        tune_garbage_collection()
        assert gc.get_threshold() == GC_THRESHOLDS and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


@pytest.mark.slow
async def test_a_worker_that_exits_while_in_use_ends_its_run(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Nothing would do a dead worker's tasks: a run waiting on it (a clock step waits for
    its whole 10-minute deadline) is cancelled and fails saying so, at once."""
    import os

    from simulation.workers import simulation_worker, worker_env, worker_process

    address = env.client.service_client.config.target_host
    programs = PROJECT_ROOT / "programs"
    variables = simulation_worker(worker_env(address, tmp_path, programs, "gone"))
    waited_out = False

    async def run() -> None:
        nonlocal waited_out
        async with worker_process(env.client, variables) as worker:
            os.kill(worker.pid, signal.SIGKILL)
            await asyncio.sleep(600)
            waited_out = True

    with pytest.raises(RuntimeError, match="the worker exited with code -9 while in use"):
        # The bound only turns a run that waits on into a failure, not a hang.
        await asyncio.wait_for(run(), timeout=300)
    assert not waited_out
