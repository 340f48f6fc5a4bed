"""Synchronous activities run on the worker's event loop, not on its activity threads: for
the simulations' own workers only (`CAREPATH_ACTIVITY_THREADS=off`), whose workflow tasks
already run on the loop. temporalio 1.35 runs a synchronous activity with
`loop.run_in_executor`, and every activity and local activity's result then crosses back to
the loop (`call_soon_threadsafe`, the self-pipe, the interpreter lock passed to and fro):
8-10% of a simulation worker (BENCHMARKS.md). A clinic's worker keeps its threads: an
activity that blocks (a slow database, the telephony provider's HTTP API) must not hold
up every workflow task and poll of the worker.

The interceptor is the innermost of the worker's (`build_worker` puts it last), so it
replaces only the SDK's own hand-off: the activity runs in the task the SDK made for it,
whose activity context the SDK has set, with the SDK's heartbeat (called on the loop, as it
must be: the threads' version would wait on the loop it blocks) and cancellation event
(`activity.is_cancelled()`). What it cannot do is interrupt the function: a cancellation
that arrives while it runs is seen once it returns, as on a thread whose activity shields
itself; CarePath's activities are short writes that heartbeat not at all."""

from __future__ import annotations

from typing import Any

from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)


class InlineActivities(Interceptor):
    """Every synchronous activity (one the SDK would hand to its executor) called inline."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inline(next)


class _Inline(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        if input.executor is None:  # an async activity: the SDK runs it on the loop anyway
            return await self.next.execute_activity(input)
        return input.fn(*input.args)
