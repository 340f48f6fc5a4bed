"""The crash storm: a cohort runs on the real dev server (SQLite file) with a real worker
process, while the worker is SIGKILLed at random moments and the server is restarted. Then
every journey has completed, every attendance report sent during the storm is recorded
exactly once, and the store holds no duplicates. Part of the suite (~2 minutes); alone with
`make storm`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from cli.enrolment import start_journey
from clinical.requests import AttendanceReport
from clinical.status import JourneyStatus
from infra.codec import KeyRing
from infra.embedded_server import EmbeddedServer, free_port
from infra.settings import PROJECT_ROOT, load_settings
from infra.store import CareStore
from infra.temporal import connect
from simulation.case_manager import CaseManager
from simulation.patients import synthetic_cohort
from workflows.patient_journey import PatientJourneyWorkflow

pytestmark = [pytest.mark.storm, pytest.mark.slow, pytest.mark.timeout(900)]

PATIENTS = 50
KILLS = 10
SERVER_RESTARTS = 2
ANSWER = 5.0  # seconds: a call that gets no answer is tried again later


class Worker:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(PROJECT_ROOT / "worker.py")],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills += 1

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


async def case_manager(
    handle: WorkflowHandle[Any, Any], sent: dict[str, str], stop: asyncio.Event
) -> None:
    """Reports each session once it has happened, with a deterministic update ID, so a
    report retried after a crash is the same report."""
    manager = CaseManager(lambda n: "attended")  # for schedule conflicts, as the demo's do
    while not stop.is_set():
        try:
            status: JourneyStatus = await handle.query(
                PatientJourneyWorkflow.status, rpc_timeout=timedelta(seconds=ANSWER)
            )
        except RPCError:
            await asyncio.sleep(1)
            continue
        status = status.as_of(datetime.now(UTC))
        if status.phase.is_terminal:
            return
        with contextlib.suppress(Exception):  # a crash in between: looked at again
            await manager.resolve_schedule_conflict(handle, status)
        for s in status.sessions:
            if s.day > status.program_day or s.status.value != "scheduled" or s.session_id in sent:
                continue
            try:
                await handle.execute_update(
                    PatientJourneyWorkflow.record_attendance,
                    AttendanceReport(
                        case_manager_id=status.case_manager_id,
                        session_id=s.session_id,
                        status="attended",
                    ),
                    id=f"attendance-{s.session_id}",
                    rpc_timeout=timedelta(seconds=ANSWER),
                )
                sent[s.session_id] = "attended"
            except Exception:
                pass
        await asyncio.sleep(0.5)


async def diagnose(client: Client, stuck: list[WorkflowHandle[Any, Any]]) -> str:
    """What a journey that did not finish is doing: pending work and its last events."""
    from temporalio.api.common.v1 import WorkflowExecution
    from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest

    lines = []
    for handle in stuck:
        described = await client.workflow_service.describe_workflow_execution(
            DescribeWorkflowExecutionRequest(
                namespace=client.namespace, execution=WorkflowExecution(workflow_id=handle.id)
            )
        )
        history = await client.get_workflow_handle(handle.id).fetch_history()
        events = [e.WhichOneof("attributes") for e in history.events[-12:]]
        lines.append(
            f"{handle.id}: status {described.workflow_execution_info.status}, "
            f"pending activities {[a.activity_type.name for a in described.pending_activities]}"
            f" (attempts {[a.attempt for a in described.pending_activities]}), "
            f"pending children {[c.workflow_id for c in described.pending_children]}, "
            f"workflow task {described.pending_workflow_task}, last events {events}"
        )
    return "\n".join(lines)


async def test_crash_storm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    env = {
        **os.environ,
        "CAREPATH_DATA_DIR": str(data),
        "CAREPATH_PROGRAMS_DIR": str(Path(__file__).parent / "programs"),
        "CAREPATH_SERVER_PORT": str(free_port()),
        "CAREPATH_UI_PORT": str(free_port()),
        "CAREPATH_LOG_FORMAT": "json",
        "CAREPATH_SIMULATED_USE_RISK": "0",
    }
    for key, value in env.items():
        if key.startswith("CAREPATH_"):
            monkeypatch.setenv(key, value)
    settings = load_settings()
    KeyRing.load_or_create(settings.key_file)  # made once where the workers run, as deployed
    server = EmbeddedServer(data_dir=data, port=settings.server_port, ui_port=settings.ui_port)
    server.start()
    worker = Worker(env, data / "worker.log")
    worker.start()
    rng = random.Random(2026)
    started = time.monotonic()
    try:
        client: Client = await connect(settings)
        cohort = synthetic_cohort(PATIENTS, 5, "storm-iop")
        handles = [await start_journey(client, settings, e) for e in cohort]
        sent: dict[str, dict[str, str]] = {e.patient_id: {} for e in cohort}
        stop = asyncio.Event()
        managers = [
            asyncio.create_task(case_manager(h, sent[e.patient_id], stop))
            for h, e in zip(handles, cohort, strict=True)
        ]
        restarts_at = {3, 7}
        for n in range(KILLS):
            await asyncio.sleep(rng.uniform(1.0, 6.0))
            worker.kill()
            if n in restarts_at:
                server.stop()
                server.start()
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            worker.start()
        storm_over = time.monotonic() - started
        _, pending = await asyncio.wait(managers, timeout=420)
        stop.set()
        if pending:
            stuck = [h for h, m in zip(handles, managers, strict=True) if m in pending]
            print(await diagnose(client, stuck))
        assert not pending, f"{len(pending)} journeys still running 7 minutes after the storm"
        outcomes = [await h.result() for h in handles]
        code = worker.stop()
        worker.proc = None
    finally:
        if worker.proc is not None:
            worker.proc.kill()
            worker.proc.wait()
        server.stop()

    store = CareStore(settings.database_url)
    booked = store.appointments()
    audit = store.audit_trail(actions=["attendance_recorded"])
    duplicates = store.duplicate_counts()
    reports = sum(len(v) for v in sent.values())
    print(
        f"\ncrash storm: {PATIENTS} journeys, {worker.kills} worker kills, "
        f"{SERVER_RESTARTS} server restarts in {storm_over:.0f} s; all done after "
        f"{time.monotonic() - started:.0f} s; {reports} attendance reports acknowledged, "
        f"{len(audit)} recorded; {len(booked)} appointments; duplicates {duplicates}"
    )
    store.dispose()
    assert worker.kills == KILLS
    assert {o.outcome.value for o in outcomes} == {"completed"}
    assert code == 0, "the last worker stops cleanly on SIGTERM"
    assert duplicates == dict.fromkeys(duplicates, 0)
    # Every acknowledged report is reflected exactly once: one audit entry per session, and
    # the store's appointment says attended.
    per_session: dict[tuple[str, str], int] = {}
    for a in audit:
        session = (a.patient_id, str(a.detail["session_id"]))
        per_session[session] = per_session.get(session, 0) + 1
    assert max(per_session.values()) == 1
    status_of = {(r.patient_id, r.session_id): r.status for r in booked}
    for patient_id, reported in sent.items():
        for session_id in reported:
            assert per_session[(patient_id, session_id)] == 1
            assert status_of[(patient_id, session_id)] == "attended", (patient_id, session_id)
