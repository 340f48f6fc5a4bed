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
    """A time-skipping server of the simulations' keys, its clock at the what-ifs' start
    (a Monday afternoon in February: the same weekday and season whichever day it runs)."""
    from simulation.clinic import start_time_skipping
    from simulation.cohort import advance
    from simulation.whatif import start_instant

    env = await start_time_skipping()
    try:
        now = await env.get_current_time()
        await advance(env, start_instant(now) - now)
        yield env
    finally:
        await env.shutdown()


def program_dir(
    into: Path, seconds_per_day: float | None = None, group_tracks: bool = True
) -> Path:
    """A programs directory holding the default protocol and the sites, and with `seconds_per_day` a
    `bench-iop` that is the default on a compressed clock (as demo-iop is). Without
    `group_tracks`, both programs leave the default's group tracks out: a benchmark that
    enrols thousands at one site would otherwise measure waitlists (22 seats a site), its
    journeys waiting in intake rather than in the intensive phase."""
    into.mkdir(parents=True, exist_ok=True)
    text = DEFAULT_PROGRAM.read_text()
    (into / DEFAULT_PROGRAM.name).write_text(text if group_tracks else without_tracks(text))
    shutil.copy(DEFAULT_PROGRAM.with_name("sites.toml"), into / "sites.toml")
    if seconds_per_day is not None:
        (into / "bench-iop.toml").write_text(
            'extends = "default-iop.toml"\n\n[program]\nid = "bench-iop"\n'
            'name = "CarePath default IOP (bench clock)"\n\n'
            f"[clock]\nseconds_per_day = {seconds_per_day}\n"
        )
    return into


def without_tracks(program: str) -> str:
    """A program file's text less its `[[groups.tracks]]` tables (each up to the next table
    header): each patient's group sessions are their own, as before tracks."""
    kept: list[str] = []
    dropping = False
    for line in program.splitlines(keepends=True):
        if line.startswith("["):
            dropping = line.strip() == "[[groups.tracks]]"
        if not dropping:
            kept.append(line)
    return "".join(kept)


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
