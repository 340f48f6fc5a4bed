"""Connecting to Temporal and building workers: one place for every entry point.

Any Temporal target works (the embedded dev server, a self-hosted cluster, Temporal Cloud):
the connection comes from a `temporalio.envconfig` profile and TEMPORAL_* environment
variables (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_PROFILE,
TEMPORAL_CONFIG_FILE, TLS settings); without them, the embedded server's address."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import CompositePayloadConverter, DataConverter, EncodingPayloadConverter
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime
from temporalio.worker import Worker

from infra.codec import EncryptionCodec, KeyFileError, KeyRing
from infra.inline_activities import InlineActivities
from infra.sandbox import workflow_runner
from infra.settings import Settings, SettingsError
from infra.tracing import tracing_interceptors


@functools.cache
def _pydantic_encoding_converters() -> tuple[EncodingPayloadConverter, ...]:
    return tuple(PydanticPayloadConverter().converters.values())


class SharedPydanticPayloadConverter(PydanticPayloadConverter):
    """The SDK's pydantic payload converter, its parts built once per process. The SDK makes
    a payload converter for every workflow instance and two more for every activation (most
    never convert anything), and each new one began with an empty cache of pydantic type
    adapters: 2-3% of a cohort worker's time. The parts are stateless but for that cache
    (a thread-safe LRU of immutable adapters), so sharing them changes no conversion."""

    def __init__(self) -> None:
        CompositePayloadConverter.__init__(self, *_pydantic_encoding_converters())


def data_converter(keys: KeyRing | None = None) -> DataConverter:
    """The converter every client, worker and replayer uses: pydantic models as JSON, sealed
    with AES-GCM when there are keys."""
    converter = DataConverter(payload_converter_class=SharedPydanticPayloadConverter)
    if keys is None:
        return converter
    return dataclasses.replace(converter, payload_codec=EncryptionCodec(keys))


def keys_for(settings: Settings, make_keys: bool = False) -> KeyRing | None:
    """The key ring that seals payloads and the store's PHI columns (None with encryption
    off). Made on first use only by those that may (`make_keys`: a worker, `starter.py
    keys`); any other process that finds none stops, rather than sealing with a key no
    worker has."""
    if not settings.encryption:
        return None
    try:
        if make_keys:
            return KeyRing.load_or_create(settings.key_file)
        if not settings.key_file.exists():
            raise KeyFileError(
                f"no payload key file at {settings.key_file}: start a worker (which makes "
                "it) or run `starter.py keys` where the workers run, or point "
                "CAREPATH_KEYS_FILE at the workers' key file"
            )
        return KeyRing.load(settings.key_file)
    except KeyFileError as exc:
        raise SettingsError(str(exc)) from None


def converter_for(settings: Settings, make_keys: bool = False) -> DataConverter:
    """The converter every client and worker uses, sealed with the key ring."""
    return data_converter(keys_for(settings, make_keys))


def connect_config(settings: Settings) -> dict[str, Any]:
    """Client.connect's arguments from the envconfig profile (TEMPORAL_PROFILE, "default"
    unless named, in TEMPORAL_CONFIG_FILE or the default config file) with TEMPORAL_*
    overrides. A profile that cannot be used is a SettingsError, not an unreachable server."""
    named = os.environ.get("TEMPORAL_CONFIG_FILE")
    if named and not Path(named).is_file():
        raise SettingsError(f"TEMPORAL_CONFIG_FILE {named} does not exist")
    try:
        config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    except OSError as exc:  # a TLS certificate or key the profile names
        raise SettingsError(f"Temporal TLS file {exc.filename}: {exc.strerror}") from None
    except RuntimeError as exc:  # the SDK's ConfigError: bad TOML, unknown profile
        first = str(exc).strip().splitlines()[0]
        raise SettingsError(f"Temporal client configuration: {first}") from None
    if "target_host" not in config and not os.environ.get("TEMPORAL_ADDRESS"):
        config["target_host"] = settings.embedded_address
    return config


async def connect(
    settings: Settings, runtime: Runtime | None = None, make_keys: bool = False
) -> Client:
    """A client of the configured Temporal; `runtime` serves a worker's metrics; only a
    worker (`make_keys`) makes the payload key file when there is none."""
    return await Client.connect(
        **connect_config(settings),
        data_converter=converter_for(settings, make_keys),
        runtime=runtime,
    )


def build_worker(
    client: Client,
    settings: Settings,
    workflows: Sequence[type],
    activities: Sequence[Any],
    executor: ThreadPoolExecutor,
    **overrides: Any,
) -> Worker:
    """A worker for `workflows` (the registry's, workflows.registry) and `activities`, their
    activities run on `executor`, which has `settings.max_concurrent_activities` threads:
    never more activities at once than threads to run them (with `activity_threads` off,
    the synchronous ones on the event loop instead: `infra.inline_activities`)."""
    options: dict[str, Any] = {
        "task_queue": settings.task_queue,
        "workflows": list(workflows),
        "activities": list(activities),
        "activity_executor": executor,
        "max_concurrent_activities": settings.max_concurrent_activities,
        "max_concurrent_workflow_tasks": settings.max_concurrent_workflow_tasks,
        "max_cached_workflows": settings.max_cached_workflows,
        # The inline activities innermost: they replace only the SDK's hand-off to a thread.
        "interceptors": tracing_interceptors(settings)
        + ([] if settings.activity_threads else [InlineActivities()]),
        "workflow_runner": workflow_runner(
            settings.sdk_tuning, client.data_converter, settings.workflow_sandbox
        ),
    }
    if not settings.workflow_threads:
        # The SDK's debug mode is its one way to run workflow tasks on the event loop.
        options["debug_mode"] = True
    options.update(overrides)
    worker = Worker(client, **options)
    if settings.workflow_threads and settings.deadlock_timeout != SDK_DEADLOCK_TIMEOUT:
        set_deadlock_timeout(worker, settings.deadlock_timeout)
    return worker


SDK_DEADLOCK_TIMEOUT = 2.0
"""How long temporalio lets a workflow task hold its thread before it fails the task as a
potential deadlock ([TMPRL1101]); it has no option for it (`debug_mode` turns the detector
off and runs every task on the event loop's thread)."""


def set_deadlock_timeout(worker: Worker, seconds: float) -> None:
    """The worker's deadlock detector after `seconds` instead of the SDK's 2 s: an attribute
    of temporalio 1.35's private workflow worker, checked so an SDK that renames it stops the
    worker rather than keeping the 2 s unnoticed (tests/test_whatif.py)."""
    workflows = getattr(worker, "_workflow_worker", None)
    if workflows is None or getattr(workflows, "_deadlock_timeout_seconds", None) is None:
        raise RuntimeError("temporalio's worker has no deadlock timeout to set (an SDK upgrade?)")
    workflows._deadlock_timeout_seconds = seconds
