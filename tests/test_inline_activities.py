"""A simulation worker's synchronous activities on its event loop (CAREPATH_ACTIVITY_THREADS
off, infra/inline_activities.py), a clinic's on its activity threads: the same results,
heartbeats and failures either way."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner

from infra.settings import Settings, load_settings
from infra.temporal import build_worker
from simulation.workers import simulation_worker, worker_env

_ran_on: list[str] = []
ONCE = RetryPolicy(maximum_attempts=1)


@activity.defn
def noted(label: str) -> str:
    if not activity.info().is_local:  # (a local activity has no heartbeat)
        # On the loop, the threads' heartbeat would wait (10 s, then fail) on the loop it holds.
        activity.heartbeat(label)
    _ran_on.append(threading.current_thread().name)
    return f"{label}: {'cancelled' if activity.is_cancelled() else 'ran'}"


@activity.defn
def refused() -> None:
    raise ApplicationError("the store refused the write", non_retryable=True)


@workflow.defn(name="NotesThrice", sandboxed=False)
class NotesThrice:
    @workflow.run
    async def run(self) -> list[str]:
        timeout = timedelta(seconds=30)
        regular = await workflow.execute_activity(
            noted, "activity", start_to_close_timeout=timeout, retry_policy=ONCE
        )
        local = await workflow.execute_local_activity(
            noted, "local", start_to_close_timeout=timeout, retry_policy=ONCE
        )
        try:
            await workflow.execute_activity(
                refused, start_to_close_timeout=timeout, retry_policy=ONCE
            )
        except ActivityError as exc:
            return [regular, local, str(exc.cause)]
        return [regular, local, "not refused"]


def _settings(tmp_path: Path, simulation: bool) -> Settings:
    variables = worker_env("localhost:7233", tmp_path, tmp_path, "inline")
    return load_settings(simulation_worker(variables) if simulation else variables)


def test_only_a_simulation_worker_runs_its_activities_inline(tmp_path: Path) -> None:
    assert not _settings(tmp_path, simulation=True).activity_threads
    assert _settings(tmp_path, simulation=False).activity_threads
    assert load_settings({}).activity_threads


@pytest.mark.parametrize("simulation", [True, False], ids=["simulation", "clinic"])
async def test_activities_run_alike_on_the_event_loop_and_on_threads(
    env: WorkflowEnvironment, tmp_path: Path, simulation: bool
) -> None:
    _ran_on.clear()
    settings = dataclasses.replace(_settings(tmp_path, simulation), task_queue="inline")
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="activity") as executor:
        worker = build_worker(
            env.client,
            settings,
            [NotesThrice],
            [noted, refused],
            executor,
            workflow_runner=UnsandboxedWorkflowRunner(),
        )
        async with worker:
            result = await env.client.execute_workflow(
                NotesThrice.run, id=f"notes-{uuid.uuid4()}", task_queue="inline"
            )
    assert result == ["activity: ran", "local: ran", "the store refused the write"]
    loop_thread = threading.current_thread().name  # the test's event loop runs here
    if simulation:
        assert _ran_on == [loop_thread, loop_thread]
    else:
        assert len(_ran_on) == 2 and all(n.startswith("activity") for n in _ran_on)
