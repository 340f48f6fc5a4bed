"""Connecting to Temporal and building workers: one place for every entry point.

Any Temporal target works (the embedded dev server, a self-hosted cluster, Temporal Cloud):
the connection comes from a `temporalio.envconfig` profile and TEMPORAL_* environment
variables (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_PROFILE,
TEMPORAL_CONFIG_FILE, TLS settings); without them, the embedded server's address."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.envconfig import ClientConfig
from temporalio.worker import Worker

from infra.codec import EncryptionCodec, KeyFileError, KeyRing
from infra.settings import Settings, SettingsError


def data_converter(keys: KeyRing | None = None) -> DataConverter:
    """The converter every client, worker and replayer uses: pydantic models as JSON, sealed
    with AES-GCM when there are keys."""
    if keys is None:
        return pydantic_data_converter
    return dataclasses.replace(pydantic_data_converter, payload_codec=EncryptionCodec(keys))


def converter_for(settings: Settings) -> DataConverter:
    if not settings.encryption:
        return data_converter()
    try:
        return data_converter(KeyRing.load_or_create(settings.key_file))
    except KeyFileError as exc:
        raise SettingsError(str(exc)) from None


def connect_config(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    if "target_host" not in config and not os.environ.get("TEMPORAL_ADDRESS"):
        config["target_host"] = settings.embedded_address
    return config


async def connect(settings: Settings) -> Client:
    return await Client.connect(**connect_config(settings), data_converter=converter_for(settings))


def workflow_classes() -> list[type]:
    from workflows.follow_up_call import FollowUpCallWorkflow
    from workflows.patient_journey import PatientJourneyWorkflow
    from workflows.referral import ReferralWorkflow

    return [PatientJourneyWorkflow, FollowUpCallWorkflow, ReferralWorkflow]


def build_worker(
    client: Client,
    settings: Settings,
    activities: Sequence[Any],
    executor: ThreadPoolExecutor,
    **overrides: Any,
) -> Worker:
    options: dict[str, Any] = {
        "task_queue": settings.task_queue,
        "workflows": workflow_classes(),
        "activities": list(activities),
        "activity_executor": executor,
        "max_concurrent_activities": executor._max_workers,
        "max_cached_workflows": settings.max_cached_workflows,
    }
    options.update(overrides)
    return Worker(client, **options)
