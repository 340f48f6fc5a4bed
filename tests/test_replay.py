"""The replay gate. Journeys live for months, so every change to workflow code must replay
the histories recorded under tests/histories/ (each main path of each workflow type)
without a non-determinism error, with the production data converter and codec (histories
recorded before encryption pass through it unsealed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from infra.sandbox import workflow_runner
from infra.temporal import data_converter
from tests.support import TEST_KEYS
from workflows.registry import WORKFLOWS

HISTORY_DIR = Path(__file__).parent / "histories"
HISTORIES = sorted(HISTORY_DIR.glob("*.json"))


def workflow_type_of(path: Path) -> str:
    first = json.loads(path.read_text())["events"][0]
    return str(first["workflowExecutionStartedEventAttributes"]["workflowType"]["name"])


def test_every_registered_workflow_type_has_recorded_histories() -> None:
    recorded = {workflow_type_of(p) for p in HISTORIES}
    registered = {cls.__temporal_workflow_definition.name for cls in WORKFLOWS}  # type: ignore[attr-defined]
    assert registered <= recorded, f"no recorded history for {sorted(registered - recorded)}"


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
@pytest.mark.parametrize(
    ("sdk_tuning", "sandboxed"),
    [
        (True, True),
        pytest.param(False, True, marks=pytest.mark.slow),
        pytest.param(True, False, marks=pytest.mark.slow),
    ],
    ids=["tuned", "sdk-as-shipped", "unsandboxed"],
)
async def test_recorded_history_replays(path: Path, sdk_tuning: bool, sandboxed: bool) -> None:
    # The worker's own runners, CAREPATH_SDK_TUNING on and off: the gate replays what
    # production runs either way; and a simulation's worker (CAREPATH_WORKFLOW_SANDBOX off).
    converter = data_converter(TEST_KEYS)
    replayer = Replayer(
        workflows=WORKFLOWS,
        data_converter=converter,
        workflow_runner=workflow_runner(sdk_tuning, converter, sandboxed),
    )
    workflow_id = path.stem.rsplit("--", 1)[-1]
    history = WorkflowHistory.from_json(workflow_id, path.read_text())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
