"""The bare reference: a Temporal workflow with no CarePath logic that performs exactly the
activities, timers, updates and continue-as-new that one CarePath journey performed, as read
from that journey's own histories. Same server flags, same worker settings, same converter;
only CarePath is missing (its state, rules, store writes, search attributes, payloads)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, cast

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import WorkflowHistory

with workflow.unsafe.imports_passed_through():
    from bench.common import kind, local_activity_type
    from workflows.policies import STORE_RETRY, STORE_TIMEOUT


class BareStep(BaseModel):
    """One thing a run waits for: `activities` run together (the journey gathers its
    writes), a local activity (a write inside the workflow task), or a timer of
    `timer_seconds`."""

    activities: int = 0
    local: bool = False
    timer_seconds: float = 0.0


class BareScript(BaseModel):
    runs: list[list[BareStep]]
    run: int = 0
    updates: int = 0
    """How many updates the journey accepted (the driver sends as many)."""
    first_timer_due_at: datetime | None = None
    """When the first timer fires (the journey's first Monday): carried across runs."""


class BareProgress(BaseModel):
    run: int
    steps_done: int
    first_timer_due_at: datetime | None
    timers_fired: int
    updates: int


@activity.defn(name="bare_work")
def bare_work(n: int) -> int:
    return n


@workflow.defn(name="BareJourney")
class BareJourney:
    @workflow.init
    def __init__(self, script: BareScript) -> None:
        self._script = script
        self._steps_done = 0
        self._timers_fired = 0
        self._updates = 0

    @workflow.run
    async def run(self, script: BareScript) -> None:
        for step in script.runs[script.run]:
            if step.local:
                await workflow.execute_local_activity(
                    bare_work, 1, start_to_close_timeout=STORE_TIMEOUT, retry_policy=STORE_RETRY
                )
            elif step.activities:
                await asyncio.gather(
                    *(
                        workflow.execute_activity(
                            bare_work,
                            i,
                            start_to_close_timeout=STORE_TIMEOUT,
                            retry_policy=STORE_RETRY,
                        )
                        for i in range(step.activities)
                    )
                )
            else:
                if self._script.first_timer_due_at is None:
                    due = workflow.now() + timedelta(seconds=step.timer_seconds)
                    self._script = self._script.model_copy(update={"first_timer_due_at": due})
                await workflow.sleep(step.timer_seconds)
                self._timers_fired += 1
            self._steps_done += 1
        if script.run + 1 < len(script.runs):
            await workflow.wait_condition(workflow.all_handlers_finished)
            workflow.continue_as_new(self._script.model_copy(update={"run": script.run + 1}))
        # Where the journey waits on a timer that the segment never reaches.
        await workflow.wait_condition(lambda: False)

    @workflow.update
    def record(self, n: int) -> int:
        self._updates += 1
        return self._updates

    @workflow.signal
    def note(self, n: int) -> None:
        """A fact sent and forgotten: what a webhook's event is measured against."""
        self._updates += 1

    @workflow.query
    def progress(self) -> BareProgress:
        return BareProgress(
            run=self._script.run,
            steps_done=self._steps_done,
            first_timer_due_at=self._script.first_timer_due_at,
            timers_fired=self._timers_fired,
            updates=self._updates,
        )


@workflow.defn(name="TrivialYear")
class TrivialYear:
    """The architecture's reference patient-year: twelve monthly timers, an activity after
    each, nothing else (~11 a second on its reference machine)."""

    @workflow.run
    async def run(self, months: int) -> int:
        for month in range(months):
            await workflow.sleep(timedelta(days=30))
            await workflow.execute_activity(
                bare_work, month, start_to_close_timeout=STORE_TIMEOUT, retry_policy=STORE_RETRY
            )
        return months


def script_of(runs: list[WorkflowHistory]) -> BareScript:
    """A journey's runs as a bare script: per run, its activities (those scheduled by the
    same workflow task together) and timers in order, and the updates it accepted.
    A continue-as-new ends each run but the last."""
    script_runs: list[list[BareStep]] = []
    updates = 0
    for history in runs:
        steps: list[BareStep] = []
        batch_of: int | None = None
        for event in history.events:
            name = kind(event)
            if name == "activity_task_scheduled":
                task = (
                    event.activity_task_scheduled_event_attributes.workflow_task_completed_event_id
                )
                if steps and steps[-1].activities and batch_of == task:
                    steps[-1] = BareStep(activities=steps[-1].activities + 1)
                else:
                    steps.append(BareStep(activities=1))
                batch_of = task
            elif local_activity_type(event) is not None:
                steps.append(BareStep(local=True))
                batch_of = None
            elif name == "timer_started":
                timeout = event.timer_started_event_attributes.start_to_fire_timeout
                steps.append(BareStep(timer_seconds=timeout.ToTimedelta().total_seconds()))
                batch_of = None
            elif name == "workflow_execution_update_accepted":
                updates += 1
        script_runs.append(steps)
    return BareScript(runs=script_runs, updates=updates)


def counts(runs: list[WorkflowHistory]) -> dict[str, Any]:
    """What a workflow's runs cost the server: events, workflow tasks, activities, timers,
    updates, continue-as-new."""
    tally = {
        "runs": len(runs),
        "events": 0,
        "workflow_tasks": 0,
        "activities": 0,
        "local_activities": 0,
        "timers": 0,
        "timers_fired": 0,
        "updates": 0,
        "continued_as_new": 0,
    }
    for history in runs:
        for event in history.events:
            name = kind(event)
            tally["events"] += 1
            tally["workflow_tasks"] += name == "workflow_task_completed"
            tally["activities"] += name == "activity_task_scheduled"
            tally["local_activities"] += local_activity_type(event) is not None
            tally["timers"] += name == "timer_started"
            tally["timers_fired"] += name == "timer_fired"
            tally["continued_as_new"] += name == "workflow_execution_continued_as_new"
            tally["updates"] += name == "workflow_execution_update_accepted"
    return tally


async def serve() -> int:
    """A worker for the bare workflow, configured as `worker.py` configures CarePath's
    (same executor, concurrency, cache, converter): `python -m bench.bare`."""
    import signal

    from activities.care_operations import CareOperations
    from infra.logging import configure_logging
    from infra.settings import load_settings
    from infra.temporal import connect
    from worker import running_worker

    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    client = await connect(settings, make_keys=True)  # a worker: it may make the key file
    # running_worker only asks its operations for their activities (`all()`).
    operations = cast("CareOperations", BareOperations())
    async with running_worker(client, settings, operations, workflows=[BareJourney, TrivialYear]):
        await stop.wait()
    return 0


class BareOperations:
    """Stands where the care operations stand in `running_worker`: the bare activities."""

    def all(self) -> list[object]:
        return [bare_work]


if __name__ == "__main__":
    import sys

    # Workflow classes must come from an importable module, not __main__.
    from bench.bare import serve as serve_bare

    sys.exit(asyncio.run(serve_bare()))
