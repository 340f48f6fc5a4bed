"""6. The console's pages and its attendance sheet.

Pages: `patients` active patients in the store (a site of them, 40 to a case manager, each
with a few weeks of sessions and an open task), served in-process (what the server spends,
not the network): a case manager's caseload, the site supervisor's caseload of all of them,
and a chart read from the store (no engine), `requests` of each; target p95 under 100 ms.

Sheet: `journeys` journeys on the dev server with their first session passed; a week's
attendance sheet sent through the console (sign-in session, CSRF, the access log, the form
built into the request) and the same sheet through the command line's client path
(`services.journeys.deliver`), alternating, in one run; target p99 ratio at most 1.2."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from argon2 import PasswordHasher

from bench.common import dev_server, latency_summary, program_dir
from bench.overhead import PROGRAM, TASK_QUEUE, first_run_ends, sleep_until, week_one
from clinical.assessment import PatientContact
from clinical.attendance import SessionStatus
from clinical.careplan import SessionSpec
from clinical.identifiers import new_patient_id
from clinical.phases import Phase
from clinical.requests import AttendanceSheet
from clinical.status import JourneyStatus
from infra.settings import Settings, load_settings
from infra.store import (
    AttendanceMark,
    CareEventFacts,
    CareStore,
    NewPatient,
    NewTask,
    PhaseChangeEntry,
)
from infra.temporal import keys_for
from services.journeys import deliver
from simulation.workers import quiet, worker_env, worker_process
from web.app import create_app
from web.security import SESSION_COOKIE, csrf_token
from web.serve import console_for
from workflows.patient_journey import PatientJourneyWorkflow

PASSWORD = "benchmark password"
CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
Send = Callable[[], Awaitable[Any]]


def fill_store(store: CareStore, patients: int, now: datetime) -> list[str]:
    """`patients` in the intensive phase at site north, 40 to a case manager, three weeks
    of four sessions (two weeks marked), an open outreach task each."""
    ids = []
    for n in range(patients):
        pid, cm = new_patient_id(), f"CM-{n // 40:02d}"
        enrolled = now - timedelta(days=21)
        store.record_intake(
            NewPatient(
                patient_id=pid,
                case_manager_id=cm,
                site_id="north",
                program_id="default-iop",
                enrolled_at=enrolled,
                level="2.1",
                risk="moderate",
                contact=PatientContact(
                    given_name=f"Given{n}",
                    family_name=f"Family{n}",
                    date_of_birth=date(1980, 1, 1),
                    phone="+1 555 010 0000",
                ),
                assessment_json="{}",
                care_plan_json="{}",
            ),
            [],
            [],
        )
        store.record_phase_change(
            PhaseChangeEntry(f"{pid}/phase/1", pid, Phase.intensive, enrolled, "placed"),
            case_manager_id=cm,
            level="2.1",
            risk="moderate",
        )
        sessions = [
            SessionSpec(
                session_id=f"INT1-W{week:02d}-S{s}",
                phase=Phase.intensive,
                week=week,
                level="2.1",
                day=7.0 * (week - 1) + 2 * s,
                starts_at=enrolled + timedelta(days=7 * (week - 1) + 2 * s),
                hours=3.0,
                session_type="group_therapy",
                modality="in_person",
            )
            for week in (1, 2, 3)
            for s in range(4)
        ]
        store.book_week(pid, sessions)
        marks = [
            AttendanceMark(s.session_id, SessionStatus.attended, cm) for s in sessions if s.week < 3
        ]
        store.record_care_events(CareEventFacts(patient_id=pid, session_changes=marks))
        store.open_task(
            NewTask(
                key=f"{pid}/task/outreach/1",
                patient_id=pid,
                case_manager_id=cm,
                kind="outreach",
                detail="two sessions missed",
                due_at=now + timedelta(days=1),
            )
        )
        ids.append(pid)
    return ids


async def _timed(send: Send, n: int) -> list[float]:
    seconds = []
    for _ in range(n):
        started = time.perf_counter()
        await send()
        seconds.append(time.perf_counter() - started)
    return seconds


async def _signed_in(app: Any, username: str) -> httpx.AsyncClient:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")
    answer = await http.post("/sign-in", data={"username": username, "password": PASSWORD})
    assert answer.status_code == 303, answer.text
    return http


async def pages(patients: int, requests: int, workdir: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    settings = dataclasses.replace(load_settings(), database_url=f"sqlite:///{workdir}/c.db")
    store = CareStore(settings.database_url)
    store.migrate()
    now = datetime.now(UTC)
    ids = fill_store(store, patients, now)
    console = console_for(settings, store, connect_to=_no_engine, hasher=CHEAP)
    console.identity.add_user("cm", "case_manager", PASSWORD, now, "north", "CM-00")
    console.identity.add_user("sup", "supervisor", PASSWORD, now, "north")
    app = create_app(console)
    figures: dict[str, Any] = {"patients": patients, "requests": requests}
    try:
        cm, sup = await _signed_in(app, "cm"), await _signed_in(app, "sup")

        async def get(http: httpx.AsyncClient, path: str) -> None:
            answer = await http.get(path)
            assert answer.status_code == 200, (path, answer.status_code)

        for name, http, path in (
            ("caseload_case_manager", cm, "/caseload"),
            ("caseload_site", sup, "/caseload"),
            ("chart", cm, f"/patients/{ids[0]}"),
            ("inbox_case_manager", cm, "/inbox"),
        ):
            await get(http, path)  # warm
            send = functools.partial(get, http, path)
            figures[name] = latency_summary(await _timed(send, requests))
        await cm.aclose()
        await sup.aclose()
    finally:
        store.dispose()
    figures["target_p95_ms"] = 100
    return figures


async def _no_engine() -> Any:
    from services.journeys import RequestFailed, Why

    raise RequestFailed("no engine in this benchmark", Why.unreachable)


async def sheet(journeys: int, rounds: int, workdir: Path) -> dict[str, Any]:
    """The sheet through the console and through the command line's client, alternating."""
    from clinical.assessment import Enrolment
    from services.enrolment import enrol, journey_input
    from simulation.clinic import enrolment_data

    programs = program_dir(workdir / "programs", 20.0)
    settings = dataclasses.replace(
        load_settings(),
        programs_dir=programs,
        task_queue=TASK_QUEUE,
        data_dir=workdir,
        keys_file=workdir / "keys.json",
        database_url=f"sqlite:///{workdir / 'care.db'}",
    )
    async with dev_server(workdir) as (server, client):
        env = worker_env(server, workdir, programs, TASK_QUEUE)
        async with worker_process(client, env) as worker:
            started = []
            for _ in range(journeys):
                enrolment = Enrolment.model_validate(enrolment_data() | {"program_id": PROGRAM})
                started.append(await enrol(client, TASK_QUEUE, journey_input(enrolment, settings)))
            await asyncio.gather(*(first_run_ends(h) for h in started))
            sheets = await asyncio.gather(*(_sheet_of(client, h) for h in started))
            await quiet(worker.pid)
            store = CareStore(settings.database_url, keys=keys_for(settings))
            try:
                return await _alternate(settings, store, client, sheets, rounds)
            finally:
                store.dispose()


async def _sheet_of(client: Any, started: Any) -> tuple[str, AttendanceSheet]:
    handle = client.get_workflow_handle(started.id)
    status: JourneyStatus = await handle.query(PatientJourneyWorkflow.status)
    first = week_one(status)[0]
    await sleep_until(status.clock.instant(first.day))
    marks = [{"session_id": first.session_id, "status": "attended"}]
    return status.patient_id, AttendanceSheet(case_manager_id="CM-01", marks=marks)


async def _alternate(
    settings: Settings,
    store: CareStore,
    client: Any,
    sheets: list[tuple[str, AttendanceSheet]],
    rounds: int,
) -> dict[str, Any]:
    async def connect() -> Any:
        return client

    console = console_for(settings, store, connect_to=connect, hasher=CHEAP)
    console.identity.add_user("cm01", "case_manager", PASSWORD, datetime.now(UTC), "north", "CM-01")
    app = create_app(console)
    http = await _signed_in(app, "cm01")
    csrf = csrf_token(http.cookies[SESSION_COOKIE])
    via_console, via_cli = [], []
    try:
        for r in range(rounds):
            pid, sheet = sheets[r % len(sheets)]
            form = {"csrf": csrf, **{f"session:{m.session_id}": m.status for m in sheet.marks}}
            started = time.perf_counter()
            answer = await http.post(f"/patients/{pid}/attendance", data=form)
            via_console.append(time.perf_counter() - started)
            assert answer.status_code == 200, answer.text
            started = time.perf_counter()
            await deliver(
                client, TASK_QUEUE, pid, PatientJourneyWorkflow.record_attendance_sheet, sheet
            )
            via_cli.append(time.perf_counter() - started)
    finally:
        await http.aclose()
    console_figures, cli_figures = latency_summary(via_console), latency_summary(via_cli)
    return {
        "journeys": len(sheets),
        "sheets_each_way": rounds,
        "console": console_figures,
        "command_line_client": cli_figures,
        "p99_ratio": console_figures["p99_ms"] / cli_figures["p99_ms"],
        "target_p99_ratio": 1.2,
    }


async def run(
    patients: int, requests: int, journeys: int, rounds: int, scratch: Path
) -> dict[str, Any]:
    return {
        "pages": await pages(patients, requests, scratch / "pages"),
        "sheet": await sheet(journeys, rounds, scratch / "sheet"),
    }
