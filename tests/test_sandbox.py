"""The worker's sandbox runner: the SDK's sandbox with its code strings compiled once.
It must still be the sandbox (a workflow calling the wall clock fails), and the cache must
actually be used (an SDK that stops calling `_run_code` makes the override dead weight)."""

from __future__ import annotations

import importlib.util
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from infra.sandbox import CompiledSandboxRunner, compiled
from infra.settings import load_settings
from infra.temporal import build_worker, data_converter, workflow_classes
from tests.support import TEST_KEYS
from tests.wall_clock_workflow import ReadsTheWallClock
from workflows import patient_journey

FULL_YEAR = sorted(Path(__file__).parent.glob("histories/journey_full_year--run2--*.json"))[0]


async def test_the_sandbox_still_refuses_non_deterministic_calls(env: WorkflowEnvironment) -> None:
    queue = f"sandbox-{uuid.uuid4()}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[ReadsTheWallClock],
        workflow_runner=CompiledSandboxRunner(),
        workflow_failure_exception_types=[Exception],
    ):
        with pytest.raises(WorkflowFailureError) as failed:
            await env.client.execute_workflow(
                ReadsTheWallClock.run, id=f"sandbox-{uuid.uuid4()}", task_queue=queue
            )
    assert "restricted" in str(failed.value.cause).lower()


async def test_replaying_a_journey_compiles_the_sandbox_code_once() -> None:
    compiled.cache_clear()
    replayer = Replayer(
        workflows=workflow_classes(),
        data_converter=data_converter(TEST_KEYS),
        workflow_runner=CompiledSandboxRunner(),
    )
    history = WorkflowHistory.from_json(FULL_YEAR.stem.rsplit("--", 1)[-1], FULL_YEAR.read_text())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
    cache = compiled.cache_info()
    # A few distinct strings (create, activate, serialization contexts), run hundreds of
    # times over an intensive phase's history.
    assert 1 <= cache.misses <= 8
    assert cache.hits > 20 * cache.misses


async def test_a_worker_leaves_the_workflow_modules_compiled(env: WorkflowEnvironment) -> None:
    source = Path(patient_journey.__file__)
    with ThreadPoolExecutor(1) as executor:
        build_worker(env.client, load_settings(), [], executor)
    bytecode = Path(importlib.util.cache_from_source(str(source)))
    assert bytecode.exists() and bytecode.stat().st_mtime >= source.stat().st_mtime
