"""`starter.py simulate`: what if the clinic ran another protocol? (simulation.whatif)"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from temporalio.service import RPCError

from cli.common import CliError, console
from clinical.protocol import ProgramCatalog, ProtocolError
from infra.settings import Settings
from simulation.behaviour import BEHAVIOUR_FILE, Behaviour, load_behaviour
from simulation.report import charts, html_report, table, to_json
from simulation.whatif import PATIENTS_PER_SERVER, Plan, compare, copy_programs, servers_for
from simulation.workers import children, stop_processes

REAL_DAY = 86400
EXIT_FAILED = 1
MAX_PATIENTS = 10_000
MAX_SERVERS = 8


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--program",
        action="append",
        required=True,
        help="a program ID, or a program file (.toml); give it once for each program compared",
    )
    p.add_argument("--patients", type=int, default=50)
    p.add_argument("--arrivals", default="10/week", help="admissions a week, e.g. 15/week")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--seeds", type=int, default=1, help="repeat with this many seeds (intervals)")
    p.add_argument(
        "--servers",
        type=int,
        help="time-skipping servers (each with a worker, sharing the run's store) each "
        f"program's run is spread over; default one per {PATIENTS_PER_SERVER:,} patients; "
        "at most one a site (a site's journeys hand group seats on to each other)",
    )
    p.add_argument(
        "--report",
        type=Path,
        help="also write the comparison's charts as an HTML page to this file",
    )
    p.add_argument("--json", type=Path, help="also write the comparison as JSON to this file")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the scratch directory (each program's worker log, store and server's "
        "keys, by program and seed) and say where; it is removed otherwise",
    )
    p.add_argument(
        "--progress-file",
        type=Path,
        help="keep the fraction done in this file (the console's what-if page reads it)",
    )


def arrivals_per_week(text: str) -> float:
    found = re.fullmatch(r"\s*(\d{1,4}(?:\.\d+)?)\s*/\s*week\s*", text)
    if found is None or float(found.group(1)) <= 0:
        raise CliError(f"--arrivals {text!r}: give admissions a week, e.g. 15/week")
    return float(found.group(1))


def plan_of(args: argparse.Namespace) -> Plan:
    """The arguments checked, each error in one line, before anything starts."""
    if not 1 <= args.patients <= MAX_PATIENTS:
        raise CliError(f"--patients must be from 1 to {MAX_PATIENTS:,}")
    if not 1 <= args.seeds <= 20:
        raise CliError("--seeds must be from 1 to 20")
    ids = [Path(p).stem if p.endswith(".toml") else p for p in args.program]
    if len(set(ids)) != len(ids):
        raise CliError(
            "each --program once: " + ", ".join(sorted({i for i in ids if ids.count(i) > 1}))
        )
    servers = servers_for(args.patients) if args.servers is None else args.servers
    if not 1 <= servers <= MAX_SERVERS:
        raise CliError(f"--servers must be from 1 to {MAX_SERVERS}")
    return Plan(
        programs=tuple(ids),
        patients=args.patients,
        per_week=arrivals_per_week(args.arrivals),
        seeds=tuple(range(args.seed, args.seed + args.seeds)),
        servers=servers,
    )


def programs_for(args: argparse.Namespace, settings: Settings, into: Path) -> Path:
    """The run's own copy of the programs, each compared program checked: known, valid and
    on a real day's clock (the simulation steps the clock a day at a time)."""
    files = [Path(p) for p in args.program if p.endswith(".toml")]
    for f in files:
        if not f.is_file():
            raise CliError(f"--program {f}: no such file")
    programs = copy_programs(settings.programs_dir, into, files, settings.sites_file)
    catalog = ProgramCatalog(programs)
    for program in args.program:
        program_id = Path(program).stem if program.endswith(".toml") else program
        try:
            protocol = catalog.load(program_id)
        except ProtocolError as exc:
            raise CliError(f"--program {program}: {exc}") from None
        if protocol.clock.seconds_per_day != REAL_DAY:
            raise CliError(
                f"--program {program} runs on a compressed clock "
                f"({protocol.clock.seconds_per_day:g} s a day): a what-if needs a real day's"
            )
    return programs


class ProgressBar:
    """A line on stderr: how far, and an estimate of the time left; with a `file`, the
    fraction done is also kept there (replaced whole, so a reader never sees half)."""

    def __init__(self, file: Path | None = None) -> None:
        self.started = time.monotonic()
        self.shown = -1
        self.file = file

    def __call__(self, fraction: float) -> None:
        percent = int(fraction * 100)
        if percent == self.shown:
            return
        self.shown = percent
        if self.file is not None:
            partial = self.file.with_name(self.file.name + ".part")
            partial.write_text(f"{fraction:.3f} {time.monotonic() - self.started:.0f}\n")
            partial.replace(self.file)
        elapsed = time.monotonic() - self.started
        left = (
            f"about {_duration(elapsed * (1 - fraction) / fraction)} left"
            if fraction >= 0.02
            else ""
        )
        bar = "#" * (percent // 4) + "." * (25 - percent // 4)
        print(f"\r[{bar}] {percent:3d}%  {left:<24}", end="", file=sys.stderr, flush=True)

    def done(self) -> float:
        print(file=sys.stderr)
        return time.monotonic() - self.started


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


class Interruption:
    """SIGINT (Ctrl-C) and SIGTERM while a what-if runs, handled by this command whatever
    it inherited (a shell's background job ignores SIGINT, and its workers would still stop
    on one). The first is noted the moment it lands (a Python signal handler runs between
    two bytecodes of the main thread, before the event loop gets to any callback already
    queued) and the run's task cancelled, so whatever then ends the run ends it as an
    interruption: the cancellation, or an error the stop itself caused (a worker or server
    the same Ctrl-C ended, a call the cancellation broke, a query no worker answered).
    Another signal changes nothing: the cleanup under way finishes."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.loop = asyncio.get_running_loop()
        self.landed: int | None = None
        self.previous: dict[int, Any] = {}

    def _land(self, signum: int, _frame: object) -> None:
        if self.landed is None:
            self.landed = signum
            self.task.cancel()
            self.loop.call_soon_threadsafe(lambda: None)  # wake a loop waiting in select

    def __enter__(self) -> Interruption:
        for sig in self.SIGNALS:
            self.previous[sig] = signal.signal(sig, self._land)
        return self

    def __exit__(self, *_: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


async def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    """Ctrl-C (or SIGTERM) cancels the run: each program's worker and server is stopped
    and the scratch directory removed on the way out (kept with `--keep`); the command
    says "interrupted" and exits 130 however the stop reached it."""
    plan = plan_of(args)
    for option in ("report", "json", "progress_file"):
        path = getattr(args, option)
        if path is not None and not path.parent.is_dir():
            flag = "--" + option.replace("_", "-")
            raise CliError(f"{flag} {path}: no such directory {str(path.parent)!r}")
    behaviour = load_behaviour()
    task = asyncio.current_task()
    assert task is not None
    with Interruption(task) as interruption:
        try:
            return await _simulate(args, settings, plan, behaviour)
        except BaseException:
            if interruption.landed is None:
                raise
    raise KeyboardInterrupt


async def _simulate(
    args: argparse.Namespace, settings: Settings, plan: Plan, behaviour: Behaviour
) -> int:
    root = Path(tempfile.mkdtemp(prefix="carepath-whatif-"))
    ours = children()
    try:
        programs = programs_for(args, settings, root / "programs")
        seeds = f"seed {plan.seeds[0]}" + (
            f"-{plan.seeds[-1]} (median, range)" if len(plan.seeds) > 1 else ""
        )
        console.print(
            f"What if: {plan.patients} synthetic patients arriving {plan.per_week:g} a week, "
            f"{seeds}; behaviour from {BEHAVIOUR_FILE.name}; each program on a simulated "
            "clinic of its own"
        )
        bar = ProgressBar(args.progress_file)
        try:
            comparison = await compare(
                dataclasses.replace(settings, programs_dir=programs),
                plan,
                behaviour,
                root,
                bar,
                note=lambda line: print(f"note: {line}", file=sys.stderr),
            )
        except (RuntimeError, RPCError) as exc:  # a stalled cohort, a server that gave up
            raise CliError(f"the simulation failed: {exc}", EXIT_FAILED) from None
        finally:
            seconds = bar.done()  # the bar's line ended, whatever comes next
    finally:
        # Every process the run started and left running (a server the SDK was still
        # starting when the run was stopped), by its PID, before its files go.
        stop_processes(children() - ours)
        if args.keep:
            print(
                f"scratch directory kept: {root} (each program's worker log in "
                "PROGRAM-SEED/worker-carepath.log)",
                file=sys.stderr,
            )
        else:
            shutil.rmtree(root, ignore_errors=True)
    console.print(table(comparison), highlight=False, soft_wrap=True)
    if comparison.failures and not args.keep:
        console.print(
            "(the workers' logs are removed with the run: --keep keeps them)", highlight=False
        )
    runs = plan.patients * len(plan.programs) * len(plan.seeds)
    console.print(f"{runs} simulated journeys in {_duration(seconds)}", highlight=False)
    console.print()
    console.print(charts(comparison), highlight=False, soft_wrap=True, markup=False)
    if args.report is not None:
        args.report.write_text(html_report(comparison), encoding="utf-8")
        console.print(f"\ncharts written to {args.report}", highlight=False)
    if args.json is not None:
        args.json.write_text(to_json(comparison), encoding="utf-8")
    return 0
