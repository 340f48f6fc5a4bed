"""The workflow sandbox the worker and the replay gate run: the SDK's own, or with
`CAREPATH_SDK_TUNING` on (the default) the same sandbox with its code strings compiled once.
Every override of temporalio's private code is here, behind that one switch.

temporalio 1.35's sandbox runs each of its calls into a workflow instance (activate, and
the serialization context it asks for every payload-bearing command) as `exec` of a short
source string, so Python compiles the same few strings again on every call: a quarter of
the worker's CPU in a cohort (BENCHMARKS.md). `exec` of a compiled code object does exactly
what `exec` of its source does; only the compiling is cached. The sandbox's restrictions,
its per-instance module isolation and everything else are the SDK's, untouched.

With a converter that reads no serialization context, it also answers the SDK's per-payload
context questions without entering the sandbox (see `takes_no_context`).

This leans on private methods (`_Instance._run_code`, `get_serialization_context`,
`get_external_store_context`); `tests/test_sandbox.py` fails if an SDK upgrade stops
routing the sandbox's calls through them, and runs journeys with the switch off, so the
overrides can go the day they no longer pay."""

from __future__ import annotations

import compileall
import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from types import CodeType
from typing import Any

from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    SerializationContext,
    WorkflowSerializationContext,
)
from temporalio.converter._extstore import StorageDriverStoreContext
from temporalio.worker import (
    UnsandboxedWorkflowRunner,
    WorkflowInstance,
    WorkflowInstanceDetails,
    WorkflowRunner,
)
from temporalio.worker._command_aware_visitor import CommandInfo
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox._runner import _Instance

from infra.settings import PROJECT_ROOT


@functools.lru_cache(maxsize=64)
def compiled(source: str) -> CodeType:
    """The sandbox's code strings are a handful of constants: 64 is room to spare."""
    return compile(source, "<workflow sandbox>", "exec")


def takes_no_context(converter: DataConverter) -> bool:
    """Whether every serialization context yields this same converter: no part of it reads
    a context (`with_context` hands back the converter itself) and nothing is stored
    outside the history. Ours (pydantic JSON, the encryption codec) is such a converter."""
    probes: list[SerializationContext] = [
        WorkflowSerializationContext(namespace="probe", workflow_id="probe"),
        ActivitySerializationContext(
            namespace="probe",
            activity_id="probe",
            activity_type="probe",
            activity_task_queue="probe",
            workflow_id="probe",
            workflow_type="probe",
            is_local=False,
        ),
    ]
    return converter.external_storage is None and all(
        converter.with_context(probe) is converter for probe in probes
    )


class _CompiledOnceInstance(_Instance):
    # Set per runner: the worker's converter ignores serialization contexts.
    context_free = False

    def _run_code(self, code: str, **extra_globals: Any) -> None:
        super()._run_code(compiled(code), **extra_globals)  # type: ignore[arg-type]

    # The SDK asks the sandboxed workflow for a context for every payload it encodes or
    # decodes (three passes each way, each a trip into the sandbox: 8% of a cohort
    # worker's time). With a converter that ignores contexts, every answer would pick the
    # same converter, so the trip is skipped; the answers below are the SDK's own for "no
    # context" and "no store target".
    def get_serialization_context(
        self, command_info: CommandInfo | None
    ) -> SerializationContext | None:
        if self.context_free:
            return None
        return super().get_serialization_context(command_info)

    def get_external_store_context(
        self, command_info: CommandInfo | None
    ) -> StorageDriverStoreContext:
        if self.context_free:
            return StorageDriverStoreContext(target=None)
        return super().get_external_store_context(command_info)


@dataclass(frozen=True)
class CompiledSandboxRunner(SandboxedWorkflowRunner):
    """The SDK's sandboxed runner (same restrictions, same isolation), compiling its code
    strings once per process instead of once per call; with `context_free` (see
    `takes_no_context`: say so only for such a converter) it also skips asking workflows for
    serialization contexts nothing would use."""

    context_free: bool = False

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        instance = _CompiledOnceInstance(det, self.runner_class, self.restrictions)
        instance.context_free = self.context_free
        return instance


def workflow_runner(
    tuned: bool, converter: DataConverter, sandboxed: bool = True
) -> WorkflowRunner:
    """The sandbox for workflows whose payloads pass through `converter`: the SDK's as
    shipped, or (`tuned`) compiling its code strings once and, where the converter allows,
    skipping the context lookups. Not `sandboxed`: the same workflow code run directly (a
    simulation's worker only)."""
    if not sandboxed:
        return UnsandboxedWorkflowRunner()
    if not tuned:
        return SandboxedWorkflowRunner()
    return CompiledSandboxRunner(context_free=takes_no_context(converter))


def cache_workflow_bytecode(cache_dir: Path) -> None:
    """Bytecode for the modules the sandbox re-imports for every new run and child (the
    workflow modules; what they import is passed through), written under `cache_dir` and
    read from there by this process. With PYTHONDONTWRITEBYTECODE set, as on these machines,
    no bytecode is ever cached and each of those imports compiled the source again (~10 ms
    for the journey's: 7% of a cohort worker). Once per worker process, at its start; a
    PYTHONPYCACHEPREFIX of the operator's wins."""
    if sys.pycache_prefix is None:
        sys.pycache_prefix = str(cache_dir / "bytecode")
    compileall.compile_dir(PROJECT_ROOT / "workflows", quiet=2)
