"""What if the clinic ran another protocol? The same synthetic cohort (the same patients,
arriving on the same days, making the same choices: `simulation.behaviour`) runs under
each program with the real workflows, each program on a time-skipping server, worker and
store of its own in a scratch directory (never the clinic's), and the outcomes are read
from each run's store. With several seeds, each figure is the median with the range over
the seeds."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import itertools
import math
import re
import shutil
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from clinical.assessment import Enrolment
from clinical.phases import Phase
from clinical.protocol import ProgramCatalog, ProgramProtocol
from clinical.seat_demand import seat_demand, short_of_seats
from clinical.sites import SiteDirectory
from clinical.surveys import score
from infra.codec import KeyRing
from infra.embedded_server import binary
from infra.settings import SITES_FILE, Settings
from infra.store import CareStore
from infra.survey_links import LinkSigner
from infra.temporal import data_converter
from services.enrolment import EnrolmentRefused, enrol, journey_input
from services.surveys import SurveyDoor
from simulation.behaviour import Behaviour, seeded
from simulation.case_manager import CaseManager
from simulation.cohort import DAY, Arrival, ClinicBoard, advance, run_clinic
from simulation.patients import synthetic_cohort
from simulation.surveys import SurveyRespondents
from simulation.workers import (
    WorkerProcess,
    child_named,
    cpu_by_process,
    register_search_attributes,
    simulation_worker,
    worker_env,
    worker_process,
)

TASK_QUEUE = "carepath-whatif"
JOURNEY_DAYS = 480
"""About a default journey's length (intake to the end of a year's aftercare): for the
estimate of time left only."""


class CareDays:
    """How far a run is, as the share of its patients' days in care simulated so far (each
    patient about `JOURNEY_DAYS` from arrival): what a run's time follows, since a simulated
    day costs as many journeys as are in care that day. The share of calendar days would
    race through a large cohort's first months, with few patients yet, and promise it done
    in a third of its time."""

    def __init__(self, arrival_days: list[int]) -> None:
        self.days = sorted(arrival_days)
        self.before = list(itertools.accumulate(self.days, initial=0))
        """Sums of the first k arrival days."""

    def share(self, today: float) -> float:
        # Patients who arrived by `today - JOURNEY_DAYS` are through; those since, part way.
        through = bisect.bisect_right(self.days, today - JOURNEY_DAYS)
        arrived = bisect.bisect_right(self.days, today)
        partway = (arrived - through) * today - (self.before[arrived] - self.before[through])
        done = through * JOURNEY_DAYS + partway
        return done / (len(self.days) * JOURNEY_DAYS) if self.days else 1.0


CASE_MANAGERS = ("CM-01", "CM-02", "CM-03")
TREATMENT = (Phase.intensive.value, Phase.step_down.value)
RELINKED_BY_CALL = "relapse (follow_up_call)"
"""How the journey's phase change reads when a check-in's use re-linked the patient."""

Report = Callable[[str], None]
"""Where a run tells its user something before it starts."""


@dataclasses.dataclass(frozen=True)
class Plan:
    programs: tuple[str, ...]
    patients: int
    per_week: float
    seeds: tuple[int, ...]
    servers: int = 1
    """Time-skipping servers (each with a worker) each program's run is spread over, at
    most one a site (each site's journeys on one)."""


PATIENTS_PER_SERVER = 2500
"""A time-skipping server keeps every journey it ran (it cannot delete one), about a
megabyte each, and its collector's work grows with them (BENCHMARKS.md): a large cohort is
spread over a server per this many patients, up to one a site."""


def clinic_sites(programs: Path) -> tuple[str, ...]:
    """The sites of a run's copy of the clinic's programs, in ID order: where its patients
    are enrolled in turn."""
    return tuple(sorted(SiteDirectory.load(programs / SITES_FILE).sites))


def servers_for(patients: int) -> int:
    return max(1, math.ceil(patients / PATIENTS_PER_SERVER))


@dataclasses.dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str  # "%" for shares (0-1), else printed as is


METRICS = (
    Metric("treatment_completed", "completed treatment (reached aftercare)", "%"),
    Metric("journey_completed", "completed the year of aftercare", "%"),
    Metric("withdrawn", "withdrew (stopped coming)", "%"),
    Metric("attendance", "attendance, intensive and step-down", "%"),
    Metric("days_to_first_session", "days from enrolment to the first session (median)", "days"),
    Metric("waited_for_seat", "waited for a seat in a group track", "%"),
    Metric("weeks_to_step_down", "weeks from intensive start to step-down (median)", "weeks"),
    Metric("relinked", "re-linked to care after use reported in aftercare", "%"),
    Metric("check_in_reach", "aftercare check-ins reached", "%"),
    Metric("referral_closure", "referrals completed by the partner", "%"),
    Metric("tasks_per_cm_week", "tasks per case manager per week (weeks with groups)", "tasks"),
    Metric("peak_tasks_per_cm_week", "... in the busiest week", "tasks"),
    Metric("peak_seats", "seats needed at the busiest group session", "seats"),
    Metric("facilitator_hours", "clinician hours per week (weeks with groups)", "hours"),
    Metric("peak_facilitator_hours", "... in the busiest week", "hours"),
    Metric("survey_response", "questionnaires answered (simulated patients, by link)", "%"),
    Metric("support_felt", "family and peer support felt, 1-5 (mean of answers)", "points"),
)


def start_instant(now: datetime) -> datetime:
    """Where every what-if starts: 13:00 UTC on the second Monday of the coming year's
    February (the same weekday and season whichever day it runs, clear of January's
    holidays; a time-skipping server can only move forward)."""
    first = date(now.year + 1, 2, 1)
    monday = first + timedelta(days=(7 - first.weekday()) % 7 + 7)
    return datetime(monday.year, monday.month, monday.day, 13, tzinfo=UTC)


def arrivals(
    plan: Plan, seed: int, today: date, behaviour: Behaviour, sites: tuple[str, ...]
) -> list[Arrival]:
    """The cohort: `plan.patients` synthetic patients of the seed at the clinic's `sites`
    in turn, arriving evenly at `plan.per_week` a week, each with their behaviour's
    attendance."""
    days = [int(i * 7 / plan.per_week) for i in range(plan.patients)]
    cohort = synthetic_cohort(
        plan.patients,
        seed,
        case_managers=CASE_MANAGERS,
        sites=sites,
        today=today,
        arrival_days=days,
    )
    return [
        Arrival(
            day,
            e,
            CaseManager(
                behaviour.attendance_of(seed, e.patient_id),
                rng=seeded(str(seed), e.patient_id, "case-manager"),
            ),
        )
        for day, e in zip(days, cohort, strict=True)
    ]


@asynccontextmanager
async def time_skipping_server(workdir: Path) -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of the run's own, with keys of the run's own, its clock at
    the start instant; shut down whatever happens."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(binary("temporal-test-server")),
        data_converter=data_converter(KeyRing.load_or_create(workdir / "keys.json")),
    )
    try:
        await register_search_attributes(env.client)
        now = await env.get_current_time()
        await advance(env, start_instant(now) - now)
        yield env
    finally:
        await env.shutdown()


async def run_program(
    settings: Settings,
    program_id: str,
    plan: Plan,
    seed: int,
    behaviour: Behaviour,
    workdir: Path,
    progress: Callable[[float], None],
) -> tuple[dict[str, float | None], dict[str, float], Counter[str]]:
    """One program's run of the seed's cohort on `plan.servers` servers: its outcomes, the
    CPU seconds its workers and servers spent on it and the workflow tasks and activity
    attempts that failed (`FAILED`), and those failures by kind (`failure_kinds`)."""
    workdir.mkdir(parents=True)
    programs = settings.programs_dir
    protocol = ProgramCatalog(programs).load(program_id)
    settings = dataclasses.replace(settings, task_queue=TASK_QUEUE)
    async with contextlib.AsyncExitStack() as stack:
        # Each server with a worker of its own, every worker on the run's one store.
        envs: list[WorkflowEnvironment] = []
        workers: list[WorkerProcess] = []
        servers: list[int | None] = []
        sites = clinic_sites(programs)
        # At most a server a site: a site's journeys hand seats on to each other by signal,
        # which reaches only journeys on the same server (simulation.cohort.run_clinic).
        for number in range(1, min(plan.servers, len(sites)) + 1):
            env = await stack.enter_async_context(time_skipping_server(workdir))
            variables = simulation_worker(
                worker_env(
                    env.client.service_client.config.target_host,
                    workdir,
                    programs,
                    TASK_QUEUE,
                    CAREPATH_SIMULATED_USE_RISK=str(behaviour.aftercare.use_risk),
                )
            )
            port = variables["TEMPORAL_ADDRESS"].rsplit(":", 1)[-1]
            servers.append(child_named("temporal-test-server", port))
            workers.append(
                await stack.enter_async_context(
                    worker_process(env.client, variables, number=number)
                )
            )
            stack.enter_context(env.auto_time_skipping_disabled())
            envs.append(env)
        cpu_before = cpu_by_process([w.pid for w in workers], servers)
        now = await envs[0].get_current_time()
        cohort = arrivals(plan, seed, now.date(), behaviour, sites)
        care_days = CareDays([a.day for a in cohort])

        async def start(enrolment: Enrolment, client: Client) -> WorkflowHandle[Any, Any]:
            at = await envs[0].get_current_time()
            try:
                journey = journey_input(
                    enrolment.model_copy(update={"program_id": program_id}), settings, now=at
                )
            except EnrolmentRefused as exc:  # the model's fault or the program's: say which
                raise RuntimeError(
                    f"synthetic patient {enrolment.patient_id} was refused at enrolment "
                    f"under {program_id}: {exc}"
                ) from None
            return await enrol(client, TASK_QUEUE, journey)

        board = ClinicBoard(variables["CAREPATH_DATABASE_URL"], KeyRing.load(workdir / "keys.json"))
        stack.callback(board.close)
        await run_clinic(
            envs,
            start,
            cohort,
            board,
            protocol.step_down.criteria.min_intensive_weeks,
            withdraw_after_missed=behaviour.dropout.discharge_after_missed,
            charts_weekly=True,
            progress=lambda day, ended, total: progress(
                min(care_days.share(day), 0.99) if ended < total else 1.0
            ),
        )
        # The simulated patients answer their questionnaires by their links, each the day
        # after it was sent (the workers signed them with the run's keys).
        door = SurveyDoor(
            board.store,
            LinkSigner.from_ring(KeyRing.load(workdir / "keys.json"), ""),
            ProgramCatalog(programs),
        )
        SurveyRespondents(board.store, door, seed).answer_due(
            {p.patient_id for p in board.store.patients()}, None
        )
        cpu_after = cpu_by_process([w.pid for w in workers], servers)
        cpu = {k: cpu_after[k] - cpu_before[k] for k in ("worker", "server")}
        failed = dict.fromkeys(FAILED, 0.0)
        kinds: Counter[str] = Counter()
        for w in workers:
            for key, count in failed_tasks(w.log).items():
                failed[key] += count
            kinds += failure_kinds(w.log)
        return (
            outcomes(board.store, protocol) | board.tracks.figures(protocol.groups.tracks),
            cpu | failed,
            kinds,
        )


FAILED = {
    "failed_workflow_tasks": ("Failed activation on workflow", "Failed handling activation"),
    "failed_activity_attempts": ("Completing activity as failed",),
}
_RECORD = re.compile(r"^(?:(?:DEBUG|INFO|WARNING|ERROR|CRITICAL):[\w.]+:|\S*\d{4}-\d\d-\d\dT)")
"""Where a worker's log record begins: the SDK's (stdlib logging's default format), or
CarePath's and the SDK core's (a timestamp first); a traceback's lines belong to the record
above them."""
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*)(?::\s?(.*))?$")
_SDK_MESSAGE = re.compile(r"^(\[TMPRL\d+\][^:.]*)")
_WRAPPED = re.compile(r"^(\([\w.]+\) [^\[]{0,60})")
_WORKFLOW_TYPE = re.compile(r"Failed activation on workflow (\w+) with ID")
_ACTIVITY_TYPE = re.compile(r"'activity_type': '(\w+)'")


def failed_tasks(worker_log: Path) -> dict[str, float]:
    """Workflow tasks and activity attempts that failed, as the worker logged them (the
    SDK warns of each): a what-if that ran clean has none of the first."""
    text = worker_log.read_text(errors="replace") if worker_log.is_file() else ""
    return {key: float(sum(text.count(m) for m in marks)) for key, marks in FAILED.items()}


def failure_kinds(worker_log: Path) -> Counter[str]:
    """The failed workflow tasks and activity attempts of a worker's log by kind: what
    failed (a workflow task of its workflow type, an activity attempt of its activity type)
    and the exception's type, with the SDK's message class where it has one ("[TMPRL1101]
    Potential deadlock detected", "[TMPRL1100] Nondeterminism error") or a store's driver
    error ("(sqlite3.OperationalError) database is locked"), never the rest of a message
    (it may hold a patient's data)."""
    text = worker_log.read_text(errors="replace") if worker_log.is_file() else ""
    kinds: Counter[str] = Counter()
    for record in _records(text):
        head = record[0]
        if any(m in head for m in FAILED["failed_workflow_tasks"]):
            found = _WORKFLOW_TYPE.search(head)
            what = "workflow task" + (f" ({found.group(1)})" if found else "")
        elif any(m in head for m in FAILED["failed_activity_attempts"]):
            found = _ACTIVITY_TYPE.search(head)
            what = "activity attempt" + (f" ({found.group(1)})" if found else "")
        else:
            continue
        kinds[f"{what}: {_exception_kind(record)}"] += 1
    return kinds


def _records(text: str) -> list[list[str]]:
    records: list[list[str]] = []
    for line in text.splitlines():
        if _RECORD.match(line) or not records:
            records.append([line])
        else:
            records[-1].append(line)
    return records


def _exception_kind(record: list[str]) -> str:
    """The type of the exception a record's traceback ends in (the outermost of a chain:
    the first line out of its last traceback's frames), with the message's class only."""
    starts = [i for i, line in enumerate(record) if line.startswith("Traceback (most recent")]
    if not starts:
        return "no traceback"
    for line in record[starts[-1] + 1 :]:
        if line[:1].isspace() or not line:
            continue
        found = _EXCEPTION.match(line)
        if found is None:
            return "unknown exception"
        kind = found.group(1).rsplit(".", 1)[-1]
        message = found.group(2) or ""
        sdk = _SDK_MESSAGE.match(message) or _WRAPPED.match(message)
        return f"{kind} {sdk.group(1).strip()}" if sdk else kind
    return "unknown exception"


def outcomes(store: CareStore, protocol: ProgramProtocol) -> dict[str, float | None]:
    """The run's outcomes, from its store (as the clinic's reports read theirs)."""
    patients = store.patients()
    n = len(patients)
    final = Counter(p.phase for p in patients)
    changes = {p.patient_id: store.phase_changes(p.patient_id) for p in patients}
    in_aftercare = [pid for pid, c in changes.items() if any(e.phase == Phase.aftercare for e in c)]
    relinked = [
        pid
        for pid in in_aftercare
        if any(e.reason.startswith("relapse (follow_up_call)") for e in changes[pid])
    ]
    weeks = [w for c in changes.values() if (w := _weeks_to_step_down(c)) is not None]

    booked = store.appointments()
    first_session: dict[str, datetime] = {}
    for a in booked:
        if a.status != "cancelled":
            earliest = first_session.get(a.patient_id, a.starts_at)
            first_session[a.patient_id] = min(a.starts_at, earliest)
    to_first = [
        (first_session[pid] - c[0].at) / DAY
        for pid, c in changes.items()
        if c and pid in first_session
    ]
    treatment = [a for a in booked if a.phase in TREATMENT]
    attended = sum(a.status == "attended" for a in treatment)
    marked = sum(a.status in ("attended", "missed") for a in treatment)

    calls: dict[tuple[str, str], bool] = {}
    for c in store.call_attempts():
        call = (c.patient_id, c.call_ref)
        calls[call] = calls.get(call, False) or c.outcome.value == "reached"

    referrals = store.referrals()
    tasks = store.tasks(include_done=True)
    # The store stamps a task's creation with the wall clock; its due date is the
    # journey's (simulated) time, its kind's days after it opened.
    per_week = Counter(
        _week(t.due_at - timedelta(days=protocol.tasks.days_for(t.kind)))
        for t in tasks
        if t.due_at is not None
    )

    site_of = {p.patient_id: p.site_id for p in patients}
    group = set(protocol.schedule.group_session_types)
    held = [a for a in booked if a.status != "cancelled"]
    # A group visit (a site's slot) is one facilitator's, however many patients it seats
    # and whichever topic each follows; individual therapy is a clinician's hour each.
    seats: Counter[tuple[str, datetime]] = Counter()
    visits: dict[tuple[str, datetime], float] = {}
    hours: defaultdict[date, float] = defaultdict(float)
    for a in held:
        if a.session_type in group:
            visit = (site_of[a.patient_id], a.starts_at)
            visits[visit] = max(visits.get(visit, 0.0), a.hours)
            seats[visit] += a.modality == "in_person"
        else:
            hours[_week(a.starts_at)] += a.hours
    for (_, starts_at), length in visits.items():
        hours[_week(starts_at)] += length
    # Weeks with groups: the weeks anyone was in treatment (not the aftercare tail).
    treating = {_week(at) for _, at in visits}
    in_session = [hours[w] for w in treating]
    return {
        "treatment_completed": _share(len(in_aftercare), n),
        "journey_completed": _share(final[Phase.completed], n),
        "withdrawn": _share(final[Phase.withdrawn], n),
        "attendance": _share(attended, marked),
        "days_to_first_session": statistics.median(to_first) if to_first else None,
        "waited_for_seat": _share(
            len({t.patient_id for t in tasks if t.kind == "group_waitlist"}), n
        ),
        "weeks_to_step_down": statistics.median(weeks) if weeks else None,
        "relinked": _share(len(relinked), len(in_aftercare)),
        "check_in_reach": _share(sum(calls.values()), len(calls)),
        "referral_closure": _share(
            sum(r.outcome is not None and r.outcome.value == "completed" for r in referrals),
            len(referrals),
        ),
        "tasks_per_cm_week": (
            statistics.mean(per_week[w] for w in treating) / len(CASE_MANAGERS) if treating else 0.0
        ),
        "peak_tasks_per_cm_week": max(per_week.values(), default=0) / len(CASE_MANAGERS),
        "peak_seats": max(seats.values(), default=0),
        "facilitator_hours": statistics.mean(in_session) if in_session else 0.0,
        "peak_facilitator_hours": max(hours.values(), default=0.0),
        **_survey_figures(store, protocol),
        # Not shown as an outcome: what the run simulated, for its cost.
        "patient_years": sum(
            ((c[-1].at - c[0].at) / (365 * DAY) for c in changes.values() if c), 0.0
        ),
    }


def _survey_figures(store: CareStore, protocol: ProgramProtocol) -> dict[str, float | None]:
    """Questionnaires answered / sent, and the answers' family and peer support."""
    sent = store.surveys()
    answered = [s.answers for s in sent if s.answers is not None]
    config = protocol.survey
    felt = [
        support
        for a in answered
        if config is not None and (support := score(config, a).support) is not None
    ]
    return {
        "survey_response": _share(len(answered), len(sent)),
        "support_felt": statistics.mean(felt) if felt else None,
    }


def _weeks_to_step_down(changes: list[Any]) -> float | None:
    began = next((e.at for e in changes if e.phase == Phase.intensive), None)
    stepped = next((e.at for e in changes if e.phase == Phase.step_down), None)
    if began is None or stepped is None:
        return None
    return float((stepped - began) / (7 * DAY))


def _week(at: datetime) -> date:
    """The Monday of the instant's week (UTC)."""
    return at.date() - timedelta(days=at.weekday())


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclasses.dataclass
class Comparison:
    plan: Plan
    runs: dict[str, list[dict[str, float | None]]]
    """Each program's outcomes, one per seed."""
    cpu: dict[str, float]
    """CPU seconds of the workers, the servers and this process (the simulated clinic),
    over every program and seed; and the workflow tasks and activity attempts that failed
    (`FAILED`)."""
    failures: dict[str, int] = dataclasses.field(default_factory=dict)
    """The failed workflow tasks and activity attempts by kind (`failure_kinds`), over
    every program and seed."""
    seats_short: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """Each program's intensive tracks its admissions would outgrow (`seats_short`)."""


SEAT_SAMPLE = 2000
"""Patients of a seed's cohort the seat estimate places (the share placed at each level
is the behaviour model's, whatever the cohort's size)."""
INTENSIVE_PHASES = 1.24
"""Intensive phases a simulated patient has, counting returns after use in aftercare: the
10,000-patient what-if at 15 a week had 4,117 in 3,329 patients by its fifth year
(BENCHMARKS.md). The behaviour model's, for the seat estimate."""


def seats_short(settings: Settings, plan: Plan) -> dict[str, list[str]]:
    """For each program whose intensive tracks the plan's admissions would outgrow, why,
    a line a site and level (`clinical.seat_demand`): the waits it reports then grow with
    the run's length, and a long run may stall on them."""
    catalog = ProgramCatalog(settings.programs_dir)
    sites = clinic_sites(settings.programs_dir)
    # Only levels and commitments count here, not ages: any day will do for `today`.
    cohort = synthetic_cohort(SEAT_SAMPLE, plan.seeds[0], sites=sites, today=date(2027, 1, 1))
    admissions = [(e.site_id, e.assessment) for e in cohort]
    found: dict[str, list[str]] = {}
    for program in plan.programs:
        demands = seat_demand(catalog.load(program), admissions, INTENSIVE_PHASES)
        short = short_of_seats(demands, plan.per_week)
        if short:
            found[program] = [d.explain(plan.per_week) for d in short]
    return found


async def compare(
    settings: Settings,
    plan: Plan,
    behaviour: Behaviour,
    scratch: Path,
    progress: Callable[[float], None],
    note: Report = lambda _: None,
) -> Comparison:
    """Each seed's cohort under each program (a seed's programs at once, each on its own
    server and worker). Before they start, `note` hears of any program whose tracks the
    admissions would outgrow."""
    short = seats_short(settings, plan)
    for program, lines in short.items():
        for line in lines:
            note(f"{program}: {line}")
    runs: dict[str, list[dict[str, float | None]]] = {p: [] for p in plan.programs}
    cpu = {"worker": 0.0, "server": 0.0, "driver": -time.process_time()}
    failures: Counter[str] = Counter()
    done: dict[tuple[str, int], float] = {(p, s): 0.0 for p in plan.programs for s in plan.seeds}

    def told(key: tuple[str, int]) -> Callable[[float], None]:
        def tell(fraction: float) -> None:
            done[key] = fraction
            progress(sum(done.values()) / len(done))

        return tell

    for seed in plan.seeds:
        found = await asyncio.gather(
            *(
                run_program(
                    settings,
                    program,
                    plan,
                    seed,
                    behaviour,
                    scratch / f"{program}-{seed}",
                    told((program, seed)),
                )
                for program in plan.programs
            )
        )
        for program, (outcome, spent, kinds) in zip(plan.programs, found, strict=True):
            runs[program].append(outcome)
            cpu["worker"] += spent["worker"]
            cpu["server"] += spent["server"]
            for key in FAILED:
                cpu[key] = cpu.get(key, 0.0) + spent[key]
            failures += kinds
    cpu["driver"] += time.process_time()
    return Comparison(plan, runs, cpu, dict(failures.most_common()), short)


def copy_programs(source: Path, into: Path, extra: list[Path], sites: Path | None = None) -> Path:
    """The clinic's programs and sites (`sites`: its sites file, where not among the
    programs), and program files given by path, in a directory of the run's own (a what-if
    never reads the clinic's directory while it runs)."""
    into.mkdir(parents=True, exist_ok=True)
    for path in [*source.glob("*.toml"), *(p for e in extra for p in e.parent.glob("*.toml"))]:
        shutil.copy(path, into / path.name)
    if sites is not None and sites.resolve() != (into / SITES_FILE).resolve():
        shutil.copy(sites, into / SITES_FILE)
    return into
