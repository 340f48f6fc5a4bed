"""Connecting to Temporal and building workers: one place for every entry point.

Any Temporal target works (the embedded dev server, a self-hosted cluster, Temporal Cloud):
the connection comes from a `temporalio.envconfig` profile and TEMPORAL_* environment
variables (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_PROFILE,
TEMPORAL_CONFIG_FILE, TLS settings); without them, the embedded server's address."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.envconfig import ClientConfig
from temporalio.worker import Worker

from infra.settings import Settings


def data_converter() -> DataConverter:
    """The converter every client, worker and replayer uses (pydantic models as JSON)."""
    return pydantic_data_converter


def connect_config(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    if "target_host" not in config and not os.environ.get("TEMPORAL_ADDRESS"):
        config["target_host"] = settings.embedded_address
    return config


async def connect(settings: Settings) -> Client:
    return await Client.connect(**connect_config(settings), data_converter=data_converter())


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
