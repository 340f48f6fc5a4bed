"""The supervisors' what-if page: the same synthetic cohort under two or more programs
(`starter.py simulate`, simulation.whatif), started from the console in a process of its
own that never touches the clinic's store or server (it runs on a time-skipping server,
worker and store of its own in a scratch directory). Each run keeps its files under
`<data dir>/whatif/<run id>`: what was asked, the fraction done, and the comparison when
it ends; any copy of the console on the host reads them. A run's ID is random: no patient
is in a what-if."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from clinical.protocol import ProgramCatalog, ProtocolError
from infra.settings import PROJECT_ROOT, Settings
from infra.store.accounts import Role
from simulation.report import charts, figures_svg, from_json, table
from web.context import console_of, page
from web.security import NotFound, Visitor, allow

RUN_ID = re.compile(r"^[0-9a-f]{16}$")
REAL_DAY = 86400
LIMITS = {"patients": (1, 2000), "seeds": (1, 10), "seed": (0, 1_000_000)}
"""The console's bounds (a supervisor's question, not a benchmark: the command line goes
to 10,000 patients)."""


class FormRefused(ValueError):
    """The form does not make a what-if: one line."""


@dataclass(frozen=True)
class Asked:
    programs: tuple[str, ...]
    patients: int
    per_week: float
    seed: int
    seeds: int


@dataclass(frozen=True)
class Run:
    run_id: str
    asked: dict[str, Any]
    state: str  # running, done, failed
    fraction: float
    seconds_left: float | None
    problem: str
    notes: tuple[str, ...] = ()
    """What the run said before it started (`note:` lines: tracks its admissions outgrow)."""


def runs_dir(settings: Settings) -> Path:
    return settings.data_dir / "whatif"


def programs_offered(settings: Settings) -> list[str]:
    """The clinic's programs on a real day's clock (the simulation steps a day at a time)."""
    catalog = ProgramCatalog.of(settings.programs_dir)
    offered = []
    for program_id in catalog.program_ids():
        try:
            if catalog.load(program_id).clock.seconds_per_day == REAL_DAY:
                offered.append(program_id)
        except ProtocolError:
            continue  # the sites file shares the directory
    return offered


def asked_from(form: dict[str, list[str]], offered: list[str]) -> Asked:
    """The form as a what-if, or FormRefused naming the first bad field."""
    programs = tuple(dict.fromkeys(form.get("program", [])))
    if len(programs) < 2:
        raise FormRefused("choose two programs or more to compare")
    for program in programs:
        if program not in offered:
            raise FormRefused(f"unknown program {program[:40]!r}")

    def whole(name: str, default: str) -> int:
        low, high = LIMITS[name]
        text = (form.get(name) or [default])[0].strip()
        if not text.isdigit() or not low <= int(text) <= high:
            raise FormRefused(f"{name} must be a whole number from {low:,} to {high:,}")
        return int(text)

    arrivals = (form.get("per_week") or ["10"])[0].strip()
    try:
        per_week = float(arrivals)
    except ValueError:
        per_week = 0.0
    if not 0 < per_week <= 500:
        raise FormRefused("admissions a week must be a number above 0 and at most 500")
    return Asked(
        programs=programs,
        patients=whole("patients", "40"),
        per_week=per_week,
        seed=whole("seed", "7"),
        seeds=whole("seeds", "3"),
    )


def start(settings: Settings, asked: Asked, username: str) -> str:
    """`starter.py simulate` in a process of its own, in a session of its own (the
    console's Ctrl-C is not the run's), its files in the run's folder. Without the
    clinic's store and server in its environment: a what-if uses its own."""
    run_id = secrets.token_hex(8)
    folder = runs_dir(settings) / run_id
    folder.mkdir(parents=True)
    (folder / "asked.json").write_text(
        json.dumps(
            {
                "programs": list(asked.programs),
                "patients": asked.patients,
                "per_week": asked.per_week,
                "seed": asked.seed,
                "seeds": asked.seeds,
                "by": username,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
    )
    command = [sys.executable, str(PROJECT_ROOT / "starter.py"), "simulate"]
    for program in asked.programs:
        command += ["--program", program]
    command += [
        *("--patients", str(asked.patients), "--arrivals", f"{asked.per_week:g}/week"),
        *("--seed", str(asked.seed), "--seeds", str(asked.seeds)),
        *("--json", str(folder / "comparison.json")),
        *("--progress-file", str(folder / "progress")),
    ]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TEMPORAL_") and k != "CAREPATH_DATABASE_URL"
    }
    env["CAREPATH_PROGRAMS_DIR"] = str(settings.programs_dir)
    with open(folder / "output.txt", "wb") as out, open(folder / "errors.txt", "wb") as err:
        proc = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    (folder / "pid").write_text(str(proc.pid))
    threading.Thread(target=proc.wait, daemon=True).start()  # reaped when it ends
    return run_id


def _running(pid: int) -> bool:
    """The run's process is alive: a simulation (not another process that took its PID
    since), or our child not yet past its exec (its command line is still ours)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_text()
        state, parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2]
    except OSError:
        return False
    return state != "Z" and ("simulate" in command or int(parent) == os.getpid())


def read_run(settings: Settings, run_id: str) -> Run | None:
    folder = runs_dir(settings) / run_id
    if not RUN_ID.match(run_id) or not (folder / "asked.json").is_file():
        return None
    asked = json.loads((folder / "asked.json").read_text())
    if (folder / "comparison.json").is_file():
        return Run(run_id, asked, "done", 1.0, 0.0, "")
    fraction, elapsed = 0.0, 0.0
    if (folder / "progress").is_file():
        fraction, elapsed = (float(x) for x in (folder / "progress").read_text().split()[:2])
    left = elapsed * (1 - fraction) / fraction if fraction >= 0.02 else None
    # The progress bar shares stderr with what the run says before it starts and at its end.
    errors = folder / "errors.txt"
    text = errors.read_text(errors="replace").strip() if errors.is_file() else ""
    lines = re.split(r"[\r\n]+", text)
    notes = tuple(line.removeprefix("note: ")[:400] for line in lines if line.startswith("note: "))
    pid_file = folder / "pid"
    starting = not pid_file.is_file() and time.time() - (folder / "asked.json").stat().st_mtime < 60
    if starting or (pid_file.is_file() and _running(int(pid_file.read_text()))):
        return Run(run_id, asked, "running", fraction, left, "", notes)
    # Ended without a comparison: its last line says why.
    said = [line for line in lines if line.startswith(("error:", "interrupted"))]
    return Run(run_id, asked, "failed", fraction, None, (said or ["it stopped"])[-1][:200], notes)


def recent_runs(settings: Settings, limit: int = 20) -> list[Run]:
    folder = runs_dir(settings)
    if not folder.is_dir():
        return []
    found = [r for d in folder.iterdir() if (r := read_run(settings, d.name)) is not None]
    return sorted(found, key=lambda r: str(r.asked.get("at", "")), reverse=True)[:limit]


def install(r: FastAPI, signed_in: Callable[..., Awaitable[Visitor]]) -> None:
    """Adds the what-if routes (flat: the route-enumeration test walks them)."""
    seen = Depends(signed_in)

    @r.get("/whatif", response_class=HTMLResponse)
    @allow(Role.supervisor)
    async def whatif_form(request: Request, visitor: Visitor = seen) -> Response:
        settings = console_of(request).settings
        return page(
            request,
            "whatif.html",
            visitor=visitor,
            programs=programs_offered(settings),
            runs=recent_runs(settings),
            problem=None,
        )

    @r.post("/whatif", response_class=HTMLResponse)
    @allow(Role.supervisor)
    async def whatif_start(request: Request, visitor: Visitor = seen) -> Response:
        console = console_of(request)
        form: dict[str, list[str]] = {}
        for key, value in (await request.form()).multi_items():
            if isinstance(value, str):
                form.setdefault(key, []).append(value)
        offered = programs_offered(console.settings)
        try:
            asked = asked_from(form, offered)
            busy = [r for r in recent_runs(console.settings) if r.state == "running"]
            if busy:  # one at a time: a what-if takes the machine's cores for minutes
                raise FormRefused(
                    f"a what-if is already running (started {busy[0].asked.get('at')} by "
                    f"{busy[0].asked.get('by')}): wait for it to finish"
                )
        except FormRefused as exc:
            console.record(request, visitor.user, "start what-if", outcome="refused")
            return page(
                request,
                "whatif.html",
                422,
                visitor=visitor,
                programs=offered,
                runs=recent_runs(console.settings),
                problem=str(exc),
            )
        run_id = start(console.settings, asked, visitor.user.username)
        console.record(request, visitor.user, f"start what-if {run_id}")
        return RedirectResponse(f"/whatif/{run_id}", status_code=303)

    @r.get("/whatif/{run_id}", response_class=HTMLResponse)
    @allow(Role.supervisor)
    async def whatif_run(request: Request, run_id: str, visitor: Visitor = seen) -> Response:
        settings = console_of(request).settings
        run = read_run(settings, run_id)
        if run is None:
            raise NotFound()
        shown: dict[str, Any] = {}
        if run.state == "done":
            comparison = from_json((runs_dir(settings) / run_id / "comparison.json").read_text())
            shown = {
                "table": table(comparison),
                "charts": charts(comparison),
                "figures": [(label, Markup(svg)) for label, svg in figures_svg(comparison)],
            }
        return page(request, "whatif_run.html", visitor=visitor, run=run, **shown)
