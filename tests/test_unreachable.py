"""When the Temporal server is not there: the CLI says so in one line with exit code 4,
and a worker waits for it, connects when it comes, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.embedded_server import EmbeddedServer, free_port
from infra.settings import PROJECT_ROOT
from tests.support import run_starter

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def environment(data: Path, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "CAREPATH_DATA_DIR": str(data),
        "CAREPATH_SERVER_PORT": str(port),
        "CAREPATH_UI_PORT": str(free_port()),
        "CAREPATH_LOG_FORMAT": "json",
    }


def test_the_cli_says_the_server_is_unreachable_in_one_line(tmp_path: Path) -> None:
    env = environment(tmp_path, free_port())
    assert run_starter(env, "keys").returncode == 0
    for args in (["status", "P-7K2M9Q4D"], ["list"], ["enrol", "--generate"]):
        result = run_starter(env, *args)
        assert result.returncode == 4, (args, result.stderr)
        assert result.stderr.startswith("error: cannot reach the Temporal server"), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr


def test_a_worker_waits_for_the_server_then_connects(tmp_path: Path) -> None:
    port = free_port()
    env = environment(tmp_path, port)
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        worker = subprocess.Popen(
            [sys.executable, str(PROJECT_ROOT / "worker.py")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
        )
    server = EmbeddedServer(data_dir=tmp_path, port=port, ui=False)
    try:
        deadline = time.monotonic() + 30
        while "temporal_unreachable" not in log.read_text():
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the worker never said it was waiting"
            time.sleep(0.2)
        server.start()
        deadline = time.monotonic() + 60
        while "worker_started" not in log.read_text():
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the worker never connected"
            time.sleep(0.2)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        server.stop()
    text = log.read_text()
    assert "Traceback" not in text and "worker_stopped" in text


def test_with_the_worker_down_status_reads_the_store_and_says_the_engine_is_down(
    tmp_path: Path,
) -> None:
    """The server runs, no worker does: `status` answers from the store, with how fresh it
    is, and exit 4; an action is refused, exit 4, naming the engine (neither waits for a
    worker that is not there)."""
    from infra.store import CareStore
    from tests.test_hardening import new_patient

    port = free_port()
    env = environment(tmp_path, port)
    store = CareStore(f"sqlite:///{tmp_path / 'carepath.db'}")
    store.migrate()
    assert store.record_intake(new_patient(), audit=[], consents=[])  # P-7K2M9Q4D, in intake
    store.dispose()
    server = EmbeddedServer(data_dir=tmp_path, port=port, ui=False)
    server.start()
    try:

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return run_starter(env, *args)

        assert cli("keys").returncode == 0
        status = cli("status", "P-7K2M9Q4D")
        json_status = cli("status", "P-7K2M9Q4D", "--json")
        action = cli("discharge", "P-7K2M9Q4D", "--reason", "withdrew", "--case-manager", "CM-01")
    finally:
        server.stop()
    assert status.returncode == 4, status.stderr
    assert "P-7K2M9Q4D intake" in status.stdout and "as the store knew it at" in status.stdout
    assert status.stderr.startswith("error: the engine is not running")
    assert len(status.stderr.strip().splitlines()) == 1
    assert json_status.returncode == 4
    import json

    shown = json.loads(json_status.stdout)
    assert (shown["source"], shown["phase"]) == ("store", "intake")
    assert "given_name" not in shown and "Avery" not in json_status.stdout
    assert action.returncode == 4 and "the engine is not running" in action.stderr
