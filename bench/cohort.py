"""3. Cohort simulation: N patients through the whole default protocol (intake, intensive,
step-down, twelve months of aftercare) on the time-skipping server, with the simulated
clinic (a case manager entering each week's attendance sheets and approving step-down),
partners and telephony (every check-in call answered by the seeded simulated provider).

The clinic runs as `simulation.cohort` has it, every patient arriving on day one.
Patient-years per minute of wall-clock time."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import TimeoutType, WorkflowTaskFailedCause
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from bench.common import DEFAULT_PROGRAM, Stopwatch, kind, program_dir, spread, time_skipping
from bench.overhead import TASK_QUEUE
from clinical.journey import JourneyOutcome
from clinical.phases import Phase
from clinical.protocol import ProgramCatalog
from infra.settings import load_settings
from simulation.case_manager import CaseManager
from simulation.cohort import Arrival, ClinicBoard, advance, bounded, run_clinic
from simulation.patients import steady_attendance
from simulation.workers import (
    child_named,
    cpu_by_process,
    simulation_worker,
    worker_env,
    worker_process,
)

DAY = timedelta(days=1)
STEP_DEADLINE = timedelta(minutes=10)
TRIVIAL_REFERENCE_PER_MINUTE = 11 * 60
"""ARCHITECTURE.md: ~11 trivial patient-years a second on its 2-core reference machine."""
TREATMENT = (Phase.intake, Phase.intensive, Phase.step_down)


async def simulate(
    env: WorkflowEnvironment, patients: int, workdir: Path, workers: int = 1
) -> dict[str, Any]:
    """The cohort, with `worker.py` in processes of its own (as in production), so the
    simulated case managers' work is not done under a worker's interpreter lock. A Python
    worker uses one core at most; `workers` processes on one task queue share the work, as
    a clinic scales its workers."""
    from cli.enrolment import start_journey
    from clinical.assessment import Enrolment
    from simulation.clinic import SIMULATION_KEYS_FILE, enrolment_data

    programs = program_dir(workdir / "programs")
    settings = dataclasses.replace(load_settings(), programs_dir=programs, task_queue=TASK_QUEUE)
    address = env.client.service_client.config.target_host
    variables = simulation_worker(
        worker_env(
            address, workdir, programs, TASK_QUEUE, CAREPATH_KEYS_FILE=str(SIMULATION_KEYS_FILE)
        )
    )
    server = child_named("temporal-test-server", address.rsplit(":", 1)[-1])
    async with contextlib.AsyncExitStack() as stack:
        pids = [
            (await stack.enter_async_context(worker_process(env.client, variables, number=i))).pid
            for i in range(1, workers + 1)
        ]
        stack.enter_context(env.auto_time_skipping_disabled())
        cpu_before = cpu_by_process(pids, [server])
        watch = Stopwatch()
        protocol = ProgramCatalog(programs).load(DEFAULT_PROGRAM.stem)
        board = ClinicBoard(variables["CAREPATH_DATABASE_URL"])
        run = await run_clinic(
            [env],
            lambda enrolment, client: start_journey(client, settings, enrolment),
            [
                Arrival(
                    0, Enrolment.model_validate(enrolment_data()), CaseManager(steady_attendance)
                )
                for _ in range(patients)
            ],
            board,
            protocol.step_down.criteria.min_intensive_weeks,
        )
        handles = [p.handle for p in run.cohort.values()]
        # Ended in the store; each journey's run completes in the task that wrote it.
        outcomes: list[JourneyOutcome] = await bounded([h.result for h in handles])
        seconds = watch.seconds()
        cpu_after = cpu_by_process(pids, [server])
        board.close()
        trouble = await troubles(env, handles)
    return {
        "patients": patients,
        "workers": workers,
        "seconds": seconds,
        "steps": run.steps,
        "virtual_days": run.virtual_days,
        "outcomes": dict(Counter(o.outcome.value for o in outcomes)),
        "reports": sum(p.manager.marked for p in run.cohort.values()),
        "sheets": sum(p.manager.sheets for p in run.cohort.values()),
        "troubles": trouble,
        "cpu_seconds": {k: cpu_after[k] - cpu_before[k] for k in cpu_before},
    }


async def trivial_years(env: WorkflowEnvironment, patients: int, workdir: Path) -> dict[str, Any]:
    """The reference beside the cohort: as many trivial patient-years (twelve monthly timers,
    an activity after each: `bench.bare.TrivialYear`) on a time-skipping server of their own,
    with the bare worker (configured as CarePath's), the clock stepped a month at a time.
    Its throughput tells how fast this machine is against the architecture's reference
    figure, and CarePath's CPU per patient-year over it what a real one costs."""
    from bench.bare import TrivialYear
    from simulation.clinic import SIMULATION_KEYS_FILE

    address = env.client.service_client.config.target_host
    programs = program_dir(workdir / "programs")
    # The environment's client seals payloads with the simulations' keys: so must the worker.
    variables = simulation_worker(
        worker_env(
            address, workdir, programs, TASK_QUEUE, CAREPATH_KEYS_FILE=str(SIMULATION_KEYS_FILE)
        )
    )
    server = child_named("temporal-test-server", address.rsplit(":", 1)[-1])
    async with worker_process(env.client, variables, bare=True) as worker:
        with env.auto_time_skipping_disabled():
            cpu_before = cpu_by_process([worker.pid], [server])
            watch = Stopwatch()
            handles = await bounded(
                [
                    functools.partial(
                        env.client.start_workflow,
                        TrivialYear.run,
                        12,
                        id=f"trivial-{i}",
                        task_queue=TASK_QUEUE,
                    )
                    for i in range(patients)
                ]
            )
            for _ in range(12):
                await advance(env, 30 * DAY)
            months = await bounded([h.result for h in handles])
            seconds = watch.seconds()
            cpu_after = cpu_by_process([worker.pid], [server])
    assert months == [12] * patients
    return {
        "patients": patients,
        "seconds": seconds,
        "patient_years_per_minute": patients / (seconds / 60),
        "cpu_seconds": {k: cpu_after[k] - cpu_before[k] for k in cpu_before},
    }


TROUBLE = (
    "workflow_task_timed_out",
    "workflow_task_failed",
    "activity_task_timed_out",
    "activity_task_failed",
)


async def troubles(
    env: WorkflowEnvironment, handles: list[WorkflowHandle[Any, Any]]
) -> dict[str, int]:
    """Timeouts and failures anywhere in the cohort's histories (runs and children): a
    clock stepped past work in flight would show here."""
    from bench.patient_year import children_of
    from simulation.clinic import journey_histories

    found: Counter[str] = Counter()
    for handle in handles:
        runs = await journey_histories(env.client, handle)
        for history in [*runs, *await children_of(env.client, runs)]:
            found.update(_trouble(e) for e in history.events if kind(e) in TROUBLE)
    return dict(found)


def _trouble(event: Any) -> str:
    """The kind, with why where the history says: a failed workflow task's cause (a
    non-determinism error is a bug; an unhandled command is the server's routine) and the
    first words of its message, a timeout's type."""
    attributes = getattr(event, f"{kind(event)}_event_attributes")
    if kind(event) == "workflow_task_failed":
        cause = WorkflowTaskFailedCause.Name(attributes.cause).removeprefix(
            "WORKFLOW_TASK_FAILED_CAUSE_"
        )
        message = attributes.failure.message[:60]
        return f"workflow_task_failed: {cause}" + (f" ({message})" if message else "")
    if kind(event) == "workflow_task_timed_out":
        return f"workflow_task_timed_out: {TimeoutType.Name(attributes.timeout_type)}"
    return kind(event)


async def sharded(
    n: int, shards: int, workers: int, workdir: Path, at_once: int | None = None
) -> dict[str, Any]:
    """N patients split over `shards` cohorts, each on its own time-skipping server with its
    own workers, at most `at_once` at a time (default: one a core): the Java test server
    works under one lock and its cost per patient-year grows with the workflows it holds,
    so a big cohort simulates faster as several small ones; but a shard's server and worker
    keep about 1.3 cores busy, and more shards at once than cores only make them contend
    (BENCHMARKS.md: four at once on two cores cost about 40% more CPU a patient-year than
    two at a time). Wall-clock time is the whole run's, from the first server's start to the
    last shard's end (a lone shard: its own run, as before shards)."""
    lanes = asyncio.Semaphore(lanes_for(shards, at_once))

    async def one(i: int, size: int) -> dict[str, Any]:
        part = workdir / f"shard-{i}"
        part.mkdir(parents=True)
        async with lanes, time_skipping() as env:
            return await simulate(env, size, part, workers)

    sizes = [n // shards + (1 if i < n % shards else 0) for i in range(shards)]
    watch = Stopwatch()
    driver = time.process_time()  # as cpu_by_process reads this process
    parts = await asyncio.gather(*(one(i, size) for i, size in enumerate(sizes)))
    elapsed = watch.seconds()
    driver = time.process_time() - driver
    total: Counter[str] = Counter()
    troubles: Counter[str] = Counter()
    for part in parts:
        total.update(part["outcomes"])
        troubles.update(part["troubles"])
    return {
        "patients": n,
        "workers": workers,
        "shards": shards,
        "at_once": lanes_for(shards, at_once),
        "seconds": elapsed if len(parts) > 1 else parts[0]["seconds"],
        "steps": max(p["steps"] for p in parts),
        "virtual_days": max(p["virtual_days"] for p in parts),
        "outcomes": dict(total),
        "reports": sum(p["reports"] for p in parts),
        "sheets": sum(p["sheets"] for p in parts),
        "troubles": dict(troubles),
        "cpu_seconds": {
            "worker": sum(p["cpu_seconds"]["worker"] for p in parts),
            "server": sum(p["cpu_seconds"]["server"] for p in parts),
            # One driver process runs every shard: read over the whole run (a shard's own
            # reading spans whatever else ran beside it, and misses the rest).
            "driver": driver if len(parts) > 1 else parts[0]["cpu_seconds"]["driver"],
        },
    }


def lanes_for(shards: int, at_once: int | None) -> int:
    """How many of `shards` run at a time: `at_once`, or one a core."""
    return min(shards, at_once or os.cpu_count() or 1)


def plans(sizes: list[int], shard_size: int | None, one_server: bool) -> list[tuple[int, int]]:
    """(patients, servers) for each cohort to run."""
    runs = [(n, 1 if shard_size is None or n <= shard_size else -(-n // shard_size)) for n in sizes]
    if one_server and shard_size is not None:
        runs += [(n, 1) for n in sizes if n > shard_size]
    return runs


async def run(
    sizes: list[int],
    repeat: int,
    scratch: Path,
    workers: list[int] | None = None,
    shard_size: int | None = None,
    reference: bool = True,
    one_server: bool = False,
    at_once: int | None = None,
) -> dict[str, Any]:
    """Each size with each number of worker processes, `repeat` times (sizes above 100 once:
    they take minutes), each on a fresh time-skipping server; with `shard_size`, sizes above
    it run as shards of at most that many instead, `at_once` at a time (see `sharded`), and
    with `one_server` on one server as well. A patient's whole protocol (about 474 program
    days from intake to the end of aftercare) counts as one patient-year, as in the
    architecture's target."""
    figures: dict[str, Any] = {"sizes": {}, "target": "1,000 patient-years in 5 minutes"}
    for n, shards in plans(sizes, shard_size, one_server):
        for w in workers or [1]:
            key = f"{n}" + (f"/{w}w" if w > 1 else "") + (f"/{shards}s" if shards > 1 else "")
            shape = {
                "patients": n,
                "workers": w,
                "shards": shards,
                "at_once": lanes_for(shards, at_once),
            }
            runs = []
            try:
                for r in range(repeat if n <= 100 else 1):
                    workdir = scratch / f"cohort-{n}-w{w}-s{shards}-{r}"
                    workdir.mkdir(parents=True)
                    result = await sharded(n, shards, w, workdir, at_once)
                    result["patient_years_per_minute"] = n / (result["seconds"] / 60)
                    runs.append(result)
            except Exception as exc:  # a cohort the server cannot carry: say so, go on
                figures["sizes"][key] = shape | {"failed": f"{type(exc).__name__}: {exc}"}
                continue
            figures["sizes"][key] = shape | {
                "patient_years_per_minute": spread([r["patient_years_per_minute"] for r in runs]),
                "cpu_per_patient_year": spread([cpu_per_year(r) for r in runs]),
                "seconds": spread([r["seconds"] for r in runs]),
                "runs": runs,
            }
    if reference:
        try:
            figures["trivial"] = await _trivial_reference(min(sizes), scratch)
        except Exception as exc:  # the cohorts' figures stand without it
            figures["trivial"] = {
                "patients": min(sizes),
                "failed": f"{type(exc).__name__}: {exc}",
            }
    return figures


CPU_TARGET = 0.60
"""CPU-seconds a patient-year for 1,000 in five minutes on two fully used cores."""


def cpu_per_year(result: dict[str, Any]) -> float:
    """Worker, server and simulated clinic together, a patient-year."""
    return float(sum(result["cpu_seconds"].values())) / float(result["patients"])


async def _trivial_reference(n: int, scratch: Path) -> dict[str, Any]:
    """The trivial patient-year at the smallest size (the architecture's reference figure is
    for a handful of workflows, where the server's cost per workflow is lowest)."""
    workdir = scratch / f"trivial-{n}"
    workdir.mkdir(parents=True)
    async with time_skipping() as env:
        result = await trivial_years(env, n, workdir)
    result["reference_per_minute"] = TRIVIAL_REFERENCE_PER_MINUTE
    result["cpu_per_patient_year"] = cpu_per_year(result)
    return result
