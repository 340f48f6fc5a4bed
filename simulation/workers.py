"""The clinic's worker in a process of its own, pointed at a server, store and keys of a
run's own (the benchmarks and the what-if simulations), and the CPU time a process has
used. Every process started here is stopped by its PID, also on Ctrl-C or an exception."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client

from infra.embedded_server import EmbeddedServer
from infra.settings import PROJECT_ROOT
from infra.visibility import ALL_KEYS

# --- CPU time ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# --- a worker process ------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    pid: int
    task_queue: str
    log: Path

    def memory_kib(self) -> dict[str, int]:
        """The worker's resident memory now (VmRSS) and at its peak (VmHWM), in KiB."""
        figures: dict[str, int] = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    figures[name] = int(value.split()[0])
        return figures


async def quiet(pid: int, idle_share: float = 0.03, within: float = 900.0) -> None:
    """Wait until a process has been (nearly) idle for a second: a worker has started, or a
    caseload has settled on its timers."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        await asyncio.sleep(1.0)
        if cpu_seconds(pid) - before < idle_share:
            return
    raise TimeoutError(f"process {pid} still busy after {within:.0f} s")


def worker_env(
    server: EmbeddedServer | str, data_dir: Path, programs: Path, task_queue: str, **extra: str
) -> dict[str, str]:
    """The production worker's settings, pointed at this run's server (or address), store
    and keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAREPATH_", "TEMPORAL_"))}
    env.update(
        {
            "TEMPORAL_ADDRESS": server if isinstance(server, str) else server.address,
            "CAREPATH_DATA_DIR": str(data_dir),
            "CAREPATH_KEYS_FILE": str(data_dir / "keys.json"),
            "CAREPATH_PROGRAMS_DIR": str(programs),
            "CAREPATH_DATABASE_URL": f"sqlite:///{data_dir / 'care.db'}",
            "CAREPATH_TASK_QUEUE": task_queue,
            "CAREPATH_LOG_LEVEL": "warning",
            # A cohort that reports no use: a relapse would send a patient round again.
            "CAREPATH_SIMULATED_USE_RISK": "0",
        }
    )
    env.update(extra)
    return env


def simulation_worker(env: dict[str, str]) -> dict[str, str]:
    """A simulation's worker (a what-if's, the cohort benchmark's): the same worker and
    workflows, run without the workflow sandbox (the sandboxed tests and the replay gate
    check these workflows; the sandbox is about a fifth of a simulation worker's CPU), and
    with the bytecode of what it imports cached across runs in the user's temporary
    directory (with PYTHONDONTWRITEBYTECODE set, as here, each worker compiled CarePath's
    modules twice at start: to import them and to hash them for its build ID); its workflow
    tasks on its event loop, not handed to threads, and its collector frozen after start
    with higher thresholds (together 8-12% of its CPU, BENCHMARKS.md), its synchronous
    activities called inline there too (`CAREPATH_ACTIVITY_THREADS`); its deadlock
    detector, were it put back on threads, after a minute (`SIMULATION_DEADLOCK_TIMEOUT`); and
    a cache of every journey its server holds (`SIMULATION_CACHE`)."""
    cache = Path(tempfile.gettempdir()) / f"carepath-bytecode-{os.getuid()}"
    variables = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    variables.setdefault("PYTHONPYCACHEPREFIX", str(cache))
    variables["CAREPATH_WORKFLOW_SANDBOX"] = "off"
    variables.setdefault("CAREPATH_DEADLOCK_TIMEOUT", str(SIMULATION_DEADLOCK_TIMEOUT))
    variables.setdefault("CAREPATH_WORKFLOW_THREADS", "off")
    variables.setdefault("CAREPATH_ACTIVITY_THREADS", "off")
    variables.setdefault("CAREPATH_GC_TUNING", "on")
    variables.setdefault("CAREPATH_MAX_CACHED_WORKFLOWS", str(SIMULATION_CACHE))
    return variables


SIMULATION_CACHE = 3000
"""A simulation worker's workflow cache: every journey its server holds (a what-if's
servers take up to 2,500 patients each, a cohort benchmark's shards all their patients at
once). With the clinic's 1,000, a server of 2,500 journeys in treatment together would
evict and replay journeys on every clock step; about 300 KiB each (BENCHMARKS.md), so
under a gigabyte a worker."""


SIMULATION_DEADLOCK_TIMEOUT = 60
"""A simulation worker's deadlock detector, in seconds (the SDK's 2 s otherwise): a full
garbage collection of a worker holding hundreds of journeys stops every thread for 0.7-1.2 s
on a machine at load 14 (300 patients; 500 failed a task once), and a workflow task caught
in it failed as a potential deadlock ([TMPRL1101]). A real deadlock still fails its task,
after a minute (BENCHMARKS.md, what-if section)."""


@asynccontextmanager
async def worker_process(
    client: Client, env: dict[str, str], bare: bool = False, number: int = 1
) -> AsyncIterator[WorkerProcess]:
    """`worker.py` (or the bare reference's worker, identically configured) in its own
    process, so its CPU and memory are its own. Ready once the task queue has pollers and
    the process has gone idle (a server remembers an earlier worker's pollers for a while);
    stopped by its PID (SIGTERM, then SIGKILL) whatever happens."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "bench.bare"] if bare else [sys.executable, "worker.py"]
    task_queue = env["CAREPATH_TASK_QUEUE"]
    name = f"worker-{'bare' if bare else 'carepath'}" + (f"-{number}" if number > 1 else "")
    log = Path(env["CAREPATH_DATA_DIR"]) / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            command, env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while not await _polling(client, task_queue):
            if proc.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()[-1:]
                raise RuntimeError(f"the worker exited with code {proc.returncode}: {tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the worker did not poll within 60 s; see {log}")
            await asyncio.sleep(0.1)
        await quiet(proc.pid)
        body = asyncio.current_task()
        assert body is not None
        watch = asyncio.create_task(_cancel_when_gone(proc, body))
        try:
            yield WorkerProcess(pid=proc.pid, task_queue=task_queue, log=log)
        except BaseException as exc:
            if not watch.done() or watch.cancelled():
                raise
            body.uncancel()  # our own cancellation, handled here
            raise RuntimeError(
                f"the worker exited with code {proc.returncode} while in use; see {log}"
            ) from exc
        finally:
            watch.cancel()
    finally:
        # Waited for on the event loop, so a run's other workers are told at once too.
        proc.send_signal(signal.SIGTERM)
        try:
            deadline = time.monotonic() + 20
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def _cancel_when_gone(proc: Any, body: asyncio.Task[Any]) -> None:
    """Cancel `body` if the worker process ends while it is in use (a crash, a Ctrl-C that
    reached the worker first): nothing would do its tasks, and a clock step would wait for
    them for its whole deadline."""
    while proc.poll() is None:
        await asyncio.sleep(0.5)
    body.cancel()


async def _polling(client: Client, task_queue: str) -> bool:
    """Whether a worker polls both of the queue's kinds; where the server cannot say (the
    time-skipping server), a worker that has connected will: the server holds the tasks."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
    from temporalio.service import RPCError, RPCStatusCode

    for queue_type in (
        TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
    ):
        try:
            described = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace,
                    task_queue=TaskQueue(name=task_queue),
                    task_queue_type=queue_type,
                )
            )
        except RPCError as exc:
            if exc.status == RPCStatusCode.UNIMPLEMENTED:
                return True
            raise
        if not described.pollers:
            return False
    return True


async def register_search_attributes(client: Client) -> None:
    """CarePath's search attributes, on a server that does not start with them (the
    time-skipping server)."""
    types = {
        "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
        "Datetime": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
        "Double": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
    }
    names = {1: "Text", 2: "Keyword", 3: "Int", 4: "Double", 5: "Bool", 6: "Datetime"}
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={k.name: types[names[int(k.indexed_value_type)]] for k in ALL_KEYS},
        )
    )


def child_named(name: str, port: str) -> int | None:
    """The PID of a child process of ours running `name` on `port` (a cohort's
    time-skipping server: shards and what-ifs run several)."""
    for pid in children():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
        except OSError:
            continue
        if any(name in part for part in command) and port in command:
            return pid
    return None


def children() -> set[int]:
    """The PIDs of this process's children now (started by any of its threads: the
    time-skipping servers are the SDK core's)."""
    found: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            found.update(int(pid) for pid in (task / "children").read_text().split())
        except OSError:
            continue  # a thread that has just ended
    return found


def running(pid: int) -> bool:
    """Whether a process is there and not a zombie (ended, waiting for its parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop_processes(pids: set[int], grace: float = 10.0) -> None:
    """Each process SIGTERM, then SIGKILL for any still running after `grace` seconds: the
    last sweep of a run stopped half-way (a server the SDK was still starting, a worker
    between its start and its context)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = {pid for pid in pids if running(pid)}
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = {pid for pid in left if running(pid)}
        if not left:
            return


def cpu_by_process(workers: list[int], servers: list[int | None]) -> dict[str, float]:
    """CPU seconds so far: the worker processes, the time-skipping servers, and this process
    (the simulated case managers and the client)."""
    return {
        "worker": sum(cpu_seconds(pid) for pid in workers),
        "server": sum(cpu_seconds(pid) for pid in servers if pid is not None),
        "driver": time.process_time(),
    }
