"""2. Case-manager latency under load: the round trip of `record_attendance` (a case
manager correcting a session's attendance) sent one at a time, while `active` journeys are
in the intensive phase on the dev server, against the same update on as many bare workflows.

Most journeys are on the default protocol's real clock (in the intensive phase, blocked on
the timer to their first Monday, like a clinic's caseload); `measured` of them are on a
compressed clock (a program day in `seconds_per_day` s) so that their first sessions have
happened and can be reported, while their next weekly wake is minutes away. Bare workflows
wait on a timer likewise; the bare update does nothing but count."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from bench.bare import BareJourney, BareScript, BareStep
from bench.common import dev_server, latency_summary, program_dir, spread
from bench.overhead import PROGRAM, TASK_QUEUE, first_run_ends, sleep_until, week_one
from clinical.assessment import Enrolment
from clinical.requests import AttendanceReport
from clinical.status import JourneyStatus
from infra.settings import load_settings
from simulation.cohort import bounded
from simulation.workers import quiet, worker_env, worker_process
from workflows.patient_journey import PatientJourneyWorkflow

Send = Callable[[], Awaitable[Any]]


async def _rounds(sends: list[Send], rounds: int, per_round: int) -> list[dict[str, Any]]:
    """Rounds of `per_round` updates, one at a time, round-robin over the workflows."""
    results = []
    for _ in range(rounds):
        seconds = []
        for i in range(per_round):
            started = time.perf_counter()
            await sends[i % len(sends)]()
            seconds.append(time.perf_counter() - started)
        results.append(latency_summary(seconds))
    return results


async def carepath_side(
    active: int, measured: int, rounds: int, per_round: int, seconds_per_day: float, workdir: Path
) -> list[dict[str, Any]]:
    from cli.enrolment import start_journey
    from simulation.clinic import enrolment_data

    programs = program_dir(workdir / "programs", seconds_per_day, group_tracks=False)
    settings = dataclasses.replace(load_settings(), programs_dir=programs, task_queue=TASK_QUEUE)

    def enrolment(program: str) -> Enrolment:
        return Enrolment.model_validate(enrolment_data() | {"program_id": program})

    async with dev_server(workdir) as (server, client):
        env = worker_env(server, workdir, programs, TASK_QUEUE)
        async with worker_process(client, env) as worker:
            caseload = [enrolment("default-iop") for _ in range(active - measured)]
            await bounded([functools.partial(start_journey, client, settings, e) for e in caseload])
            await quiet(worker.pid)
            started = await bounded(
                [lambda: start_journey(client, settings, enrolment(PROGRAM))] * measured
            )
            await asyncio.gather(*(first_run_ends(h) for h in started))
            sends = await asyncio.gather(*(_ready_to_report(client, h) for h in started))
            await quiet(worker.pid)
            return await _rounds(list(sends), rounds, per_round)


async def _ready_to_report(client: Client, started: WorkflowHandle[Any, Any]) -> Send:
    """Once the first session has happened: a send of its attendance (a correction each
    time after the first)."""
    handle = client.get_workflow_handle(started.id)
    status: JourneyStatus = await handle.query(PatientJourneyWorkflow.status)
    first = week_one(status)[0]
    await sleep_until(status.clock.instant(first.day))
    report = AttendanceReport(
        case_manager_id=status.case_manager_id, session_id=first.session_id, status="attended"
    )
    return lambda: handle.execute_update(PatientJourneyWorkflow.record_attendance, report)


async def bare_side(
    active: int, measured: int, rounds: int, per_round: int, workdir: Path
) -> list[dict[str, Any]]:
    programs = program_dir(workdir / "programs")
    # A week's wait, like the caseload's wait for its first Monday.
    script = BareScript(runs=[[BareStep(timer_seconds=timedelta(days=7).total_seconds())]])
    async with dev_server(workdir) as (server, client):
        env = worker_env(server, workdir, programs, TASK_QUEUE)
        async with worker_process(client, env, bare=True) as worker:

            def start(n: int) -> Send:
                return lambda: client.start_workflow(
                    BareJourney.run, script, id=f"bare-{n:05d}", task_queue=TASK_QUEUE
                )

            await bounded([start(n) for n in range(active - measured)])
            await quiet(worker.pid)
            started = await bounded([start(n) for n in range(active - measured, active)])
            await quiet(worker.pid)
            sends: list[Send] = [_count_on(client.get_workflow_handle(h.id)) for h in started]
            return await _rounds(sends, rounds, per_round)


def _count_on(handle: WorkflowHandle[Any, Any]) -> Send:
    return lambda: handle.execute_update(BareJourney.record, 1)


async def run(
    active: int,
    measured: int,
    rounds: int,
    per_round: int,
    seconds_per_day: float,
    scratch: Path,
) -> dict[str, Any]:
    carepath = await carepath_side(
        active, measured, rounds, per_round, seconds_per_day, scratch / "carepath"
    )
    bare = await bare_side(active, measured, rounds, per_round, scratch / "bare")
    figures: dict[str, Any] = {
        "active": active,
        "measured_workflows": measured,
        "rounds": rounds,
        "updates_per_round": per_round,
        "carepath_rounds": carepath,
        "bare_rounds": bare,
        "target_p99_ratio": 1.3,
    }
    for side, per_round_figures in (("carepath", carepath), ("bare", bare)):
        for p in ("p50_ms", "p95_ms", "p99_ms"):
            figures[f"{side}_{p}"] = spread([r[p] for r in per_round_figures])
    figures["p99_ratio"] = spread(
        [c["p99_ms"] / b["p99_ms"] for c, b in zip(carepath, bare, strict=True)]
    )
    figures["p50_ratio"] = spread(
        [c["p50_ms"] / b["p50_ms"] for c, b in zip(carepath, bare, strict=True)]
    )
    return figures
