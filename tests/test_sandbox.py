"""The worker's sandbox runner: the SDK's sandbox with its code strings compiled once.
It must still be the sandbox (a workflow calling the wall clock fails), the cache must
actually be used (an SDK that stops calling `_run_code` makes the override dead weight),
and with CAREPATH_SDK_TUNING off the worker runs the SDK as shipped, journeys included."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowFailureError, WorkflowHistory
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import (
    DataConverter,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
)
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox._runner import _Instance

from clinical.assessment import Enrolment
from clinical.phases import Phase
from infra.sandbox import (
    CompiledSandboxRunner,
    cache_workflow_bytecode,
    compiled,
    takes_no_context,
    workflow_runner,
)
from infra.temporal import data_converter
from tests.support import (
    TEST_KEYS,
    attend_every_session,
    clinic,
    enrolment_data,
    journey_histories,
    make_enrolment,
)
from tests.wall_clock_workflow import ReadsTheWallClock
from workflows import patient_journey
from workflows.registry import WORKFLOWS

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
        workflows=WORKFLOWS,
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


def test_a_worker_writes_the_workflow_bytecode_under_its_cache_not_the_source_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "pycache_prefix", None)  # restored after the test
    source = Path(patient_journey.__file__)
    beside_source = Path(importlib.util.cache_from_source(str(source)))
    before = beside_source.stat().st_mtime_ns if beside_source.exists() else None
    cache_workflow_bytecode(tmp_path / "cache")
    bytecode = Path(importlib.util.cache_from_source(str(source)))
    assert bytecode.is_relative_to(tmp_path / "cache")
    assert bytecode.exists() and bytecode.stat().st_mtime >= source.stat().st_mtime
    after = beside_source.stat().st_mtime_ns if beside_source.exists() else None
    assert after == before  # the source tree untouched


@pytest.mark.slow
async def test_with_the_tuning_off_a_worker_runs_a_whole_journey_in_the_sdks_sandbox(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    compiled.cache_clear()
    async with clinic(env.client, tmp_path, sdk_tuning=False) as c:
        assert type(c.worker.config()["workflow_runner"]) is SandboxedWorkflowRunner
        with env.auto_time_skipping_disabled():
            handle = await c.enrol(make_enrolment())
            status, _ = await attend_every_session(env, handle, until=None)
            runs = await journey_histories(c.client, handle)
    assert status.phase == Phase.completed
    assert compiled.cache_info().misses == 0  # nothing went through the override
    # What it recorded replays with the tuning on: the switch changes no history.
    replayer = Replayer(
        workflows=WORKFLOWS,
        data_converter=c.client.data_converter,
        workflow_runner=workflow_runner(True, c.client.data_converter),
    )
    for run in runs:
        assert (await replayer.replay_workflow(run)).replay_failure is None


def test_our_converters_take_no_serialization_context() -> None:
    # The worker skips the sandbox's context lookups only for such a converter.
    assert takes_no_context(data_converter(TEST_KEYS))
    assert takes_no_context(data_converter())
    tuned = workflow_runner(True, data_converter(TEST_KEYS))
    assert isinstance(tuned, CompiledSandboxRunner) and tuned.context_free


class _ContextAwareCodec(PayloadCodec, WithSerializationContext):
    """A codec that keys its work by the workflow it serves (as a per-tenant codec would)."""

    def __init__(self, workflow_id: str | None = None) -> None:
        self.workflow_id = workflow_id

    def with_context(self, context: SerializationContext) -> _ContextAwareCodec:
        return _ContextAwareCodec(getattr(context, "workflow_id", None))

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)


def test_a_converter_that_reads_contexts_keeps_the_lookups() -> None:
    aware = dataclasses.replace(data_converter(), payload_codec=_ContextAwareCodec())
    assert not takes_no_context(aware)
    tuned = workflow_runner(True, aware)
    assert isinstance(tuned, CompiledSandboxRunner) and not tuned.context_free


async def test_a_context_free_worker_runs_and_replays_a_journey_history() -> None:
    # The same recorded year replayed with and without the lookups: both succeed, and the
    # skipping runner never enters the sandbox for a context.
    history = WorkflowHistory.from_json(FULL_YEAR.stem.rsplit("--", 1)[-1], FULL_YEAR.read_text())
    converter = data_converter(TEST_KEYS)
    asked: list[str] = []
    original = _Instance.get_serialization_context

    def counting(self: _Instance, command_info: Any) -> Any:
        asked.append("context")
        return original(self, command_info)

    for runner in (CompiledSandboxRunner(), CompiledSandboxRunner(context_free=True)):
        asked.clear()
        with patch.object(_Instance, "get_serialization_context", counting):
            replayer = Replayer(
                workflows=WORKFLOWS, data_converter=converter, workflow_runner=runner
            )
            result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
        assert result.replay_failure is None
        assert bool(asked) != runner.context_free


def test_every_payload_converter_shares_one_set_of_parts_and_converts_as_the_sdks() -> None:
    # Built once per process (the SDK builds a converter per activation); converting
    # must be exactly what the SDK's pydantic converter does.
    ours = [data_converter(TEST_KEYS).payload_converter for _ in range(2)]
    parts = [list(c._inner_payload_converter.converters.values()) for c in ours]  # type: ignore[attr-defined]
    assert all(a is b for a, b in zip(*parts, strict=True))
    sdk = DataConverter(payload_converter_class=PydanticPayloadConverter).payload_converter
    enrolment = Enrolment.model_validate(enrolment_data())
    values: list[Any] = [enrolment, {"week": 3}, b"\x00raw", None, timedelta(days=2)]
    hints: list[Any] = [Enrolment, dict, bytes, type(None), timedelta]
    for payload, theirs in zip(ours[0].to_payloads(values), sdk.to_payloads(values), strict=True):
        assert payload == theirs
    assert ours[1].from_payloads(sdk.to_payloads(values), hints) == values
