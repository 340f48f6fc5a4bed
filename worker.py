"""Run a CarePath worker (journeys, check-ins and their activities) against any Temporal
target: `python worker.py`. Stops gracefully on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress

from sqlalchemy.exc import OperationalError
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.worker import Worker

from activities.care_operations import CareOperations
from activities.referral_launch import ReferralLauncher
from activities.telephony import Telephony
from clinical.protocol import ProgramCatalog
from infra.logging import configure_logging, get_logger
from infra.metrics import ClinicGauges, metrics_runtime
from infra.sandbox import cache_workflow_bytecode
from infra.settings import Settings, SettingsError, load_settings
from infra.store import CareStore, store_unreachable
from infra.survey_links import link_signer
from infra.telephony import HttpTelephony
from infra.temporal import build_worker, connect, connect_config, keys_for
from infra.tracing import start_exporting
from simulation.behaviour import load_behaviour
from simulation.partners import SimulatedPartners
from simulation.telephony import SimulatedTelephony
from workflows.registry import WORKFLOWS

log = get_logger("carepath.worker")


def build_care_operations(settings: Settings) -> CareOperations:
    # A connection for each activity thread, and one for the metrics' reads.
    store = CareStore(
        settings.database_url,
        pool_size=settings.max_concurrent_activities + 1,
        keys=keys_for(settings, make_keys=True),
    )
    store.migrate()
    return CareOperations(
        store=store,
        catalog=ProgramCatalog(settings.programs_dir),
        telephony=telephony_of(settings, store),
        partners=SimulatedPartners(store),
        links=link_signer(settings, make_keys=True),
    )


def telephony_of(settings: Settings, store: CareStore) -> Telephony:
    """The provider's HTTP API where CAREPATH_TELEPHONY_URL names one; otherwise the
    in-process simulated provider (the simulated cohorts': what-if, benchmarks)."""
    if settings.telephony_url is not None:
        token = None
        if settings.telephony_token_file is not None:
            try:
                token = settings.telephony_token_file.read_text().strip()
            except OSError as exc:
                raise SettingsError(
                    f"CAREPATH_TELEPHONY_TOKEN_FILE cannot be read ({exc.strerror})"
                ) from None
        return HttpTelephony(settings.telephony_url, token)
    aftercare = load_behaviour().aftercare
    return SimulatedTelephony(
        store,
        use_risk=settings.simulated_use_risk,
        reachability=(aftercare.reachability_low, aftercare.reachability_high),
    )


@asynccontextmanager
async def running_worker(
    client: Client, settings: Settings, operations: CareOperations, **overrides: object
) -> AsyncIterator[Worker]:
    with ThreadPoolExecutor(
        max_workers=settings.max_concurrent_activities, thread_name_prefix="activity"
    ) as executor:
        activities = operations.all() + ReferralLauncher(client).all()
        workflows = overrides.pop("workflows", WORKFLOWS)
        worker = build_worker(client, settings, workflows, activities, executor, **overrides)  # type: ignore[arg-type]
        async with worker:
            yield worker


async def connect_with_patience(
    settings: Settings, stop: asyncio.Event, runtime: Runtime | None = None
) -> Client | None:
    """Wait for the server rather than fail: a worker may start before it."""
    delay = 0.5
    while not stop.is_set():
        try:
            return await connect(settings, runtime, make_keys=True)
        except RuntimeError as exc:
            log.warning("temporal_unreachable", error=str(exc).splitlines()[0], retry_in=delay)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 10)
    return None


GC_THRESHOLDS = (50_000, 50, 1000)
"""A simulation worker's collector thresholds (Python 3.11's: 700, 10, 10):
young collections a few times less often, full ones rarely."""


def tune_garbage_collection() -> None:
    """What the worker has built by now (modules, workflow classes, the store's engine)
    lives as long as it does: out of every later collection's way (`gc.freeze`), and
    collections less often, as a worker allocates mostly short-lived payloads."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def main() -> int:
    try:
        settings = load_settings()
        connect_config(settings)  # a profile that cannot work: say so now, not retry it
        runtime = metrics_runtime(settings)
        tracer = start_exporting() if settings.otel else None
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    if settings.sdk_tuning:
        cache_workflow_bytecode(settings.data_dir / "cache")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        operations = build_care_operations(settings)
    except OperationalError as exc:  # restarted by its supervisor; says why in one line
        print(f"error: {store_unreachable(exc)}", file=sys.stderr)
        return 4
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    client = await connect_with_patience(settings, stop, runtime)
    if client is None:
        return 0
    async with running_worker(client, settings, operations):
        if settings.gc_tuning:
            tune_garbage_collection()
        log.info(
            "worker_started",
            task_queue=settings.task_queue,
            namespace=client.namespace,
            metrics=settings.metrics_address,
            telephony="http" if settings.telephony_url else "in-process simulated",
        )
        async with asyncio.TaskGroup() as tasks:
            if runtime is not None:
                gauges = ClinicGauges(operations.store, runtime.metric_meter)
                tasks.create_task(gauges.run(settings.metrics_interval, stop))
            await stop.wait()
        log.info("worker_stopping")
    operations.store.dispose()
    if tracer is not None:
        tracer.shutdown()  # flush the spans still batched
    log.info("worker_stopped")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
