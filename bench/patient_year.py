"""4. What a patient-year costs in Temporal terms: history events and workflow tasks, by
phase and in all (every journey run, every check-in and referral child), and the largest
single run, for the default protocol on the time-skipping server with the simulated clinic
(its case manager enters a treatment week's attendance on one sheet, as the cohort's do).
These are what a Temporal Cloud bill and the history limits depend on.

Each run's phase is read from its own input (decoded through the codec); a child counts
toward the phase of the run that started it. Events are also counted by kind, so each can
be accounted for (see BENCHMARKS.md: what each event buys).

    .venv/bin/python -m bench.patient_year [--patients 5] [--json bench/results/patient_year.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHistory

from bench.common import (
    kind,
    local_activity_type,
    scratch_dir,
    spread,
    time_skipping,
    workflow_tasks,
)
from clinical.journey import JourneyInput

PHASES = ("intake", "intensive", "step_down", "aftercare")


async def children_of(client: Client, runs: list[WorkflowHistory]) -> list[WorkflowHistory]:
    ids = [
        e.child_workflow_execution_started_event_attributes.workflow_execution.workflow_id
        for run in runs
        for e in run.events
        if e.HasField("child_workflow_execution_started_event_attributes")
    ]
    return [await client.get_workflow_handle(i).fetch_history() for i in dict.fromkeys(ids)]


async def phase_of(client: Client, run: WorkflowHistory) -> str:
    """The phase a run starts in, from its input: a first run starts at intake."""
    started = run.events[0].workflow_execution_started_event_attributes
    (journey,) = await client.data_converter.decode(started.input.payloads, [JourneyInput])
    return "intake" if journey.state is None else str(journey.state.phase.value)


def by_kind(histories: list[WorkflowHistory]) -> Counter[str]:
    return Counter(kind(e) for h in histories for e in h.events)


def activity_types(histories: list[WorkflowHistory]) -> Counter[str]:
    """Activities by type; those run inside the workflow task (local) marked so."""
    found: Counter[str] = Counter()
    for h in histories:
        for e in h.events:
            if kind(e) == "activity_task_scheduled":
                found[e.activity_task_scheduled_event_attributes.activity_type.name] += 1
            elif (local := local_activity_type(e)) is not None:
                found[f"{local} (in task)"] += 1
    return found


async def one_year(needs: list[str], workdir: Path) -> dict[str, Any]:
    from clinical.assessment import Enrolment
    from simulation.clinic import clinic, drive_journey, enrolment_data, journey_histories
    from simulation.patients import steady_attendance

    workdir.mkdir(parents=True, exist_ok=True)
    async with time_skipping() as env, clinic(env.client, workdir) as c:
        data = enrolment_data(social_needs=needs, consents={"partner_disclosure": needs})
        with env.auto_time_skipping_disabled():
            handle = await c.enrol(Enrolment.model_validate(data))
            status, _ = await drive_journey(env, handle, choose=steady_attendance, sheets=True)
        runs = await journey_histories(c.client, handle)
        phases: dict[str, dict[str, Any]] = {}
        all_children: list[WorkflowHistory] = []
        for run in runs:
            phase = await phase_of(c.client, run)
            children = await children_of(c.client, [run])
            all_children += children
            figures = phases.setdefault(
                phase,
                {"runs": 0, "run_events": 0, "child_events": 0, "children": 0, "kinds": Counter()},
            )
            figures["runs"] += 1
            figures["run_events"] += len(run.events)
            figures["children"] += len(children)
            figures["child_events"] += sum(len(h.events) for h in children)
            figures["workflow_tasks"] = figures.get("workflow_tasks", 0) + sum(
                workflow_tasks(h) for h in [run, *children]
            )
            figures["kinds"].update(by_kind([run, *children]))
    for figures in phases.values():
        figures["events"] = figures["run_events"] + figures["child_events"]
        figures["kinds"] = dict(figures["kinds"].most_common())
    return {
        "outcome": status.phase.value,
        "phases": phases,
        "children": len(all_children),
        "child_events": sum(len(h.events) for h in all_children),
        "total_events": sum(len(r.events) for r in runs) + sum(len(h.events) for h in all_children),
        "total_workflow_tasks": sum(workflow_tasks(r) for r in [*runs, *all_children]),
        "largest_run": max(len(r.events) for r in [*runs, *all_children]),
        "kinds": dict(by_kind([*runs, *all_children]).most_common()),
        "activities": dict(activity_types([*runs, *all_children]).most_common()),
    }


async def run(patients: int, scratch: Path) -> dict[str, Any]:
    # Without referrals: on the time-skipping server a referral that expires unanswered
    # mid-year stalls the clock later on ("Timeout expired"), a quirk still to pin down.
    years = [await one_year([], scratch / f"year-{n}") for n in range(patients)]
    summary = {
        key: spread([y[key] for y in years])
        for key in ("total_events", "total_workflow_tasks", "largest_run", "child_events")
    }
    by_phase = {
        phase: {
            key: spread([y["phases"].get(phase, {}).get(key, 0) for y in years])
            for key in ("events", "workflow_tasks", "runs", "children")
        }
        for phase in PHASES
    }
    return {
        "patients": patients,
        "summary": summary,
        "by_phase": by_phase,
        "target_largest_run": 10_000,
        "years": years,
    }


def report(result: dict[str, Any]) -> None:
    print(f"A patient-year ({result['patients']} simulated, default protocol, steady attendance):")
    for key, figures in result["summary"].items():
        print(
            f"  {key:22} median {figures['median']:>7}  "
            f"(min {figures['min']}, max {figures['max']})"
        )
    print("  by phase (median events / workflow tasks, runs and children):")
    for phase, figures in result["by_phase"].items():
        print(
            f"    {phase:10} {figures['events']['median']:>6} events, "
            f"{figures['workflow_tasks']['median']:>5} workflow tasks"
        )


async def main(patients: int, out: Path | None) -> dict[str, Any]:
    with scratch_dir("patient-year") as scratch:
        result = await run(patients, scratch)
    report(result)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--patients", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path("bench/results/patient_year.json"))
    args = parser.parse_args()
    from infra.logging import configure_logging

    configure_logging("console", "warning")
    asyncio.run(main(args.patients, args.json))
    # The SDK's threads can race interpreter teardown (sdk-python #300): the figures are out.
    sys.stdout.flush()
    os._exit(0)
