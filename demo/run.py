"""`starter.py demo`: the embedded server, a worker, and a synthetic cohort walked through
intake, intensive, step-down, aftercare and completion on the demo program's compressed
clock, with simulated case managers recording attendance as sessions happen."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError

from clinical.assessment import Consents, Enrolment, SocialNeed
from clinical.identifiers import new_patient_id
from clinical.journey import JourneyOutcome
from clinical.phases import ACTIVE_PHASES, Phase
from clinical.protocol import GroupTrack
from clinical.sites import Closure, SiteDirectory
from clinical.status import JourneyStatus
from demo.facilitator import Facilitator, facilitator_submits_a_sheet, facilitators_of
from demo.telephony import DemoTelephony, demo_telephony
from demo.users import create_demo_users
from infra.embedded_server import EmbeddedServer
from infra.settings import Settings
from infra.store import CareStore
from infra.store.accounts import IdentityStore
from infra.temporal import connect, keys_for
from operators.outcomes import CohortFilter, percent
from operators.report import cohort_report, support_tables
from services.closures import announce_closure
from services.surveys import SurveyDoor
from simulation.behaviour import Behaviour, load_behaviour
from simulation.case_manager import CaseManager
from simulation.patients import synthetic_cohort
from simulation.surveys import SurveyRespondents
from worker import build_care_operations, running_worker
from workflows.patient_journey import PatientJourneyWorkflow

console = Console()


async def simulated_case_manager(
    client: Client,
    handle: WorkflowHandle[Any, Any],
    statuses: dict[str, JourneyStatus],
    patient_id: str,
    rng: random.Random,
    poll_seconds: float,
    behaviour: Behaviour,
    seed: int,
    relapses: bool = False,
) -> None:
    """The simulated clinic's case manager, looking at the journey every `poll_seconds` of
    real time until it ends, the patient behaving as the behaviour model has them (some
    stop coming and are discharged); a patient who `relapses` does so in the third
    intensive week."""
    manager = CaseManager(behaviour.attendance_of(seed, patient_id), rng)
    while True:
        status: JourneyStatus = await handle.query(PatientJourneyWorkflow.status)
        status = status.as_of(datetime.now(UTC))
        statuses[patient_id] = status
        if status.phase.is_terminal:
            return
        await manager.resolve_schedule_conflict(handle, status)
        await manager.approve_step_down(handle, status)
        if relapses:
            await manager.report_relapse(handle, status)
        await manager.work_the_inbox(handle, status)
        await manager.follow_referrals(client, status)
        with contextlib.suppress(WorkflowUpdateFailedError):  # e.g. the journey ended meanwhile
            await manager.enter_weeks_over(handle, status)
        await manager.discharge_if_gone(
            handle, status.case_manager_id, behaviour.dropout.discharge_after_missed
        )
        await asyncio.sleep(poll_seconds)


def progress_view(statuses: dict[str, JourneyStatus], total: int, started: float) -> Group:
    counts = Counter(s.phase for s in statuses.values())
    phases = Table.grid(padding=(0, 2))
    shown = [*ACTIVE_PHASES, Phase.completed, Phase.escalated, Phase.discharged]
    phases.add_row(*(f"[bold]{p.value}[/]" for p in shown))
    phases.add_row(*(str(counts.get(p, 0)) for p in shown))
    table = Table(
        "patient",
        "phase",
        "level",
        "week",
        "attendance",
        "check-ins",
        "program date",
        title=f"CarePath demo: {total} patients, {time.monotonic() - started:.0f} s",
    )
    for pid in sorted(statuses):
        s = statuses[pid]
        reached = sum(1 for f in s.follow_ups if f.outcome is not None)
        week = f"{s.week}/{s.weeks_in_phase}" if s.weeks_in_phase else "-"
        table.add_row(
            pid,
            s.phase.value,
            s.level or "-",
            week,
            percent(s.attendance_rate),
            f"{reached}/{len(s.follow_ups)}" if s.follow_ups else "-",
            f"{s.today:%Y-%m-%d}",
        )
    return Group(phases, table)


async def snow_day(
    client: Client, settings: Settings, store: Any, statuses: dict[str, JourneyStatus]
) -> str:
    """An operator announces a snow day at the north site once its first patient is in
    treatment: the first weekday three or more days ahead on the site's calendar."""
    sites = SiteDirectory.load(settings.sites_file)
    while True:
        north = [
            s
            for s in statuses.values()
            if s.site_id == "north" and s.phase == Phase.intensive and s.week >= 1
        ]
        if north or (statuses and all(s.phase.is_terminal for s in statuses.values())):
            break
        await asyncio.sleep(0.2)
    if not north:
        return "no north patient reached treatment: no snow day"
    # Three days ahead on the site's calendar (a little over a second on the demo's clock):
    # time to reach every journey there before the day comes.
    status = north[0].as_of(datetime.now(UTC))
    day = status.clock.local_date(status.program_day + 3)
    if day.weekday() >= 5:  # the clinic's sessions are on weekdays: the Monday after
        day += timedelta(days=7 - day.weekday())
    snow = Closure(site_id="north", date=day, reason="snow day", announced_by="demo-operator")
    done = await announce_closure(client, store, sites, snow, datetime.now(UTC))
    return f"snow day at north on {day}: announced to {len(done.applied)} active journey(s)"


def demo_cohort(
    patients: int, seed: int, program_id: str, today: date | None = None
) -> list[Enrolment]:
    """The seed's cohort under patient IDs of this run's own: a demo run again on the same
    data enrols new patients rather than being refused the old ones."""
    return [
        e.model_copy(update={"patient_id": new_patient_id()})
        for e in synthetic_cohort(patients, seed, program_id, today=today)
    ]


def sites_line(settings: Settings, cohort: list[Any]) -> str:
    sites = SiteDirectory.load(settings.sites_file)
    used = sorted({e.site_id for e in cohort})
    return ", ".join(f"{s} ({sites.get(s).zone})" for s in used)


def closures_summary(statuses: dict[str, JourneyStatus]) -> str:
    """Sessions cancelled because a site was closed, by why; none of them counted missed."""
    why = Counter(
        s.cancelled_for.removeprefix("site closed: ")
        for status in statuses.values()
        for s in status.sessions
        if s.cancelled_for
    )
    return ", ".join(f"{reason} {n}" for reason, n in sorted(why.items())) or "none"


def outcome_summary(outcomes: list[JourneyOutcome], settings: Settings, operations: Any) -> Table:
    store = operations.store
    ids = {o.patient_id for o in outcomes}
    calls = [c for c in store.call_attempts() if c.patient_id in ids]
    opened = [t for t in store.tasks(include_done=True) if t.patient_id in ids]
    rates = [o.attendance.rate for o in outcomes if o.attendance.rate is not None]
    attended = sum(o.attendance.attended for o in outcomes)
    missed = sum(o.attendance.missed for o in outcomes)
    reached = sum(o.follow_ups_reached for o in outcomes)
    planned = sum(o.follow_ups_total for o in outcomes)
    table = Table("outcome", "value", title="Outcomes", show_header=False)
    for outcome, n in sorted(Counter(o.outcome.value for o in outcomes).items()):
        table.add_row(f"journeys {outcome}", str(n))
    table.add_row("sessions attended / missed", f"{attended} / {missed}")
    if rates:
        table.add_row(
            "attendance rate (cohort / median patient)",
            f"{attended / max(attended + missed, 1):.0%} / {statistics.median(rates):.0%}",
        )
    table.add_row("aftercare check-ins reached", f"{reached} of {planned}")
    table.add_row("call attempts placed", str(len(calls)))
    closed = Counter(r.outcome or "open" for r in store.referrals() if r.patient_id in ids)
    table.add_row(
        "referrals",
        ", ".join(f"{k} {v}" for k, v in sorted(closed.items())) or "none",
    )
    table.add_row(
        "case-manager tasks opened",
        ", ".join(f"{k} {v}" for k, v in Counter(t.kind for t in opened).items()) or "0",
    )
    return table


@dataclasses.dataclass
class TrackWatch:
    """The demo's group tracks as they fill: the most seats each had taken and the most
    patients on its waitlist at once, sampled as the demo runs."""

    capacity: dict[str, int]
    peak_taken: Counter[str] = dataclasses.field(default_factory=Counter)
    peak_waiting: Counter[str] = dataclasses.field(default_factory=Counter)

    def sample(self, loads: dict[str, Any]) -> None:
        for track_id, load in loads.items():
            self.peak_taken[track_id] = max(self.peak_taken[track_id], load.taken)
            self.peak_waiting[track_id] = max(self.peak_waiting[track_id], load.waiting)

    def filled(self) -> str:
        full = [
            f"{t} {self.peak_taken[t]}/{c}"
            + (f", {w} waiting" if (w := self.peak_waiting[t]) else "")
            for t, c in self.capacity.items()
            if self.peak_taken[t]
        ]
        return "; ".join(full) or "no seat taken"


def waitlist_summary(watch: TrackWatch, loads: dict[str, Any], opened: list[Any]) -> str:
    """How many waited for a seat, and whether the waitlists cleared."""
    waited = [t for t in opened if t.kind == "group_waitlist"]
    left = sum(load.waiting for load in loads.values())
    if not waited:
        return "nobody waited"
    cleared = "all seated or gone, the waitlists empty" if left == 0 else f"{left} still waiting"
    return f"{len({t.patient_id for t in waited})} patient(s) waited for a seat; {cleared}"


async def a_sheet_in_the_console(
    console_url: str,
    store: Any,
    program_id: str,
    tracks: Sequence[GroupTrack],
    leaders: Sequence[Facilitator],
    password_file: Path,
    statuses: dict[str, JourneyStatus],
) -> str:
    """The facilitator of the first group session to happen marks its sheet in the console
    (demo/facilitator.py); a failure is the summary's line, not the demo's end."""
    if not leaders:
        return "the program's tracks name no facilitator IDs"
    password = password_file.read_text().strip()

    def clinic_now() -> datetime | None:
        """Where the cohort's calendar is: the earliest of the journeys in care."""
        active = [s.today for s in statuses.values() if not s.phase.is_terminal]
        return min(active) if active else None

    try:
        return await facilitator_submits_a_sheet(
            console_url, leaders, password, store, program_id, tracks, clinic_now
        )
    except (RuntimeError, httpx.HTTPError) as exc:
        return f"not submitted: {exc}"


WAITING_PROGRAM = "default-iop"


def left_for_the_console(cohort: list[Enrolment]) -> list[Enrolment]:
    """One patient per case manager, on the default program's real clock so their journey
    is still going when the demo ends, with a housing need the patient has not yet agreed
    to disclose: a consent task waits in each case manager's inbox."""
    first = {e.case_manager_id: e for e in reversed(cohort)}
    return [
        e.model_copy(
            update={
                "patient_id": new_patient_id(),
                "program_id": WAITING_PROGRAM,
                "assessment": e.assessment.model_copy(
                    update={
                        "social_needs": (SocialNeed.housing,),
                        "consents": Consents(family_involvement=True),
                    }
                ),
            }
        )
        for e in first.values()
    ]


async def run_demo(
    settings: Settings, server: EmbeddedServer, patients: int, program_id: str, seed: int
) -> int:
    if patients < 1:
        raise ValueError("--patients must be at least 1")
    if not server.running():
        console.print("starting the embedded Temporal server …")
    server.start()
    client: Client = await connect(settings, make_keys=True)  # the demo runs its own worker
    store = CareStore(settings.database_url, keys=keys_for(settings, make_keys=True))
    store.migrate()
    try:
        async with demo_telephony(settings, store, client, seed) as telephony:
            # The cohort reports no use at check-ins: a relapse late in aftercare would send
            # a patient round a whole second year and the demo past a few minutes. One
            # patient relapses early instead, as reported by their case manager.
            operations = build_care_operations(
                dataclasses.replace(settings, simulated_use_risk=0.0, telephony_url=telephony.url)
            )
            return await _run_cohort(
                settings, server, client, operations, telephony, patients, program_id, seed
            )
    finally:
        store.dispose()


async def _run_cohort(
    settings: Settings,
    server: EmbeddedServer,
    client: Client,
    operations: Any,
    telephony: DemoTelephony,
    patients: int,
    program_id: str,
    seed: int,
) -> int:
    from cli.enrolment import start_journey  # the same enrolment path as the CLI's

    cohort = demo_cohort(patients, seed, program_id)
    rng = random.Random(seed)
    behaviour = load_behaviour()
    statuses: dict[str, JourneyStatus] = {}
    started = time.monotonic()
    waiting = left_for_the_console(cohort)
    tracks = operations.catalog.load(program_id).groups.tracks
    leaders = facilitators_of(tracks, {e.site_id for e in cohort})
    users, password_file = create_demo_users(
        IdentityStore(operations.store.engine),
        {e.case_manager_id: e.site_id for e in cohort},
        {e.site_id for e in cohort},
        settings.data_dir,
        leaders,
    )
    async with running_worker(client, settings, operations):
        handles = [await start_journey(client, settings, e) for e in cohort]
        for e in waiting:
            await start_journey(client, settings, e)
        poll = max(0.25, operations.catalog.load(program_id).clock.seconds_per_day)
        managers = [
            asyncio.create_task(
                simulated_case_manager(
                    client,
                    h,
                    statuses,
                    e.patient_id,
                    random.Random(rng.random()),
                    poll,
                    behaviour,
                    seed,
                    relapses=i == 1,
                )
            )
            for i, (h, e) in enumerate(zip(handles, cohort, strict=True))
        ]
        snow = asyncio.create_task(snow_day(client, settings, operations.store, statuses))
        sheet = asyncio.create_task(
            a_sheet_in_the_console(
                telephony.console_url,
                operations.store,
                program_id,
                tracks,
                leaders,
                password_file,
                statuses,
            )
        )
        watch = TrackWatch(capacity={t.id: t.capacity for t in tracks})
        ids = {e.patient_id for e in cohort}
        respondents = SurveyRespondents(
            operations.store,
            SurveyDoor(operations.store, operations.links, operations.catalog),
            seed,
            attendance_of=lambda pid: statuses[pid].attendance_rate if pid in statuses else None,
        )
        with Live(
            progress_view(statuses, patients, started), console=console, refresh_per_second=2
        ) as live:
            while not all(m.done() for m in managers):
                live.update(progress_view(statuses, patients, started))
                watch.sample(operations.store.track_loads(program_id))
                respondents.answer_due(ids, datetime.now(UTC))
                await asyncio.sleep(0.5)
            live.update(progress_view(statuses, patients, started))
        for m in managers:
            m.result()  # surface any failure of the simulation
        outcomes: list[JourneyOutcome] = [await h.result() for h in handles]
        snowed = await snow
        sheet.cancel()  # a no-op once it has finished
        try:
            marked = await sheet
        except asyncio.CancelledError:
            marked = "no session of the facilitator's tracks happened while the demo ran"
    respondents.answer_due(ids, datetime.now(UTC))  # the questionnaires sent at the end
    summary = outcome_summary(outcomes, settings, operations)
    summary.add_row("sites (time zones)", sites_line(settings, cohort))
    summary.add_row("sessions cancelled by closures, never missed", closures_summary(statuses))
    summary.add_row("unplanned closure", snowed)
    opened = [t for t in operations.store.tasks(include_done=True) if t.patient_id in ids]
    summary.add_row("group tracks filled (peak seats / capacity)", watch.filled())
    summary.add_row(
        "group waitlist",
        waitlist_summary(watch, operations.store.track_loads(program_id), opened),
    )
    summary.add_row("a facilitator's sign-in sheet", marked)
    sent = len(respondents.seen)
    summary.add_row(
        "questionnaires (answered by following their links)",
        f"{sent} sent, {respondents.answered} answered, {respondents.declined} not answered",
    )
    console.print(summary)
    report = cohort_report(
        operations.store,
        operations.catalog,
        CohortFilter(program_id=program_id),
        datetime.now(UTC),
    )
    if report.support is not None:
        for table in support_tables(report.support):
            console.print(table)
    tally = telephony.tally()  # the check-ins travelled through the provider service
    console.print(
        f"Telephony provider: {tally['calls']} calls placed, "
        f"{tally['callbacks_sent']} callbacks taken."
    )
    console.print(
        f"Finished in {time.monotonic() - started:.0f} s. Each patient's workflow history is in "
        f"the Temporal Web UI: {server.ui_url}/namespaces/default/workflows"
    )
    console.print(
        f"  e.g. {server.ui_url}/namespaces/default/workflows/journey-{cohort[0].patient_id}"
    )
    console.print(
        f"The cohort's outcomes report: `python starter.py report --program {program_id} "
        "--html outcomes.html` (tables here, charts in the page)."
    )
    console.print(
        f"The console: `python starter.py console`, then sign in at "
        f"http://{settings.console_host}:{settings.console_port}/ as {', '.join(users)} "
        f"with the password in {password_file} (made for this run). Each case manager has a "
        f"patient still in care ({', '.join(e.patient_id for e in waiting)}) with a consent "
        "task in the inbox: run `make worker` so the engine answers what you record."
    )
    if leaders:
        console.print(
            f"Group facilitators ({', '.join(f.username for f in leaders)}) see only the "
            "sign-in sheets of the tracks they lead, under Groups."
        )
    console.print(
        "The server keeps running so you can look; stop it with `python starter.py server stop`."
    )
    operations.store.dispose()
    return 0
