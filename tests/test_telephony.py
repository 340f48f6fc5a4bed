"""Check-in calls through the telephony provider the way real providers work: the worker
places each call through the provider's HTTP API (the simulated provider, a process of its
own), and the outcome comes back by signed webhook to the console's /api/v1/webhooks,
served for real on a port of this test's loop. The provider's callback completes a
check-in, a duplicate callback changes nothing, and silence counts as unreachable.

The journeys run on the time-skipping server with automatic skipping off: the clock moves
only when a test steps it, so a real-time callback arrives before the attempt's wait ends
(the missing-callback test steps past the wait on purpose)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import uvicorn
from temporalio.testing import WorkflowEnvironment

from activities.telephony import TelephonyRefused
from clinical.aftercare import CallOutcome, follow_up_call_workflow_id
from clinical.assessment import Enrolment
from clinical.phases import Phase
from clinical.protocol import ProgramCatalog
from clinical.status import JourneyStatus
from infra.embedded_server import free_port
from infra.telephony import HttpTelephony
from infra.webhooks import ANY_SITE, EventKind, WebhookSender, signature
from simulation.behaviour import load_behaviour
from simulation.patients import steady_attendance
from simulation.telephony import seeded_answer
from simulation.telephony_provider import running_provider
from tests.console_support import ConsoleUnderTest, make_console
from tests.support import PROGRAMS, Clinic, clinic, drive_journey, make_enrolment
from web.api_security import API
from web.context import Console
from web.webhooks import _call_outcome
from workflows.follow_up_call import FollowUpCallWorkflow
from workflows.patient_journey import PatientJourneyWorkflow

SENDER = WebhookSender("telephony", EventKind.telephony_calls, ANY_SITE, "whsec_telephony-test")
SEED = "telephony-test"
CALLBACK_WAIT = timedelta(minutes=30)  # the default program's callback_wait_minutes


@dataclass
class Telephony:
    clinic: Clinic
    ui: ConsoleUnderTest
    provider: str  # the provider's base URL


@asynccontextmanager
async def through_the_provider(
    env: WorkflowEnvironment, tmp_path: Path, *options: str
) -> AsyncIterator[Telephony]:
    """A clinic whose worker calls through the simulated provider process, whose callbacks
    come to the console's webhook served on a real port of this loop."""
    secret = tmp_path / "telephony-secret"
    secret.write_text(SENDER.secret)
    web_port, provider_port = free_port(), free_port()
    callback = f"http://127.0.0.1:{web_port}{API}/webhooks/{SENDER.name}"
    base = f"http://127.0.0.1:{provider_port}"
    opts = ("--seed", SEED, "--delay", "0.05,0.2", "--busy-api", "0", "--use-risk", "0", *options)
    async with (
        running_provider(provider_port, callback, secret, tmp_path / "provider.log", *opts),
        clinic(env.client, tmp_path, telephony=lambda store: HttpTelephony(base)) as c,
    ):
        ui = make_console(c.settings, c.store, c.client)
        ui.console.senders = {SENDER.name: SENDER}
        server = uvicorn.Server(
            uvicorn.Config(
                ui.app, host="127.0.0.1", port=web_port, lifespan="off", log_level="warning"
            )
        )
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:
                await asyncio.sleep(0.02)
            yield Telephony(c, ui, base)
        finally:
            server.should_exit = True
            await serving


def reached_on_first_attempt() -> Enrolment:
    """A patient whom the seeded model has answer the first check-in's first attempt."""
    instruments = ProgramCatalog(PROGRAMS).load("default-iop").aftercare.instruments
    aftercare = load_behaviour().aftercare  # the provider's patients' reach
    reach = (aftercare.reachability_low, aftercare.reachability_high)
    while True:
        enrolment = make_enrolment()
        reference = f"{enrolment.patient_id}/FU-D007/attempt-1"
        outcome, _ = seeded_answer(SEED, enrolment.patient_id, reference, instruments, 0.0, reach)
        if outcome is CallOutcome.reached:
            return enrolment


async def at_first_check_in(env: WorkflowEnvironment, c: Clinic, enrolment: Enrolment) -> Any:
    """Drive the journey into aftercare, then to just past its first check-in's due time."""
    with env.auto_time_skipping_disabled():
        handle = await c.enrol(enrolment)
        status, _ = await drive_journey(
            env,
            handle,
            choose=steady_attendance,
            until=lambda s: s.phase == Phase.aftercare and bool(s.follow_ups),
        )
        due = status.follow_ups[0].due_at
        await env.sleep(due - await env.get_current_time() + timedelta(minutes=1))
    return handle


async def first_check_in(handle: Any, within: float = 30.0) -> JourneyStatus:
    """The journey's status once its first check-in has an outcome (real time)."""
    for _ in range(int(within / 0.1)):
        status: JourneyStatus = await handle.query(PatientJourneyWorkflow.status)
        if status.follow_ups and status.follow_ups[0].outcome is not None:
            return status
        await asyncio.sleep(0.1)
    raise AssertionError("the first check-in has no outcome")


async def provider_health(base: str) -> dict[str, int]:
    import httpx

    async with httpx.AsyncClient() as http:
        return dict((await http.get(f"{base}/v1/health")).json())


@pytest.mark.slow  # a provider process, and a journey driven to aftercare
async def test_the_providers_callback_completes_a_check_in_and_a_duplicate_changes_nothing(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    enrolment = reached_on_first_attempt()
    pid = enrolment.patient_id
    async with through_the_provider(env, tmp_path, "--duplicate", "1") as t:
        with env.auto_time_skipping_disabled():
            handle = await at_first_check_in(env, t.clinic, enrolment)
            status = await first_check_in(handle)
            for _ in range(50):  # the callback's retry and re-send come after the first
                if (await provider_health(t.provider))["callbacks_sent"] >= 3:
                    break
                await asyncio.sleep(0.1)
            again: JourneyStatus = await handle.query(PatientJourneyWorkflow.status)
        health = await provider_health(t.provider)
        attempts = t.clinic.store.call_attempts(pid)
        log = t.ui.console.access.search()
    first = status.follow_ups[0]
    assert (first.outcome, first.attempts) == (CallOutcome.reached, 1)
    assert first.check_in is not None and first.check_in.bam is not None
    assert again.follow_ups == status.follow_ups  # the duplicates changed nothing
    assert health == {"calls": 1, "callbacks_sent": 3}  # each callback taken (2xx)
    (attempt,) = attempts
    assert (attempt.outcome, attempt.check_in) == (CallOutcome.reached, first.check_in)
    # The journey placed the call itself (no FollowUpCall child), and took the callback.
    assert t.clinic.store.call_placed_by(attempt.key) == f"journey-{pid}"
    taken = [e for e in log if e.actor == f"webhook:{SENDER.name}"]
    assert len(taken) == 3 and {e.outcome for e in taken} == {"allowed"}
    assert {e.patient_id for e in taken} <= {pid, None}  # a replayed answer names no one
    # No name, phone or birth date (a phone's digits with their spaces: the entries' seven
    # or so SHA-256 hashes are hex, and held "555" by chance about one run in ten).
    assert [phi for phi in ("Quinlan", "555 010", "1988-04-02") if phi in str(log)] == []


@pytest.mark.slow
async def test_a_missing_callback_counts_as_unreachable_and_the_next_attempt_calls_again(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    enrolment = make_enrolment()
    async with through_the_provider(env, tmp_path, "--silent", "1") as t:
        with env.auto_time_skipping_disabled():
            handle = await at_first_check_in(env, t.clinic, enrolment)
            for _ in range(100):  # the call placed: the attempt now waits for its word
                if (await provider_health(t.provider))["calls"] == 1:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # no callback comes
            assert t.clinic.store.call_attempts(enrolment.patient_id) == []
            await env.sleep(CALLBACK_WAIT + timedelta(seconds=1))
            for _ in range(100):
                if t.clinic.store.call_attempts(enrolment.patient_id):
                    break
                await asyncio.sleep(0.1)
            spacing = timedelta(days=2)  # the default program's attempt_spacing_days
            await env.sleep(spacing + timedelta(minutes=1))
            for _ in range(100):
                if (await provider_health(t.provider))["calls"] == 2:
                    break
                await asyncio.sleep(0.1)
            status: JourneyStatus = await handle.query(PatientJourneyWorkflow.status)
        health = await provider_health(t.provider)
        (attempt,) = t.clinic.store.call_attempts(enrolment.patient_id)
    assert (attempt.attempt, attempt.outcome) == (1, CallOutcome.unreachable)
    assert health == {"calls": 2, "callbacks_sent": 0}
    assert status.follow_ups[0].outcome is None  # still trying


def signed(body: bytes, event_id: str) -> dict[str, str]:
    import time

    ts = str(int(time.time()))
    return {
        "webhook-id": event_id,
        "webhook-timestamp": ts,
        "webhook-signature": signature(SENDER.secret, event_id, ts, body),
    }


async def test_callbacks_for_calls_nobody_placed_are_refused_without_phi(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Unknown patient, unknown call, a bad body, a completed call without answers: 4xx,
    logged with the opaque ID only; nothing changes."""
    enrolment = make_enrolment()
    async with clinic(env.client, tmp_path) as c:
        with env.auto_time_skipping_disabled():
            await c.enrol(enrolment)
            for _ in range(100):  # intake recorded
                if c.store.patient(enrolment.patient_id) is not None:
                    break
                await asyncio.sleep(0.05)
            ui = make_console(c.settings, c.store, c.client)
            ui.console.senders = {SENDER.name: SENDER}
            url = f"{API}/webhooks/{SENDER.name}"
            pid = enrolment.patient_id

            def event(reference: str, status: str = "no-answer", **more: Any) -> bytes:
                body = {"type": "call.completed", "call_id": "CA1", "reference": reference}
                return json.dumps(body | {"status": status} | more).encode()

            cases = {
                "unknown_patient": event("P-00000000/FU-D007/attempt-1"),
                "unknown_call": event(f"{pid}/FU-D007/attempt-1"),
                "not_a_reference": event("Avery Quinlan"),
                "no_answers": event(f"{pid}/FU-D007/attempt-1", "completed"),
                "not_json": b"{",
            }
            answers = {}
            async with ui.signed_in(None) as http:
                for n, (name, body) in enumerate(cases.items()):
                    answers[name] = await http.post(
                        url, content=body, headers=signed(body, f"e{n}")
                    )
    assert answers["unknown_patient"].status_code == 404
    assert answers["unknown_call"].status_code in (409, 422), answers["unknown_call"].text
    assert answers["not_a_reference"].status_code == 422
    assert "answers" in answers["no_answers"].json()["detail"]
    assert answers["not_json"].status_code == 422
    assert c.store.call_attempts(pid) == []
    assert "Avery" not in str(ui.console.access.search())
    assert follow_up_call_workflow_id(f"{pid}/FU-D007/attempt-1") == f"journey-{pid}-E1-FU-D007"
    assert follow_up_call_workflow_id(f"{pid}/E2-FU-D030/attempt-3") == f"journey-{pid}-E2-FU-D030"


def test_a_callback_goes_to_the_workflow_that_placed_its_call() -> None:
    """The journey, for a call it placed; a journey from before's FollowUpCall child, for a
    call the child placed or one placed before the store named who placed it."""
    pid = "P-7K2M9Q4D"
    placed = {
        f"{pid}/FU-D007/attempt-1": f"journey-{pid}",
        f"{pid}/E2-FU-D030/attempt-2": f"journey-{pid}-E2-FU-D030",
    }

    class Store:
        def patient(self, patient_id: str) -> Any:
            return SimpleNamespace(site_id="S-1", case_manager_id="CM-01")

        def call_attempt(self, reference: str) -> None:
            return None

        def call_placed_by(self, reference: str) -> str | None:
            return placed.get(reference)

    console = cast(Console, SimpleNamespace(store=Store()))

    def routed(reference: str) -> tuple[Any, str | None]:
        body = {"type": "call.completed", "call_id": "CA1", "reference": reference}
        raw = json.dumps(body | {"status": "busy"}).encode()
        event = _call_outcome(console, SENDER, raw, "cb-1")
        return event.update, event.workflow_id

    assert routed(f"{pid}/FU-D007/attempt-1") == (PatientJourneyWorkflow.call_outcome, None)
    assert routed(f"{pid}/E2-FU-D030/attempt-2") == (
        FollowUpCallWorkflow.call_outcome,
        f"journey-{pid}-E2-FU-D030",
    )
    assert routed(f"{pid}/FU-D060/attempt-1") == (
        FollowUpCallWorkflow.call_outcome,
        f"journey-{pid}-E1-FU-D060",
    )


@pytest.mark.slow
async def test_a_call_placed_again_with_its_reference_is_one_call(tmp_path: Path) -> None:
    """The provider's idempotency: a retried placing (same reference) is the same call,
    called back once; a refused request is TelephonyRefused (not retried)."""
    secret = tmp_path / "secret"
    secret.write_text(SENDER.secret)
    port = free_port()
    nowhere = f"http://127.0.0.1:{free_port()}/webhook"  # callbacks fail: nothing listens
    async with running_provider(
        port, nowhere, secret, tmp_path / "provider.log", "--busy-api", "0", "--delay", "0,0"
    ) as base:
        phone = HttpTelephony(base)
        reference = "P-7K2M9Q4D/FU-D007/attempt-1"
        first = await asyncio.to_thread(phone.place_call, reference, "P-7K2M9Q4D", "+1 555 0100")
        second = await asyncio.to_thread(phone.place_call, reference, "P-7K2M9Q4D", "+1 555 0100")
        with pytest.raises(TelephonyRefused):
            await asyncio.to_thread(phone.place_call, reference, "P-7K2M9Q4D", "")
        health = await provider_health(base)
    assert first == second and first.report is None
    assert health["calls"] == 1
