"""5. Worker memory: the resident memory (VmRSS, and the peak VmHWM) of `worker.py` in its
own process with 1,000 and 5,000 journeys in the intensive phase, blocked on the timer to
their first Monday (the default protocol's real clock), with the default workflow cache and
a small one (CAREPATH_MAX_CACHED_WORKFLOWS).

The caseload is enrolled once; then, for each cache size, a fresh worker comes up and a
case manager opens each patient's status in turn (a query: a journey not in the cache is
replayed into it, evicting another when the cache is full). Memory is read after the first
`counts[0]` journeys and after all of them: bounded by the cache, it stops growing once the
cache is full."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from pathlib import Path
from typing import Any

from temporalio.client import Client

from bench.common import dev_server, program_dir
from bench.overhead import TASK_QUEUE
from clinical.assessment import Enrolment
from infra.settings import load_settings
from simulation.cohort import bounded
from simulation.workers import quiet, worker_env, worker_process
from workflows.patient_journey import PatientJourneyWorkflow


async def _open_each(client: Client, workflow_ids: list[str]) -> None:
    async def look(workflow_id: str) -> None:
        await client.get_workflow_handle(workflow_id).query(PatientJourneyWorkflow.status)

    await bounded([functools.partial(look, w) for w in workflow_ids], at_once=8)


def _mib(kib: dict[str, int]) -> dict[str, float]:
    return {"rss_mib": kib["VmRSS"] / 1024, "peak_mib": kib["VmHWM"] / 1024}


async def run(counts: list[int], caches: list[int], scratch: Path) -> dict[str, Any]:
    from cli.enrolment import start_journey
    from simulation.clinic import enrolment_data

    workdir = scratch / "memory"
    programs = program_dir(workdir / "programs")
    settings = dataclasses.replace(load_settings(), programs_dir=programs, task_queue=TASK_QUEUE)
    default_cache = settings.max_cached_workflows
    readings: list[dict[str, Any]] = []
    async with dev_server(workdir) as (server, client):
        env = worker_env(
            server,
            workdir,
            programs,
            TASK_QUEUE,
            CAREPATH_MAX_CACHED_WORKFLOWS=str(default_cache),
        )
        ids: list[str] = []
        async with worker_process(client, env) as worker:
            for count in counts:
                caseload = [
                    Enrolment.model_validate(enrolment_data()) for _ in range(count - len(ids))
                ]
                started = await bounded(
                    [functools.partial(start_journey, client, settings, e) for e in caseload]
                )
                ids += [h.id for h in started]
                await quiet(worker.pid)
                readings.append(
                    {"cache": default_cache, "journeys": count, "how": "enrolled"}
                    | _mib(worker.memory_kib())
                )
        for cache in caches:
            cache_env = env | {"CAREPATH_MAX_CACHED_WORKFLOWS": str(cache)}
            async with worker_process(client, cache_env) as worker:
                readings.append(
                    {"cache": cache, "journeys": 0, "how": "idle worker"}
                    | _mib(worker.memory_kib())
                )
                seen = 0
                for count in counts:
                    await _open_each(client, ids[seen:count])
                    seen = count
                    await quiet(worker.pid)
                    readings.append(
                        {"cache": cache, "journeys": count, "how": "each opened"}
                        | _mib(worker.memory_kib())
                    )
    return {
        "counts": counts,
        "caches": caches,
        "default_cache": default_cache,
        "readings": readings,
    }


if __name__ == "__main__":  # pragma: no cover - a quick look by hand
    from bench.common import scratch_dir

    async def _main() -> None:
        with scratch_dir("memory") as scratch:
            print(await run([50, 100], [1000, 10], scratch))

    asyncio.run(_main())
