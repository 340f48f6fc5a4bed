"""A worker's metrics, for Prometheus: the SDK's own (workflow and activity task counts and
latencies, cache, pollers) and CarePath's clinic gauges, on one endpoint
(CAREPATH_METRICS_ADDRESS, e.g. 127.0.0.1:9464/metrics).

CarePath's gauges are read from the care-operations store, not counted as events happen
(the SDK's workflow or activity metric meter):
- they are states, not events: how many patients are in each phase now, how many tasks are
  open now. Counting transitions per worker would need every worker's counters summed and
  never reset; a worker restart, a replayed workflow or a retried activity would skew them.
- the store is the one place that already knows: it holds each fact once (idempotency
  keys), so the gauges agree with `starter.py caseload` and the audit trail.
- no workflow code changes, so nothing for in-flight journeys to replay differently.
Every worker reports the same clinic-wide values: aggregate them with max(), not sum().
The store is read every CAREPATH_METRICS_INTERVAL seconds (three grouped counts), so a
scrape sees values at most that old.

Labels are bounded categories from the clinical model (phase, call outcome, task kind):
never a patient identifier (PHI, and one series per patient) nor anything about one."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import get_args

from temporalio.common import MetricMeter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from clinical.aftercare import CallOutcome
from clinical.phases import Phase
from clinical.tasks import TaskKind
from infra.logging import get_logger
from infra.settings import Settings, SettingsError
from infra.store import CareStore

log = get_logger("carepath.metrics")

# Each gauge: its name, help text, label and every value the label can take (so a count
# that drops to zero shows as 0, not as the last value seen).
GAUGES: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "patients": (
        "carepath_patients",
        "Patients in each phase of their journey (ended journeys by how they ended)",
        "phase",
        tuple(p.value for p in Phase),
    ),
    "check_ins": (
        "carepath_check_ins",
        "Aftercare check-ins by the outcome of their latest call attempt",
        "outcome",
        tuple(o.value for o in CallOutcome),
    ),
    "open_tasks": (
        "carepath_tasks_open",
        "Case-manager tasks still open, by kind",
        "kind",
        get_args(TaskKind),
    ),
}


def metrics_runtime(settings: Settings) -> Runtime | None:
    """The SDK runtime serving Prometheus metrics, when CAREPATH_METRICS_ADDRESS is set."""
    if settings.metrics_address is None:
        return None
    try:
        return Runtime(
            telemetry=TelemetryConfig(
                metrics=PrometheusConfig(bind_address=settings.metrics_address)
            )
        )
    except ValueError as exc:
        raise SettingsError(f"CAREPATH_METRICS_ADDRESS {settings.metrics_address}: {exc}") from None


class ClinicGauges:
    def __init__(self, store: CareStore, meter: MetricMeter) -> None:
        self.store = store
        self.gauges = {
            key: (meter.create_gauge(name, text), label, values)
            for key, (name, text, label, values) in GAUGES.items()
        }

    def sample(self) -> None:
        census = self.store.census()
        for key, (gauge, label, values) in self.gauges.items():
            counts = census[key]
            for value in values:
                gauge.set(counts.get(value, 0), {label: value})

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        """Sample now, then every `interval` seconds until `stop`; a store that does not
        answer costs a sample, never the worker."""
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.sample)
            except Exception as exc:
                log.warning("metrics_sample_failed", error=type(exc).__name__)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
