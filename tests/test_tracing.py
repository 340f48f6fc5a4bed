"""Optional OpenTelemetry tracing (CAREPATH_OTEL=on): the worker's journeys and activities
become spans, which carry opaque identifiers only."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.testing import WorkflowEnvironment

from clinical.phases import Phase
from tests.support import NEEDS_A_HIGHER_LEVEL, clinic, make_enrolment

# Where a deployment would export to a collector, the test keeps the spans in memory.
SPANS = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(SPANS))
trace.set_tracer_provider(_provider)


async def test_a_traced_journey(
    env: WorkflowEnvironment, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAREPATH_OTEL", "on")
    enrolment = make_enrolment(ratings=NEEDS_A_HIGHER_LEVEL)
    async with clinic(env.client, tmp_path) as c:
        outcome = await (await c.enrol(enrolment)).result()
    assert outcome.outcome == Phase.escalated

    spans = SPANS.get_finished_spans()
    names = {s.name for s in spans}
    assert "RunWorkflow:PatientJourney" in names
    assert {"StartActivity:record_intake", "RunActivity:record_intake"} <= names
    assert "RunActivity:open_case_manager_task" in names
    (run,) = [s for s in spans if s.name == "RunWorkflow:PatientJourney"]
    assert run.attributes is not None
    assert run.attributes["temporalWorkflowID"] == f"journey-{enrolment.patient_id}"
    attributes = repr([dict(s.attributes or {}) for s in spans])
    contact = enrolment.contact
    for phi in (contact.family_name, contact.phone, contact.date_of_birth.isoformat()):
        assert phi not in attributes
