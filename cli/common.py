"""What every command shares: one-line errors and their exit codes, the console, the
Temporal client and the requests a case manager sends to a journey, the store for reading."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError, RPCStatusCode

from clinical.clock import zone
from clinical.identifiers import PatientId, journey_workflow_id
from clinical.protocol import describe_validation_error
from clinical.sites import SiteDirectory, SiteError
from infra.settings import Settings, SettingsError
from infra.store import SCHEMA_VERSION, CareStore
from infra.temporal import connect, keys_for

console = Console()
EXIT_BAD_INPUT = 2
EXIT_REFUSED = 3
EXIT_UNREACHABLE = 4
# A query or update needs a worker to answer; don't leave a case manager staring at a prompt.
ANSWER_TIMEOUT = timedelta(seconds=15)


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


async def client_for(settings: Settings) -> Client:
    try:
        return await connect(settings)
    except SettingsError as exc:
        raise CliError(str(exc)) from None
    except RuntimeError as exc:
        reason = str(exc).splitlines()[0]
        raise CliError(
            f"cannot reach the Temporal server ({reason}); "
            "start the embedded one with `python starter.py server start`",
            EXIT_UNREACHABLE,
        ) from None


def validated(adapter: Any, value: Any, what: str) -> Any:
    try:
        return TypeAdapter(adapter).validate_python(value)
    except ValidationError as exc:
        raise CliError(f"{what}: {exc.errors()[0]['msg']}") from None


ENGINE_DOWN = (
    "the engine is not running: no CarePath worker polls task queue {queue!r} "
    "(start one with `python worker.py`)"
)


async def worker_running(client: Client, task_queue: str) -> bool:
    """Whether a worker has polled the journeys' task queue in the last minute (the server
    remembers pollers for a while after they stop)."""
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
    return any(p.last_access_time.ToDatetime(tzinfo=UTC) > recent for p in described.pollers)


async def require_worker(client: Client, settings: Settings) -> None:
    """Refuse at once, exit 4, when no worker would answer (instead of waiting it out)."""
    if not await worker_running(client, settings.task_queue):
        raise CliError(ENGINE_DOWN.format(queue=settings.task_queue), EXIT_UNREACHABLE)


def journey_handle(client: Client, patient_id: str) -> WorkflowHandle[Any, Any]:
    patient_id = validated(PatientId, patient_id, "patient")
    return client.get_workflow_handle(journey_workflow_id(patient_id))


async def journey_call(
    handle: WorkflowHandle[Any, Any], patient_id: str, call: Callable[[], Awaitable[Any]]
) -> Any:
    """Run a request against a journey, turning Temporal's errors into one-line ones."""
    try:
        return await call()
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        message = getattr(cause, "message", None) or str(cause or exc)
        raise CliError(f"refused: {message}", EXIT_REFUSED) from None
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        raise CliError(
            f"no answer within {ANSWER_TIMEOUT.seconds} s; is a CarePath worker running "
            "(`python worker.py`)? The request may still be carried out",
            EXIT_UNREACHABLE,
        ) from None
    except RPCError as exc:
        if exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
            raise CliError(
                f"no CarePath worker answered within {ANSWER_TIMEOUT.seconds} s; "
                "is one running (`python worker.py`)?",
                EXIT_UNREACHABLE,
            ) from None
        if exc.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise CliError(
                f"the Temporal server refused: {exc.message}", EXIT_UNREACHABLE
            ) from None
    # An update to a finished workflow is "not found" too: tell the two apart.
    try:
        described = await handle.describe()
    except RPCError:
        raise CliError(f"no journey for patient {patient_id}") from None
    if described.status == WorkflowExecutionStatus.RUNNING:
        raise CliError(
            f"no CarePath worker answered for patient {patient_id}'s journey, which is running; "
            "is a worker running (`python worker.py`)?",
            EXIT_UNREACHABLE,
        )
    status = described.status.name.lower() if described.status else "closed"
    raise CliError(f"the journey of patient {patient_id} has ended ({status})", EXIT_REFUSED)


def make_request(model: Any, **fields: Any) -> Any:
    """Build a case manager's request, or a one-line error naming the bad field."""
    try:
        return model(**fields)
    except ValidationError as exc:
        raise CliError(describe_validation_error(exc)) from None


async def send_update(
    settings: Settings, patient_id: str, update: Any, request: Any, workflow_id: str | None = None
) -> Any:
    """Deliver a request to the patient's journey (or to another of the patient's workflows,
    such as a referral)."""
    client = await client_for(settings)
    await require_worker(client, settings)
    handle = (
        client.get_workflow_handle(workflow_id)
        if workflow_id
        else journey_handle(client, patient_id)
    )
    return await journey_call(
        handle,
        patient_id,
        lambda: handle.execute_update(update, request, rpc_timeout=ANSWER_TIMEOUT),
    )


async def answer_update(settings: Settings, patient_id: str, update: Any, request: Any) -> int:
    """Send a case manager's request to the journey and print its one-line answer."""
    message = await send_update(settings, patient_id, update, request)
    console.print(f"{patient_id}: {message}")
    return 0


def site_zones(settings: Settings, store: CareStore) -> Callable[[str], tzinfo]:
    """Each patient's site zone (UTC where the store or the sites file does not say): what
    people read is the site's local time, with its offset."""
    names = site_zone_names(settings, store)
    return lambda patient_id: zone(names(patient_id))


def site_zone_names(settings: Settings, store: CareStore) -> Callable[[str], str]:
    """Each patient's site zone's name ("UTC" where the store or sites file does not say)."""
    try:
        sites = SiteDirectory.load(settings.sites_file)
    except SiteError:
        sites = SiteDirectory({})
    site_of = {p.patient_id: p.site_id for p in store.patients()}

    def zone_of(patient_id: str) -> str:
        site = sites.sites.get(site_of.get(patient_id, ""))
        return "UTC" if site is None else site.zone

    return zone_of


def care_store(settings: Settings) -> CareStore:
    """The store, for reading: the command line never creates or migrates one (a mistyped
    URL would otherwise answer with an empty caseload); workers do."""
    url = settings.database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise CliError(f"no care-operations store at {url.removeprefix('sqlite:///')} yet")
    try:
        keys = keys_for(settings) if settings.key_file.exists() else None
    except SettingsError as exc:
        raise CliError(str(exc)) from None
    store = CareStore(url, keys=keys)
    version = store.schema_version()  # a database that does not answer: main() says so
    if version != SCHEMA_VERSION:
        store.dispose()
        found = "no CarePath schema" if version == 0 else f"schema version {version}"
        raise CliError(
            f"the care-operations store holds {found}, not version {SCHEMA_VERSION}: "
            "is this the database the workers use (a worker creates and upgrades it)?"
        )
    return store
