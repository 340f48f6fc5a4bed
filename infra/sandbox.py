"""The workflow sandbox, with the SDK's own code strings compiled once.

temporalio 1.35's sandbox runs each of its calls into a workflow instance (activate, and
the serialization context it asks for every payload-bearing command) as `exec` of a short
source string, so Python compiles the same few strings again on every call: a quarter of
the worker's CPU in a cohort (BENCHMARKS.md). `exec` of a compiled code object does exactly
what `exec` of its source does; only the compiling is cached. The sandbox's restrictions,
its per-instance module isolation and everything else are the SDK's, untouched.

This leans on a private method (`_Instance._run_code`); `tests/test_sandbox.py` fails if an
SDK upgrade stops routing the sandbox's calls through it, so the override goes when it no
longer pays."""

from __future__ import annotations

import compileall
import functools
from dataclasses import dataclass
from types import CodeType
from typing import Any

from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox._runner import _Instance

from infra.settings import PROJECT_ROOT


@functools.lru_cache(maxsize=64)
def compiled(source: str) -> CodeType:
    """The sandbox's code strings are a handful of constants: 64 is room to spare."""
    return compile(source, "<workflow sandbox>", "exec")


class _CompiledOnceInstance(_Instance):
    def _run_code(self, code: str, **extra_globals: Any) -> None:
        super()._run_code(compiled(code), **extra_globals)  # type: ignore[arg-type]


@dataclass(frozen=True)
class CompiledSandboxRunner(SandboxedWorkflowRunner):
    """The SDK's sandboxed runner (same restrictions, same isolation), compiling its code
    strings once per process instead of once per call."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _CompiledOnceInstance(det, self.runner_class, self.restrictions)


@functools.cache
def compile_workflow_modules() -> None:
    """Bytecode for the modules the sandbox re-imports for every new run and child (the
    workflow modules; what they import is passed through). With PYTHONDONTWRITEBYTECODE set,
    as on these machines, no bytecode is ever cached and each of those imports compiled the
    source again (~10 ms for the journey's). Once per worker process, where the directory is
    writable; the image compiles at build."""
    compileall.compile_dir(PROJECT_ROOT / "workflows", quiet=2)
