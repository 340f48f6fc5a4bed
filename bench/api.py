"""6. The API and webhooks against bare Temporal, in the same run and under the latency
benchmark's load (`active` journeys in the intensive phase on the dev server, the production
worker and a console process serving the API, as in production):

- an attendance sheet through the API (HTTP, bearer token, access log, idempotency key)
  against the same update sent straight to Temporal on the same journeys, one at a time,
  alternating which goes first, each to a journey neither side touched lately: p99 ratio
  (target at most 1.2);
- signed EHR webhook events (an Appointment fulfilled) ingested at `concurrency` at once,
  against signals to bare workflows at the same concurrency: rate ratio (target at least
  0.8). A webhook is answered 202 once its signal is stored in the journey's history, as a
  bare signal is answered. Beside them, not a target: the same attendance as updates sent
  straight to Temporal on the same journeys at the same concurrency (what a webhook waited
  for before it signalled: the journey has applied the event), the webhook's signal sent
  straight to the journeys, and the same events sent as FHIR Bundles of `BUNDLE`
  Appointments a webhook (web.webhook_bundles), as many events in flight: against the bare
  signals too, the same target."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client, WorkflowHandle

from bench.bare import BareJourney, BareScript, BareStep
from bench.common import dev_server, latency_summary, program_dir
from bench.overhead import PROGRAM, TASK_QUEUE, first_run_ends, sleep_until, week_one
from bench.wire import Wire, wire
from clinical.assessment import Enrolment
from clinical.identifiers import journey_workflow_id
from clinical.inbound import AttendanceEvent
from clinical.requests import AttendanceMark, AttendanceSheet
from clinical.status import JourneyStatus
from infra.embedded_server import free_port
from infra.settings import PROJECT_ROOT, load_settings
from infra.store import CareStore
from infra.store.api_clients import ApiClients
from infra.webhooks import add_sender, signature
from simulation.cohort import bounded
from simulation.workers import cpu_seconds, quiet, worker_env, worker_process
from web.security import RateLimit
from workflows.patient_journey import PatientJourneyWorkflow

BARE_QUEUE = "bench-bare"
BUNDLE = 10
"""Appointments in each webhook of the bundled run (an EHR's notification of a morning)."""
# Sheets are sent no faster than a client's rate limit lets them through (a burst of 60,
# then 10 a second): past the burst, a faster sender measures 429s, not the API.
SHEET_EVERY = 60 / RateLimit().per_minute


@asynccontextmanager
async def console_process(env: dict[str, str]) -> AsyncIterator[tuple[str, int]]:
    """`starter.py console` with the worker's settings; its base URL and PID once it
    answers; stopped by its PID whatever happens."""
    port = free_port()
    log = Path(env["CAREPATH_DATA_DIR"]) / "console.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "starter.py", "console"],
            env=env | {"CAREPATH_CONSOLE_PORT": str(port)},
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(600):
                if proc.poll() is not None:
                    raise RuntimeError(f"the console exited with code {proc.returncode}; see {log}")
                with suppress(httpx.TransportError):
                    if (await http.get(f"{base}/api/v1/openapi.json")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _first_session(client: Client, started: WorkflowHandle[Any, Any]) -> tuple[str, str, str]:
    """(patient, session, case manager) once the journey's first session has happened."""
    handle = client.get_workflow_handle(started.id)
    status: JourneyStatus = await handle.query(PatientJourneyWorkflow.status)
    first = week_one(status)[0]
    await sleep_until(status.clock.instant(first.day))
    return status.patient_id, first.session_id, status.case_manager_id


async def run(
    active: int,
    measured: int,
    per_round: int,
    events: int,
    concurrency: int,
    seconds_per_day: float,
    scratch: Path,
) -> dict[str, Any]:
    from cli.enrolment import start_journey
    from simulation.clinic import enrolment_data

    workdir = scratch / "api"
    programs = program_dir(workdir / "programs", seconds_per_day, group_tracks=False)
    settings = dataclasses.replace(load_settings(), programs_dir=programs, task_queue=TASK_QUEUE)

    def enrolment(program: str) -> Enrolment:
        return Enrolment.model_validate(enrolment_data() | {"program_id": program})

    cpu: dict[str, dict[str, float]] = {}
    async with dev_server(workdir) as (server, client):
        env = worker_env(server, workdir, programs, TASK_QUEUE)
        bare_env = env | {"CAREPATH_TASK_QUEUE": BARE_QUEUE}
        async with (
            worker_process(client, env) as worker,
            worker_process(client, bare_env, bare=True) as bare_worker,
        ):
            caseload = [enrolment("default-iop") for _ in range(active - measured)]
            await bounded([functools.partial(start_journey, client, settings, e) for e in caseload])
            started = await bounded(
                [lambda: start_journey(client, settings, enrolment(PROGRAM))] * measured
            )
            await asyncio.gather(*(first_run_ends(h) for h in started))
            firsts = await asyncio.gather(*(_first_session(client, h) for h in started))
            script = BareScript(runs=[[BareStep(timer_seconds=timedelta(days=7).total_seconds())]])
            bare = [
                await client.start_workflow(
                    BareJourney.run, script, id=f"bare-{n:05d}", task_queue=BARE_QUEUE
                )
                for n in range(measured)
            ]
            store = CareStore(env["CAREPATH_DATABASE_URL"])
            _, token = ApiClients(store.engine).add(
                "bench", "attendance:write", "north", datetime.now(UTC)
            )
            store.dispose()
            sender = add_sender(
                Path(env["CAREPATH_DATA_DIR"]) / "webhook-senders.json",
                "bench-ehr",
                "ehr-appointments",
                "north",
            )
            async with (
                console_process(env) as (base, console_pid),
                wire(base, concurrency) as http,
            ):
                await quiet(worker.pid)
                await quiet(bare_worker.pid)
                api_seconds: list[float] = []
                update_seconds: list[float] = []
                # Each process's own CPU for each part: what the API costs, less disturbed
                # by whatever else the machine runs than a latency is, and where the rest
                # of the two cores went (the sender stands in for another machine).
                meter = CpuMeter(
                    {
                        "api": console_pid,
                        "sender": os.getpid(),
                        "server": server.pid() or 0,
                        "worker": worker.pid,
                        "bare_worker": bare_worker.pid,
                    }
                )
                auth = {"Authorization": f"Bearer {token}"}
                for i in range(per_round):
                    paced = asyncio.create_task(asyncio.sleep(SHEET_EVERY))
                    # Each side's sheet goes to a journey neither touched for a while (half
                    # the measured journeys apart), first one side then the other: the
                    # second call of a pair on one journey would wait for what the first
                    # left it doing.
                    pair = [
                        (
                            _bare_sheet(client, firsts[(i + measured // 2) % measured]),
                            update_seconds,
                        ),
                        (_api_sheet(http, auth, firsts[i % measured], f"sheet-{i}"), api_seconds),
                    ]
                    if i % 2:
                        pair.reverse()
                    for send, seconds in pair:
                        began = time.perf_counter()
                        await send()
                        seconds.append(time.perf_counter() - began)
                    await paced
                cpu["sheets"] = await settled(meter, per_round)
                webhook_rate = await _webhook_rate(http, sender.secret, firsts, events, concurrency)
                cpu["webhooks"] = await settled(meter, events)
                bundled_rate = await _webhook_rate(
                    http, sender.secret, firsts, events, concurrency, BUNDLE
                )
                cpu["bundled_webhooks"] = await settled(meter, events)
                update_rate = await _update_rate(client, firsts, events, concurrency)
                cpu["journey_updates"] = await settled(meter, events)
                signal_rate = await _signal_rate(client, bare, events, concurrency)
                cpu["bare_signals"] = await settled(meter, events)
                journey_signal_rate = await _journey_signal_rate(
                    client, firsts, events, concurrency
                )
                cpu["journey_signals"] = await settled(meter, events)
    api = latency_summary(api_seconds)
    update = latency_summary(update_seconds)
    return {
        "active": active,
        "measured_workflows": measured,
        "sheets": per_round,
        "api_sheet": api,
        "bare_sheet_update": update,
        "p99_ratio": api["p99_ms"] / update["p99_ms"],
        "console_cpu_ms_per_sheet": cpu["sheets"]["api"],
        "console_cpu_ms_per_event": cpu["webhooks"]["api"],
        "target_p99_ratio": 1.2,
        "events": events,
        "concurrency": concurrency,
        "webhook_events_per_s": webhook_rate,
        "bare_signals_per_s": signal_rate,
        "ingest_ratio": webhook_rate / signal_rate,
        "target_ingest_ratio": 0.8,
        "journey_updates_per_s": update_rate,
        "webhook_to_update_ratio": webhook_rate / update_rate,
        "journey_signals_per_s": journey_signal_rate,
        "webhook_to_journey_signal_ratio": webhook_rate / journey_signal_rate,
        "bundle": BUNDLE,
        "bundled_events_per_s": bundled_rate,
        "bundled_ingest_ratio": bundled_rate / signal_rate,
        "console_cpu_ms_per_bundled_event": cpu["bundled_webhooks"]["api"],
        "cpu_ms_per_call": cpu,
    }


def _bare_sheet(client: Client, first: tuple[str, str, str]) -> Callable[[], Awaitable[Any]]:
    """The attendance sheet as an update sent straight to the journey."""
    patient, session, cm = first
    sheet = AttendanceSheet(
        case_manager_id=cm, marks=[AttendanceMark(session_id=session, status="attended")]
    )
    handle = client.get_workflow_handle(journey_workflow_id(patient))
    return lambda: handle.execute_update(PatientJourneyWorkflow.record_attendance_sheet, sheet)


def _api_sheet(
    http: Wire, auth: dict[str, str], first: tuple[str, str, str], key: str
) -> Callable[[], Awaitable[Any]]:
    """The same sheet through the API, its idempotency key `key`."""
    patient, session, _ = first
    body = json.dumps({"marks": [{"session_id": session, "status": "attended"}]}).encode()

    async def send() -> None:
        answer = await http.post(
            f"/api/v1/patients/{patient}/attendance", body, auth | {"Idempotency-Key": key}
        )
        assert answer.status_code == 200, answer.text

    return send


class CpuMeter:
    """CPU milliseconds a call each process spent since the last lap (a PID of 0: none)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.last = self._read()

    def _read(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) if pid else 0.0 for name, pid in self.pids.items()}

    def lap(self, calls: int) -> dict[str, float]:
        now = self._read()
        spent = {name: 1000 * (now[name] - self.last[name]) / calls for name in now}
        self.last = now
        return spent | {"total": sum(spent.values())}


async def settled(meter: CpuMeter, calls: int) -> dict[str, float]:
    """The lap once the workers are idle again: a signal is answered once stored, and its
    workflow applies it after; that work is the signal's (in its CPU), and must not slow
    the next part (its rate)."""
    await quiet(meter.pids["worker"])
    await quiet(meter.pids["bare_worker"])
    return meter.lap(calls)


async def _at_once(sends: list[Any], concurrency: int) -> float:
    """Sends per second, `concurrency` in flight."""
    gate = asyncio.Semaphore(concurrency)

    async def one(send: Any) -> None:
        async with gate:
            await send()

    began = time.perf_counter()
    await asyncio.gather(*(one(s) for s in sends))
    return len(sends) / (time.perf_counter() - began)


async def _webhook_rate(
    http: Wire,
    secret: str,
    firsts: list[tuple[str, str, str]],
    events: int,
    concurrency: int,
    bundle: int = 1,
) -> float:
    """Events ingested a second, each webhook one Appointment, or a Bundle of `bundle`."""
    from operators.fhir import RECORD_KEY_SYSTEM

    def appointment(n: int) -> dict[str, Any]:
        patient, session, _ = firsts[n % len(firsts)]
        return {
            "resourceType": "Appointment",
            "status": "fulfilled",
            "identifier": [{"system": RECORD_KEY_SYSTEM, "value": f"{patient}/{session}"}],
        }

    def event(n: int) -> Any:
        # A notification of `bundle` events (web.webhook_bundles), or a single Appointment.
        resource = (
            {
                "resourceType": "Bundle",
                "type": "batch",
                "entry": [{"resource": appointment(n * bundle + i)} for i in range(bundle)],
            }
            if bundle > 1
            else appointment(n)
        )
        body = json.dumps(resource).encode()
        event_id = f"evt-{bundle}-{n}"

        async def send() -> None:
            ts = str(int(time.time()))
            headers = {
                "webhook-id": event_id,
                "webhook-timestamp": ts,
                "webhook-signature": signature(secret, event_id, ts, body),
            }
            answer = await http.post("/api/v1/webhooks/bench-ehr", body, headers)
            assert answer.status_code == 202, answer.text
            assert (
                bundle == 1 or answer.json()["message"] == f"accepted {bundle} of {bundle} events"
            )

        return send

    # As many events in flight as the signals' `concurrency`: a bundle's are signalled at once.
    sends = [event(n) for n in range(events // bundle)]
    return bundle * await _at_once(sends, max(1, concurrency // bundle))


async def _update_rate(
    client: Client, firsts: list[tuple[str, str, str]], events: int, concurrency: int
) -> float:
    """The webhook's attendance update, straight to the journey (no HTTP, no store)."""

    sends = [_bare_sheet(client, firsts[n % len(firsts)]) for n in range(events)]
    return await _at_once(sends, concurrency)


async def _journey_signal_rate(
    client: Client, firsts: list[tuple[str, str, str]], events: int, concurrency: int
) -> float:
    """The webhook's signal, event and all, straight to the same journeys (no HTTP, no
    signature, no store): what the door itself costs, the journeys' own work alike."""

    def send(n: int) -> Any:
        patient, session, _ = firsts[n % len(firsts)]
        event = AttendanceEvent(
            event_id=f"direct-{n}", sender="bench-direct", session_id=session, status="attended"
        )
        handle = client.get_workflow_handle(journey_workflow_id(patient))
        return lambda: handle.signal(PatientJourneyWorkflow.attendance_event, event)

    return await _at_once([send(n) for n in range(events)], concurrency)


async def _signal_rate(
    client: Client, bare: list[WorkflowHandle[Any, Any]], events: int, concurrency: int
) -> float:
    def send(n: int) -> Any:
        return lambda: bare[n % len(bare)].signal(BareJourney.note, n)

    return await _at_once([send(n) for n in range(events)], concurrency)
