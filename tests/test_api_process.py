"""A POST retried with its Idempotency-Key after the API's process was killed mid-request
acts once: the console runs as a real process (`starter.py console`, uvicorn) beside the
time-skipping server, is SIGKILLed while it carries out an enrolment and then a referral,
and a new process answers the retries. Neither request can be carried out twice: a second
enrolment or referral of the same patient is refused (409), so a retry that acted again
would answer 409, not the first answer."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from infra.embedded_server import free_port
from infra.store.api_clients import SCOPES, ApiClients
from tests.support import OPEN_SITES, TEST_KEYS_FILE, clinic, enrolment_data
from web.api_security import API

ROOT = Path(__file__).resolve().parent.parent
START_WITHIN = 30.0  # seconds for a console process to answer (imports on a busy machine)


@asynccontextmanager
async def console_process(
    environ: dict[str, str], base: str
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A console process, answering; killed (if still alive) and reaped on the way out."""
    process = subprocess.Popen(
        [sys.executable, "starter.py", "console"],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(int(START_WITHIN / 0.1)):
                assert process.poll() is None, "the console process ended at start"
                with suppress(httpx.TransportError):
                    if (await http.get(f"{base}{API}/openapi.json")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the console process did not answer")
        yield process
    finally:
        process.kill()
        process.wait()


@pytest.mark.slow  # console processes started four times over
async def test_a_post_retried_after_its_process_was_killed_acts_once(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with clinic(env.client, tmp_path) as c:
        _, token = ApiClients(c.store.engine).add(
            "ehr", ",".join(SCOPES), "north", await env.get_current_time()
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        environ = os.environ | {
            "CAREPATH_DATA_DIR": str(tmp_path),
            "CAREPATH_DATABASE_URL": c.settings.database_url,
            "CAREPATH_TASK_QUEUE": c.settings.task_queue,
            "CAREPATH_KEYS_FILE": str(TEST_KEYS_FILE),
            "CAREPATH_SITES_FILE": str(OPEN_SITES),
            "CAREPATH_CONSOLE_PORT": str(port),
            "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        }
        auth = {"Authorization": f"Bearer {token}"}
        answers: list[tuple[str, float, int]] = []
        # Killed at once, and a little later: before or after the key is recorded, the
        # update handed over, or its answer written; whichever, the retry acts once.
        for delay in (0.02, 0.15):
            enrolment = enrolment_data(social_needs=[])
            pid = enrolment["patient_id"]
            requests = [
                ("enrol", f"{API}/patients", enrolment, 201),
                ("refer", f"{API}/patients/{pid}/referrals", {"need": "housing"}, 200),
            ]
            for what, path, body, expected in requests:
                key = {"Idempotency-Key": f"{what}-{pid}"}
                async with console_process(environ, base) as process, httpx.AsyncClient() as http:
                    sent = asyncio.create_task(
                        http.post(base + path, json=body, headers=auth | key)
                    )
                    await asyncio.sleep(delay)
                    process.kill()
                    process.wait()
                    with suppress(httpx.TransportError):
                        await sent
                async with console_process(environ, base), httpx.AsyncClient() as http:
                    retried = await http.post(
                        base + path, json=body, headers=auth | key, timeout=30
                    )
                    again = await http.post(base + path, json=body, headers=auth, timeout=30)
                answers.append((what, delay, retried.status_code))
                assert retried.status_code == expected, (what, delay, retried.text)
                assert again.status_code == 409, (what, delay, again.text)  # a new request: refused
            status = await c.client.get_workflow_handle(f"journey-{pid}").query("status")
            assert [r["need"] for r in status["referrals"]] == ["housing"]
    assert len(answers) == 4
