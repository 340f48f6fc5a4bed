"""Run a CarePath worker (journeys, check-ins and their activities) against any Temporal
target: `python worker.py`. Stops gracefully on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress

from temporalio.client import Client
from temporalio.worker import Worker

from activities.care_operations import CareOperations
from activities.referral_launch import ReferralLauncher
from activities.telephony import SimulatedTelephony
from clinical.protocol import ProgramCatalog
from infra.logging import configure_logging, get_logger
from infra.settings import Settings, SettingsError, load_settings
from infra.store import CareStore
from infra.temporal import build_worker, connect

log = get_logger("carepath.worker")


def build_care_operations(settings: Settings) -> CareOperations:
    store = CareStore(settings.database_url)
    store.migrate()
    return CareOperations(
        store=store,
        catalog=ProgramCatalog(settings.programs_dir),
        telephony=SimulatedTelephony(store, use_risk=settings.simulated_use_risk),
    )


@asynccontextmanager
async def running_worker(
    client: Client, settings: Settings, operations: CareOperations, **overrides: object
) -> AsyncIterator[Worker]:
    with ThreadPoolExecutor(max_workers=16, thread_name_prefix="activity") as executor:
        activities = operations.all() + ReferralLauncher(client).all()
        worker = build_worker(client, settings, activities, executor, **overrides)
        async with worker:
            yield worker


async def connect_with_patience(settings: Settings, stop: asyncio.Event) -> Client | None:
    """Wait for the server rather than fail: a worker may start before it."""
    delay = 0.5
    while not stop.is_set():
        try:
            return await connect(settings)
        except RuntimeError as exc:
            log.warning("temporal_unreachable", error=str(exc).splitlines()[0], retry_in=delay)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 10)
    return None


async def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    operations = build_care_operations(settings)
    client = await connect_with_patience(settings, stop)
    if client is None:
        return 0
    async with running_worker(client, settings, operations):
        log.info("worker_started", task_queue=settings.task_queue)
        await stop.wait()
        log.info("worker_stopping")
    operations.store.dispose()
    log.info("worker_stopped")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
