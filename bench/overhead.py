"""1. Engine overhead: N patients enrolled on the dev server and driven through intake and
their first intensive week (placement and plan, the week's booking, a case manager's
attendance report for each session once it has happened), against the bare reference doing,
patient by patient, exactly the activities, timers, updates and continue-as-new that the
journey did (read from its histories). Each side on a fresh dev server with the embedded
server's flags and `worker.py`'s settings, the worker in its own process; the sides
alternate run by run.

The program is the default protocol on a compressed clock (a program day lasts
`seconds_per_day` real seconds), so the segment's waits are short; both sides wait the same
timers and send the same queries and updates at the same moments. Throughput is patients
per second from the first start to the last segment's end."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowContinuedAsNewError, WorkflowHandle

from bench.bare import BareJourney, BareProgress, BareScript, counts, script_of
from bench.common import Stopwatch, dev_server, program_dir, spread
from clinical.assessment import Enrolment
from clinical.attendance import SessionRecord, SessionStatus
from clinical.clock import first_monday_after
from clinical.phases import Phase
from clinical.requests import AttendanceReport
from clinical.status import JourneyStatus
from infra.settings import load_settings
from simulation.workers import cpu_seconds, worker_env, worker_process
from workflows.patient_journey import PatientJourneyWorkflow

PROGRAM = "bench-iop"
TASK_QUEUE = "bench"


@dataclass
class Drive:
    """What a driver did for one patient's segment."""

    workflow_id: str
    first_run_id: str
    report_offsets: list[float]
    """Seconds after the week's Monday at which each session happened."""
    seconds: float


async def sleep_until(at: datetime) -> None:
    delay = (at - datetime.now(UTC)).total_seconds()
    if delay > 0:
        await asyncio.sleep(delay)


async def first_run_ends(handle: WorkflowHandle[Any, Any]) -> None:
    """Wait (one long poll, no polling) for the first run's continue-as-new: the journey
    books its first week and continues as new at the phase boundary, hours of program time
    before the first session. Reports wait for it, as they would in a clinic."""
    try:
        await handle.result(follow_runs=False)
    except WorkflowContinuedAsNewError:
        return
    raise RuntimeError(f"{handle.id} ended instead of continuing as new")


def week_one(status: JourneyStatus) -> list[SessionRecord]:
    return sorted(
        (
            s
            for s in status.sessions
            if s.phase == Phase.intensive and s.week == 1 and s.status != SessionStatus.cancelled
        ),
        key=lambda s: s.day,
    )


async def drive_journey(client: Client, settings: Any, enrolment: Enrolment) -> Drive:
    """A case manager's first week with a new patient: enrol (as `starter.py enrol` does),
    then report each session of the first intensive week once it has happened."""
    from cli.enrolment import start_journey

    watch = Stopwatch()
    started = await start_journey(client, settings, enrolment)
    await first_run_ends(started)
    handle = client.get_workflow_handle(started.id)  # the latest run
    status: JourneyStatus = await handle.query(PatientJourneyWorkflow.status)
    clock = status.clock
    sessions = week_one(status)
    monday = first_monday_after(status.phase_history[0].day, clock.origin_date.weekday())
    for session in sessions:
        await sleep_until(clock.instant(session.day))
        await handle.execute_update(
            PatientJourneyWorkflow.record_attendance,
            AttendanceReport(
                case_manager_id=status.case_manager_id,
                session_id=session.session_id,
                status="attended",
            ),
        )
    await handle.terminate("benchmark: segment done")
    assert started.first_execution_run_id is not None
    return Drive(
        workflow_id=handle.id,
        first_run_id=started.first_execution_run_id,
        report_offsets=[clock.duration(s.day - monday).total_seconds() for s in sessions],
        seconds=watch.seconds(),
    )


async def drive_bare(
    client: Client, workflow_id: str, script: BareScript, offsets: list[float]
) -> Drive:
    """The same driver on the bare workflow: the same waits, query and updates."""
    watch = Stopwatch()
    started = await client.start_workflow(
        BareJourney.run, script, id=workflow_id, task_queue=TASK_QUEUE
    )
    await first_run_ends(started)
    handle = client.get_workflow_handle(workflow_id)
    progress: BareProgress = await handle.query(BareJourney.progress)
    monday = progress.first_timer_due_at
    assert monday is not None
    for n, offset in enumerate(offsets):
        await sleep_until(monday + timedelta(seconds=offset))
        await handle.execute_update(BareJourney.record, n)
    await handle.terminate("benchmark: segment done")
    assert started.first_execution_run_id is not None
    return Drive(
        workflow_id=workflow_id,
        first_run_id=started.first_execution_run_id,
        report_offsets=offsets,
        seconds=watch.seconds(),
    )


async def _histories(client: Client, drive: Drive) -> list[Any]:
    """Every run of a workflow, first to last."""
    from simulation.clinic import journey_histories

    first = client.get_workflow_handle(drive.workflow_id, first_execution_run_id=drive.first_run_id)
    return await journey_histories(client, first)


@dataclass
class Side:
    seconds: float
    drives: list[Drive]
    per_patient: dict[str, float]
    scripts: dict[str, BareScript]
    cpu: dict[str, float]
    """CPU seconds per patient: the worker process, the server process, the driver."""

    @property
    def throughput(self) -> float:
        return len(self.drives) / self.seconds

    @property
    def patients_per_cpu_second(self) -> float:
        return 1 / (self.cpu["worker"] + self.cpu["server"])


async def _tally(client: Client, drives: list[Drive]) -> tuple[dict[str, float], dict[str, Any]]:
    tallies, scripts = [], {}
    for d in drives:
        runs = await _histories(client, d)
        tallies.append(counts(runs))
        scripts[d.workflow_id] = script_of(runs)
    per_patient = {key: statistics.mean(t[key] for t in tallies) for key in tallies[0]}
    # Woke for the second week before the segment ended: the arrivals outpaced the clock.
    per_patient["late_share"] = statistics.mean(t["timers_fired"] > 1 for t in tallies)
    return per_patient, scripts


async def _paced(drivers: list[Callable[[], Awaitable[Drive]]], per_second: float) -> list[Drive]:
    """Start the drivers at a steady rate (patients arriving), all running at once."""

    async def later(delay: float, driver: Callable[[], Awaitable[Drive]]) -> Drive:
        await asyncio.sleep(delay)
        return await driver()

    return list(await asyncio.gather(*(later(i / per_second, d) for i, d in enumerate(drivers))))


async def _measure(
    workdir: Path,
    programs: Path,
    drivers: Callable[[Client], list[Callable[[], Awaitable[Drive]]]],
    per_second: float,
    bare: bool,
) -> Side:
    async with dev_server(workdir) as (server, client):
        env = worker_env(server, workdir, programs, TASK_QUEUE)
        server_pid = server.pid()
        assert server_pid is not None
        async with worker_process(client, env, bare=bare) as worker:
            started = (cpu_seconds(worker.pid), cpu_seconds(server_pid), time.process_time())
            watch = Stopwatch()
            drives = await _paced(drivers(client), per_second)
            seconds = watch.seconds()
            ended = (cpu_seconds(worker.pid), cpu_seconds(server_pid), time.process_time())
        n = len(drives)
        cpu = {
            name: (end - start) / n
            for name, start, end in zip(("worker", "server", "driver"), started, ended, strict=True)
        }
        per_patient, scripts = await _tally(client, drives)
    return Side(seconds, drives, per_patient, scripts, cpu)


async def carepath_side(
    patients: int, per_second: float, seconds_per_day: float, workdir: Path
) -> Side:
    from simulation.clinic import enrolment_data

    programs = program_dir(workdir / "programs", seconds_per_day)
    settings = dataclasses.replace(load_settings(), programs_dir=programs, task_queue=TASK_QUEUE)
    enrolments = [
        Enrolment.model_validate(enrolment_data() | {"program_id": PROGRAM})
        for _ in range(patients)
    ]

    def drivers(client: Client) -> list[Callable[[], Awaitable[Drive]]]:
        return [functools.partial(drive_journey, client, settings, e) for e in enrolments]

    return await _measure(workdir, programs, drivers, per_second, bare=False)


async def bare_side(carepath: Side, per_second: float, workdir: Path) -> Side:
    programs = program_dir(workdir / "programs")

    def drivers(client: Client) -> list[Callable[[], Awaitable[Drive]]]:
        return [
            functools.partial(
                drive_bare,
                client,
                f"bare-{n:05d}",
                carepath.scripts[d.workflow_id],
                d.report_offsets,
            )
            for n, d in enumerate(carepath.drives)
        ]

    return await _measure(workdir, programs, drivers, per_second, bare=True)


async def run(
    patients: int, repeat: int, per_second: float, seconds_per_day: float, scratch: Path
) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    for r in range(repeat):
        carepath = await carepath_side(
            patients, per_second, seconds_per_day, scratch / f"carepath-{r}"
        )
        bare = await bare_side(carepath, per_second, scratch / f"bare-{r}")
        rounds.append(
            {
                "carepath_per_cpu_s": carepath.patients_per_cpu_second,
                "bare_per_cpu_s": bare.patients_per_cpu_second,
                "cost_ratio": bare.patients_per_cpu_second / carepath.patients_per_cpu_second,
                "carepath_cpu_per_patient": carepath.cpu,
                "bare_cpu_per_patient": bare.cpu,
                "carepath_wall_per_s": carepath.throughput,
                "bare_wall_per_s": bare.throughput,
                "carepath_per_patient": carepath.per_patient,
                "bare_per_patient": bare.per_patient,
                "segment_seconds_median": {
                    "carepath": statistics.median(d.seconds for d in carepath.drives),
                    "bare": statistics.median(d.seconds for d in bare.drives),
                },
            }
        )
    return {
        "patients": patients,
        "arrivals_per_s": per_second,
        "seconds_per_day": seconds_per_day,
        "repeat": repeat,
        "carepath_per_cpu_s": spread([r["carepath_per_cpu_s"] for r in rounds]),
        "bare_per_cpu_s": spread([r["bare_per_cpu_s"] for r in rounds]),
        "cost_ratio": spread([r["cost_ratio"] for r in rounds]),
        "target_ratio": 1.3,
        "rounds": rounds,
    }
