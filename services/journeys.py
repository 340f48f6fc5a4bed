"""Delivering a request to a patient's workflows (the journey, or a referral loop): the one
path the command line and the console share, with Temporal's errors turned into one line
that says whether the request was refused, was wrong, or found no engine to answer."""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    DescribeTaskQueueRequest,
    DescribeWorkflowExecutionRequest,
)
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError, RPCStatusCode

from clinical.group_sheets import GroupSheet, SheetLine, sheet_update_id
from clinical.identifiers import is_referral_workflow_id, journey_workflow_id
from clinical.requests import AttendanceMark, AttendanceSheet
from clinical.status import JourneyStatus
from infra.store import InboxTask, RosterLine
from workflows.patient_journey import PatientJourneyWorkflow
from workflows.referral import ReferralWorkflow

# A query or update needs a worker to answer; don't leave a case manager waiting.
ANSWER_TIMEOUT = timedelta(seconds=15)

ENGINE_DOWN = (
    "the engine is not running: no CarePath worker polls task queue {queue!r} "
    "(start one with `python worker.py`)"
)


class Why(StrEnum):
    bad_input = "bad_input"  # the request itself is wrong (or names nothing)
    refused = "refused"  # a rule refused it: nothing changed
    unreachable = "unreachable"  # no server or no worker answered


class RequestFailed(Exception):
    def __init__(self, message: str, why: Why) -> None:
        super().__init__(message)
        self.why = why


# A worker seen polling is taken as there for this long without asking again: the server's
# own answer lags by up to a minute (it remembers pollers), so a few seconds more change
# nothing, and every request saves a round trip. Past that, until WORKER_ASKED_AFTER, the
# request goes on at once and the server is asked beside it (the question had been the slow
# tail of one request in fifty): a worker gone is forgotten when that answer comes. Only a
# worker seen is remembered: a refusal asks the server again each time.
WORKER_SEEN_FOR = 5.0
WORKER_ASKED_AFTER = 30.0
_seen: weakref.WeakKeyDictionary[Client, dict[str, float]] = weakref.WeakKeyDictionary()
_asking: weakref.WeakKeyDictionary[Client, dict[str, asyncio.Task[bool]]] = (
    weakref.WeakKeyDictionary()
)


async def worker_running(client: Client, task_queue: str) -> bool:
    """Whether a worker has polled the journeys' task queue in the last minute (the server
    remembers pollers for a while after they stop)."""
    seen = _seen.setdefault(client, {})
    last = seen.get(task_queue)
    since = None if last is None else time.monotonic() - last
    if since is not None and since < WORKER_SEEN_FOR:
        return True
    if since is not None and since < WORKER_ASKED_AFTER:
        asking = _asking.setdefault(client, {})
        if task_queue not in asking:  # one question at a time; the dict holds its task
            asking[task_queue] = asyncio.create_task(_ask(client, task_queue))
            asking[task_queue].add_done_callback(lambda _: asking.pop(task_queue, None))
        return True
    return await _ask(client, task_queue)


async def _ask(client: Client, task_queue: str) -> bool:
    """The server's answer, remembered if a worker polls, forgotten if none does."""
    seen = _seen.setdefault(client, {})
    try:
        described = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            ),
            timeout=ANSWER_TIMEOUT,
        )
    except RPCError:
        return True  # cannot tell: let the request itself say what happens
    recent = datetime.now(UTC) - timedelta(seconds=60)
    if any(p.last_access_time.ToDatetime(tzinfo=UTC) > recent for p in described.pollers):
        seen[task_queue] = time.monotonic()
        return True
    seen.pop(task_queue, None)
    return False


def task_completion(task: InboxTask) -> tuple[Any, str]:
    """Where marking a task done goes: the update of the workflow that opened it (the
    journey or a referral loop), which decides what done means, and that workflow's ID."""
    workflow_id = task.workflow_id or journey_workflow_id(task.patient_id)
    if is_referral_workflow_id(workflow_id):
        return ReferralWorkflow.complete_task, workflow_id
    return PatientJourneyWorkflow.complete_task, workflow_id


async def deliver(
    client: Client,
    task_queue: str,
    patient_id: str,
    update: Any,
    request: Any,
    workflow_id: str | None = None,
    update_id: str | None = None,
) -> Any:
    """Run `update` with `request` on the patient's journey (or `workflow_id`), refusing at
    once when no worker would answer; its answer, or RequestFailed in one line. An
    `update_id` the workflow has taken before is not run again: its first answer returns."""
    if not await worker_running(client, task_queue):
        raise RequestFailed(ENGINE_DOWN.format(queue=task_queue), Why.unreachable)
    handle = client.get_workflow_handle(workflow_id or journey_workflow_id(patient_id))
    return await answer(
        client,
        handle,
        patient_id,
        lambda: handle.execute_update(update, request, id=update_id, rpc_timeout=ANSWER_TIMEOUT),
    )


async def send_event(
    client: Client, patient_id: str, signal: Any, event: Any, workflow_id: str | None = None
) -> None:
    """`signal` with `event` to the patient's journey (or `workflow_id`), returning once
    the server has stored it in the workflow's history: no worker need be running, and the
    workflow applies it shortly after (an event ID it took before, it drops). RequestFailed
    in one line when the server did not take it."""
    handle = client.get_workflow_handle(workflow_id or journey_workflow_id(patient_id))
    try:
        await handle.signal(signal, event, rpc_timeout=ANSWER_TIMEOUT)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:  # the workflow has ended (or never ran)
            raise await _why_not_found(client, handle.id, patient_id) from None
        raise RequestFailed(
            f"the Temporal server did not take the event: {exc.message}", Why.unreachable
        ) from None


async def query_status(client: Client, patient_id: str) -> JourneyStatus:
    """The journey's own status (a worker answers it), as of now."""
    handle = client.get_workflow_handle(journey_workflow_id(patient_id))
    status: JourneyStatus = await answer(
        client,
        handle,
        patient_id,
        lambda: handle.query(PatientJourneyWorkflow.status, rpc_timeout=ANSWER_TIMEOUT),
    )
    return status.as_of(datetime.now(UTC))


async def answer(
    client: Client,
    handle: WorkflowHandle[Any, Any],
    patient_id: str,
    call: Callable[[], Awaitable[Any]],
) -> Any:
    """What a workflow answers to `call`, or RequestFailed in one line."""
    try:
        return await call()
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        message = getattr(cause, "message", None) or str(cause or exc)
        raise RequestFailed(f"refused: {message}", Why.refused) from None
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        raise RequestFailed(
            f"no answer within {ANSWER_TIMEOUT.seconds} s; is a CarePath worker running "
            "(`python worker.py`)? The request may still be carried out",
            Why.unreachable,
        ) from None
    except RPCError as exc:
        if exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
            raise RequestFailed(
                f"no CarePath worker answered within {ANSWER_TIMEOUT.seconds} s; "
                "is one running (`python worker.py`)?",
                Why.unreachable,
            ) from None
        if exc.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise RequestFailed(
                f"the Temporal server refused: {exc.message}", Why.unreachable
            ) from None
    raise await _why_not_found(client, handle.id, patient_id)


async def _why_not_found(client: Client, workflow_id: str, patient_id: str) -> RequestFailed:
    """An update to a finished workflow is "not found" too: tell the two apart."""
    try:
        # The raw description: the SDK's would also decode the search attributes, which
        # the time-skipping test server returns in a form it cannot read (a datetime).
        described = await client.workflow_service.describe_workflow_execution(
            DescribeWorkflowExecutionRequest(
                namespace=client.namespace, execution=WorkflowExecution(workflow_id=workflow_id)
            )
        )
    except RPCError:
        return RequestFailed(f"no journey for patient {patient_id}", Why.bad_input)
    status = WorkflowExecutionStatus(described.workflow_execution_info.status)
    if status == WorkflowExecutionStatus.RUNNING:
        return RequestFailed(
            f"no CarePath worker answered for patient {patient_id}'s journey, which is running; "
            "is a worker running (`python worker.py`)?",
            Why.unreachable,
        )
    return RequestFailed(
        f"the journey of patient {patient_id} has ended ({status.name.lower()})", Why.refused
    )


async def record_group_sheet(
    client: Client,
    task_queue: str,
    sheet: GroupSheet,
    roster: Sequence[RosterLine],
    case_managers: Mapping[str, str],
) -> list[SheetLine]:
    """Each mark of a group session's sheet to the patient's journey, one by one: accepted,
    unchanged (the journey holds that mark already: a sheet submitted twice changes
    nothing), or refused with the journey's reason. Marks are by `sheet.submitted_by`, or
    else by each patient's case manager (`case_managers`)."""
    booked = {r.patient_id: r for r in roster}
    submission = sheet.submission or uuid.uuid4().hex
    lines = []
    for mark in sheet.marks:
        row = booked.get(mark.patient_id)
        if row is None:
            lines.append(
                SheetLine(
                    patient_id=mark.patient_id,
                    session_id=None,
                    status=mark.status,
                    outcome="refused",
                    reason="not booked into this session",
                )
            )
            continue
        line = SheetLine(
            patient_id=mark.patient_id,
            session_id=row.session_id,
            status=mark.status,
            outcome="accepted",
        )
        try:
            status = await query_status(client, mark.patient_id)
            held = next((s for s in status.sessions if s.session_id == row.session_id), None)
            if held is not None and held.status.value == mark.status:
                lines.append(line.model_copy(update={"outcome": "unchanged"}))
                continue
            by = sheet.submitted_by or case_managers[mark.patient_id]
            request = AttendanceSheet(
                case_manager_id=by,
                marks=[AttendanceMark(session_id=row.session_id, status=mark.status)],
            )
            await deliver(
                client,
                task_queue,
                mark.patient_id,
                PatientJourneyWorkflow.record_attendance_sheet,
                request,
                update_id=sheet_update_id(
                    submission,
                    row.session_id,
                    mark.patient_id,
                    "scheduled" if held is None else held.status.value,
                    mark.status,
                ),
            )
        except RequestFailed as exc:
            line = line.model_copy(update={"outcome": "refused", "reason": str(exc)})
        lines.append(line)
    return lines
