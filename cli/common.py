"""What every command shares: one-line errors and their exit codes, the console, the
Temporal client and the requests a case manager sends to a journey, the store for reading."""

from __future__ import annotations

from collections.abc import Callable
from datetime import tzinfo
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from temporalio.client import Client

from clinical.clock import zone
from clinical.identifiers import PatientId
from clinical.protocol import describe_validation_error
from clinical.sites import SiteDirectory, SiteError
from infra.settings import Settings, SettingsError
from infra.store import SCHEMA_VERSION, CareStore
from infra.temporal import connect, keys_for
from services.journeys import ENGINE_DOWN, RequestFailed, Why, deliver, worker_running

console = Console()
EXIT_BAD_INPUT = 2
EXIT_REFUSED = 3
EXIT_UNREACHABLE = 4


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


EXIT_FOR = {
    Why.bad_input: EXIT_BAD_INPUT,
    Why.refused: EXIT_REFUSED,
    Why.unreachable: EXIT_UNREACHABLE,
}


def failed(exc: RequestFailed) -> CliError:
    """A request that failed, as the command line's one-line error and exit code."""
    return CliError(str(exc), EXIT_FOR[exc.why])


async def require_worker(client: Client, settings: Settings) -> None:
    """Refuse at once, exit 4, when no worker would answer (instead of waiting it out)."""
    if not await worker_running(client, settings.task_queue):
        raise CliError(ENGINE_DOWN.format(queue=settings.task_queue), EXIT_UNREACHABLE)


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
    patient_id = validated(PatientId, patient_id, "patient")
    client = await client_for(settings)
    try:
        return await deliver(client, settings.task_queue, patient_id, update, request, workflow_id)
    except RequestFailed as exc:
        raise failed(exc) from None


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
