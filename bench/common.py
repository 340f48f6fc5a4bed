"""What every benchmark shares: a fresh server per run (the project's own flags), a worker,
stats (median and spread), the machine, and cleaning up every process we start, also on
Ctrl-C or an exception."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import signal
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from temporalio.client import Client, WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from infra.embedded_server import EmbeddedServer, free_port
from infra.settings import PROJECT_ROOT
from infra.temporal import data_converter

RESULTS = PROJECT_ROOT / "bench" / "results"
DEFAULT_PROGRAM = PROJECT_ROOT / "programs" / "default-iop.toml"


# --- stats ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100), linearly interpolated between closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(values: Sequence[float]) -> dict[str, float | int]:
    """Median of several runs and their spread: min-max, and the interquartile range."""
    if not values:
        raise ValueError("no values")
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "q1": percentile(values, 25),
        "q3": percentile(values, 75),
        "runs": len(values),
    }


def latency_summary(seconds: Sequence[float]) -> dict[str, float | int]:
    """p50/p95/p99 of round trips, in milliseconds."""
    return {
        "p50_ms": percentile(seconds, 50) * 1000,
        "p95_ms": percentile(seconds, 95) * 1000,
        "p99_ms": percentile(seconds, 99) * 1000,
        "max_ms": max(seconds) * 1000,
        "samples": len(seconds),
    }


# --- the machine -----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    import temporalio

    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024**2, 1),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "os": platform.platform(),
        "temporalio": temporalio.__version__,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# --- processes -------------------------------------------------------------------------------


def raise_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every `finally` stops what it started."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


@contextmanager
def scratch_dir(name: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"carepath-bench-{name}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def dev_server(workdir: Path) -> AsyncIterator[tuple[EmbeddedServer, Client]]:
    """A fresh dev server (SQLite file, the embedded server's WAL and partition flags,
    CarePath's search attributes), headless on free ports, and a client with the production
    converter (pydantic, AES-GCM, keys in `workdir`). Stopped by its PID on the way out,
    whatever happens."""
    server = EmbeddedServer(data_dir=workdir / "server", port=free_port(), ui=False)
    server.start()
    try:
        client = await _connect(server.address, converter(workdir))
        yield server, client
    finally:
        server.stop()


async def _connect(address: str, data_converter: Any, within: float = 30.0) -> Client:
    """The port opens a moment before the frontend answers ("not healthy yet")."""
    import asyncio

    deadline = time.monotonic() + within
    while True:
        try:
            return await Client.connect(address, data_converter=data_converter)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def converter(workdir: Path) -> Any:
    from infra.codec import KeyRing

    return data_converter(KeyRing.load_or_create(workdir / "keys.json"))


@asynccontextmanager
async def time_skipping() -> AsyncIterator[WorkflowEnvironment]:
    from tests.support import start_time_skipping

    env = await start_time_skipping()
    try:
        yield env
    finally:
        await env.shutdown()


def program_dir(into: Path, seconds_per_day: float | None = None) -> Path:
    """A programs directory holding the default protocol and the sites, and with `seconds_per_day` a
    `bench-iop` that is the default on a compressed clock (as demo-iop is)."""
    into.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEFAULT_PROGRAM, into / DEFAULT_PROGRAM.name)
    shutil.copy(DEFAULT_PROGRAM.with_name("sites.toml"), into / "sites.toml")
    if seconds_per_day is not None:
        (into / "bench-iop.toml").write_text(
            'extends = "default-iop.toml"\n\n[program]\nid = "bench-iop"\n'
            'name = "CarePath default IOP (bench clock)"\n\n'
            f"[clock]\nseconds_per_day = {seconds_per_day}\n"
        )
    return into


# --- histories -------------------------------------------------------------------------------


def kind(event: Any) -> str:
    return str(event.WhichOneof("attributes") or "").removesuffix("_event_attributes")


def local_activity_type(event: Any) -> str | None:
    """The activity type of a local activity's marker (a write inside the workflow task),
    None for any other event."""
    if kind(event) != "marker_recorded":
        return None
    marker = event.marker_recorded_event_attributes
    if marker.marker_name != "core_local_activity":
        return None
    return str(json.loads(marker.details["data"].payloads[0].data)["activity_type"])


def workflow_tasks(history: WorkflowHistory) -> int:
    return sum(1 for e in history.events if kind(e) == "workflow_task_completed")


# --- timing ------------------------------------------------------------------------------------


@dataclass
class Stopwatch:
    started: float = dataclasses.field(default_factory=time.perf_counter)

    def seconds(self) -> float:
        return time.perf_counter() - self.started


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    watch = Stopwatch()
    result = fn()
    return result, watch.seconds()


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
    import asyncio

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


@asynccontextmanager
async def worker_process(
    client: Client, env: dict[str, str], bare: bool = False, number: int = 1
) -> AsyncIterator[WorkerProcess]:
    """`worker.py` (or the bare reference's worker, identically configured) in its own
    process, so its CPU and memory are its own. Ready once the task queue has pollers and
    the process has gone idle (a server remembers an earlier worker's pollers for a while);
    stopped by its PID (SIGTERM, then SIGKILL) whatever happens."""
    import asyncio
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
        yield WorkerProcess(pid=proc.pid, task_queue=task_queue, log=log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
